//! The synthetic table file: dense random bytes (a sparse or zero file would be served from
//! the zero page or compressed away and measure nothing), written through
//! [`dhurandhar_io::AtomicFile`], so an interrupted, failed or cancelled write never leaves a
//! partial file that a later run would mistake for a valid one (and a killed writer's
//! temporary is removed by the next run).

use std::io::Write;
use std::path::{Path, PathBuf};

use dhurandhar_io::{AtomicFile, IoError};
use serde::Serialize;

use crate::error::ProfileError;
use crate::rng::Rng;
use crate::ProgressFn;

/// Seed of the file contents (the contents only need to be incompressible, not secret).
const FILE_SEED: u64 = 42;
const CHUNK: usize = 8 << 20;

/// Default file name inside the cache directory.
pub const DEFAULT_FILE_NAME: &str = "mmap_profile.bin";

/// Cache directory for generated files: `$DHURANDHAR_CACHE`, else `$XDG_CACHE_HOME/dhurandhar`,
/// else `$HOME/.cache/dhurandhar`, else the system temp dir (Android's `adb shell` often has
/// no HOME).
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("DHURANDHAR_CACHE") {
        return d;
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return d.join("dhurandhar");
    }
    if let Some(h) = env("HOME") {
        return h.join(".cache").join("dhurandhar");
    }
    std::env::temp_dir().join("dhurandhar")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    /// An existing dense file of the right size was reused.
    Reused,
    /// The file was (re)written.
    Created,
}

/// Make sure `path` is a dense file of exactly `len` random bytes; reuse it if it already is.
///
/// `progress(done, total)` is called after every chunk written; a `Break` from it stops
/// with [`ProfileError::Cancelled`] and removes the partial file.
pub fn ensure_test_file(
    path: &Path,
    len: u64,
    progress: &mut ProgressFn,
) -> Result<FileOutcome, ProfileError> {
    if len == 0 {
        return Err(ProfileError::Invalid("test file length must be > 0".into()));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_file() && meta.len() == len && is_dense(&meta) {
            return Ok(FileOutcome::Reused);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| ProfileError::CacheDirNotWritable {
        dir: dir.clone(),
        source: e,
    })?;
    // An existing file of the wrong size will be replaced, so its space counts as free.
    let replaced = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if let Some(avail) = crate::sys::free_bytes(&dir) {
        // Keep a small margin so we do not fill the disk to the last block.
        let need = len.saturating_add(16 << 20);
        if avail.saturating_add(replaced) < need {
            return Err(no_space(&dir, len, avail));
        }
    }
    let mut tmp = AtomicFile::create(path).map_err(|e| match e {
        IoError::Os { error: source, .. } => ProfileError::CacheDirNotWritable {
            dir: dir.clone(),
            source,
        },
        e => ProfileError::File(e),
    })?;
    let mut rng = Rng::new(FILE_SEED);
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        if let Err(e) = tmp.write_all(&buf[..n]) {
            // `tmp` is removed on drop, so nothing partial remains.
            return Err(write_error(&dir, path, len, e));
        }
        done += n as u64;
        if progress(done, len).is_break() {
            return Err(ProfileError::Cancelled);
        }
    }
    tmp.commit().map_err(|e| match e {
        IoError::Os { error: source, .. } => write_error(&dir, path, len, source),
        e => ProfileError::File(e),
    })?;
    Ok(FileOutcome::Created)
}

fn no_space(dir: &Path, len: u64, avail: u64) -> ProfileError {
    ProfileError::NoSpace {
        dir: dir.to_path_buf(),
        need_mib: len as f64 / (1u64 << 20) as f64,
        avail_mib: avail as f64 / (1u64 << 20) as f64,
    }
}

fn write_error(dir: &Path, path: &Path, len: u64, e: std::io::Error) -> ProfileError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        no_space(dir, len, crate::sys::free_bytes(dir).unwrap_or(0))
    } else {
        ProfileError::io(path, e)
    }
}

/// True unless the file has holes (allocated blocks cover its length).
fn is_dense(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // st_blocks is in 512-byte units everywhere we run.
        meta.blocks().saturating_mul(512) >= meta.len()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_then_rewrites_on_size_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("t.bin");
        let mut calls = 0;
        let mut cb = |d: u64, t: u64| {
            assert!(d <= t);
            calls += 1;
            std::ops::ControlFlow::Continue(())
        };
        assert_eq!(
            ensure_test_file(&p, 3 << 20, &mut cb).unwrap(),
            FileOutcome::Created
        );
        let first = std::fs::read(&p).unwrap();
        assert_eq!(first.len(), 3 << 20);
        // Dense random: no long zero runs, bytes well spread.
        let zeros = first.iter().filter(|&&b| b == 0).count();
        assert!(zeros < first.len() / 128, "{zeros} zero bytes");
        assert_eq!(
            ensure_test_file(&p, 3 << 20, &mut crate::no_progress).unwrap(),
            FileOutcome::Reused
        );
        assert_eq!(
            ensure_test_file(&p, 1 << 20, &mut crate::no_progress).unwrap(),
            FileOutcome::Created
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        // Same seed, same prefix: reproducible contents.
        assert_eq!(std::fs::read(&p).unwrap()[..], first[..1 << 20]);
        assert!(calls >= 1);
        // Only the final file remains: no temporaries.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn sparse_file_of_the_right_size_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.bin");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(2 << 20).unwrap();
        drop(f);
        assert_eq!(
            ensure_test_file(&p, 2 << 20, &mut crate::no_progress).unwrap(),
            FileOutcome::Created
        );
    }

    #[test]
    fn impossible_size_is_no_space_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.bin");
        let err = ensure_test_file(&p, u64::MAX / 4, &mut crate::no_progress).unwrap_err();
        assert!(matches!(err, ProfileError::NoSpace { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("cache directory") && !msg.contains("--"),
            "{msg}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn cancelled_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.bin");
        let err = ensure_test_file(&p, 20 << 20, &mut |d, _| {
            if d >= CHUNK as u64 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, ProfileError::Cancelled), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_in_the_way_is_refused_not_replaced() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo.bin");
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = ensure_test_file(&p, 1 << 20, &mut crate::no_progress).unwrap_err();
        assert!(matches!(err, ProfileError::File(_)), "{err}");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn unwritable_dir_is_reported() {
        // A path below a regular file can never be created, even as root.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err =
            ensure_test_file(&file.join("t.bin"), 1 << 20, &mut crate::no_progress).unwrap_err();
        assert!(
            matches!(err, ProfileError::CacheDirNotWritable { .. }),
            "{err}"
        );
    }
}
