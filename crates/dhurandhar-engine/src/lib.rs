//! CPU inference on GGUF models for devices where memory is the constraint.
//!
//! Weights stay in their stored (quantized) form — in a read-only memory map of the
//! GGUF file, read into RAM, or streamed layer by layer under a RAM budget
//! ([`store`]); matrix products dequantize block by block inside the dot product or use
//! integer dot products against 8-bit activations, so the model is never expanded to
//! f32. On top of that: one forward pass for the architectures in
//! [`arch::ARCHITECTURES`] (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe, qwen3moe), the GGUF's own
//! tokenizer (SentencePiece or BPE with the named pre-tokenizer, ids as llama.cpp
//! gives), sampling, a KV cache (ring buffers on sliding-window layers) that can
//! capture its tensors or run them through a `dhurandhar_kv` codec as they are written,
//! and perplexity / KL evaluation.

pub mod arch;
pub mod bench;
pub mod cache;
pub mod eval;
pub mod experts;
pub mod floats;
pub mod interleave;
pub mod kernels;
pub mod kquants;
pub mod lora;
pub mod model;
#[cfg(target_arch = "x86_64")]
mod q8_avx2;
pub mod quant;
pub mod sampling;
pub mod store;
pub mod tokenizer;
pub mod train;

pub use arch::{ArchSpec, ARCHITECTURES};
pub use cache::{CacheCodec, Capture, KvCache};
pub use eval::{evaluate, evaluate_with, CodecResult, EvalReport, PassMetrics};
pub use lora::LoraStack;
pub use model::{Logits, Model, ModelConfig, RopeStyle, Session};
pub use quant::{computes_with, GgmlType};
pub use sampling::Sampler;
pub use store::{plan_pool, BudgetInputs, StorePlan, StreamStats, WeightMode};
pub use tokenizer::Tokenizer;
pub use train::{LossSum, TrainOptions, Trainer};

use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Checkpoint(#[from] dhurandhar_checkpoint::CheckpointError),
    #[error("{path}: {message}")]
    Model { path: String, message: String },
    #[error(transparent)]
    File(#[from] dhurandhar_io::IoError),
    /// A `.dhp` pack that cannot be read (the error names the file, tensor and chunk).
    #[error(transparent)]
    Pack(#[from] dhurandhar_pack::PackError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("KV codec: {0}")]
    Codec(#[from] dhurandhar_kv::KvError),
    #[error("{0}")]
    Invalid(String),
    /// A RAM budget too small for the chosen weight mode (the message has the breakdown).
    #[error("{0}")]
    Budget(String),
}
