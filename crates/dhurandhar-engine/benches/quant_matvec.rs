//! Criterion benchmarks: one-token matrix-vector product of every 8-bit-activation quant
//! type (the engine's dispatch, its portable kernel and its AVX2 kernel) on one thread,
//! next to a memcpy of the same weight bytes. Throughput is in weight bytes, so the
//! matvec/memcpy ratio says how close a kernel gets to streaming its weights.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dhurandhar_engine::kernels::{matmul, Acts, QMatrix, Simd};
use dhurandhar_engine::kquants;
use dhurandhar_engine::quant::{GgmlType, Q8Acts};

const ROWS: usize = 2048;
const COLS: usize = 2048;

/// Byte offsets of the f16 scale fields in one block (ggml `block_*` layouts).
fn f16_fields(t: GgmlType) -> &'static [usize] {
    match t {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        GgmlType::IQ4NL | GgmlType::IQ4XS => &[0],
        _ => &[],
    }
}

/// Random valid blocks: random bytes with small finite f16 scales.
fn random_matrix(t: GgmlType, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut data: Vec<u8> = (0..dhurandhar_engine::quant::row_bytes(t, COLS).unwrap() * ROWS)
        .map(|_| next() as u8)
        .collect();
    for blk in data.chunks_exact_mut(t.type_size() as usize) {
        for &off in f16_fields(t) {
            let v = half::f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-4);
            blk[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    data
}

fn bench_matvec(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let x: Vec<f32> = (0..COLS)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut acts = Q8Acts::default();
    acts.quantize_into(&x, COLS);
    let mut g = c.benchmark_group("matvec_1thread");
    g.sample_size(20);
    for name in [
        "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
        "IQ4_XS",
    ] {
        let t = GgmlType::from_name(name).unwrap();
        let data = random_matrix(t, 7);
        let m = QMatrix::new(t, ROWS, COLS, &data).unwrap();
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut out = vec![0f32; ROWS];
        g.bench_function(BenchmarkId::new("dispatch", name), |b| {
            b.iter(|| pool.install(|| matmul(&m, &Acts::Q8(black_box(&acts)), &mut out, false)))
        });
        if kquants::supports(t) {
            let rb = m.row_bytes();
            g.bench_function(BenchmarkId::new("portable", name), |b| {
                b.iter(|| {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = kquants::dot_portable(t, &data[r * rb..(r + 1) * rb], &acts, 0);
                    }
                })
            });
            for tier in Simd::available().into_iter().filter(|s| s.avx2()) {
                let label = format!("{tier:?}").to_lowercase();
                g.bench_function(BenchmarkId::new(label, name), |b| {
                    b.iter(|| {
                        for (r, o) in out.iter_mut().enumerate() {
                            let w = &data[r * rb..(r + 1) * rb];
                            *o = kquants::dot_on::<1>(tier, t, w, &acts, 0).unwrap()[0];
                        }
                    })
                });
            }
        }
        let mut dst = vec![0u8; data.len()];
        g.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_matvec);
criterion_main!(benches);
