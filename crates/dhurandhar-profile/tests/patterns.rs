//! End-to-end runs of the profiler on small files in the target dir (a real disk, not tmpfs,
//! so that eviction can work).

use dhurandhar_profile::*;

mod common;
use common::*;

#[test]
fn every_pattern_gives_sane_warm_numbers() {
    let dir = tmp();
    let (p, g) = table(dir.path(), 4096); // 4 MiB
    let prof = Profiler::open(&p, 0, g.clone()).unwrap();
    let opts = RunOptions {
        num_tokens: 2000,
        warmup_tokens: 20,
        ..Default::default()
    };
    for pat in Pattern::ALL {
        let mut last = 0;
        let r = prof
            .run(pat, Mode::Warm, &opts, &mut |d, t| {
                assert!(d >= last && d <= t);
                last = d;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(last, 2000);
        let tps = r.tokens_per_s.unwrap();
        assert!(tps > 1000.0, "{pat:?}: {tps} tok/s warm");
        let mbps = r.mb_per_s.unwrap();
        assert!((mbps - tps * 1024.0 / 1048576.0).abs() < 1e-6 * mbps);
        let (p50, p99, p999, max) = (
            r.p50_us.unwrap(),
            r.p99_us.unwrap(),
            r.p999_us.unwrap(),
            r.max_us.unwrap(),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "{r:?}"
        );
        // Mean latency cannot exceed the wall time per token.
        assert!(r.mean_us.unwrap() <= 1e6 / tps * 1.01);
        assert_eq!(r.eviction, None);
        if prof.residency_verifiable() {
            assert!(r.resident_fraction_before.unwrap() > 0.99);
        }
    }
}

#[test]
fn scatter_touches_more_pages_than_decode() {
    // Same table, same token count: a decode step reads one contiguous 1 KiB row, a scatter
    // step reads 8 slices from 8 random places, so it needs far more distinct pages.
    let dir = tmp();
    let (p, g) = table(dir.path(), 16384); // 16 MiB
    let prof = Profiler::open(&p, 0, g).unwrap();
    if !prof.residency_verifiable() {
        return;
    }
    let opts = RunOptions {
        num_tokens: 300,
        warmup_tokens: 0,
        advice: Advice::Random,
        ..Default::default()
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if on_tmpfs(&p) {
        return;
    }
    let dec = prof
        .run(Pattern::RandomDecode, Mode::Cold, &opts, &mut no_progress)
        .unwrap();
    let sca = prof
        .run(Pattern::RandomScatter, Mode::Cold, &opts, &mut no_progress)
        .unwrap();
    let (d, s) = (
        dec.resident_fraction_after.unwrap(),
        sca.resident_fraction_after.unwrap(),
    );
    assert!(s > 3.0 * d, "scatter {s} vs decode {d}");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn cold_is_verified_cold_and_warm_is_warm() {
    let dir = tmp();
    let (p, g) = table(dir.path(), 8192); // 8 MiB
    let prof = Profiler::open(&p, 0, g).unwrap();
    assert!(
        prof.residency_verifiable(),
        "we created the file, so we own it"
    );
    let opts = RunOptions {
        num_tokens: 300,
        warmup_tokens: 10,
        ..Default::default()
    };
    let warm = prof
        .run(Pattern::RandomDecode, Mode::Warm, &opts, &mut no_progress)
        .unwrap();
    assert!(warm.resident_fraction_before.unwrap() > 0.99, "{warm:?}");
    let cold = prof
        .run(Pattern::RandomDecode, Mode::Cold, &opts, &mut no_progress)
        .unwrap();
    if on_tmpfs(&p) {
        // tmpfs pages cannot be dropped: the profiler must say so and report no number.
        assert_eq!(cold.eviction, Some(Eviction::Failed));
        assert_eq!(cold.tokens_per_s, None);
        return;
    }
    assert_eq!(cold.eviction, Some(Eviction::Evicted), "{cold:?}");
    let before = cold.resident_fraction_before.unwrap();
    assert!(before < 0.05, "cold run started {before} resident");
    // MADV_RANDOM: every new row is a read from disk, i.e. a major fault.
    assert!(cold.major_faults >= 50, "{cold:?}");
    assert!(
        cold.p50_us.unwrap() > warm.p50_us.unwrap(),
        "cold {cold:?} warm {warm:?}"
    );
    // The cold run pulled in only what it touched (plus a little), not the whole file.
    assert!(cold.resident_fraction_after.unwrap() < 0.5, "{cold:?}");
    // And a direct check of the eviction primitive.
    prof.warm().unwrap();
    assert!(prof.resident_fraction().unwrap().unwrap() > 0.99);
    prof.evict().unwrap();
    assert!(prof.resident_fraction().unwrap().unwrap() < 0.05);
}

#[test]
fn region_beyond_file_end_is_an_error() {
    let dir = tmp();
    let (p, g) = table(dir.path(), 4096);
    let err = Profiler::open(&p, 1, g).unwrap_err();
    assert!(matches!(err, ProfileError::RegionOutOfFile { .. }), "{err}");
    assert!(err.to_string().contains("t.bin"), "{err}");
    let g2 = TableGeometry::new(TableKind::FileRegion, 4096, 1, 1024).unwrap();
    assert!(Profiler::open(&p, 0, g2).is_ok());
    assert!(Profiler::open(
        &dir.path().join("missing.bin"),
        0,
        TableGeometry::new(TableKind::FileRegion, 1, 1, 1).unwrap()
    )
    .is_err());
}

#[test]
fn unaligned_region_works_and_zero_tokens_is_an_error() {
    let dir = tmp();
    let (p, _) = table(dir.path(), 4096);
    let g = TableGeometry::new(TableKind::FileRegion, 1000, 1, 360).unwrap();
    let prof = Profiler::open(&p, 12_345, g).unwrap();
    let r = prof
        .run(
            Pattern::RandomScatter,
            Mode::Warm,
            &RunOptions {
                num_tokens: 100,
                ..Default::default()
            },
            &mut no_progress,
        )
        .unwrap();
    assert!(r.tokens_per_s.unwrap() > 0.0);
    let zero = RunOptions {
        num_tokens: 0,
        ..Default::default()
    };
    assert!(prof
        .run(Pattern::RandomDecode, Mode::Warm, &zero, &mut no_progress)
        .is_err());
}

#[test]
fn a_break_from_progress_cancels_the_run() {
    let dir = tmp();
    let (p, g) = table(dir.path(), 4096);
    let prof = Profiler::open(&p, 0, g).unwrap();
    let opts = RunOptions {
        num_tokens: 10_000,
        warmup_tokens: 0,
        ..Default::default()
    };
    let mut seen = 0;
    let err = prof
        .run(Pattern::RandomDecode, Mode::Warm, &opts, &mut |d, _| {
            seen = d;
            if d >= 512 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, ProfileError::Cancelled), "{err}");
    assert_eq!(seen, 512, "stopped at the first report past the limit");
}
