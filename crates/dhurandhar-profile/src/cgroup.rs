//! A hard memory cap for a child process: a Linux cgroup-v1 memory group, which charges
//! the process's resident set *and* the page cache it faults in, as a phone's RAM would.
//! Used to prove that a run stays within a RAM budget (and to watch mmap thrash when it
//! does not). Needs root and the v1 memory controller (`/sys/fs/cgroup/memory`);
//! [`MemoryCap::available`] says why not otherwise.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::ProfileError;

/// The v1 memory controller's mount point.
pub const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// One memory group, removed when dropped.
#[derive(Debug)]
pub struct MemoryCap {
    dir: PathBuf,
    limit: u64,
    /// Opened here so the child only has to `write` to it between fork and exec.
    procs: File,
}

/// What the group saw while a process ran in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CapUsage {
    pub limit_bytes: u64,
    /// `memory.max_usage_in_bytes`: peak RSS + page cache charged to the group.
    pub max_usage_bytes: u64,
    /// `memory.failcnt`: times a charge hit the limit (the kernel then reclaimed).
    pub failcnt: u64,
    /// Processes the OOM killer killed in the group.
    pub oom_kills: u64,
}

impl MemoryCap {
    /// `Err` with the reason when memory groups cannot be made here (not Linux, no v1
    /// memory controller, not root).
    pub fn available() -> Result<(), ProfileError> {
        let root = Path::new(MEMORY_ROOT);
        if !root.join("memory.limit_in_bytes").exists() {
            return Err(ProfileError::Invalid(format!(
                "{MEMORY_ROOT}: no cgroup-v1 memory controller here, so a memory cap cannot be set"
            )));
        }
        // SAFETY: a plain syscall without arguments.
        if unsafe { libc::geteuid() } != 0 {
            return Err(ProfileError::Invalid(format!(
                "{MEMORY_ROOT}: a memory cap needs root (memory groups are created there)"
            )));
        }
        // Root in a container may still face a read-only hierarchy: try one.
        let probe = root.join(format!("dhurandhar-probe-{}", std::process::id()));
        fs::create_dir(&probe).map_err(|e| {
            ProfileError::Invalid(format!(
                "{MEMORY_ROOT}: cannot create a memory group there ({e}), so a memory cap cannot be set"
            ))
        })?;
        let _ = fs::remove_dir(&probe);
        Ok(())
    }

    /// A new group named `dhurandhar-<name>-<pid>` capped at `limit` bytes.
    pub fn create(name: &str, limit: u64) -> Result<MemoryCap, ProfileError> {
        Self::available()?;
        let dir = Path::new(MEMORY_ROOT).join(format!("dhurandhar-{name}-{}", std::process::id()));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProfileError::Io { path, source }
        };
        fs::create_dir(&dir).map_err(io(&dir))?;
        let cap = MemoryCap {
            procs: File::options()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(io(&dir.join("cgroup.procs")))?,
            dir,
            limit,
        };
        cap.write("memory.limit_in_bytes", limit)?;
        Ok(cap)
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make `cmd`'s process join the group before it runs anything, so every byte it
    /// allocates or faults in is charged.
    pub fn confine(&self, cmd: &mut Command) {
        let fd = self.procs.as_raw_fd();
        // SAFETY: between fork and exec the closure only calls `write(2)`, which is
        // async-signal-safe, on a descriptor opened before the fork; "0" moves the
        // calling (child) process into the group.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// Reset the peak and failure counters (between runs in one group).
    pub fn reset(&self) -> Result<(), ProfileError> {
        self.write("memory.max_usage_in_bytes", 0)?;
        self.write("memory.failcnt", 0)
    }

    /// The counters now.
    pub fn usage(&self) -> Result<CapUsage, ProfileError> {
        let oom = self.read("memory.oom_control")?;
        let oom_kills = oom
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(CapUsage {
            limit_bytes: self.limit,
            max_usage_bytes: self.read_u64("memory.max_usage_in_bytes")?,
            failcnt: self.read_u64("memory.failcnt")?,
            oom_kills,
        })
    }

    fn write(&self, file: &str, value: u64) -> Result<(), ProfileError> {
        let path = self.dir.join(file);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.to_string().as_bytes()))
            .map_err(|source| ProfileError::Io { path, source })
    }

    fn read(&self, file: &str) -> Result<String, ProfileError> {
        let path = self.dir.join(file);
        fs::read_to_string(&path).map_err(|source| ProfileError::Io { path, source })
    }

    fn read_u64(&self, file: &str) -> Result<u64, ProfileError> {
        let text = self.read(file)?;
        text.trim().parse().map_err(|_| {
            ProfileError::Invalid(format!(
                "{}: not a number: {text:?}",
                self.dir.join(file).display()
            ))
        })
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        // The group's processes have exited; its page-cache charge is moved to the
        // parent, then the (empty) group is removed.
        let _ = self.write("memory.force_empty", 0);
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where memory groups can be made (root, cgroup v1), a child that allocates beyond
    /// its cap is killed and the group records it; a small one runs and is counted.
    /// Elsewhere the reason is printed and the test checks the refusal.
    #[test]
    fn a_capped_child_is_charged_and_held_to_the_cap() {
        if let Err(why) = MemoryCap::available() {
            eprintln!("skipping the cgroup run: {why}");
            assert!(MemoryCap::create("test", 1 << 30).is_err());
            return;
        }
        let cap = MemoryCap::create("test", 64 << 20).unwrap();
        let run = |mib: u64| {
            cap.reset().unwrap();
            let mut cmd = Command::new("python3");
            cmd.args(["-c", &format!("b = bytearray({mib} << 20); print(len(b))")]);
            cap.confine(&mut cmd);
            let ok = cmd.output().unwrap().status.success();
            (ok, cap.usage().unwrap())
        };
        let (ok, small) = run(16);
        assert!(ok);
        assert!(small.max_usage_bytes >= 16 << 20, "{small:?}");
        assert!(small.max_usage_bytes <= 64 << 20, "{small:?}");
        let (ok, big) = run(256);
        assert!(!ok, "a 256 MiB allocation under a 64 MiB cap must fail");
        assert!(big.failcnt > 0, "{big:?}");
        let dir = cap.dir().to_path_buf();
        drop(cap);
        assert!(!dir.exists());
    }
}
