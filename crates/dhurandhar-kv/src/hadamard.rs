//! Randomized Hadamard rotation: random signs, then an in-place fast Walsh–Hadamard
//! transform (O(p log p) adds, no matrix), normalised to be orthonormal.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Smallest power of two ≥ `d` (the padded length of the transform).
pub fn padded_len(d: usize) -> usize {
    d.max(1).next_power_of_two()
}

/// Unnormalised in-place Walsh–Hadamard transform; `x.len()` must be a power of two.
/// Uses the AVX2 kernel when the CPU has it (the stages within 8 lanes are done with
/// in-register permutes), else the portable one.
#[inline(always)]
pub fn fwht(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x.len() >= 8 && crate::simd::has_avx2() {
        // SAFETY: AVX2 is available (checked above) and len ≥ 8 is a power of two.
        unsafe { fwht_avx2(x) };
        return;
    }
    fwht_portable(x)
}

/// AVX2 FWHT: stages h = 1, 2, 4 inside each 8-lane register (permute, add/sub, blend),
/// then stages h ≥ 8 as contiguous 8-wide butterflies.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fwht_avx2(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i < n {
        let v = _mm256_loadu_ps(p.add(i));
        let b = _mm256_permute_ps(v, 0xB1);
        let v = _mm256_blend_ps(_mm256_add_ps(v, b), _mm256_sub_ps(b, v), 0b1010_1010);
        let b = _mm256_permute_ps(v, 0x4E);
        let v = _mm256_blend_ps(_mm256_add_ps(v, b), _mm256_sub_ps(b, v), 0b1100_1100);
        let b = _mm256_permute2f128_ps(v, v, 1);
        let v = _mm256_blend_ps(_mm256_add_ps(v, b), _mm256_sub_ps(b, v), 0b1111_0000);
        _mm256_storeu_ps(p.add(i), v);
        i += 8;
    }
    let mut h = 8;
    while h < n {
        let mut base = 0;
        while base < n {
            let mut j = base;
            while j < base + h {
                let a = _mm256_loadu_ps(p.add(j));
                let b = _mm256_loadu_ps(p.add(j + h));
                _mm256_storeu_ps(p.add(j), _mm256_add_ps(a, b));
                _mm256_storeu_ps(p.add(j + h), _mm256_sub_ps(a, b));
                j += 8;
            }
            base += 2 * h;
        }
        h *= 2;
    }
}

/// Portable FWHT. The first three stages are fused over blocks of 8; the later stages
/// are two contiguous half-blocks, which the compiler vectorizes.
#[inline(always)]
pub fn fwht_portable(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    if n < 8 {
        let mut h = 1;
        while h < n {
            for c in x.chunks_exact_mut(2 * h) {
                let (a, b) = c.split_at_mut(h);
                for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                    let (s, t) = (*u + *v, *u - *v);
                    *u = s;
                    *v = t;
                }
            }
            h *= 2;
        }
        return;
    }
    for c in x.chunks_exact_mut(8) {
        let a0 = c[0] + c[1];
        let a1 = c[0] - c[1];
        let a2 = c[2] + c[3];
        let a3 = c[2] - c[3];
        let a4 = c[4] + c[5];
        let a5 = c[4] - c[5];
        let a6 = c[6] + c[7];
        let a7 = c[6] - c[7];
        let b0 = a0 + a2;
        let b1 = a1 + a3;
        let b2 = a0 - a2;
        let b3 = a1 - a3;
        let b4 = a4 + a6;
        let b5 = a5 + a7;
        let b6 = a4 - a6;
        let b7 = a5 - a7;
        c[0] = b0 + b4;
        c[1] = b1 + b5;
        c[2] = b2 + b6;
        c[3] = b3 + b7;
        c[4] = b0 - b4;
        c[5] = b1 - b5;
        c[6] = b2 - b6;
        c[7] = b3 - b7;
    }
    let mut h = 8;
    while h < n {
        for c in x.chunks_exact_mut(2 * h) {
            let (a, b) = c.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (s, t) = (*u + *v, *u - *v);
                *u = s;
                *v = t;
            }
        }
        h *= 2;
    }
}

/// Arithmetic operations of [`RandomizedHadamard::forward`] at padded length `p`:
/// p·log2(p) adds/subs in the butterflies plus p sign-and-scale multiplies.
pub fn fwht_ops(p: usize) -> u64 {
    let p = p as u64;
    p * p.trailing_zeros() as u64 + p
}

/// x ↦ H·diag(s)·x / √p on the zero-padded vector; orthonormal, so the inverse is the
/// transpose: x = diag(s)·H·y / √p (H is symmetric).
#[derive(Debug, Clone)]
pub struct RandomizedHadamard {
    d: usize,
    p: usize,
    /// Random ±1 signs already multiplied by 1/√p.
    signs: Vec<f32>,
}

impl RandomizedHadamard {
    pub fn new(d: usize, seed: u64) -> Self {
        let p = padded_len(d);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = 1.0 / (p as f32).sqrt();
        let signs = (0..p)
            .map(|_| if rng.gen::<bool>() { scale } else { -scale })
            .collect();
        RandomizedHadamard { d, p, signs }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    pub fn padded(&self) -> usize {
        self.p
    }

    /// Rotate `x` (len d) into `out` (len p).
    #[inline(always)]
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let (head, pad) = out.split_at_mut(self.d);
        for ((o, v), s) in head.iter_mut().zip(x).zip(&self.signs) {
            *o = v * s;
        }
        pad.fill(0.0);
        fwht(out);
    }

    /// Inverse: `y` (len p, overwritten) back to `out` (len d). Components that landed
    /// in the padding are dropped, which is the orthogonal projection onto the data.
    #[inline(always)]
    pub fn inverse(&self, y: &mut [f32], out: &mut [f32]) {
        fwht(y);
        for ((o, v), s) in out.iter_mut().zip(y.iter()).zip(&self.signs) {
            *o = v * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns of the transform are orthonormal (R Rᵀ = I on the data subspace) and
    /// forward∘inverse is the identity, for every head_dim in a broad range.
    #[test]
    fn orthogonal_and_invertible_for_every_head_dim() {
        for d in (1..=130).chain([255, 256, 257, 384, 512]) {
            let r = RandomizedHadamard::new(d, 7);
            let p = r.padded();
            // Images of the basis vectors.
            let mut cols = vec![vec![0.0f32; p]; d];
            for (i, col) in cols.iter_mut().enumerate() {
                let mut e = vec![0.0f32; d];
                e[i] = 1.0;
                r.forward(&e, col);
            }
            for i in 0..d {
                for j in i..d {
                    let dot: f32 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "d={d} ({i},{j}) dot={dot}");
                }
            }
            let x: Vec<f32> = (0..d).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
            let mut y = vec![0.0; p];
            r.forward(&x, &mut y);
            let mut back = vec![0.0; d];
            r.inverse(&mut y, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-4, "d={d}");
            }
        }
    }

    #[test]
    fn fwht_matches_dense_sylvester() {
        for n in [1usize, 2, 4, 8, 16, 64, 256] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let mut y = x.clone();
            fwht(&mut y);
            let mut z = x.clone();
            fwht_portable(&mut z);
            assert_eq!(y, z, "SIMD and portable kernels differ at n={n}");
            for (i, yi) in y.iter().enumerate() {
                let want: f32 = (0..n)
                    .map(|j| {
                        let s = if (i & j).count_ones() % 2 == 0 {
                            1.0
                        } else {
                            -1.0
                        };
                        s * x[j]
                    })
                    .sum();
                assert!((yi - want).abs() < 1e-4, "n={n} i={i}");
            }
        }
    }
}
