//! Throughput measurement (`kv speed`, `kv compare`'s stage-1 column): encode and decode
//! ns/vector and GB/s next to a memcpy of the same f32 bytes, in the same run, on a
//! rayon pool of a chosen size. Each figure is the best of repeated trials (the least
//! disturbed by other processes), which the report states.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::codec::{build_codec, Codec, CodecSpec, KvError, KvRole, MAX_HEAD_DIM};
use crate::hadamard::{fwht_ops, RandomizedHadamard};
use crate::synth::{generate, Distribution};

/// Largest batch of [`measure`], in vectors.
pub const MAX_SPEED_VECTORS: usize = 1 << 22;
/// Largest batch of [`measure`], in f32 values (1 GiB; three such buffers are held).
pub const MAX_SPEED_VALUES: usize = 1 << 28;
/// Largest thread pool [`measure`] builds.
pub const MAX_SPEED_THREADS: usize = 1024;

#[derive(Debug, Clone)]
pub struct SpeedOptions {
    pub spec: CodecSpec,
    pub role: KvRole,
    /// 0 = all cores.
    pub threads: usize,
    pub vectors: usize,
    /// Keep repeating trials until this much time has passed (and ≥ 5 trials).
    /// Single-threaded trials use at most 512 of the vectors.
    pub min_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpeedReport {
    pub codec: Codec,
    pub bits: u32,
    pub head_dim: usize,
    pub role: KvRole,
    pub threads: usize,
    pub vectors: usize,
    pub trials: usize,
    pub kernel: &'static str,
    /// f32 bytes per vector (what memcpy copies and the GB/s figures count).
    pub bytes_per_vector: usize,
    pub encoded_bytes_per_vector: f64,
    pub encode_ns_per_vector: f64,
    pub decode_ns_per_vector: f64,
    pub memcpy_ns_per_vector: f64,
    pub encode_gb_per_s: f64,
    pub decode_gb_per_s: f64,
    pub memcpy_gb_per_s: f64,
    /// (encode + decode) / memcpy time per vector.
    pub encode_decode_vs_memcpy: f64,
}

fn best_of(
    min_seconds: f64,
    mut f: impl FnMut() -> Result<(), KvError>,
) -> Result<(f64, usize), KvError> {
    f()?; // warm-up
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut trials = 0;
    while trials < 5 || start.elapsed().as_secs_f64() < min_seconds {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
        trials += 1;
        if trials >= 100_000 {
            break;
        }
    }
    Ok((best, trials))
}

/// Measure one codec.
pub fn measure(opts: &SpeedOptions) -> Result<SpeedReport, KvError> {
    let d = opts.spec.head_dim;
    // Check sizes before anything is allocated: the batch is `vectors × head_dim` f32.
    if d == 0 || d > MAX_HEAD_DIM {
        return Err(KvError::HeadDim(d));
    }
    if opts.vectors == 0 || opts.vectors > MAX_SPEED_VECTORS {
        return Err(KvError::Invalid(format!(
            "vectors {} is out of range (1..={MAX_SPEED_VECTORS})",
            opts.vectors
        )));
    }
    if opts.vectors.saturating_mul(d) > MAX_SPEED_VALUES {
        return Err(KvError::Invalid(format!(
            "{} vectors × head_dim {d} exceeds {MAX_SPEED_VALUES} values per batch",
            opts.vectors
        )));
    }
    if opts.threads > MAX_SPEED_THREADS {
        return Err(KvError::Invalid(format!(
            "{} threads is out of range (0..={MAX_SPEED_THREADS})",
            opts.threads
        )));
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| KvError::Invalid(format!("cannot build a {threads}-thread pool: {e}")))?;
    let x = generate(Distribution::Gaussian, opts.vectors, d, 1, 0, false);
    let calib = generate(Distribution::Gaussian, 512, d, 2, 0, false);
    let codec = build_codec(&opts.spec, Some(&calib))?;
    let g = codec.token_group(opts.role);
    let n = opts.vectors / g * g;
    if n == 0 {
        return Err(KvError::Invalid(format!(
            "{} vectors is less than one token group ({g})",
            opts.vectors
        )));
    }
    // One thread: short trials (≤ 512 vectors, cache-resident) so that the best of
    // many is unlikely to include a preemption on a shared machine.
    let n = if threads == 1 {
        n.min((512 / g).max(1) * g)
    } else {
        n
    };
    let x = &x[..n * d];
    let enc = codec.encode(opts.role, x)?;
    let mut out = vec![0.0f32; x.len()];
    let mut dst = vec![0.0f32; x.len()];
    let (te, trials) = pool.install(|| {
        best_of(opts.min_seconds, || {
            std::hint::black_box(codec.encode(opts.role, std::hint::black_box(x))?);
            Ok(())
        })
    })?;
    let (td, _) = pool.install(|| {
        best_of(opts.min_seconds, || {
            codec.decode(opts.role, std::hint::black_box(&enc), &mut out)?;
            std::hint::black_box(&out);
            Ok(())
        })
    })?;
    let chunk = (x.len() / threads).max(1 << 12);
    let (tm, _) = pool.install(|| {
        best_of(opts.min_seconds, || {
            if threads > 1 {
                dst.par_chunks_mut(chunk)
                    .zip(x.par_chunks(chunk))
                    .for_each(|(a, b)| a.copy_from_slice(b));
            } else {
                dst.copy_from_slice(std::hint::black_box(x));
            }
            std::hint::black_box(&dst);
            Ok(())
        })
    })?;
    let bytes = (d * 4) as f64;
    let per = |t: f64| t * 1e9 / n as f64;
    let gbps = |t: f64| bytes * n as f64 / t / 1e9;
    Ok(SpeedReport {
        codec: opts.spec.codec,
        bits: opts.spec.bits,
        head_dim: d,
        role: opts.role,
        threads,
        vectors: n,
        trials,
        kernel: crate::simd::kernel_name(),
        bytes_per_vector: d * 4,
        encoded_bytes_per_vector: enc.len() as f64 / n as f64,
        encode_ns_per_vector: per(te),
        decode_ns_per_vector: per(td),
        memcpy_ns_per_vector: per(tm),
        encode_gb_per_s: gbps(te),
        decode_gb_per_s: gbps(td),
        memcpy_gb_per_s: gbps(tm),
        encode_decode_vs_memcpy: (te + td) / tm,
    })
}

/// Stage-1 (the rotation before quantization) of a codec: counted arithmetic ops per
/// vector (an add, a multiply or an FMA each count 1) and, optionally, measured
/// ns/vector on one thread.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stage1Cost {
    pub codec: Codec,
    pub head_dim: usize,
    pub transform: &'static str,
    pub ops_per_vector: u64,
    pub ns_per_vector: Option<f64>,
}

pub fn stage1_cost(codec: Codec, d: usize, seed: u64, measure: bool) -> Stage1Cost {
    let p = crate::hadamard::padded_len(d);
    let (transform, ops) = match codec {
        Codec::Turbo | Codec::TurboMse | Codec::TurboProd | Codec::Oscar | Codec::Q4_0Rot => {
            ("randomized Hadamard (in-place FWHT)", fwht_ops(p))
        }
        Codec::Rotor => ("Cl(3,0) rotor per 3-block", crate::codecs::Rotors::ops(d)),
        Codec::Spectral => ("PCA basis (dense d×d)", (d * d) as u64),
        Codec::Q8_0 | Codec::Q4_0 | Codec::Kivi2 => ("none", 0),
    };
    let ns = (measure && ops > 0).then(|| time_stage1(codec, d, seed));
    Stage1Cost {
        codec,
        head_dim: d,
        transform,
        ops_per_vector: ops,
        ns_per_vector: ns,
    }
}

type Stage1Fn = Box<dyn FnMut(&[f32], &mut [f32])>;

fn time_stage1(codec: Codec, d: usize, seed: u64) -> f64 {
    const N: usize = 256;
    let x = generate(Distribution::Gaussian, N, d, 3, 0, false);
    let p = crate::hadamard::padded_len(d);
    let mut out = vec![0.0f32; N * p.max(d)];
    let run: Stage1Fn = match codec {
        Codec::Rotor => {
            let r = crate::codecs::Rotors::new(d, seed);
            Box::new(move |x, out| {
                crate::simd::dispatch(|| {
                    for (a, b) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                        r.forward(a, b)
                    }
                })
            })
        }
        Codec::Spectral => {
            let q = generate(Distribution::Gaussian, d, d, seed, 0, false);
            Box::new(move |x, out| {
                crate::simd::dispatch(|| {
                    for (a, b) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                        for (o, row) in b.iter_mut().zip(q.chunks_exact(d)) {
                            *o = crate::spectral::dot(row, a);
                        }
                    }
                })
            })
        }
        _ => {
            let h = RandomizedHadamard::new(d, seed);
            Box::new(move |x, out| {
                crate::simd::dispatch(|| {
                    for (a, b) in x.chunks_exact(d).zip(out.chunks_exact_mut(p)) {
                        h.forward(a, b)
                    }
                })
            })
        }
    };
    let mut run = run;
    let (t, _) = best_of(0.02, || {
        run(std::hint::black_box(&x), &mut out);
        std::hint::black_box(&out);
        Ok(())
    })
    .unwrap_or((f64::NAN, 0));
    t * 1e9 / N as f64
}
