//! Read-only memory maps: headers are parsed straight from the mapping, so planning a
//! multi-GB checkpoint touches only the header pages.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::CheckpointError;

/// Map `path` read-only.
/// Anything but a regular file is refused, checked before opening too: opening a FIFO
/// blocks until a writer appears, and mapping a directory fails with "No such device".
pub fn map_file(path: &Path) -> Result<Mmap, CheckpointError> {
    let not_regular = |ft: std::fs::FileType| {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else {
            "a FIFO, socket or device"
        };
        CheckpointError::unsupported(
            &path.display().to_string(),
            format!("is not a regular file ({kind}); refusing to read it"),
        )
    };
    let ft = std::fs::metadata(path)
        .map_err(|e| CheckpointError::io(path, e))?
        .file_type();
    if !ft.is_file() {
        return Err(not_regular(ft));
    }
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let meta = file.metadata().map_err(|e| CheckpointError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    // SAFETY: the mapping is read-only; a concurrent truncation by another process
    // could fault, which is the accepted trade-off of every mmap-based model reader.
    unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))
}
