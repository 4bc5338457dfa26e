//! The speed bounds, worked by hand, and the verdict invariants they must keep.

use dhurandhar_model::{registry, ModelArchitecture};
use dhurandhar_plan::{
    analyze, assess, builtin_device, plan, BoundKind, Change, DeviceProfile, Mode, PlanOptions,
    WeightFormat,
};
use proptest::prelude::*;

fn m(slug: &str) -> ModelArchitecture {
    registry::get(slug).unwrap()
}

fn opts(ctx: u64, fmt: &str, kv: f64) -> PlanOptions {
    PlanOptions {
        context_tokens: ctx,
        weight_format: WeightFormat::parse(fmt).unwrap(),
        kv_bits: kv,
        ..PlanOptions::default()
    }
}

/// A device with round rates so the arithmetic is easy to follow.
fn device(
    ram_mb: f64,
    flash: f64,
    mem: f64,
    f32: f64,
    int8: f64,
    iops: Option<f64>,
) -> DeviceProfile {
    DeviceProfile {
        memory_bandwidth_gbps: Some(mem),
        compute_f32_gflops: Some(f32),
        compute_int8_gops: Some(int8),
        flash_random_read_iops: iops,
        cpu_cores: Some(4),
        ..DeviceProfile::custom(ram_mb, flash).unwrap()
    }
}

fn bound(a: &dhurandhar_plan::DeviceAssessment, k: BoundKind) -> f64 {
    a.bounds.iter().find(|b| b.kind == k).unwrap().tps.unwrap()
}

#[test]
fn qwen_bf16_per_token_work() {
    // qwen2.5-0.5b at bf16 (2 B per weight), context 4096, KV at a flat 16 bits.
    let p = plan(&m("qwen2.5-0.5b"), None, &opts(4096, "bf16", 16.0)).unwrap();
    let t = &p.per_token;
    // Decoder 357_870_464 params x 2 B = 715_740_928; the tied embedding is the LM head,
    // read whole every token: 136_134_656 x 2 B = 272_269_312.
    assert_eq!(t.weight_bytes, 715_740_928 + 272_269_312);
    // KV: 24 layers x 4096 tokens x (2 x 2 heads x 64) values x 2 B = 50_331_648.
    assert_eq!(t.kv_read_bytes, 50_331_648);
    // One embedding row: 896 x 2 B.
    assert_eq!(t.embedding_row_bytes, 1792);
    assert_eq!(t.ram_bytes, 988_010_240 + 50_331_648 + 1792);
    // Matmuls: 2 FLOP per weight used = 2 x (357_870_464 + 136_134_656).
    assert_eq!(t.matmul_flops, 988_010_240);
    // Attention: 24 layers x 4 x 14 heads x 64 x 4096 tokens.
    assert_eq!(t.attention_flops, 24 * 4 * 14 * 64 * 4096);
    assert_eq!(t.attention_flops, 352_321_536);
    assert!(!t.matmul_int8, "bf16 weights multiply in f32");
    // Prefill of 4096 tokens: each attends (4096 + 1) / 2 on average.
    assert_eq!(t.prefill_attention_flops, 24 * 4 * 14 * 64 * 4097 / 2);
    // In chunks of 512: (weights + KV / 2) / 512 = (988_010_240 + 25_165_824) / 512.
    assert_eq!(t.prefill_ram_bytes, 1_978_860);
}

#[test]
fn memory_and_compute_bounds_by_hand() {
    let p = plan(&m("qwen2.5-0.5b"), None, &opts(4096, "bf16", 16.0)).unwrap();
    // 100 GB/s RAM, 100 GFLOP/s f32, 400 Gop/s int8, 64 GiB: resident.
    let d = device(65536.0, 2.0, 100.0, 100.0, 400.0, None);
    let a = assess(&p, &d, 10.0);
    assert_eq!(a.mode, Mode::Resident);
    // Memory: 1e11 B/s / 1_038_343_680 B = 96.307 tok/s.
    let mem = bound(&a, BoundKind::MemoryBandwidth);
    assert!((mem - 1e11 / 1_038_343_680.0).abs() < 1e-9, "{mem}");
    assert!((mem - 96.307).abs() < 1e-3);
    // Compute (bf16 -> f32 rate for the matmuls too):
    // (988_010_240 + 352_321_536) / 1e11 s = 13.403 ms -> 74.608 tok/s.
    let comp = bound(&a, BoundKind::Compute);
    assert!((comp - 1e11 / 1_340_331_776.0).abs() < 1e-9, "{comp}");
    assert_eq!(a.binding_bound, Some(BoundKind::Compute));
    assert_eq!(a.decode_tps_ceiling, Some(comp));
    // No flash bound: nothing is read from flash when resident.
    assert!(a.bounds.iter().all(|b| b.kind != BoundKind::Flash));
    // A 80 tok/s target is out of reach at any RAM size.
    let slow = assess(&p, &d, 80.0);
    assert_eq!(slow.mode, Mode::Infeasible);
    assert!(
        slow.notes[0].contains("more RAM would not help"),
        "{:?}",
        slow.notes
    );
}

#[test]
fn quantized_weights_use_the_int8_rate() {
    let p = plan(&m("qwen2.5-0.5b"), None, &opts(4096, "q8_0", 16.0)).unwrap();
    assert!(p.per_token.matmul_int8);
    let d = device(65536.0, 2.0, 100.0, 100.0, 400.0, None);
    let a = assess(&p, &d, 1.0);
    // Same FLOPs as bf16; matmuls at 4e11, attention at 1e11:
    // 988_010_240 / 4e11 + 352_321_536 / 1e11 = 2.470 ms + 3.523 ms -> 166.85 tok/s.
    let want = 1.0 / (988_010_240.0 / 4e11 + 352_321_536.0 / 1e11);
    assert!((bound(&a, BoundKind::Compute) - want).abs() < 1e-9);
    assert!((want - 166.85).abs() < 0.01);
    // A checkpoint: its matrices' types decide, not the mean bits per weight. These
    // bytes average (400 M + 144 M) x 8 / 494 M weights = 8.8 bits (a Q8_0 file's f32
    // norms and rounding), and its Q8_0 matrices still run on int8.
    use std::collections::BTreeMap;
    let ckpt = |t: &str| dhurandhar_model::ComponentBytes {
        decoder_layers: 400_000_000,
        token_embeddings: 144_000_000,
        matmul_weights: BTreeMap::from([(t.to_string(), mats(358_000_000, 400_000, 168))]),
        token_embedding_weights: BTreeMap::from([(
            "Q8_0".to_string(),
            mats(136_000_000, 151_936, 1),
        )]),
        source: "x.gguf".into(),
        ..Default::default()
    };
    let q8 = plan(
        &m("qwen2.5-0.5b"),
        Some(&ckpt("Q8_0")),
        &opts(4096, "bf16", 16.0),
    )
    .unwrap();
    assert!(q8.per_token.matmul_int8);
    let f16 = plan(
        &m("qwen2.5-0.5b"),
        Some(&ckpt("F16")),
        &opts(4096, "bf16", 16.0),
    )
    .unwrap();
    assert!(!f16.per_token.matmul_int8);
}

#[test]
fn ple_flash_bound_by_hand() {
    // gemma4-e2b at plain 4 bits: a PLE row is 35 x 256 x 0.5 = 4480 B, which touches
    // 1 + 4479 / 4096 = 2.0935 pages of 4 KiB on average.
    let p = plan(&m("gemma4-e2b"), None, &opts(4096, "4bit", 4.0)).unwrap();
    let pages = 1.0 + 4479.0 / 4096.0;
    // Budget between the mmap and resident totals, so the verdict is mmap.
    let ram = (p.totals.ple_mmap_bytes + p.totals.resident_bytes) as f64 / 2.0 / 1048576.0;
    // 10_000 IOPS: a page costs max(4096 / 4.2e9 s, 1e-4 s) = 100 us -> 1 / 209.35 us.
    let d = device(ram, 4.2, 68.3, 400.0, 1600.0, Some(10_000.0));
    let a = assess(&p, &d, 1.0);
    assert_eq!(a.mode, Mode::Mmap);
    let flash = bound(&a, BoundKind::Flash);
    assert!((flash - 1.0 / (pages * 1e-4)).abs() < 1e-6, "{flash}");
    assert!((flash - 4776.6).abs() < 0.1);
    // IOPS unknown: the page is charged at sequential speed, 2.0935 x 4096 B / 4.2e9.
    let d2 = DeviceProfile {
        flash_random_read_iops: None,
        ..d
    };
    let a2 = assess(&p, &d2, 1.0);
    let seq = bound(&a2, BoundKind::Flash);
    assert!((seq - 4.2e9 / (pages * 4096.0)).abs() < 1e-3, "{seq}");
    // The binding bound of E2B on a phone is RAM bandwidth, not flash: weights + tied
    // head + KV per token at 68.3 GB/s.
    assert_eq!(a.binding_bound, Some(BoundKind::MemoryBandwidth));
    let mem = 68.3e9 / p.per_token.ram_bytes as f64;
    assert_eq!(a.decode_tps_ceiling, Some(mem));
}

#[test]
fn issue_examples() {
    // Gemma 4 E2B on the high-end phone: about 57 tok/s (memory-bandwidth bound), not
    // the 489,111 tok/s the flash-only rule printed.
    let p = plan(&m("gemma4-e2b"), None, &PlanOptions::default()).unwrap();
    let a = assess(&p, &builtin_device("high_end_mobile_ufs4").unwrap(), 15.0);
    let c = a.decode_tps_ceiling.unwrap();
    assert!(c > 50.0 && c < 65.0, "{c}");
    assert_eq!(a.binding_bound, Some(BoundKind::MemoryBandwidth));
    // qwen2.5-3b bf16 at a 60 tok/s target reads ~6 GB per token: never GO resident.
    let p = plan(&m("qwen2.5-3b"), None, &opts(4096, "bf16", 16.0)).unwrap();
    let a = assess(&p, &builtin_device("laptop_nvme").unwrap(), 60.0);
    assert_eq!(a.mode, Mode::Infeasible);
    assert!(a.decode_tps_ceiling.unwrap() < 60.0);
}

#[test]
fn stream_headroom_counts_the_cache_and_never_streams_zero() {
    let p = plan(&m("gemma4-e2b"), None, &PlanOptions::default()).unwrap();
    for d in dhurandhar_plan::builtin_devices() {
        let a = assess(&p, &d, 15.0);
        let s = a.modes.iter().find(|m| m.mode == Mode::Stream).unwrap();
        assert!(!s.note.contains("reads 0"), "{}", s.note);
        if s.viable {
            assert!(s.flash_bytes_per_token > p.per_token.ple_flash_bytes);
        }
        // Headroom after caching is never more than what the fixed part leaves.
        assert!(s.headroom_bytes <= d.ram_budget_bytes() as i64 - s.ram_bytes as i64);
        if a.mode == Mode::Infeasible && !a.notes[0].contains("more RAM would not help") {
            assert!(a.headroom_bytes < 0, "{}: {}", d.slug, a.headroom_bytes);
        }
    }
}

#[test]
fn old_profiles_leave_bounds_unchecked_not_infinite() {
    let p = plan(&m("qwen2.5-0.5b"), None, &opts(4096, "q4_0", 4.0)).unwrap();
    let d = DeviceProfile::custom(8192.0, 2.0).unwrap();
    let a = assess(&p, &d, 15.0);
    assert_eq!(a.mode, Mode::Resident);
    assert_eq!(a.decode_tps_ceiling, None);
    assert_eq!(
        a.unchecked_bounds,
        vec![BoundKind::MemoryBandwidth, BoundKind::Compute]
    );
    assert!(
        a.notes.iter().any(|n| n.contains("unchecked")),
        "{:?}",
        a.notes
    );
    let line = dhurandhar_plan::summary_line(&a, &dhurandhar_plan::describe_changes);
    assert!(
        line.contains("unchecked") && line.contains("speed unknown"),
        "{line}"
    );
}

#[test]
fn mitigations_are_ranked_and_keep_a_useful_context() {
    let a = m("gemma4-e2b");
    let devices = vec![builtin_device("mid_tier_mobile_ufs3").unwrap()];
    let r = analyze(&a, None, &PlanOptions::default(), &devices, 15.0).unwrap();
    let mit = &r.devices[0].mitigations;
    assert!(!mit.is_empty());
    assert!(mit.windows(2).all(|w| w[0].cost <= w[1].cost), "{mit:?}");
    // A floor above every workable context: no context change is offered.
    let o = PlanOptions {
        min_context_tokens: 30_000,
        ..PlanOptions::default()
    };
    let r = analyze(&a, None, &o, &devices, 15.0).unwrap();
    for mi in &r.devices[0].mitigations {
        for c in &mi.change {
            if let Change::ContextTokens(n) = c {
                assert!(*n >= 30_000, "{mi:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// No verdict is GO below the target speed, on any device with known rates; an
    /// infeasible verdict has negative headroom unless RAM cannot help; no context
    /// mitigation goes under the floor.
    #[test]
    fn no_go_below_target(
        idx in 0usize..13,
        ctx in 256u64..40_000,
        fmt in prop::sample::select(vec!["q4_0", "q8_0", "bf16", "int4", "q2_k"]),
        ram_mb in 256.0f64..65536.0,
        flash in 0.2f64..8.0,
        mem in 5.0f64..200.0,
        f32 in 10.0f64..2000.0,
        int8 in 10.0f64..8000.0,
        iops in 1000.0f64..1e6,
        target in 0.5f64..200.0,
    ) {
        let a = &registry::all()[idx];
        let o = PlanOptions { context_tokens: ctx, ..opts(ctx, fmt, 4.0) };
        let d = device(ram_mb, flash, mem, f32, int8, Some(iops));
        let r = analyze(a, None, &o, &[d], target).unwrap();
        let v = &r.devices[0];
        if v.mode != Mode::Infeasible {
            let c = v.decode_tps_ceiling.unwrap();
            prop_assert!(c >= target, "{} GO at {c} < {target}", a.name);
            prop_assert!(v.headroom_bytes >= 0);
        } else if !v.notes[0].contains("more RAM would not help") {
            prop_assert!(v.headroom_bytes < 0, "{}: {:?}", a.name, v.notes);
        }
        for mi in &v.mitigations {
            prop_assert!(mi.decode_tps_ceiling.unwrap() >= target);
            for c in &mi.change {
                if let Change::ContextTokens(n) = c {
                    prop_assert!(*n >= o.min_context_tokens);
                }
            }
        }
    }
}

fn mats(weights: u64, rows: u64, matrices: u64) -> dhurandhar_model::Matrices {
    dhurandhar_model::Matrices {
        weights,
        rows,
        matrices,
    }
}

/// A checkpoint's weights by stored type, timed at a device's one-token matvec costs.
#[test]
fn matvec_bound_by_hand() {
    use std::collections::BTreeMap;
    // qwen2.5-0.5b (tied) with made-up checkpoint bytes: 300 M decoder weights in 400 k
    // Q4_K rows and 50 M in 100 k Q6_K rows, a 136 M-weight Q8_0 token embedding (151,936
    // rows) that is also the LM head.
    let a = m("qwen2.5-0.5b");
    let w = dhurandhar_model::ComponentBytes {
        decoder_layers: 200_000_000,
        token_embeddings: 144_000_000,
        matmul_weights: BTreeMap::from([
            ("Q4_K".to_string(), mats(300_000_000, 400_000, 120)),
            ("Q6_K".to_string(), mats(50_000_000, 100_000, 48)),
        ]),
        token_embedding_weights: BTreeMap::from([(
            "Q8_0".to_string(),
            mats(136_000_000, 151_936, 1),
        )]),
        source: "x.gguf".into(),
        ..Default::default()
    };
    let p = plan(&a, Some(&w), &opts(1024, "bf16", 32.0)).unwrap();
    let by_type = &p.per_token.matmul_weights_by_type;
    assert_eq!(by_type["Q4_K"], mats(300_000_000, 400_000, 120));
    assert_eq!(
        by_type["Q8_0"],
        mats(136_000_000, 151_936, 1),
        "the tied embedding is the head"
    );
    // Rates: Q4_K 10, Q6_K 5, Q8_0 17 G weights/s on 4 threads, plus 5 and 10 ns per row
    // for Q4_K and Q6_K (none given for Q8_0: no row term) and 10 µs per call for the
    // 169 matrices; 1 GFLOP/s f32 for attention.
    let mut d = device(65536.0, 2.0, 1000.0, 1.0, 400.0, None);
    d.matvec = Some(dhurandhar_plan::MatvecRates {
        threads: vec![1, 4],
        gweights_per_s: BTreeMap::from([
            ("Q4_K".to_string(), vec![3.0, 10.0]),
            ("Q6_K".to_string(), vec![1.5, 5.0]),
            ("Q8_0".to_string(), vec![5.0, 17.0]),
        ]),
        row_overhead_ns: BTreeMap::from([
            ("Q4_K".to_string(), vec![20.0, 5.0]),
            ("Q6_K".to_string(), vec![40.0, 10.0]),
        ]),
        call_overhead_ns: vec![100.0, 10_000.0],
        attention_gflops: vec![],
        attention_ram_gflops: vec![],
        attention_kv_heads: None,
        vector_ns: None,
        prefill_gops: BTreeMap::new(),
    });
    d.validate().unwrap();
    let c = dhurandhar_plan::ceilings(&p, &d, 0.0);
    // 0.3/10 + 0.05/5 + 0.136/17 = 0.030 + 0.010 + 0.008 s; rows: 400k x 5 ns + 100k x
    // 10 ns = 0.002 + 0.001 s; calls: 169 x 10 µs = 0.00169 s; attention: 24 layers x 4
    // x 14 heads x 64 x 1024 tokens = 88_080_384 FLOP at 1e9 = 0.088080384 s.
    let secs = 0.03 + 0.01 + 0.008 + 0.002 + 0.001 + 0.00169 + 0.088_080_384;
    let compute = c
        .bounds
        .iter()
        .find(|b| b.kind == BoundKind::Compute)
        .unwrap();
    assert!(
        (compute.tps.unwrap() - 1.0 / secs).abs() < 1e-9,
        "{compute:?}"
    );
    assert_eq!(c.decode_bound, Some(BoundKind::Compute));
    // One thread: the first column.
    d.matvec = d.matvec.map(|m| m.only(1));
    let c1 = dhurandhar_plan::ceilings(&p, &d, 0.0);
    let secs1 = 0.1
        + 0.05 / 1.5
        + 0.136 / 5.0
        + 400e3 * 20e-9
        + 100e3 * 40e-9
        + 169.0 * 100e-9
        + 0.088_080_384;
    assert!((c1.decode_tps.unwrap() - 1.0 / secs1).abs() < 1e-9);
    // A measured attention rate (0.5 GFLOP/s on one thread) replaces the f32 one: the
    // attention term doubles to 0.176160768 s.
    d.matvec = d.matvec.map(|mut m| {
        m.attention_gflops = vec![0.5];
        m
    });
    d.validate().unwrap();
    let c1a = dhurandhar_plan::ceilings(&p, &d, 0.0);
    let secs1a = secs1 + 0.088_080_384;
    assert!((c1a.decode_tps.unwrap() - 1.0 / secs1a).abs() < 1e-9);
    let note = &c1a
        .bounds
        .iter()
        .find(|b| b.kind == BoundKind::Compute)
        .unwrap()
        .note;
    assert!(note.contains("attention at the measured rate"), "{note}");
    // Attention with its cache in RAM measured at half the in-cache rate (0.25 GFLOP/s):
    // a KV byte costs 0.5 FLOP/B x (1/0.25e9 - 1/0.5e9) s/FLOP = 1e-9 s. The f32 cache at
    // 1024 tokens is 2 (K, V) x 24 layers x 2 heads x 64 x 1024 x 4 B = 25,165,824 B,
    // so 0.025165824 s more.
    assert_eq!(p.per_token.kv_read_bytes, 25_165_824);
    d.matvec = d.matvec.map(|mut m| {
        m.attention_ram_gflops = vec![0.25];
        m
    });
    d.validate().unwrap();
    assert_eq!(
        d.matvec.as_ref().unwrap().kv_seconds_per_byte(1),
        Some(1e-9)
    );
    let c1k = dhurandhar_plan::ceilings(&p, &d, 0.0);
    assert!((c1k.decode_tps.unwrap() - 1.0 / (secs1a + 0.025_165_824)).abs() < 1e-9);
    let note = &c1k.bounds[1].note;
    assert!(
        note.contains("24 MiB of KV cache from RAM at 1 GB/s"),
        "{note}"
    );
    // RAM no slower than the cache: no charge.
    d.matvec = d.matvec.map(|mut m| {
        m.attention_ram_gflops = vec![0.6];
        m
    });
    assert_eq!(d.matvec.as_ref().unwrap().kv_seconds_per_byte(1), Some(0.0));
    // Vector work, serial whatever the threads: 25 x 896 width elements (24 layers and
    // the output norm) at 10 ns and 24 x 4,864 FFN elements at 5 ns, 224,000 + 583,680
    // ns = 0.00080768 s on top of the one-thread time above (the KV byte costs nothing).
    assert_eq!(p.per_token.vector_width_elements, 22_400);
    assert_eq!(p.per_token.vector_ffn_elements, 116_736);
    let mut dv = d.clone();
    dv.matvec = dv.matvec.map(|mut m| {
        m.vector_ns = Some(dhurandhar_plan::VectorCost {
            per_width: 10.0,
            per_ffn: 5.0,
        });
        m
    });
    dv.validate().unwrap();
    let cv = dhurandhar_plan::ceilings(&p, &dv, 0.0);
    assert!((cv.decode_tps.unwrap() - 1.0 / (secs1a + 0.000_807_68)).abs() < 1e-9);
    let note = &cv.bounds[1].note;
    assert!(note.contains("+ 808 µs of vector work"), "{note}");
    // Threads take whole KV heads. On 4 threads, with attention measured at 2 GFLOP/s
    // over 8 KV heads (2 a thread, none idle), this model's 2 KV heads keep 2 of the 4
    // threads busy: 2 / (4 x 1) = 0.5 of the rate, so its 88,080,384 attention FLOPs take
    // 0.088080384 s instead of 0.044040192. The matvecs are the 4-thread ones above:
    // 0.03 + 0.01 + 0.008 + 0.002 + 0.001 + 0.00169 = 0.05269 s.
    assert_eq!(
        p.per_token.attention_flops_by_kv_heads,
        BTreeMap::from([(2, 88_080_384)])
    );
    let four = |kv_heads: Option<u32>| {
        let mut d4 = d.clone();
        d4.matvec = Some(dhurandhar_plan::MatvecRates {
            threads: vec![4],
            gweights_per_s: BTreeMap::from([
                ("Q4_K".to_string(), vec![10.0]),
                ("Q6_K".to_string(), vec![5.0]),
                ("Q8_0".to_string(), vec![17.0]),
            ]),
            row_overhead_ns: BTreeMap::from([
                ("Q4_K".to_string(), vec![5.0]),
                ("Q6_K".to_string(), vec![10.0]),
            ]),
            call_overhead_ns: vec![10_000.0],
            attention_gflops: vec![2.0],
            attention_ram_gflops: vec![],
            attention_kv_heads: kv_heads,
            vector_ns: None,
            prefill_gops: BTreeMap::new(),
        });
        d4.validate().unwrap();
        dhurandhar_plan::ceilings(&p, &d4, 0.0)
    };
    let split = four(Some(8));
    assert!((split.decode_tps.unwrap() - 1.0 / (0.05269 + 0.088_080_384)).abs() < 1e-9);
    let note = &split.bounds[1].note;
    assert!(
        note.contains("(× 0.50: 2 KV heads split over the threads)"),
        "{note}"
    );
    // Prefill at each type's batched rate (100, 50 and 200 G op/s on 4 threads): per
    // prompt token 2 x 300e6 / 100e9 + 2 x 50e6 / 50e9 + 2 x 136e6 / 200e9 = 0.006 +
    // 0.002 + 0.00136 s of matmuls, and 24 layers x 4 x 14 heads x 64 x 512.5 mean
    // attended positions = 44,083,200 FLOP of attention at the f32 1 GFLOP/s.
    assert_eq!(p.per_token.prefill_attention_flops, 44_083_200);
    let mut dp = d.clone();
    let mut rates = dhurandhar_plan::MatvecRates {
        threads: vec![4],
        gweights_per_s: BTreeMap::from([("Q4_K".to_string(), vec![10.0])]),
        prefill_gops: BTreeMap::from([
            ("Q4_K".to_string(), vec![100.0]),
            ("Q6_K".to_string(), vec![50.0]),
            ("Q8_0".to_string(), vec![200.0]),
        ]),
        ..Default::default()
    };
    dp.matvec = Some(rates.clone());
    dp.validate().unwrap();
    let cp = dhurandhar_plan::ceilings(&p, &dp, 0.0);
    assert!((cp.prefill_tps.unwrap() - 1.0 / (0.00936 + 0.044_083_2)).abs() < 1e-9);
    let note = &cp.prefill_bounds.last().unwrap().note;
    assert!(
        note.contains("each type's batched rate (Q4_K, Q6_K, Q8_0)"),
        "{note}"
    );
    // A type without a batched rate: the one int8 figure for every matmul instead.
    rates.prefill_gops.remove("Q6_K");
    dp.matvec = Some(rates);
    let cf = dhurandhar_plan::ceilings(&p, &dp, 0.0);
    assert!(!cf.prefill_bounds.last().unwrap().note.contains("batched"));
    assert_ne!(cf.prefill_tps, cp.prefill_tps);
    // The probe's head count unknown: the rate as measured.
    let even = four(None);
    assert!((even.decode_tps.unwrap() - 1.0 / (0.05269 + 0.044_040_192)).abs() < 1e-9);
    assert!(!even.bounds[1].note.contains("split"));
    assert_eq!(dhurandhar_plan::split_efficiency(3, 2), 0.75);
    assert_eq!(dhurandhar_plan::split_efficiency(8, 2), 1.0);
    assert_eq!(dhurandhar_plan::split_efficiency(3, 1), 1.0);
    assert_eq!(dhurandhar_plan::split_efficiency(5, 4), 5.0 / 8.0);
    // A type without a rate: the batched int8 formula instead (never a guess).
    d.matvec = Some(dhurandhar_plan::MatvecRates {
        threads: vec![4],
        gweights_per_s: BTreeMap::from([("Q4_K".to_string(), vec![10.0])]),
        row_overhead_ns: BTreeMap::new(),
        call_overhead_ns: vec![],
        attention_gflops: vec![],
        attention_ram_gflops: vec![],
        attention_kv_heads: None,
        vector_ns: None,
        prefill_gops: BTreeMap::new(),
    });
    let c2 = dhurandhar_plan::ceilings(&p, &d, 0.0);
    let compute2 = c2
        .bounds
        .iter()
        .find(|b| b.kind == BoundKind::Compute)
        .unwrap();
    assert!(!compute2.note.contains("matvec"), "{}", compute2.note);
    // Streaming 50 MB per token at 2 GB/s adds a 40 tok/s flash bound.
    let s = dhurandhar_plan::ceilings(&p, &d, 50e6);
    let flash = s
        .bounds
        .iter()
        .find(|b| b.kind == BoundKind::Flash)
        .unwrap();
    assert!((flash.tps.unwrap() - 40.0).abs() < 1e-9);
}

#[test]
fn matvec_rates_are_validated() {
    use std::collections::BTreeMap;
    let mut d = DeviceProfile::custom(1024.0, 1.0).unwrap();
    let bad = |threads: Vec<usize>, rates: Vec<f64>| dhurandhar_plan::MatvecRates {
        threads,
        gweights_per_s: BTreeMap::from([("Q4_0".to_string(), rates)]),
        row_overhead_ns: BTreeMap::new(),
        call_overhead_ns: vec![],
        attention_gflops: vec![],
        attention_ram_gflops: vec![],
        attention_kv_heads: None,
        vector_ns: None,
        prefill_gops: BTreeMap::new(),
    };
    for (m, want) in [
        (bad(vec![], vec![]), "ascending"),
        (bad(vec![2, 1], vec![1.0, 2.0]), "ascending"),
        (bad(vec![1, 2], vec![1.0]), "1 entries for 2 thread counts"),
        (bad(vec![1], vec![f64::NAN]), "positive"),
        (bad(vec![1], vec![0.0]), "positive"),
    ] {
        d.matvec = Some(m);
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("matvec") && e.contains(want), "{e}");
    }
    // The entry for a run: the most threads measured not above it.
    let mut m = bad(vec![1, 4], vec![2.0, 6.0]);
    assert_eq!(m.at(1)["Q4_0"].weights_per_s, 2e9);
    assert_eq!(m.at(3)["Q4_0"].weights_per_s, 2e9);
    assert_eq!(m.at(8)["Q4_0"].weights_per_s, 6e9);
    assert_eq!(m.only(4).threads, vec![4]);
    // Row overheads: one per thread count, in ns, for a type that has a rate.
    for (o, want) in [
        (
            BTreeMap::from([("Q4_0".to_string(), vec![1.0])]),
            "1 entries",
        ),
        (
            BTreeMap::from([("Q4_0".to_string(), vec![1.0, -1.0])]),
            "row overheads",
        ),
        (
            BTreeMap::from([("Q8_0".to_string(), vec![1.0, 1.0])]),
            "no rate",
        ),
    ] {
        m.row_overhead_ns = o;
        d.matvec = Some(m.clone());
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    m.row_overhead_ns = BTreeMap::from([("Q4_0".to_string(), vec![30.0, 10.0])]);
    assert_eq!(
        m.at(2)["Q4_0"].seconds(&mats(2_000_000_000, 1_000, 0)),
        1.0 + 30e-6
    );
    // Call overheads: one per thread count.
    m.call_overhead_ns = vec![1.0];
    d.matvec = Some(m.clone());
    let e = d.validate().unwrap_err().to_string();
    assert!(e.contains("call_overhead_ns has 1 entries"), "{e}");
    m.call_overhead_ns = vec![500.0, 4000.0];
    // The probe's KV heads: at least one.
    m.attention_kv_heads = Some(0);
    d.matvec = Some(m.clone());
    let e = d.validate().unwrap_err().to_string();
    assert!(e.contains("attention_kv_heads"), "{e}");
    m.attention_kv_heads = Some(8);
    // Attention rates: one per thread count, positive.
    for (a, want) in [
        (vec![1.0], "attention_gflops has 1 entries"),
        (vec![1.0, 0.0], "attention rates"),
    ] {
        m.attention_gflops = a;
        d.matvec = Some(m.clone());
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    m.attention_gflops = vec![2.0, 3.0];
    assert_eq!(m.attention_flops_per_s(1), Some(2e9));
    for (a, want) in [
        (vec![1.0], "attention_ram_gflops has 1 entries"),
        (vec![f64::INFINITY, 1.0], "attention rates"),
    ] {
        m.attention_ram_gflops = a;
        d.matvec = Some(m.clone());
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    m.attention_ram_gflops = vec![1.0, 1.5];
    assert_eq!(m.only(8).attention_ram_gflops, vec![1.5]);
    assert_eq!(
        m.kv_seconds_per_byte(4),
        Some(0.5 * (1.0 / 1.5e9 - 1.0 / 3e9))
    );
    assert_eq!(m.only(8).attention_gflops, vec![3.0]);
    let c = m.at(4)["Q4_0"];
    assert!((c.seconds(&mats(6_000_000_000, 0, 250)) - (1.0 + 250.0 * 4e-6)).abs() < 1e-12);
    // Vector work: finite, non-negative ns per element; kept by `only`.
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        m.vector_ns = Some(dhurandhar_plan::VectorCost {
            per_width: 1.0,
            per_ffn: bad,
        });
        d.matvec = Some(m.clone());
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("vector_ns"), "{e}");
    }
    let v = dhurandhar_plan::VectorCost {
        per_width: 2.0,
        per_ffn: 0.5,
    };
    m.vector_ns = Some(v);
    assert_eq!(m.only(1).vector_ns, Some(v));
    // Batched rates: one per thread count, positive; cut by `only`, and an interleaved
    // entry stands for its type in `interleaved`.
    m.prefill_gops = BTreeMap::from([("Q4_0".to_string(), vec![5.0])]);
    d.matvec = Some(m.clone());
    let e = d.validate().unwrap_err().to_string();
    assert!(e.contains("Q4_0 has 1 entries"), "{e}");
    m.prefill_gops = BTreeMap::from([("Q4_0".to_string(), vec![5.0, -1.0])]);
    d.matvec = Some(m.clone());
    let e = d.validate().unwrap_err().to_string();
    assert!(e.contains("positive"), "{e}");
    m.prefill_gops = BTreeMap::from([
        ("Q4_0".to_string(), vec![5.0, 9.0]),
        ("Q4_0@x8".to_string(), vec![7.0, 13.0]),
    ]);
    d.matvec = Some(m.clone());
    d.validate().unwrap();
    assert_eq!(m.only(4).prefill_gops["Q4_0"], vec![9.0]);
    assert_eq!(m.interleaved().prefill_gops["Q4_0"], vec![7.0, 13.0]);
    assert!((v.seconds(1000, 4000) - 4e-6).abs() < 1e-18);
}
