//! Helpers of the profiler's end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use dhurandhar_profile::*;

pub fn table(dir: &Path, rows: u64) -> (std::path::PathBuf, TableGeometry) {
    let g = TableGeometry::per_layer_embedding(rows, 8, 256, 4).unwrap(); // 1 KiB rows
    let p = dir.join("t.bin");
    ensure_test_file(&p, g.total_bytes(), &mut no_progress).unwrap();
    (p, g)
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 glibc, narrower elsewhere
pub fn on_tmpfs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid path and out-buffer.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) }, 0);
    // SAFETY: statfs succeeded.
    let t = unsafe { st.assume_init() }.f_type as i64;
    t == libc::TMPFS_MAGIC as i64 || t == 0x8584_58f6 /* RAMFS_MAGIC */
}
