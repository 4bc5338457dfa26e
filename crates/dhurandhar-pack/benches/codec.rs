//! Lossless codec benchmark on real weights: one run prints, on the same bytes, our ratio
//! and GB/s (compress / decompress, 1 thread and all threads), zstd -3 and -19 on the raw
//! bytes, and memcpy. Data: all-MiniLM-L6-v2 (float32), also cast to BF16 and F16 with
//! round-to-nearest-even.
//!
//! `cargo bench -p dhurandhar-pack --bench codec` (set `DHP_BENCH_SKIP_ZSTD19=1` to skip
//! the slow zstd -19 column).

use std::time::Instant;

use dhurandhar_pack::{
    cast_f32_bytes, compress_lossless, decompress_lossless, DType, Weights, DEFAULT_CHUNK_SIZE,
};

/// CPU time of the calling thread: on a shared machine, wall-clock per-core speed is
/// diluted by other processes; thread CPU time is not (it still includes SMT contention).
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best (wall seconds, calling-thread CPU seconds) over `reps` runs.
fn best_of<F: FnMut()>(reps: usize, mut f: F) -> (f64, f64) {
    (0..reps)
        .map(|_| {
            let (t, c) = (Instant::now(), thread_cpu());
            f();
            (t.elapsed().as_secs_f64(), thread_cpu() - c)
        })
        .fold((f64::INFINITY, f64::INFINITY), |a, b| {
            (a.0.min(b.0), a.1.min(b.1))
        })
}

fn gbps(bytes: usize, s: f64) -> f64 {
    bytes as f64 / s / 1e9
}

fn bench(
    label: &str,
    raw: &[u8],
    dtype: DType,
    pool1: &rayon::ThreadPool,
    pool_all: &rayon::ThreadPool,
) {
    let n = raw.len();
    let cs = DEFAULT_CHUNK_SIZE;
    let blobs = compress_lossless(raw, dtype, cs);
    let ours: usize = blobs.iter().map(|b| b.len()).sum();
    let mut out = vec![0u8; n];
    decompress_lossless(&blobs, dtype, cs, &mut out).expect("decode");
    assert!(out == raw, "round trip failed");
    let mut row = |name: &str, pool: &rayon::ThreadPool, one: bool| {
        let c = pool.install(|| best_of(3, || drop(compress_lossless(raw, dtype, cs))));
        let d = pool.install(|| {
            best_of(5, || {
                decompress_lossless(&blobs, dtype, cs, &mut out).expect("decode")
            })
        });
        let cpu = if one {
            format!(
                "  [CPU time: {:5.3} / {:5.2} GB/s per core]",
                gbps(n, c.1),
                gbps(n, d.1)
            )
        } else {
            String::new()
        };
        println!(
            "{label:<5} {name:<12} ratio {:6.2}%  compress {:6.3} GB/s  decompress {:6.2} GB/s{cpu}",
            100.0 * ours as f64 / n as f64,
            gbps(n, c.0),
            gbps(n, d.0)
        );
    };
    row("dhp 1 thread", pool1, true);
    row(
        &format!("dhp {} thr", pool_all.current_num_threads()),
        pool_all,
        false,
    );
    for level in [3, 19] {
        if level == 19 && std::env::var_os("DHP_BENCH_SKIP_ZSTD19").is_some() {
            continue;
        }
        let mut z = Vec::new();
        let c = best_of(1, || z = zstd::bulk::compress(raw, level).expect("zstd"));
        let d = best_of(3, || {
            zstd::bulk::decompress_to_buffer(&z, &mut out).expect("zstd");
        });
        println!(
            "{label:<5} zstd -{level:<7} ratio {:6.2}%  compress {:6.3} GB/s  decompress {:6.2} GB/s  [CPU time: {:5.3} / {:5.2} GB/s per core]",
            100.0 * z.len() as f64 / n as f64,
            gbps(n, c.0),
            gbps(n, d.0),
            gbps(n, c.1),
            gbps(n, d.1)
        );
    }
    let m = best_of(5, || out.copy_from_slice(raw));
    println!(
        "{label:<5} memcpy       {:>40} {:6.2} GB/s  [CPU time: {:5.2} GB/s]",
        "",
        gbps(n, m.0),
        gbps(n, m.1)
    );
}

fn main() {
    let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS) else {
        return;
    };
    let cp = Weights::open(&path).expect("open fixture");
    let mut f32_bytes = Vec::new();
    for t in cp.tensors().iter().filter(|t| t.dtype == DType::F32) {
        f32_bytes.extend_from_slice(cp.data(t));
    }
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let pool_all = rayon::ThreadPoolBuilder::new().build().expect("pool");
    println!(
        "all-MiniLM-L6-v2: {} float32 values ({:.1} MB), chunk {} KiB",
        f32_bytes.len() / 4,
        f32_bytes.len() as f64 / 1e6,
        DEFAULT_CHUNK_SIZE / 1024
    );
    for (label, dt) in [("BF16", DType::BF16), ("F16", DType::F16)] {
        bench(
            label,
            &cast_f32_bytes(&f32_bytes, dt),
            dt,
            &pool1,
            &pool_all,
        );
    }
    bench("F32", &f32_bytes, DType::F32, &pool1, &pool_all);
}
