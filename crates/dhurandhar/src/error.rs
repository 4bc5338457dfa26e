//! The facade's error: every lower crate's error, plus invalid options and cancellation.

use thiserror::Error;

/// Any failure of a facade job. Messages name the file and the problem; options are
/// named by their field (`context_tokens`), never by a front end's flag spelling.
#[derive(Debug, Error)]
pub enum Error {
    /// An option is out of range or inconsistent: `{option}: {reason}`.
    #[error("{option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// The job was cancelled through its [`CancelToken`](crate::CancelToken).
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] dhurandhar_io::IoError),
    #[error(transparent)]
    Model(#[from] dhurandhar_model::ModelError),
    #[error(transparent)]
    Plan(#[from] dhurandhar_plan::PlanError),
    #[error(transparent)]
    Kv(#[from] dhurandhar_kv::KvError),
    #[error(transparent)]
    Checkpoint(#[from] dhurandhar_checkpoint::CheckpointError),
    #[error(transparent)]
    Engine(#[from] dhurandhar_engine::EngineError),
    #[error(transparent)]
    Pack(#[from] dhurandhar_pack::PackError),
    #[error(transparent)]
    Profile(#[from] dhurandhar_profile::ProfileError),
    #[error(transparent)]
    Lora(#[from] dhurandhar_lora::LoraError),
    /// A lower error with what the job was doing when it happened. The cause is part of
    /// the message (not a `source()`), so every front end prints it once, whole.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    /// An invalid option.
    pub fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    /// The error under any [`Error::Context`] layers: what actually went wrong.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.root(),
            e => e,
        }
    }

    /// Wrap with what was being done ("cannot read a model from m.gguf").
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }
}

/// `Result` with the facade's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
