//! Errors of the pack library. Every variant names the file (or tensor) and the problem,
//! because the CLI prints them as-is.

use std::path::PathBuf;

/// Anything that can go wrong reading, writing or decoding packs and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a .dhp pack (bad magic bytes)", path.display())]
    BadMagic { path: PathBuf },
    #[error("{}: unsupported .dhp format version {found} (this build reads versions 1 to {supported})", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{}: truncated or incomplete pack: {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{}: index checksum mismatch (the pack is corrupted)", path.display())]
    IndexChecksum { path: PathBuf },
    #[error("{}: corrupt index: {detail}", path.display())]
    BadIndex { path: PathBuf, detail: String },
    #[error("{}: tensor `{tensor}` chunk {chunk}: checksum mismatch (the pack is corrupted)", path.display())]
    ChunkChecksum {
        path: PathBuf,
        tensor: String,
        chunk: usize,
    },
    #[error("{}: tensor `{tensor}` chunk {chunk}: cannot decode: {detail}", path.display())]
    ChunkDecode {
        path: PathBuf,
        tensor: String,
        chunk: usize,
        detail: String,
    },
    #[error("{}: tensor `{tensor}`: restored bytes do not match the stored hash", path.display())]
    TensorHash { path: PathBuf, tensor: String },
    #[error("{}: no tensor named `{tensor}`", path.display())]
    NoTensor { path: PathBuf, tensor: String },
    #[error("{}: {detail}", path.display())]
    Input { path: PathBuf, detail: String },
    #[error("delta: tensor `{tensor}`: {detail}")]
    DeltaMismatch { tensor: String, detail: String },
    #[error("output buffer for `{tensor}` holds {got} bytes, {expected} needed")]
    BufferSize {
        tensor: String,
        expected: usize,
        got: usize,
    },
    /// An output refused before any work (it is an input, or not a regular file), or a
    /// temp file that could not be created or committed.
    #[error(transparent)]
    File(dhurandhar_io::IoError),
    /// An input checkpoint could not be read (the error names the file and tensor).
    #[error(transparent)]
    Checkpoint(#[from] dhurandhar_checkpoint::CheckpointError),
    /// The progress callback asked to stop; no output was left.
    #[error("cancelled")]
    Cancelled,
    /// An option out of range, named by its field (`bits`, `group`, `residual_frac`,
    /// `chunk_size`): front ends translate the field to their own spelling.
    #[error("invalid option: {option} {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// A read or computation asked for something the data does not have (a chunk or
    /// element range out of bounds, buffers of the wrong length).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl PackError {
    /// An option out of range.
    pub fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        PackError::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PackError::Io {
            path: path.into(),
            source,
        }
    }
    /// A problem with an input file, named.
    pub fn input(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        PackError::Input {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// OS errors keep their own variant ([`PackError::Io`]) wherever they come from.
impl From<dhurandhar_io::IoError> for PackError {
    fn from(e: dhurandhar_io::IoError) -> Self {
        match e {
            dhurandhar_io::IoError::Os { path, error } => PackError::Io {
                path,
                source: error,
            },
            other => PackError::File(other),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = PackError> = std::result::Result<T, E>;
