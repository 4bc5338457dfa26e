//! The host probe on tiny sizes: it must write a device YAML that loads back as a device
//! and that `host` resolves to. No timing is asserted (speeds depend on the machine).

use dhurandhar::plan::resolve_device;
use dhurandhar::probe::{host_device_path, probe, ProbeOptions};
use dhurandhar::{CancelToken, NoProgress};
use dhurandhar_plan::DeviceProfile;

#[test]
fn tiny_probe_writes_a_loadable_host_device() {
    // One test in this binary, so setting the cache directory races with nothing.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("DHURANDHAR_CACHE", cache.path());
    let e = resolve_device("host").unwrap_err().to_string();
    assert!(e.contains("host") && e.contains("probe"), "{e}");

    // The flash file goes under the target dir: on disk, so eviction can work.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let o = ProbeOptions {
        scratch_dir: Some(scratch.path().to_path_buf()),
        memory_array_bytes: 1 << 20,
        flash_file_bytes: 2 << 20,
        random_reads: 16,
        matmul_dim: 64,
        matmul_tokens: 4,
        repeats: 1,
        ..ProbeOptions::default()
    };
    let r = probe(&o, &NoProgress, &CancelToken::new()).unwrap();
    assert_eq!(r.path, host_device_path().display().to_string());
    let text = std::fs::read_to_string(host_device_path()).unwrap();
    let d = DeviceProfile::from_yaml_str(&text, "host.yaml", "x").unwrap();
    assert_eq!(d, r.device);
    assert_eq!(d.slug, "host");
    assert!(d.memory_bandwidth_gbps.is_some() && d.compute_int8_gops.is_some());
    assert!(d.flash_random_read_iops.is_some() && d.measured_at.is_some());
    assert_eq!(resolve_device("HOST").unwrap(), d);

    // The planner's prediction for a run of the fixture on the probed host.
    if let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) {
        let m = gguf.to_str().unwrap();
        let p = dhurandhar::plan::predict_run(m, 320, 256, &[(1, 50.0, 20.0)], Some(1 << 27), None)
            .unwrap();
        assert_eq!(p.device, "host");
        assert_eq!(p.threads.len(), 1);
        let t = &p.threads[0];
        // error = (predicted - measured) / measured x 100, measured decode = 20 tok/s.
        let want = (t.decode_tps.unwrap() - 20.0) / 20.0 * 100.0;
        assert!((t.decode_error_pct.unwrap() - want).abs() < 1e-9);
        // The checkpoint's weights (92 MiB) and an f32 KV cache are in the predicted RSS.
        assert!(p.peak_rss_bytes > 92 << 20, "{}", p.peak_rss_bytes);
        let own = dhurandhar::plan::predict_run(m, 320, 256, &[], None, Some(10 << 20)).unwrap();
        assert!(
            own.peak_rss_bytes < p.peak_rss_bytes,
            "runtime bytes replace the profile's"
        );
    }
    // A cancelled probe stops before writing anything new.
    let c = CancelToken::new();
    c.cancel();
    let o2 = ProbeOptions {
        output: Some(cache.path().join("other.yaml")),
        ..o
    };
    assert!(probe(&o2, &NoProgress, &c).is_err());
    assert!(!cache.path().join("other.yaml").exists());
}
