//! The memory probe on a small table, alone in its test binary: it reads the process's
//! RSS, which tests running beside it on other threads would move (one freeing 25 MiB
//! while the placeholder was sampled once failed the growth check).

use dhurandhar_profile::*;

mod common;
use common::*;

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn memory_probe_sees_the_placeholder() {
    let dir = tmp();
    let (p, g) = table(dir.path(), 4096);
    let prof = Profiler::open(&p, 0, g).unwrap();
    let m = prof
        .memory_probe(500, 25, 32 << 20, 0, true, &mut no_progress)
        .unwrap();
    assert_eq!(m.samples, 20);
    assert!(m.peak_reset);
    if !on_tmpfs(&p) {
        assert!(m.started_cold);
        // 500 random 1 KiB rows with MADV_RANDOM: at most ~500 pages of the 1024 come in.
        assert!(m.table_resident_bytes.unwrap() <= 600 * 4096, "{m:?}");
    }
    // The reset peak covers the probe: it holds the placeholder but is not the whole history.
    assert!(m.end.peak_rss_bytes.unwrap() >= 32 << 20);
    let grew = m.after_placeholder.rss_anon_bytes.unwrap() - m.baseline.rss_anon_bytes.unwrap();
    assert!(grew >= 30 << 20, "anon grew by {grew}");
    assert!(m.table_resident_bytes.unwrap() > 0);
    assert!(m.steady_rss_bytes.unwrap() <= m.peak_sampled_rss_bytes.unwrap());
    assert!(prof
        .memory_probe(10, 5, u64::MAX / 2, 0, false, &mut no_progress)
        .is_err());
}
