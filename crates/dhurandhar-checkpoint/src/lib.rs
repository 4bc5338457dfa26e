//! Exact readers for real checkpoints (under construction).

use std::path::Path;

use dhurandhar_model::{ComponentBytes, ModelArchitecture};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
}

/// Load a model architecture and its exact per-component weight bytes from a checkpoint
/// (.gguf, .safetensors, config.json, or a directory holding config.json + safetensors).
pub fn load_model(path: &Path) -> Result<(ModelArchitecture, ComponentBytes), CheckpointError> {
    Err(CheckpointError::Unsupported {
        path: path.display().to_string(),
        message: "checkpoint reading is not built yet".into(),
    })
}
