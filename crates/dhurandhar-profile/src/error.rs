use std::path::PathBuf;

/// Everything that can go wrong while preparing or running a profile. Each variant names the
/// file or value at fault so a front end can print it unchanged; options are named in words,
/// never by a front end's flag spelling.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir}: not enough free space for a {need_mib:.1} MiB test file ({avail_mib:.1} MiB available); \
         lower the scale or pick another cache directory"
    )]
    NoSpace {
        dir: PathBuf,
        need_mib: f64,
        avail_mib: f64,
    },
    /// A file that cannot be written safely (a directory or FIFO in the way).
    #[error(transparent)]
    File(#[from] dhurandhar_io::IoError),
    #[error("{dir}: cache directory is not writable: {source}")]
    CacheDirNotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid scale {0}: must be a finite number greater than 0 and at most {max}", max = crate::geometry::MAX_SCALE)]
    BadScale(f64),
    #[error("invalid geometry: {0}")]
    BadGeometry(String),
    #[error(
        "{path}: region {offset}..{end} lies beyond the end of the file ({file_len} bytes)",
        end = offset.saturating_add(*length)
    )]
    RegionOutOfFile {
        path: PathBuf,
        offset: u64,
        length: u64,
        file_len: u64,
    },
    #[error("unknown budget `{0}`: use a preset (int2_extreme, int4_aggressive, int8_deployment, bf16_development) or a size in MB")]
    BadBudget(String),
    #[error("{0}")]
    Invalid(String),
    /// The progress callback asked to stop; nothing partial was left behind.
    #[error("cancelled")]
    Cancelled,
}

impl ProfileError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProfileError::Io {
            path: path.into(),
            source,
        }
    }
}
