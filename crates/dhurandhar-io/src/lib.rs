//! Safe file I/O, one copy for the whole workspace.
//!
//! Users point this tool at files from the internet and at outputs next to their only
//! copy of a checkpoint, so every writer and every reader goes through here:
//!
//! - [`AtomicFile`] / [`write_atomic`]: write to a temp file in the target's directory,
//!   fsync, rename. A failed or killed writer leaves no output; a finished output is an
//!   ordinary file (0o666 minus umask). Temp names carry the writer's PID so the next
//!   writer for the same target removes the leftovers of dead ones.
//! - [`check_output`]: refuse an output that is one of the inputs (`pack X -o X` would
//!   destroy X) or that exists and is not a regular file (a FIFO or device node).
//! - [`open_regular`] / [`read_bounded`]: refuse FIFOs, directories and devices as
//!   inputs (reading a FIFO blocks forever) and bound every whole-file read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What went wrong, always with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The OS error is part of the message and deliberately not a `source()`: chained
    /// printers (`{:#}`) would say it twice.
    #[error("{path}: {error}")]
    Os { path: PathBuf, error: io::Error },
    #[error("{path}: is a directory, not a file")]
    Directory { path: PathBuf },
    #[error("{path}: is not a regular file ({kind}); refusing to {action} it")]
    NotRegular {
        path: PathBuf,
        kind: &'static str,
        action: &'static str,
    },
    #[error("{output}: is the same file as the input {input}; write to another path (the input would be destroyed)")]
    OutputIsInput { output: PathBuf, input: PathBuf },
    #[error("{path}: {size} bytes is over the {limit}-byte limit for {what}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        what: &'static str,
    },
}

impl IoError {
    /// Wrap an OS error with its path.
    pub fn os(path: &Path, source: io::Error) -> Self {
        IoError::Os {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Check that `path` names an existing regular file (following symlinks).
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata, IoError> {
    let meta = std::fs::metadata(path).map_err(|e| IoError::os(path, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(IoError::Directory {
            path: path.to_path_buf(),
        });
    }
    if !ft.is_file() {
        return Err(IoError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&ft),
            action: "read",
        });
    }
    Ok(meta)
}

/// Open `path` for reading, refusing anything but a regular file. The check is made on
/// the opened descriptor too, so a file swapped for a FIFO in between is still refused
/// (the open itself uses `O_NONBLOCK` so a FIFO cannot block it).
pub fn open_regular(path: &Path) -> Result<File, IoError> {
    check_regular(path)?;
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| IoError::os(path, e))?;
    let ft = f.metadata().map_err(|e| IoError::os(path, e))?.file_type();
    if !ft.is_file() {
        return Err(IoError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&ft),
            action: "read",
        });
    }
    Ok(f)
}

/// Read a whole regular file of at most `limit` bytes; `what` names the content in the
/// error ("a YAML profile", "an evaluation text").
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, IoError> {
    let f = open_regular(path)?;
    let size = f.metadata().map_err(|e| IoError::os(path, e))?.len();
    if size > limit {
        return Err(IoError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
            what,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    // `take` bounds the read even if the file grows after the size check.
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| IoError::os(path, e))?;
    if buf.len() as u64 > limit {
        return Err(IoError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
            what,
        });
    }
    Ok(buf)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_to_string_bounded(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<String, IoError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| {
        IoError::os(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{what} is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ),
        )
    })
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_a: &std::fs::Metadata, _b: &std::fs::Metadata) -> bool {
    false
}

/// Refuse an output path that is one of `inputs` (same file, through any path or link)
/// or that exists and is not a regular file. Call before doing any work, so a refused
/// write costs nothing.
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<(), IoError> {
    let out_meta = match std::fs::metadata(output) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::os(output, e)),
    };
    let ft = out_meta.file_type();
    if ft.is_dir() {
        return Err(IoError::Directory {
            path: output.to_path_buf(),
        });
    }
    if !ft.is_file() {
        return Err(IoError::NotRegular {
            path: output.to_path_buf(),
            kind: file_kind(&ft),
            action: "replace",
        });
    }
    for input in inputs {
        if let Ok(in_meta) = std::fs::metadata(input) {
            let same = same_file(&out_meta, &in_meta)
                || (cfg!(not(unix))
                    && std::fs::canonicalize(output).ok() == std::fs::canonicalize(input).ok());
            if same {
                return Err(IoError::OutputIsInput {
                    output: output.to_path_buf(),
                    input: input.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

const TMP_SUFFIX: &str = ".dhtmp";

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.PID.N.dhtmp` beside the target.
fn temp_path(target: &Path, pid: u32, n: u64) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    parent_dir(target).join(format!(".{name}.{pid}.{n}{TMP_SUFFIX}"))
}

#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    // kill(pid, 0) probes existence without sending anything.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_alive(_pid: u32) -> bool {
    true
}

/// Remove temp files for `target` left by writers that are no longer running (a
/// `kill -9` mid-write). Returns how many were removed. Best effort: a file that cannot
/// be removed is left.
pub fn remove_stale_temps(target: &Path) -> usize {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(parent_dir(target)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = fname
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(TMP_SUFFIX))
        else {
            continue;
        };
        let mut parts = rest.splitn(2, '.');
        let (Some(pid), Some(n)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written atomically: all writes go to a temp file beside the target,
/// and [`commit`](AtomicFile::commit) fsyncs and renames it into place. Dropping it
/// uncommitted removes the temp file.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Start writing `target`. Refuses a target that exists and is not a regular file
    /// (use [`check_output`] first to also refuse one of the inputs), and removes stale
    /// temps of dead writers for the same target.
    pub fn create(target: &Path) -> Result<Self, IoError> {
        check_output(target, &[])?;
        remove_stale_temps(target);
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = temp_path(target, pid, n);
            let mut opts = OpenOptions::new();
            opts.write(true).read(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o666);
            }
            match opts.open(&tmp) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file: Some(file),
                        tmp,
                        target: target.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // Named by the output, not only its directory, so the user knows which
                // write failed (a read-only or full directory says so in the OS error).
                Err(e) => return Err(IoError::os(target, e)),
            }
        }
    }

    /// The file being written (seekable, for formats that patch a header).
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("AtomicFile used after commit")
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temp path written now (for messages and tests).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsync the data, rename over the target, fsync the directory.
    pub fn commit(mut self) -> Result<(), IoError> {
        let file = self.file.take().expect("AtomicFile committed twice");
        file.sync_all().map_err(|e| IoError::os(&self.target, e))?;
        drop(file);
        // Re-check: the target may have been replaced by a FIFO/dir since create.
        check_output(&self.target, &[])?;
        std::fs::rename(&self.tmp, &self.target).map_err(|e| IoError::os(&self.target, e))?;
        #[cfg(unix)]
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes).map_err(|e| IoError::os(target, e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"hello").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        write_atomic(&p, b"world").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"world");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn output_has_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("o");
        write_atomic(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let umask = unsafe {
            let m = libc::umask(0);
            libc::umask(m);
            m
        };
        assert_eq!(mode, 0o666 & !(umask as u32));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.dhp");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_output_that_is_the_input() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        std::fs::write(&p, b"data").unwrap();
        let via = d.path().join(".").join("m.safetensors");
        let e = check_output(&via, &[&p]).unwrap_err();
        assert!(matches!(e, IoError::OutputIsInput { .. }), "{e}");
        assert!(e.to_string().contains("same file"), "{e}");
        #[cfg(unix)]
        {
            let link = d.path().join("link");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            assert!(check_output(&link, &[&p]).is_err());
        }
        assert!(check_output(&d.path().join("new"), &[&p]).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_fifo_as_input_and_output() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&p).unwrap_err().to_string();
        assert!(e.contains("FIFO") && e.contains("fifo"), "{e}");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("FIFO") && e.contains("replace"), "{e}");
        let e = open_regular(d.path()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
    }

    #[test]
    fn bounded_read_refuses_large_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.txt");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100, "a text").unwrap().len(), 100);
        let e = read_bounded(&p, 99, "a text").unwrap_err().to_string();
        assert!(e.contains("99-byte limit") && e.contains("t.txt"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn removes_temps_of_dead_writers_only() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x.bin");
        // A PID that cannot be running (above the kernel's pid_max).
        let dead = temp_path(&target, 4_194_305, 0);
        std::fs::write(&dead, b"old").unwrap();
        let live = temp_path(&target, 1, 0); // init is always alive
        std::fs::write(&live, b"busy").unwrap();
        let other = d.path().join(".y.bin.4194305.0.dhtmp");
        std::fs::write(&other, b"other target").unwrap();
        write_atomic(&target, b"new").unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
