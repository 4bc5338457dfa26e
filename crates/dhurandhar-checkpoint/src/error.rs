//! One error type for every reader. Messages always name the file, and the byte
//! offset where the problem was found when there is one, so a user can look at the
//! bytes with `xxd -s OFFSET`.

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be opened, stat'ed or memory-mapped. The OS error is part of
    /// the message and deliberately not a `source()`: chained printers would say it twice.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// The bytes do not follow the format (bad magic, truncation, absurd counts, ...).
    #[error("{path}: at byte {offset}: {message}")]
    Malformed {
        path: String,
        offset: u64,
        message: String,
    },
    /// A structurally valid file that this reader does not handle (GGUF v1, big-endian,
    /// an architecture we cannot map, ...).
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
    /// A JSON document (safetensors header, config.json, shard index) is not valid or
    /// misses a field we need.
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    /// The checkpoint was read but describes a model the contract refuses.
    #[error("{path}: {}", model_detail(path, source))]
    Model {
        path: String,
        #[source]
        source: dhurandhar_model::ModelError,
    },
    /// A tensor asked for by name is not in the checkpoint.
    #[error("{path}: no tensor named `{name}`")]
    NoSuchTensor { path: String, name: String },
    /// A caller's buffer does not fit the tensor read into it.
    #[error("{path}: tensor `{name}`: buffer holds {got} bytes, {expected} needed")]
    BufferSize {
        path: String,
        name: String,
        expected: u64,
        got: u64,
    },
}

/// The model error without the file name when it is the one already printed.
fn model_detail(path: &str, e: &dhurandhar_model::ModelError) -> String {
    match e {
        dhurandhar_model::ModelError::Parse { origin, message } if origin == path => {
            message.clone()
        }
        other => other.to_string(),
    }
}

impl CheckpointError {
    pub(crate) fn malformed(path: &str, offset: u64, message: impl Into<String>) -> Self {
        CheckpointError::Malformed {
            path: path.to_string(),
            offset,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: &str, message: impl Into<String>) -> Self {
        CheckpointError::Unsupported {
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn json(path: &str, message: impl Into<String>) -> Self {
        CheckpointError::Json {
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.display().to_string(),
            error: source,
        }
    }
}
