//! Criterion benchmarks: the FWHT, and encode / decode of every codec at d = 128 and
//! 256 on one thread, next to a memcpy of the same f32 bytes. Throughput is reported
//! in the f32 bytes of the input (head_dim × 4 per vector).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dhurandhar_kv::hadamard::{fwht, fwht_portable, RandomizedHadamard};
use dhurandhar_kv::synth::{generate, Distribution};
use dhurandhar_kv::{build_codec, Codec, CodecSpec, KvRole};

const N: usize = 1024;

fn bench_fwht(c: &mut Criterion) {
    let mut g = c.benchmark_group("fwht");
    for d in [128usize, 256] {
        let x = generate(Distribution::Gaussian, N, d, 1, 0, false);
        g.throughput(Throughput::Bytes((N * d * 4) as u64));
        let mut y = x.clone();
        g.bench_with_input(BenchmarkId::new("dispatch", d), &d, |b, &d| {
            b.iter(|| {
                for v in y.chunks_exact_mut(d) {
                    fwht(black_box(v));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("portable", d), &d, |b, &d| {
            b.iter(|| {
                for v in y.chunks_exact_mut(d) {
                    fwht_portable(black_box(v));
                }
            })
        });
        let r = RandomizedHadamard::new(d, 1);
        let mut out = vec![0.0f32; N * d];
        g.bench_with_input(BenchmarkId::new("randomized_forward", d), &d, |b, &d| {
            b.iter(|| {
                for (a, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                    r.forward(black_box(a), o);
                }
            })
        });
    }
    g.finish();
}

fn bench_codecs(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for d in [128usize, 256] {
        let x = generate(Distribution::Gaussian, N, d, 1, 0, false);
        let cal = generate(Distribution::Gaussian, 512, d, 2, 0, false);
        let mut g = c.benchmark_group(format!("d{d}"));
        g.throughput(Throughput::Bytes((N * d * 4) as u64));
        let mut dst = vec![0.0f32; x.len()];
        g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&x))));
        for name in Codec::ALL {
            let bits = if name.supported_bits().contains(&4) {
                4
            } else {
                8
            };
            let codec = build_codec(&CodecSpec::new(name, bits, d), Some(&cal)).unwrap();
            let enc = codec.encode(KvRole::Key, &x).unwrap();
            let mut out = vec![0.0f32; x.len()];
            g.bench_function(format!("{name}-{bits}/encode"), |b| {
                pool.install(|| b.iter(|| codec.encode(KvRole::Key, black_box(&x)).unwrap()))
            });
            g.bench_function(format!("{name}-{bits}/decode"), |b| {
                pool.install(|| {
                    b.iter(|| {
                        codec
                            .decode(KvRole::Key, black_box(&enc), &mut out)
                            .unwrap()
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_millis(800)).warm_up_time(std::time::Duration::from_millis(200));
    targets = bench_fwht, bench_codecs
}
criterion_main!(benches);
