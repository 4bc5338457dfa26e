//! Lloyd–Max scalar codebooks for one coordinate of a uniformly random unit vector in
//! R^p, whose density is f(x) ∝ (1 − x²)^((p−3)/2) on [−1, 1] (≈ N(0, 1/p)).
//! Computed on first use by Lloyd's algorithm on a fine discretisation of the exact
//! density and cached per (p, bits): nothing is hand-typed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A sorted codebook: `levels` (2^bits reconstruction points) and the `bounds`
/// (2^bits − 1 decision thresholds, midpoints between levels).
#[derive(Debug, Clone)]
pub struct Codebook {
    pub bits: u32,
    pub levels: Vec<f32>,
    pub bounds: Vec<f32>,
    /// Expected squared error per coordinate under the density (times p: the
    /// normalised MSE the codebook achieves on unit vectors).
    pub nmse: f64,
}

const GRID: usize = 40_000;

/// Lloyd–Max codebook for padded dimension `p` and `bits` (1..=8), cached.
type Cache = Mutex<HashMap<(usize, u32), Arc<Codebook>>>;

pub fn codebook(p: usize, bits: u32) -> Arc<Codebook> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(&(p, bits)).cloned()) {
        return c;
    }
    let c = Arc::new(compute(p, bits));
    if let Ok(mut m) = cache.lock() {
        m.insert((p, bits), c.clone());
    }
    c
}

fn compute(p: usize, bits: u32) -> Codebook {
    // p < 3 would make the density singular at ±1; use the p = 3 (uniform) density.
    let pe = p.max(3) as f64;
    let expo = (pe - 3.0) / 2.0;
    // Beyond 12 standard deviations the mass is negligible (< 1e-30).
    let half = (12.0 / pe.sqrt()).min(1.0);
    let dx = 2.0 * half / GRID as f64;
    let xs: Vec<f64> = (0..GRID).map(|i| -half + (i as f64 + 0.5) * dx).collect();
    let logw: Vec<f64> = xs.iter().map(|x| expo * (1.0 - x * x).ln()).collect();
    let lmax = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logw.iter().map(|l| (l - lmax).exp()).collect();
    let total: f64 = w.iter().sum();
    // Prefix sums of w and w·x for O(log n) centroids.
    let mut cw = vec![0.0f64; GRID + 1];
    let mut cwx = vec![0.0f64; GRID + 1];
    for i in 0..GRID {
        cw[i + 1] = cw[i] + w[i] / total;
        cwx[i + 1] = cwx[i] + w[i] / total * xs[i];
    }
    let k = 1usize << bits;
    // Start from the quantiles' centroids.
    let mut levels: Vec<f64> = (0..k)
        .map(|j| {
            let q = (j as f64 + 0.5) / k as f64;
            let i = cw.partition_point(|&c| c < q).clamp(1, GRID) - 1;
            xs[i]
        })
        .collect();
    // Prefix sums evaluated at any real threshold (linear inside a grid cell), so
    // the bin masses vary continuously with the thresholds.
    let at = |c: &[f64], t: f64| -> f64 {
        let pos = ((t + half) / dx).clamp(0.0, GRID as f64);
        let i = (pos as usize).min(GRID - 1);
        c[i] + (pos - i as f64) * (c[i + 1] - c[i])
    };
    for _ in 0..2000 {
        let mut moved = 0.0f64;
        let mut next = levels.clone();
        for j in 0..k {
            let a = if j == 0 {
                -half
            } else {
                0.5 * (levels[j - 1] + levels[j])
            };
            let b = if j + 1 == k {
                half
            } else {
                0.5 * (levels[j] + levels[j + 1])
            };
            let m = at(&cw, b) - at(&cw, a);
            if m > 0.0 {
                next[j] = (at(&cwx, b) - at(&cwx, a)) / m;
            }
        }
        // The density is even, so the optimum is symmetric: enforce it exactly.
        for j in 0..k / 2 {
            let v = 0.5 * (next[k - 1 - j] - next[j]);
            next[j] = -v;
            next[k - 1 - j] = v;
        }
        for j in 0..k {
            moved = moved.max((next[j] - levels[j]).abs());
        }
        levels = next;
        if moved < 1e-12 * half {
            break;
        }
    }
    // Distortion of the final codebook, in units of the coordinate variance 1/p.
    let mut mse = 0.0;
    let mut j = 0;
    for i in 0..GRID {
        while j + 1 < k && xs[i] > 0.5 * (levels[j] + levels[j + 1]) {
            j += 1;
        }
        let e = xs[i] - levels[j];
        mse += w[i] / total * e * e;
    }
    let bounds = (0..k - 1)
        .map(|j| (0.5 * (levels[j] + levels[j + 1])) as f32)
        .collect();
    Codebook {
        bits,
        levels: levels.iter().map(|&l| l as f32).collect(),
        bounds,
        nmse: mse * pe,
    }
}

impl Codebook {
    /// Code of `x`: the number of thresholds below it. Branch-free for small books.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> u8 {
        if self.bits <= 4 {
            let mut c = 0u8;
            for &t in &self.bounds {
                c += (x > t) as u8;
            }
            c
        } else {
            self.bounds.partition_point(|&t| t < x) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Gaussian Lloyd–Max distortions (Max 1960): 0.3634, 0.1175, 0.03455, 0.009497
    /// for 1..4 bits. At p = 4096 the Beta density is within O(1/p) of the Gaussian.
    #[test]
    fn matches_gaussian_lloyd_max_at_large_p() {
        let want = [0.3634, 0.1175, 0.03455, 0.009497];
        for (b, w) in (1..=4).zip(want) {
            let c = codebook(4096, b);
            assert!((c.nmse - w).abs() / w < 0.01, "b={b} got {}", c.nmse);
        }
    }

    #[test]
    fn symmetric_sorted_and_quantize_consistent() {
        for p in [2usize, 3, 64, 128, 256] {
            for b in 1..=8 {
                let c = codebook(p, b);
                assert_eq!(c.levels.len(), 1 << b);
                assert!(c.levels.windows(2).all(|w| w[0] < w[1]), "p={p} b={b}");
                let k = c.levels.len();
                for j in 0..k / 2 {
                    assert!((c.levels[j] + c.levels[k - 1 - j]).abs() < 1e-4);
                }
                for (j, &l) in c.levels.iter().enumerate() {
                    assert_eq!(c.quantize(l) as usize, j);
                }
            }
        }
    }
}

/// Widest uniform quantizer supported by [`gaussian_uniform_step`].
pub const MAX_UNIFORM_BITS: u32 = 16;

/// Step Δ of the MSE-optimal uniform midrise quantizer with 2^bits levels
/// (levels (c + ½ − 2^bits/2)·Δ) for a unit Gaussian, found by golden-section search
/// on the distortion (numerical integration; above 8 bits the granular part is the
/// exact-in-the-limit Δ²/12); cached.
pub fn gaussian_uniform_step(bits: u32) -> f32 {
    static CACHE: OnceLock<Vec<f32>> = OnceLock::new();
    let steps = CACHE.get_or_init(|| {
        (0..=MAX_UNIFORM_BITS)
            .map(|b| compute_uniform_step(b.max(1)))
            .collect()
    });
    steps[bits.min(MAX_UNIFORM_BITS) as usize]
}

fn gauss(x: f64) -> f64 {
    (-(x * x) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn uniform_mse(bits: u32, step: f64) -> f64 {
    let n = (1u64 << bits) as f64;
    if bits > 8 {
        // Granular region: Δ²/12 times its mass; overload region integrated.
        let edge = n / 2.0 * step;
        let outer = (n / 2.0 - 0.5) * step;
        let m = 4000usize;
        let hi = edge.max(12.0);
        let dx = (hi - edge) / m as f64;
        let (mut over, mut mass) = (0.0, 0.0);
        for i in 0..m {
            let x = edge + (i as f64 + 0.5) * dx;
            over += gauss(x) * (x - outer) * (x - outer) * dx;
            mass += gauss(x) * dx;
        }
        return step * step / 12.0 * (1.0 - 2.0 * mass) + 2.0 * over;
    }
    let (lo, hi, m) = (-10.0f64, 10.0f64, 20_000usize);
    let dx = (hi - lo) / m as f64;
    let mut e = 0.0;
    for i in 0..m {
        let x = lo + (i as f64 + 0.5) * dx;
        let c = (x / step + n / 2.0).floor().clamp(0.0, n - 1.0);
        let y = (c + 0.5 - n / 2.0) * step;
        e += (-(x * x) / 2.0).exp() * (x - y) * (x - y);
    }
    e * dx / (2.0 * std::f64::consts::PI).sqrt()
}

fn compute_uniform_step(bits: u32) -> f32 {
    let (mut a, mut b) = (1e-6f64, 4.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if uniform_mse(bits, c) < uniform_mse(bits, d) {
            b = d;
        } else {
            a = c;
        }
    }
    (0.5 * (a + b)) as f32
}

#[cfg(test)]
mod uniform_tests {
    use super::*;

    /// Max (1960) tabulates the optimal uniform steps 1.596, 0.9957, 0.5860, 0.3352 for
    /// 2, 4, 8, 16 levels; the computed ones must agree.
    #[test]
    fn uniform_steps_match_max_1960() {
        for (b, want) in (1..=4).zip([1.596f32, 0.9957, 0.5860, 0.3352]) {
            let s = gaussian_uniform_step(b);
            assert!((s - want).abs() / want < 0.003, "b={b} {s}");
        }
    }
}
