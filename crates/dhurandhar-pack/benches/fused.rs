//! Fused y = x·dequant(W_base)ᵀ + x·ΔW_sparseᵀ versus materialise-then-matmul, on a
//! 1024×1024 INT4 (group 32, 1% residual) matrix at batch 1 and 8.
//!
//! `cargo bench -p dhurandhar-pack --bench fused`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dhurandhar_pack::{dense_matmul, QuantConfig, QuantResidualTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn bench(c: &mut Criterion) {
    let (rows, cols) = (1024, 1024);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.gen_range(-0.05f32..0.05))
        .collect();
    let cfg = QuantConfig {
        bits: 4,
        group: 32,
        residual_frac: 0.01,
    };
    let (q, _) = QuantResidualTensor::quantize(&w, rows, cols, cfg).expect("quantize");
    let mut g = c.benchmark_group("quant_residual_matmul_1024x1024_int4_g32_r1pct");
    for batch in [1usize, 8] {
        let x: Vec<f32> = (0..batch * cols)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let mut y = vec![0f32; batch * rows];
        g.bench_with_input(BenchmarkId::new("fused", batch), &batch, |b, &batch| {
            b.iter(|| q.matmul(&x, batch, &mut y).expect("shapes"))
        });
        g.bench_with_input(
            BenchmarkId::new("materialise_then_matmul", batch),
            &batch,
            |b, &batch| {
                b.iter(|| {
                    let dense = q.dequantize(true);
                    dense_matmul(&dense, rows, cols, &x, batch, &mut y)
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
