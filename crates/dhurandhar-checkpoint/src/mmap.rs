//! Read-only memory maps: headers are parsed straight from the mapping, so planning a
//! multi-GB checkpoint touches only the header pages.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::CheckpointError;

/// Map `path` read-only.
pub fn map_file(path: &Path) -> Result<Mmap, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let meta = file.metadata().map_err(|e| CheckpointError::io(path, e))?;
    if !meta.is_file() {
        return Err(CheckpointError::unsupported(
            &path.display().to_string(),
            "not a regular file",
        ));
    }
    // SAFETY: the mapping is read-only; a concurrent truncation by another process
    // could fault, which is the accepted trade-off of every mmap-based model reader.
    unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))
}
