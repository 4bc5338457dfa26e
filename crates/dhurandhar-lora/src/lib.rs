//! LoRA / QLoRA: the job file, the adapter tensors and how their names map between
//! this engine (GGUF tensor names), PEFT (`adapter_model.safetensors`) and llama.cpp
//! (LoRA GGUF).
//!
//! The trainer produces an [`Adapter`]; the engine applies one; the facade saves, loads,
//! exports and merges it. This crate holds the shared types so none of those depends on
//! another, and the arithmetic of a dry run ([`estimate()`]), which needs only the
//! architecture.

pub mod adapter;
pub mod config;
pub mod estimate;

pub use adapter::{
    gguf_tensor_name, parse_gguf_tensor_name, peft_key_stem, Adapter, LoraPair, TargetModule,
};
pub use config::{LoraJob, LoraSection, TrainingSection};
pub use estimate::{estimate, Estimate, ModuleCount, TrainingMemory, LOSS_CHUNK_TOKENS};

/// A commented job file holding every default (`dhurandhar lora init` writes it).
pub const JOB_TEMPLATE: &str = include_str!("template.yaml");

/// Errors of the LoRA crate.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A job file or adapter field is wrong; names the field.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The YAML could not be parsed (unknown field, wrong type, ...).
    #[error("{0}")]
    Yaml(String),
}

impl LoraError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        LoraError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
