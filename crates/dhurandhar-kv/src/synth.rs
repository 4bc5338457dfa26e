//! Synthetic KV generators with documented distributions and fixed seeds
//! (ChaCha8, seeded from `seed`, the head index and the role, so every head and role
//! is an independent, reproducible stream).
//!
//! | name | keys | values |
//! |---|---|---|
//! | `gaussian` | i.i.d. N(0, 1) | i.i.d. N(0, 1) |
//! | `outlier-channels` | N(0, 1), except ⌈4 %⌉ of channels per head (≥ 1), fixed per head, which are N(m_c, 5²) with m_c = ±U(8, 16) | N(0, 1) |
//! | `low-rank` | z ⊙ √λ rotated by a random orthogonal basis (per head); λ = linspace(10, 2) on r = max(1, d/16) dims, 0.05 on the rest | same, other basis |
//! | `imbalanced-norms` | N(0, I) · e^{g}, g ~ N(0, 1) per token (token norms spread over ~e^±2) | N(0, 1) |
//!
//! The Python tool's `gaussian_heavy_tail` (per-element outliers) is not reproduced:
//! real keys have outlier *channels*; `heavy-tail` is accepted as an alias of
//! `outlier-channels`.

use std::str::FromStr;

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

use crate::codec::KvError;
use crate::metrics::HeadData;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    Gaussian,
    OutlierChannels,
    LowRank,
    ImbalancedNorms,
}

pub const DISTRIBUTION_NAMES: &[&str] = &[
    "gaussian",
    "outlier-channels",
    "low-rank",
    "imbalanced-norms",
];

impl FromStr for Distribution {
    type Err = KvError;
    fn from_str(s: &str) -> Result<Self, KvError> {
        Ok(match s {
            "gaussian" => Distribution::Gaussian,
            "outlier-channels" | "heavy-tail" | "gaussian_heavy_tail" => {
                Distribution::OutlierChannels
            }
            "low-rank" | "spectral" => Distribution::LowRank,
            "imbalanced-norms" => Distribution::ImbalancedNorms,
            _ => {
                return Err(KvError::Invalid(format!(
                    "unknown distribution `{s}` (known: {})",
                    DISTRIBUTION_NAMES.join(", ")
                )))
            }
        })
    }
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Gaussian => "gaussian",
            Distribution::OutlierChannels => "outlier-channels",
            Distribution::LowRank => "low-rank",
            Distribution::ImbalancedNorms => "imbalanced-norms",
        }
    }
}

fn rng(seed: u64, head: usize, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream((head as u64) << 8 | stream);
    r
}

fn normal(r: &mut ChaCha8Rng) -> f32 {
    StandardNormal.sample(r)
}

fn random_orthogonal(d: usize, r: &mut ChaCha8Rng) -> Vec<f32> {
    let m = DMatrix::<f64>::from_fn(d, d, |_, _| StandardNormal.sample(r));
    let q = m.qr().q();
    let mut out = vec![0.0f32; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = q[(i, j)] as f32;
        }
    }
    out
}

/// `n` vectors of head `head` for `dist`; `value` picks the value-side distribution.
pub fn generate(
    dist: Distribution,
    n: usize,
    d: usize,
    seed: u64,
    head: usize,
    value: bool,
) -> Vec<f32> {
    generate_samples(dist, n, d, seed, head, value, 0)
}

/// Like [`generate`], drawing sample stream `sample`: the head's structure (basis,
/// outlier channels) depends on `seed` and `head` only, so different streams are
/// independent draws from the same distribution (e.g. calibration vs evaluation).
pub fn generate_samples(
    dist: Distribution,
    n: usize,
    d: usize,
    seed: u64,
    head: usize,
    value: bool,
    sample: u64,
) -> Vec<f32> {
    let seed_s = seed ^ 0x5eed ^ sample.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let role = if value { 1 } else { 0 };
    let mut out = vec![0.0f32; n * d];
    match (dist, value) {
        (Distribution::LowRank, _) => {
            // The basis is per head and role, independent of the sample stream, so
            // calibration and evaluation samples share it.
            let mut rb = rng(seed, head, 10 + role);
            let q = random_orthogonal(d, &mut rb);
            let r = (d / 16).max(1);
            let lam: Vec<f32> = (0..d)
                .map(|i| {
                    if i < r {
                        if r == 1 {
                            10.0
                        } else {
                            10.0 - 8.0 * i as f32 / (r - 1) as f32
                        }
                    } else {
                        0.05
                    }
                })
                .collect();
            let mut rs = rng(seed_s, head, 20 + role);
            let mut z = vec![0.0f32; d];
            for x in out.chunks_exact_mut(d) {
                for (zi, l) in z.iter_mut().zip(&lam) {
                    *zi = normal(&mut rs) * l.sqrt();
                }
                for (i, xi) in x.iter_mut().enumerate() {
                    *xi = (0..d).map(|j| q[i * d + j] * z[j]).sum();
                }
            }
        }
        (Distribution::OutlierChannels, false) => {
            let mut rc = rng(seed, head, 30);
            let k = (d * 4).div_ceil(100).max(1);
            let mut chans: Vec<(usize, f32)> = Vec::with_capacity(k);
            while chans.len() < k {
                let c = rc.gen_range(0..d);
                if chans.iter().all(|(x, _)| *x != c) {
                    let m = rc.gen_range(8.0f32..16.0) * if rc.gen::<bool>() { 1.0 } else { -1.0 };
                    chans.push((c, m));
                }
            }
            let mut rs = rng(seed_s, head, 31);
            for x in out.chunks_exact_mut(d) {
                for xi in x.iter_mut() {
                    *xi = normal(&mut rs);
                }
                for &(c, m) in &chans {
                    x[c] = m + 5.0 * x[c];
                }
            }
        }
        (Distribution::ImbalancedNorms, false) => {
            let mut rs = rng(seed_s, head, 40);
            for x in out.chunks_exact_mut(d) {
                let g = normal(&mut rs).exp();
                for xi in x.iter_mut() {
                    *xi = normal(&mut rs) * g;
                }
            }
        }
        _ => {
            let mut rs = rng(seed_s, head, 50 + role);
            for xi in out.iter_mut() {
                *xi = normal(&mut rs);
            }
        }
    }
    out
}

/// Synthetic queries for keys `k`: a random cached key plus Gaussian noise of the keys'
/// mean per-channel variance, scaled so each query's logits q·k/√d have standard
/// deviation 2 (a peaked but not one-hot attention, as in real heads).
pub fn queries(k: &[f32], d: usize, m: usize, seed: u64, head: usize) -> Vec<f32> {
    let n = k.len() / d;
    let mut r = rng(seed, head, 60);
    let var = k.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k.len().max(1) as f64;
    let sd = var.sqrt() as f32;
    let mut out = vec![0.0f32; m * d];
    for q in out.chunks_exact_mut(d) {
        let t = r.gen_range(0..n.max(1));
        for (c, qc) in q.iter_mut().enumerate() {
            *qc = k[t * d + c] + sd * normal(&mut r);
        }
        let s: Vec<f64> = k
            .chunks_exact(d)
            .map(|kj| {
                kj.iter()
                    .zip(q.iter())
                    .map(|(a, b)| (a * b) as f64)
                    .sum::<f64>()
            })
            .collect();
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let std = (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
            / (d as f64).sqrt();
        let scale = if std > 0.0 { (2.0 / std) as f32 } else { 1.0 };
        for qc in q.iter_mut() {
            *qc *= scale;
        }
    }
    out
}

/// `heads` synthetic heads of `n` tokens: keys and values from `dist`, `m` queries,
/// and independent calibration samples (a different seed) for SpectralQuant.
pub fn synthetic_heads(
    dist: Distribution,
    n: usize,
    heads: usize,
    d: usize,
    m: usize,
    seed: u64,
) -> Vec<HeadData> {
    (0..heads)
        .map(|h| {
            let k = generate(dist, n, d, seed, h, false);
            let v = generate(dist, n, d, seed, h, true);
            let q = queries(&k, d, m, seed, h);
            let nc = n.clamp(2, 1024);
            HeadData {
                label: format!("head {h}"),
                d,
                calib_k: generate_samples(dist, nc, d, seed, h, false, 1),
                calib_v: generate_samples(dist, nc, d, seed, h, true, 1),
                k,
                v,
                q,
                q_pos: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct_per_head() {
        let a = generate(Distribution::Gaussian, 4, 8, 1, 0, false);
        assert_eq!(a, generate(Distribution::Gaussian, 4, 8, 1, 0, false));
        assert_ne!(a, generate(Distribution::Gaussian, 4, 8, 1, 1, false));
    }

    #[test]
    fn outlier_channels_are_whole_channels() {
        let d = 64;
        let n = 256;
        let k = generate(Distribution::OutlierChannels, n, d, 0, 0, false);
        let rms: Vec<f32> = (0..d)
            .map(|c| ((0..n).map(|t| k[t * d + c].powi(2)).sum::<f32>() / n as f32).sqrt())
            .collect();
        let big = rms.iter().filter(|r| **r > 5.0).count();
        assert_eq!(big, 3, "{rms:?}");
        assert!(rms.iter().filter(|r| **r < 1.3).count() == d - 3);
    }
}
