//! The host probe on tiny sizes: it must write a device YAML that loads back as a device
//! and that `host` resolves to. No timing is asserted (speeds depend on the machine).

use dhurandhar::generate::{StorePlan, WeightMode};
use dhurandhar::plan::{resolve_device, FlashReadSource};
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
        matvec_bytes: 1 << 20,
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
    // A one-token matvec rate for every type the engine computes with, per thread count.
    let mv = d.matvec.as_ref().expect("the probe measures matvec rates");
    assert_eq!(mv.threads[0], 1);
    assert_eq!(mv.call_overhead_ns.len(), mv.threads.len());
    assert!(
        mv.call_overhead_ns
            .iter()
            .all(|c| c.is_finite() && *c >= 0.0),
        "{:?}",
        mv.call_overhead_ns
    );
    for t in [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "IQ4_XS",
    ] {
        assert_eq!(mv.gweights_per_s[t].len(), mv.threads.len(), "{t}");
        assert_eq!(mv.prefill_gops[t].len(), mv.threads.len(), "{t}");
        assert_eq!(mv.row_overhead_ns[t].len(), mv.threads.len(), "{t}");
    }
    assert_eq!(mv.attention_gflops.len(), mv.threads.len());
    assert_eq!(mv.attention_ram_gflops.len(), mv.threads.len());
    let v = mv
        .vector_ns
        .expect("the probe measures a layer's vector work");
    assert!(
        v.per_width >= 0.0 && v.per_ffn >= 0.0 && v.per_width + v.per_ffn > 0.0,
        "{v:?}"
    );
    // Flash: one pass after the file's other reads, then after the triad, the matmuls and
    // the matvecs; the profile keeps their median.
    let passes = &r.flash.sequential_passes_gbps;
    assert_eq!(passes.len(), 4, "{passes:?}");
    assert_eq!(
        r.flash.sequential_gbps,
        dhurandhar_kv::metrics::median(passes)
    );
    // Where the engine interleaves resident weights, those layouts are measured too.
    if dhurandhar_engine::kernels::simd().avx2() {
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K"] {
            let k = format!("{t}{}", dhurandhar_plan::INTERLEAVED);
            assert_eq!(mv.gweights_per_s[&k].len(), mv.threads.len(), "{k}");
        }
        assert!(!mv.gweights_per_s.contains_key("Q6_K@x8"));
        assert!(d.compute_int8_interleaved_gops.is_some());
    }
    assert_eq!(resolve_device("HOST").unwrap(), d);

    // The planner's prediction for a run of the fixture on the probed host.
    if let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) {
        let m = gguf.to_str().unwrap();
        let facts = dhurandhar::plan::RunFacts {
            model: m,
            context: 320,
            prefill_chunk: 256,
            threads: &[(1, 50.0, 20.0)],
            measured_peak_rss: Some(1 << 27),
            runtime_bytes: None,
            weight_mode: WeightMode::Resident,
            store: None,
            measured_flash_bytes_per_token: None,
            file_read_bytes_per_s: None,
        };
        let p = dhurandhar::plan::predict_run(&facts).unwrap();
        assert_eq!(p.device, "host");
        assert_eq!(p.threads.len(), 1);
        let t = &p.threads[0];
        // error = (predicted - measured) / measured x 100, measured decode = 20 tok/s.
        let want = (t.decode_tps.unwrap() - 20.0) / 20.0 * 100.0;
        assert!((t.decode_error_pct.unwrap() - want).abs() < 1e-9);
        // Resident weights: RAM or compute sets the ceiling, never flash (which of the two
        // depends on this tiny, in-cache probe).
        assert!(
            matches!(
                t.decode_bound,
                Some(
                    dhurandhar_plan::BoundKind::Compute
                        | dhurandhar_plan::BoundKind::MemoryBandwidth
                )
            ),
            "{:?}",
            t.decode_bound
        );
        assert_eq!(p.flash_bytes_per_token, 0);
        // The checkpoint's weights (92 MiB) and an f32 KV cache are in the predicted RSS.
        assert!(p.peak_rss_bytes > 92 << 20, "{}", p.peak_rss_bytes);
        let own = dhurandhar::plan::predict_run(&dhurandhar::plan::RunFacts {
            threads: &[],
            measured_peak_rss: None,
            runtime_bytes: Some(10 << 20),
            ..facts.clone()
        })
        .unwrap();
        assert!(
            own.peak_rss_bytes < p.peak_rss_bytes,
            "runtime bytes replace the profile's"
        );
        // Streamed: the engine's buffers instead of the weights, its reads from flash.
        let store = StorePlan {
            budget_bytes: Some(48 << 20),
            kv_bytes: 0,
            activation_bytes: 0,
            resident_bytes: 1 << 20,
            fixed_bytes: 0,
            pool_bytes: 30 << 20,
            buffer_bytes: 20 << 20,
            window_slots: 2,
            pinned_layers: 3,
            head_chunks: 4,
            pinned_head_chunks: 0,
            streamed_bytes_per_pass: 70 << 20,
            expert_cache_bytes: 0,
            expert_bytes: 0,
        };
        let s = dhurandhar::plan::predict_run(&dhurandhar::plan::RunFacts {
            weight_mode: WeightMode::Stream,
            store: Some(&store),
            runtime_bytes: Some(10 << 20),
            ..facts.clone()
        })
        .unwrap();
        assert_eq!(s.flash_bytes_per_token, 70 << 20);
        // RSS: runtime 10 MiB + norms 1 MiB + buffers 20 MiB + the f32 KV cache (30 layers
        // x 320 tokens x 3 KV heads x 64 x 2 x 4 B = 14_745_600) + activations (< 16 MiB).
        let rest = s.peak_rss_bytes - (31 << 20);
        assert!(
            (14_745_600..14_745_600 + (16 << 20)).contains(&rest),
            "{rest}"
        );
        // 70 MiB per token from a flash of the probed speed bounds decoding.
        let fl = s.threads[0].decode_tps.unwrap();
        assert!(
            fl <= d.flash_read_gbps * 1e9 / (70u64 << 20) as f64 + 1e-9,
            "{fl}"
        );
        assert_eq!(s.flash_read_source, FlashReadSource::HostProfile);
        assert_eq!(s.flash_read_gbps, d.flash_read_gbps);
        // The model file read at 0.2 GB/s just before the run replaces the profile's
        // figure: 0.2e9 / 73_400_320 B = 2.7248 tokens/s, far under any compute bound.
        let slow = dhurandhar::plan::predict_run(&dhurandhar::plan::RunFacts {
            weight_mode: WeightMode::Stream,
            store: Some(&store),
            file_read_bytes_per_s: Some(0.2e9),
            ..facts.clone()
        })
        .unwrap();
        assert_eq!(slow.flash_read_source, FlashReadSource::ModelFile);
        assert_eq!(slow.flash_read_gbps, 0.2);
        let t = &slow.threads[0];
        assert!((t.decode_tps.unwrap() - 2.7248).abs() < 1e-3, "{t:?}");
        assert_eq!(t.decode_bound, Some(dhurandhar_plan::BoundKind::Flash));
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
