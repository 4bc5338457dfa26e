//! Shared output plumbing: JSON to stdout, JSON to a file atomically.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Pretty JSON to stdout, newline-terminated.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    // Write as io::Error so a closed pipe (`| head`) is recognised by `finish`.
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// Write `bytes` to `path` via a temp file in the same directory and a rename, so a
/// reader never sees a partial file and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    // A finished output is an ordinary file (0o666 minus umask), not tempfile's 0o600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename temporary file to {}", path.display()))?;
    Ok(())
}

/// Pretty JSON to a file, atomically.
pub fn write_json_file<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}
