//! The few OS calls the profiler needs, each behind `cfg` so the crate builds on Linux,
//! Android (static aarch64) and macOS. Nothing here is x86-specific.

use std::fs::File;
use std::path::Path;

/// Page size of this process (4 KiB on x86_64; 4 or 16 KiB on arm64 Android and 16 KiB on
/// Apple silicon), used for residency and fault accounting.
pub fn page_size() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no memory-safety preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 {
            return v as u64;
        }
    }
    4096
}

/// Free bytes available to an unprivileged writer in `dir`, if the OS tells us.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-buffer.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled the struct.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
        return Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64));
    }
    #[allow(unreachable_code)]
    None
}

/// How page-cache eviction went on this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictSupport {
    /// `posix_fadvise(POSIX_FADV_DONTNEED)` was issued after flushing dirty pages.
    Fadvise,
    /// The platform has no per-file eviction call usable without root (macOS).
    Unsupported,
}

/// Ask the kernel to drop the page-cache pages of `file[offset..offset+len]`.
///
/// Must be called with no live mapping of the range in this process: mapped pages are not
/// dropped. Dirty pages cannot be dropped either, hence the `sync_data` first.
pub fn evict(file: &File, offset: u64, len: u64) -> std::io::Result<EvictSupport> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::io::AsRawFd;
        // fdatasync on a read-only descriptor fails with EBADF on some filesystems; it is
        // only needed when the pages are dirty, so a failure is not fatal here.
        let _ = file.sync_data();
        let off = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::other("offset does not fit off_t"))?;
        let l = libc::off_t::try_from(len)
            .map_err(|_| std::io::Error::other("length does not fit off_t"))?;
        // SAFETY: plain syscall on a valid descriptor.
        let rc =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), off, l, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(EvictSupport::Fadvise)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (file, offset, len);
        Ok(EvictSupport::Unsupported)
    }
}

/// Keep one glibc malloc arena for the whole process (`mallopt(M_ARENA_MAX, 1)`), called
/// before starting compute threads: the engine's forward pass runs on a pool thread,
/// whose allocations (the KV cache among them) would otherwise grow a second arena that
/// reuses none of the main heap's free space, so a two-thread run's RSS came out 4–8 MiB
/// above a one-thread run's on the SmolLM2 fixture (mapped, 96-token context: 124.4 and
/// 124.8 MiB against 119.7 and 119.9 with one arena, decode speed unchanged). Whether it
/// was set: `false` off glibc.
pub fn single_malloc_arena() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning; called before threads
        // allocate, as glibc recommends, though it is thread-safe either way.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Ask the kernel to back the 2 MiB-aligned part of `buf` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), before it is first written: a buffer read in full again
/// and again (a resident model's weights) then costs a TLB miss per 2 MiB instead of per
/// 4 KiB. Whether it took: `false` where the OS has no such advice, the buffer holds no
/// aligned 2 MiB, or the kernel refused (THP `never`). Advice only: the contents and the
/// memory charged do not change.
pub fn advise_huge_pages(buf: &mut [u8]) -> bool {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) / HUGE * HUGE;
    if end <= start {
        return false;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: [start, end) lies inside `buf`, which this call borrows mutably; the
        // advice changes how its pages are backed, not their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        false
    }
}

/// Fraction of the pages of `[ptr, ptr+len)` that are resident, from `mincore()`.
///
/// `ptr` may be unaligned; the range is widened to whole pages. Returns `None` if mincore
/// is unavailable or fails.
pub fn resident_fraction(ptr: *const u8, len: usize) -> Option<f64> {
    resident_pages(ptr, len).map(|(res, total)| {
        if total == 0 {
            0.0
        } else {
            res as f64 / total as f64
        }
    })
}

/// (resident pages, total pages) of a mapped range.
pub fn resident_pages(ptr: *const u8, len: usize) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        if len == 0 {
            return Some((0, 0));
        }
        let page = page_size() as usize;
        let start = (ptr as usize) & !(page - 1);
        let end = (ptr as usize).checked_add(len)?;
        let span = end - start;
        let pages = span.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: [start, start+span) lies within one live mapping (the caller's `ptr` points
        // into a memmap2 mapping, which is itself page aligned); `vec` has one byte per page.
        let rc =
            unsafe { libc::mincore(start as *mut libc::c_void, span, vec.as_mut_ptr() as *mut _) };
        if rc != 0 {
            return None;
        }
        let resident = vec.iter().filter(|&&b| b & 1 != 0).count() as u64;
        return Some((resident, pages as u64));
    }
    #[allow(unreachable_code)]
    {
        let _ = (ptr, len);
        None
    }
}

/// Bytes of `[ptr, ptr+len)` mapped into this process's page tables (the `Rss` of its
/// entries in `/proc/self/smaps`): what the range adds to RSS, which `mincore` cannot
/// tell (it reports the page cache, shared with every other process). `None` off Linux.
pub fn mapped_rss_bytes(ptr: *const u8, len: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(smaps_rss_in(
        &text,
        ptr as u64,
        (ptr as u64).saturating_add(len as u64),
    ))
}

/// The summed `Rss:` of the smaps entries that lie inside `[lo, hi)`.
fn smaps_rss_in(text: &str, lo: u64, hi: u64) -> u64 {
    let mut inside = false;
    let mut total = 0;
    for line in text.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-').filter(|_| !head.ends_with(':')) {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                inside = a >= lo && b <= hi.next_multiple_of(page_size());
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                let kb = kb.trim().trim_end_matches("kB").trim();
                total += kb.parse::<u64>().unwrap_or(0) * 1024;
            }
        }
    }
    total
}

/// Whether `mincore()` reports page-cache state (not just this process's page tables) for a
/// mapping of `path`. Since Linux 5.0 it does so only for the file's owner or a process that
/// may write it; otherwise untouched-but-cached pages read as absent and a "cold" fraction
/// would be a lie.
pub fn residency_verifiable(path: &Path) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        // SAFETY: geteuid has no preconditions.
        if meta.uid() == unsafe { libc::geteuid() } {
            return true;
        }
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: valid NUL-terminated path.
        return unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
    }
    #[allow(unreachable_code)]
    {
        let _ = path;
        cfg!(unix)
    }
}

/// Reset the peak-RSS mark (VmHWM) to the current RSS so a later reading covers only what
/// follows (Linux >= 4.0, via /proc/self/clear_refs). Returns false where unsupported.
pub fn reset_peak_rss() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        return std::fs::write("/proc/self/clear_refs", b"5").is_ok();
    }
    #[allow(unreachable_code)]
    false
}

/// This process's resource usage, if getrusage works here.
#[cfg(unix)]
fn rusage() -> Option<libc::rusage> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } == 0 {
        // SAFETY: getrusage succeeded, so it filled the struct.
        return Some(unsafe { ru.assume_init() });
    }
    None
}

/// Cumulative (major, minor) page faults of this process.
pub fn faults() -> (u64, u64) {
    #[cfg(unix)]
    if let Some(ru) = rusage() {
        return (ru.ru_majflt as u64, ru.ru_minflt as u64);
    }
    (0, 0)
}

/// User + system CPU seconds of this process so far (all threads): with wall time this
/// tells how fast code would run on a machine not shared with other work.
pub fn cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    if let Some(ru) = rusage() {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        return Some(tv(ru.ru_utime) + tv(ru.ru_stime));
    }
    #[allow(unreachable_code)]
    None
}

/// Peak resident set size from getrusage (bytes). Linux/Android report KiB, macOS bytes.
pub fn ru_maxrss_bytes() -> Option<u64> {
    #[cfg(unix)]
    if let Some(ru) = rusage() {
        let v = ru.ru_maxrss.max(0) as u64;
        return Some(if cfg!(target_vendor = "apple") {
            v
        } else {
            v * 1024
        });
    }
    #[allow(unreachable_code)]
    None
}

/// Current resident size in bytes on macOS (no anon/file split is exposed there).
#[cfg(target_vendor = "apple")]
pub fn macos_resident_bytes() -> Option<u64> {
    let mut info = std::mem::MaybeUninit::<libc::proc_taskinfo>::zeroed();
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: valid out-buffer of `size` bytes for PROC_PIDTASKINFO about ourselves.
    let n = unsafe {
        libc::proc_pidinfo(
            libc::getpid(),
            libc::PROC_PIDTASKINFO,
            0,
            info.as_mut_ptr() as *mut libc::c_void,
            size,
        )
    };
    if n != size {
        return None;
    }
    // SAFETY: the call filled the whole struct.
    Some(unsafe { info.assume_init() }.pti_resident_size)
}

/// The block size of [`cold_read`].
const COLD_READ_BLOCK: u64 = 4 << 20;

/// (offset, bytes) of each read of [`cold_read`]: the whole file, or `limit / block`
/// blocks spread evenly from its start to its end, at 4 KiB-aligned offsets.
fn read_spans(len: u64, limit: Option<u64>) -> Vec<(u64, u64)> {
    match limit {
        Some(l) if l < len => {
            let n = (l / COLD_READ_BLOCK).max(1);
            let room = len.saturating_sub(COLD_READ_BLOCK);
            let stride = if n > 1 { room / (n - 1) } else { 0 };
            (0..n)
                .map(|i| (i * stride / 4096 * 4096, COLD_READ_BLOCK.min(len)))
                .collect()
        }
        _ => vec![(0, len)],
    }
}

/// Bytes per second of a cold read of `file` (at `path`) in 4 MiB blocks, with
/// `O_DIRECT` where the file system takes it (as streamed weights are read), and whether
/// it did. The file's pages are dropped before and after. With `limit`, a file larger
/// than that is sampled: `limit / 4 MiB` blocks spread evenly over it, so a check of a
/// many-GB model costs a bounded read. The reads are repeated (each pass cold) until
/// `min_seconds` have passed: a disk that bursts for its first fraction of a second (a
/// flash write cache, a throttle's first slice) is then timed at the rate it holds.
pub fn cold_read(
    file: &File,
    path: &Path,
    limit: Option<u64>,
    min_seconds: f64,
) -> std::io::Result<(f64, bool)> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = COLD_READ_BLOCK as usize;
    const ALIGN: usize = 4096;
    let len = file.metadata()?.len();
    let spans = read_spans(len, limit);
    evict(file, 0, len)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let direct: Option<File> = {
        let _ = path;
        None
    };
    let mut raw = vec![0u8; BLOCK + ALIGN];
    let at0 = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[at0..at0 + BLOCK];
    let read_all = |f: &File, buf: &mut [u8], buffered: bool| -> std::io::Result<f64> {
        let t0 = std::time::Instant::now();
        let mut total = 0u64;
        loop {
            if buffered {
                evict(file, 0, len)?;
            }
            for &(start, bytes) in &spans {
                let end = (start + bytes).min(len);
                let mut at = start;
                while at < end {
                    match f.read_at(buf, at)? {
                        0 => break,
                        n => at += n as u64,
                    }
                }
                if at < end {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    ));
                }
                total += at - start;
            }
            // An empty file would loop for ever.
            if len == 0 || t0.elapsed().as_secs_f64() >= min_seconds {
                break;
            }
        }
        Ok(total as f64 / t0.elapsed().as_secs_f64().max(1e-9))
    };
    let r = match direct.as_ref().map(|d| read_all(d, buf, false)) {
        Some(Ok(bw)) => (bw, true),
        // No O_DIRECT here (or it refused the read): through the page cache.
        _ => (read_all(file, buf, true)?, false),
    };
    evict(file, 0, len)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_malloc_arena_is_taken_on_glibc() {
        assert_eq!(
            single_malloc_arena(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }

    #[test]
    fn huge_page_advice_needs_an_aligned_2_mib_and_keeps_the_contents() {
        let mut small = vec![7u8; 1 << 20];
        assert!(
            !advise_huge_pages(&mut small),
            "1 MiB holds no aligned 2 MiB"
        );
        assert!(small.iter().all(|&b| b == 7));
        let mut big = vec![0u8; 8 << 20];
        big[12345] = 9;
        let took = advise_huge_pages(&mut big);
        assert_eq!(big[12345], 9);
        #[cfg(target_os = "linux")]
        {
            // A kernel with transparent huge pages takes the advice (it may still
            // decline to back the range when they are off, "[never]").
            let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
            if let Ok(t) = thp {
                assert!(took || t.contains("[never]"), "{t}");
            }
        }
        let _ = took;
    }

    #[test]
    fn a_limited_cold_read_samples_blocks_spread_over_the_file() {
        const B: u64 = COLD_READ_BLOCK;
        assert_eq!(read_spans(10 * B, None), [(0, 10 * B)]);
        assert_eq!(read_spans(10 * B, Some(10 * B)), [(0, 10 * B)]);
        // 3 blocks of a 10-block file: its start, its middle, its last block.
        assert_eq!(
            read_spans(10 * B, Some(3 * B + 5)),
            [(0, B), (9 * B / 2, B), (9 * B, B)]
        );
        // A limit under one block still reads one; a file under one block is read whole.
        assert_eq!(read_spans(10 * B, Some(1)), [(0, B)]);
        assert_eq!(read_spans(B / 2, Some(1)), [(0, B / 2)]);
        // Never past the end, never overlapping, never more than the limit.
        for (len, limit) in [
            (1000 * B + 12345, 64 * B),
            (65 * B, 64 * B),
            (7 * B + 1, 2 * B),
        ] {
            let s = read_spans(len, Some(limit));
            assert!(s.iter().map(|x| x.1).sum::<u64>() <= limit);
            assert!(s.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "{s:?}");
            assert!(
                s.iter().all(|&(o, b)| o % 4096 == 0 && o + b <= len),
                "{s:?}"
            );
        }
    }

    #[test]
    fn smaps_rss_counts_only_entries_inside_the_range() {
        let text = "\
1000-3000 r--p 00000000 08:01 7 /m.gguf
Size:                  8 kB
Rss:                   4 kB
VmFlags: rd mr
3000-5000 r--p 00002000 08:01 7 /m.gguf
Rss:                   8 kB
9000-a000 rw-p 00000000 00:00 0
Rss:                 100 kB
";
        assert_eq!(smaps_rss_in(text, 0x1000, 0x5000), 12 * 1024);
        assert_eq!(smaps_rss_in(text, 0x1000, 0x3000), 4 * 1024);
        assert_eq!(smaps_rss_in(text, 0x6000, 0x8000), 0);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn mapped_rss_grows_with_the_pages_touched() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; 64 * 4096]).unwrap();
        // SAFETY: a private read-only map of a temp file nobody else writes.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let before = mapped_rss_bytes(map.as_ptr(), map.len()).unwrap();
        let mut sum = 0u64;
        for p in (0..32).map(|i| i * 4096) {
            sum += std::hint::black_box(map[p]) as u64;
        }
        assert_eq!(sum, 32);
        let after = mapped_rss_bytes(map.as_ptr(), map.len()).unwrap();
        // Every touched page is mapped; fault-around may map a few more.
        assert!(after >= before.max(32 * 4096), "{before} -> {after}");
        assert!(after <= map.len() as u64, "{after}");
    }

    #[cfg(unix)]
    #[test]
    fn cpu_time_advances_with_work() {
        let before = cpu_seconds().unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().unwrap() > before);
    }
}
