//! Exact readers for real checkpoints: GGUF (v2/v3), safetensors (single and sharded)
//! and Hugging Face `config.json`; tensor data through [`Weights`] and the
//! [`TensorSource`] trait, element types as the one [`DType`].
//!
//! Headers are parsed from a read-only memory map and never trust a count or length
//! before bounding it by the bytes that remain, so malformed files give an error that
//! names the file and byte offset instead of a panic or a huge allocation.
//!
//! [`load_model`] turns any checkpoint into the planner's contract: a validated
//! [`ModelArchitecture`] plus the exact stored bytes per component ([`ComponentBytes`]).

mod arch_gguf;
mod arch_hf;
mod checkpoint;
pub mod components;
pub mod dtype;
mod error;
pub mod gguf;
pub mod gguf_hparams;
pub mod gguf_write;
mod mmap;
pub mod safetensors;
pub mod weights;

use std::path::Path;

use dhurandhar_model::{ComponentBytes, ModelArchitecture};

pub use arch_gguf::arch_from_gguf;
pub use arch_hf::arch_from_config_json;
pub use checkpoint::{open_checkpoint, Checkpoint, CheckpointFormat, TensorEntry};
pub use components::{classify, Component};
pub use dtype::DType;
pub use error::CheckpointError;
pub use gguf_hparams::{GgufHyperParams, GgufTokenizer};
pub use mmap::map_file;
pub use weights::{TensorMeta, TensorSource, WeightTensor, Weights};

/// Absolute byte offset and length of tensor `name` in a `.gguf` or `.safetensors` file.
pub fn locate_tensor(path: &Path, name: &str) -> Result<(u64, u64), CheckpointError> {
    let origin = path.display().to_string();
    let not_found = || CheckpointError::NoSuchTensor {
        path: origin.clone(),
        name: name.to_string(),
    };
    match checkpoint::sniff(path)? {
        CheckpointFormat::Gguf => {
            let f = gguf::GgufFile::open(path)?;
            let t = f.tensor(name).ok_or_else(not_found)?;
            Ok((t.offset, t.n_bytes))
        }
        CheckpointFormat::Safetensors => {
            let f = safetensors::SafetensorsFile::open(path)?;
            let t = f.tensor(name).ok_or_else(not_found)?;
            Ok((t.offset, t.n_bytes))
        }
        other => Err(CheckpointError::unsupported(
            &origin,
            format!(
                "locate_tensor needs a single .gguf or .safetensors file, not {}",
                other.name()
            ),
        )),
    }
}

/// Load a model architecture and its exact per-component weight bytes from a checkpoint
/// (.gguf, .safetensors, config.json, model.safetensors.index.json, or a directory
/// holding config.json + safetensors).
///
/// With only a config.json (no tensors) the component bytes are all zero and
/// `source` says so; callers should then estimate from the architecture.
pub fn load_model(path: &Path) -> Result<(ModelArchitecture, ComponentBytes), CheckpointError> {
    let ckpt = open_checkpoint(path)?;
    let arch = ckpt.architecture()?;
    Ok((arch, ckpt.component_bytes()))
}
