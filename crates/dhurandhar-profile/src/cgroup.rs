//! Linux cgroup-v1 groups that make this host behave like a smaller device for a child
//! process:
//! - [`MemoryCap`]: a hard memory cap — a memory group, which charges the process's
//!   resident set *and* the page cache it faults in, as a phone's RAM would. Used to prove
//!   that a run stays within a RAM budget (and to watch mmap thrash when it does not).
//! - [`ReadThrottle`]: a read-bandwidth limit on the disk under a file — a blkio group —
//!   so that the disk reads as steadily as a slower device's flash would.
//!
//! Both need root and the v1 controller; `available` says why not otherwise.

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

/// The v1 blkio controller's mount point.
pub const BLKIO_ROOT: &str = "/sys/fs/cgroup/blkio";

/// A group `dhurandhar-<name>-<pid>` under a controller's root, removed when dropped.
#[derive(Debug)]
struct Group {
    dir: PathBuf,
    /// Opened here so a child only has to `write` to it between fork and exec.
    procs: File,
}

impl Group {
    /// `Err` with the reason when groups cannot be made under `root` (not Linux, no
    /// such v1 controller, not root). `marker` is a file every group there has; `what`
    /// names the limit in messages.
    fn available(root: &str, marker: &str, what: &str) -> Result<(), ProfileError> {
        let dir = Path::new(root);
        if !dir.join(marker).exists() {
            return Err(ProfileError::Invalid(format!(
                "{root}: no such cgroup-v1 controller here, so a {what} cannot be set"
            )));
        }
        // SAFETY: a plain syscall without arguments.
        if unsafe { libc::geteuid() } != 0 {
            return Err(ProfileError::Invalid(format!(
                "{root}: a {what} needs root (its groups are created there)"
            )));
        }
        // Root in a container may still face a read-only hierarchy: try one.
        let probe = dir.join(format!("dhurandhar-probe-{}", std::process::id()));
        fs::create_dir(&probe).map_err(|e| {
            ProfileError::Invalid(format!(
                "{root}: cannot create a group there ({e}), so a {what} cannot be set"
            ))
        })?;
        let _ = fs::remove_dir(&probe);
        Ok(())
    }

    fn create(root: &str, name: &str) -> Result<Group, ProfileError> {
        let dir = Path::new(root).join(format!("dhurandhar-{name}-{}", std::process::id()));
        fs::create_dir(&dir).map_err(io(&dir))?;
        let procs = dir.join("cgroup.procs");
        Ok(Group {
            procs: File::options()
                .write(true)
                .open(&procs)
                .map_err(io(&procs))?,
            dir,
        })
    }

    /// Make `cmd`'s process join the group before it runs anything.
    fn confine(&self, cmd: &mut Command) {
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

    fn write(&self, file: &str, value: &str) -> Result<(), ProfileError> {
        write_to(&self.dir.join(file), value)
    }

    fn read(&self, file: &str) -> Result<String, ProfileError> {
        let path = self.dir.join(file);
        fs::read_to_string(&path).map_err(|source| ProfileError::Io { path, source })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError {
    let path = path.to_path_buf();
    move |source| ProfileError::Io { path, source }
}

fn write_to(path: &Path, value: &str) -> Result<(), ProfileError> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io(path))
}

/// One memory group, removed when dropped.
#[derive(Debug)]
pub struct MemoryCap {
    group: Group,
    limit: u64,
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
        Group::available(MEMORY_ROOT, "memory.limit_in_bytes", "memory cap")
    }

    /// A new group named `dhurandhar-<name>-<pid>` capped at `limit` bytes.
    pub fn create(name: &str, limit: u64) -> Result<MemoryCap, ProfileError> {
        Self::available()?;
        let cap = MemoryCap {
            group: Group::create(MEMORY_ROOT, name)?,
            limit,
        };
        cap.group
            .write("memory.limit_in_bytes", &limit.to_string())?;
        Ok(cap)
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.group.dir
    }

    /// Make `cmd`'s process join the group before it runs anything, so every byte it
    /// allocates or faults in is charged.
    pub fn confine(&self, cmd: &mut Command) {
        self.group.confine(cmd);
    }

    /// Reset the peak and failure counters (between runs in one group).
    pub fn reset(&self) -> Result<(), ProfileError> {
        self.group.write("memory.max_usage_in_bytes", "0")?;
        self.group.write("memory.failcnt", "0")
    }

    /// The counters now.
    pub fn usage(&self) -> Result<CapUsage, ProfileError> {
        let oom = self.group.read("memory.oom_control")?;
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

    fn read_u64(&self, file: &str) -> Result<u64, ProfileError> {
        let text = self.group.read(file)?;
        text.trim().parse().map_err(|_| {
            ProfileError::Invalid(format!(
                "{}: not a number: {text:?}",
                self.group.dir.join(file).display()
            ))
        })
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        // The group's processes have exited; its page-cache charge is moved to the
        // parent, then (as the group drops) the empty group is removed.
        let _ = self.group.write("memory.force_empty", "0");
    }
}

/// A read-bandwidth limit on the disk that holds a file, removed when dropped: a blkio
/// group whose `blkio.throttle.read_bps_device` holds that disk to `bytes_per_s`. A
/// shared or virtual disk that moves between speeds from one second to the next then
/// reads steadily, as a device's flash would, so a streamed run can be set against a
/// rate that holds for the whole run. The kernel charges `O_DIRECT` reads to the
/// reader's group directly; buffered reads may escape it (read-ahead).
#[derive(Debug)]
pub struct ReadThrottle {
    group: Group,
}

impl ReadThrottle {
    /// `Err` with the reason when blkio groups cannot be made here.
    pub fn available() -> Result<(), ProfileError> {
        Group::available(
            BLKIO_ROOT,
            "blkio.throttle.read_bps_device",
            "read-bandwidth limit",
        )
    }

    /// A new group `dhurandhar-<name>-<pid>` that lets its processes read the disk
    /// under `file` at no more than `bytes_per_s`.
    pub fn create(name: &str, file: &Path, bytes_per_s: u64) -> Result<ReadThrottle, ProfileError> {
        if bytes_per_s == 0 {
            return Err(ProfileError::Invalid(
                "a read-bandwidth limit of 0 bytes/s would stop every read".into(),
            ));
        }
        Self::available()?;
        let device = disk_of(file)?;
        let group = Group::create(BLKIO_ROOT, name)?;
        group.write(
            "blkio.throttle.read_bps_device",
            &format!("{device} {bytes_per_s}"),
        )?;
        Ok(ReadThrottle { group })
    }

    /// Make `cmd`'s process join the group before it runs anything.
    pub fn confine(&self, cmd: &mut Command) {
        self.group.confine(cmd);
    }

    /// Run `f` with the calling thread inside the group, then put the thread back in
    /// its own group (v1 groups take single threads through `tasks`).
    pub fn run_here<T>(&self, f: impl FnOnce() -> T) -> Result<T, ProfileError> {
        let own = own_group(BLKIO_ROOT, "blkio")?;
        // SAFETY: a plain syscall without arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
        self.group.write("tasks", &tid)?;
        let out = f();
        write_to(&own.join("tasks"), &tid)?;
        Ok(out)
    }
}

/// The directory of the group this thread is in, under `root`, from
/// `/proc/thread-self/cgroup` (`7:blkio:/some/group`).
fn own_group(root: &str, controller: &str) -> Result<PathBuf, ProfileError> {
    let path = Path::new("/proc/thread-self/cgroup");
    let text = fs::read_to_string(path).map_err(io(path))?;
    let rel = group_in(&text, controller).ok_or_else(|| {
        ProfileError::Invalid(format!(
            "{}: this thread is in no {controller} group",
            path.display()
        ))
    })?;
    Ok(Path::new(root).join(rel))
}

/// The group path (without its leading `/`) of `controller` in a `/proc/*/cgroup` text.
fn group_in(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (names, group) = rest.split_once(':')?;
        names
            .split(',')
            .any(|c| c == controller)
            .then(|| group.trim_start_matches('/').to_string())
    })
}

/// `major:minor` of the whole disk that holds `file` (a partition's parent disk: blkio
/// throttles whole disks).
fn disk_of(file: &Path) -> Result<String, ProfileError> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(file).map_err(io(file))?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return Err(ProfileError::Invalid(format!(
            "{}: on device {major}:{minor}, which is no block device (a RAM, network or \
             overlay file system): its reads cannot be throttled",
            file.display()
        )));
    }
    if !sys.join("partition").exists() {
        return Ok(format!("{major}:{minor}"));
    }
    let parent = sys.join("../dev");
    let text = fs::read_to_string(&parent).map_err(io(&parent))?;
    Ok(text.trim().to_string())
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

    #[test]
    fn the_group_of_a_controller_is_read_from_proc_cgroup() {
        let text =
            "9:name=systemd:/\n7:blkio:/a/b\n4:memory:/process_api/x\n2:cpu,cpuacct:/c\n0::/\n";
        assert_eq!(group_in(text, "blkio").as_deref(), Some("a/b"));
        assert_eq!(group_in(text, "cpuacct").as_deref(), Some("c"));
        assert_eq!(group_in(text, "systemd"), None);
        assert_eq!(group_in(text, "pids"), None);
    }

    /// Where blkio groups can be made, a thread inside a 64 MiB/s group reads a file
    /// cold at no more than that (with the throttle's one-slice burst), and outside it
    /// again afterwards. Elsewhere the refusal is checked.
    #[test]
    fn a_throttled_read_holds_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, vec![7u8; 48 << 20]).unwrap();
        if let Err(why) = ReadThrottle::available() {
            eprintln!("skipping the blkio run: {why}");
            assert!(ReadThrottle::create("test", &path, 1 << 26).is_err());
            return;
        }
        let t = match ReadThrottle::create("test", &path, 64 << 20) {
            Ok(t) => t,
            Err(e) => {
                // A temporary directory on tmpfs or overlay has no disk to throttle.
                eprintln!("skipping the blkio run: {e}");
                return;
            }
        };
        let file = File::open(&path).unwrap();
        let (rate, direct) = t
            .run_here(|| crate::sys::cold_read(&file, &path, None, 0.0).unwrap())
            .unwrap();
        if direct {
            assert!(rate < 1.5 * (64u64 << 20) as f64, "{rate}");
        }
        let own = own_group(BLKIO_ROOT, "blkio").unwrap();
        assert_ne!(own, t.group.dir, "the thread left the group");
        let dir_path = t.group.dir.clone();
        drop(t);
        assert!(!dir_path.exists());
        assert!(ReadThrottle::create("test", &path, 0).is_err());
    }
}
