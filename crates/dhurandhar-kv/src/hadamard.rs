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
    if x.len() == 128 && crate::simd::has_avx2() {
        // SAFETY: AVX2 is available and the length is exactly 16 registers.
        unsafe { fwht128_avx2(x) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x.len() >= 8 && crate::simd::has_avx2() {
        // SAFETY: AVX2 is available (checked above) and len ≥ 8 is a power of two.
        unsafe { fwht_avx2(x) };
        return;
    }
    fwht_portable(x)
}

/// Stages h = 1, 2, 4 of the FWHT inside one 8-lane register: swap partners with a
/// permute, then one FMA `v·(±1) + partner` gives the sum in the lower and the
/// difference in the upper lanes. The product by ±1 is exact and the FMA rounds once,
/// so each lane is exactly `a + b` or `a − b`, as in the portable kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn fwht8_in_register(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let s1 = _mm256_setr_ps(1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0);
    let s2 = _mm256_setr_ps(1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0);
    let s4 = _mm256_setr_ps(1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0);
    let v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, 0xB1));
    let v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, 0x4E));
    _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 1))
}

/// FWHT of `8·R` values held in an array of `R` registers (no memory traffic between
/// stages): the first three stages inside each register, the rest as butterflies
/// between registers. Every butterfly is the same `(a + b, a − b)` as the portable
/// kernel's, in the same stage order, so the result is bit-identical. A macro rather
/// than a function so it is always inlined into its `avx2` caller (LLVM declines to
/// inline a fully unrolled body, and the array would then live in memory).
#[cfg(target_arch = "x86_64")]
macro_rules! fwht_registers {
    ($v:expr, $r:expr) => {{
        let v = &mut $v;
        for r in v.iter_mut() {
            *r = fwht8_in_register(*r);
        }
        let mut h = 1;
        while h < $r {
            let mut base = 0;
            while base < $r {
                for j in base..base + h {
                    let (a, b) = (v[j], v[j + h]);
                    v[j] = _mm256_add_ps(a, b);
                    v[j + h] = _mm256_sub_ps(a, b);
                }
                base += 2 * h;
            }
            h *= 2;
        }
    }};
}

/// In-register FWHT of exactly 128 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwht128_avx2(x: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(x.len(), 128);
    let p = x.as_mut_ptr();
    let mut v = [_mm256_setzero_ps(); 16];
    for (i, r) in v.iter_mut().enumerate() {
        *r = _mm256_loadu_ps(p.add(8 * i));
    }
    fwht_registers!(v, 16);
    for (i, r) in v.iter().enumerate() {
        _mm256_storeu_ps(p.add(8 * i), *r);
    }
}

/// Fused randomized forward at d = p = 8·R: load, multiply by the signs, transform in
/// registers, store, and return Σ out² summed in the order of [`crate::simd::sum_sq`]
/// (so the norm is bit-identical to the portable path).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_sum_sq_avx2<const R: usize>(x: &[f32], signs: &[f32], out: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() >= 8 * R && signs.len() >= 8 * R && out.len() >= 8 * R);
    let mut v = [_mm256_setzero_ps(); R];
    for (i, r) in v.iter_mut().enumerate() {
        *r = _mm256_mul_ps(
            _mm256_loadu_ps(x.as_ptr().add(8 * i)),
            _mm256_loadu_ps(signs.as_ptr().add(8 * i)),
        );
    }
    fwht_registers!(v, R);
    for (i, r) in v.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), *r);
    }
    crate::simd::sum_sq_registers(&v)
}

/// Fused randomized inverse at d = p = 8·R: transform `y` in registers, multiply by the
/// signs, store to `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn inverse_avx2<const R: usize>(y: &[f32], signs: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(y.len() >= 8 * R && signs.len() >= 8 * R && out.len() >= 8 * R);
    let mut v = [_mm256_setzero_ps(); R];
    for (i, r) in v.iter_mut().enumerate() {
        *r = _mm256_loadu_ps(y.as_ptr().add(8 * i));
    }
    fwht_registers!(v, R);
    for (i, r) in v.iter().enumerate() {
        let s = _mm256_loadu_ps(signs.as_ptr().add(8 * i));
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), _mm256_mul_ps(*r, s));
    }
}

/// AVX2 FWHT: stages h = 1, 2, 4 inside each 8-lane register (permute + FMA by ±1),
/// then stages h ≥ 8 as contiguous 8-wide butterflies.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwht_avx2(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i < n {
        let v = fwht8_in_register(_mm256_loadu_ps(p.add(i)));
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
    /// Which fused in-register kernel applies (AVX2 present and d = p ∈ {64, 128}).
    fused: Fused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fused {
    None,
    #[cfg(target_arch = "x86_64")]
    R8,
    #[cfg(target_arch = "x86_64")]
    R16,
}

impl Fused {
    fn pick(d: usize, p: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if d == p && crate::simd::has_avx2() {
            match p {
                64 => return Fused::R8,
                128 => return Fused::R16,
                _ => {}
            }
        }
        let _ = (d, p);
        Fused::None
    }
}

impl RandomizedHadamard {
    pub fn new(d: usize, seed: u64) -> Self {
        let p = padded_len(d);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = 1.0 / (p as f32).sqrt();
        let signs = (0..p)
            .map(|_| if rng.gen::<bool>() { scale } else { -scale })
            .collect();
        RandomizedHadamard {
            d,
            p,
            signs,
            fused: Fused::pick(d, p),
        }
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
        self.forward_sum_sq(x, out);
    }

    /// [`Self::forward`] that also returns `crate::simd::sum_sq(out)` (fused into the
    /// transform on the register path, bit-identical either way).
    #[inline(always)]
    pub fn forward_sum_sq(&self, x: &[f32], out: &mut [f32]) -> f32 {
        match self.fused {
            // SAFETY: `Fused` is only picked when AVX2 is present; lengths are asserted.
            #[cfg(target_arch = "x86_64")]
            Fused::R8 => unsafe { forward_sum_sq_avx2::<8>(x, &self.signs, out) },
            #[cfg(target_arch = "x86_64")]
            Fused::R16 => unsafe { forward_sum_sq_avx2::<16>(x, &self.signs, out) },
            Fused::None => {
                self.forward_portable(x, out);
                crate::simd::sum_sq(&out[..self.p])
            }
        }
    }

    /// The unfused forward (signs, zero padding, [`fwht`]).
    #[inline(always)]
    pub fn forward_portable(&self, x: &[f32], out: &mut [f32]) {
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
        match self.fused {
            // SAFETY: `Fused` is only picked when AVX2 is present; lengths are asserted.
            #[cfg(target_arch = "x86_64")]
            Fused::R8 => unsafe { inverse_avx2::<8>(y, &self.signs, out) },
            #[cfg(target_arch = "x86_64")]
            Fused::R16 => unsafe { inverse_avx2::<16>(y, &self.signs, out) },
            Fused::None => self.inverse_portable(y, out),
        }
    }

    /// Registers of the fused in-register kernels at this size (0 when unfused).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn registers(&self) -> usize {
        match self.fused {
            Fused::R8 => 8,
            Fused::R16 => 16,
            Fused::None => 0,
        }
    }

    /// Fused forward at d = p = 8·R that hands the rotated vector, still in registers,
    /// to `f` (an encoder's quantizer) instead of storing it. Same arithmetic as
    /// [`Self::forward`].
    ///
    /// # Safety
    /// AVX2 and FMA must be available and `R` must equal [`Self::registers`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn forward_then<const R: usize, T>(
        &self,
        x: &[f32],
        f: impl FnOnce(&[std::arch::x86_64::__m256; R]) -> T,
    ) -> T {
        use std::arch::x86_64::*;
        assert!(self.registers() == R && x.len() >= 8 * R);
        let mut v: [__m256; R] = std::array::from_fn(|i| {
            _mm256_mul_ps(
                _mm256_loadu_ps(x.as_ptr().add(8 * i)),
                _mm256_loadu_ps(self.signs.as_ptr().add(8 * i)),
            )
        });
        fwht_registers!(v, R);
        f(&v)
    }

    /// Fused inverse whose input register `i` (values 8i..8i+8) is produced by
    /// `load(i)`, so a decoder's lookup feeds the transform without a round trip
    /// through memory. Same arithmetic as [`Self::inverse`].
    ///
    /// # Safety
    /// AVX2 and FMA must be available and `R` must equal [`Self::registers`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn inverse_from<const R: usize>(
        &self,
        mut load: impl FnMut(usize) -> std::arch::x86_64::__m256,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        assert!(self.registers() == R && out.len() >= 8 * R);
        let mut v: [__m256; R] = std::array::from_fn(&mut load);
        fwht_registers!(v, R);
        for (i, r) in v.iter().enumerate() {
            let s = _mm256_loadu_ps(self.signs.as_ptr().add(8 * i));
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), _mm256_mul_ps(*r, s));
        }
    }

    /// The unfused inverse ([`fwht`] in place, then the signs).
    #[inline(always)]
    pub fn inverse_portable(&self, y: &mut [f32], out: &mut [f32]) {
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

    /// The fused in-register forward/inverse (used at d = 64, 128 with AVX2) give
    /// exactly the unfused results, and the fused Σ out² equals `simd::sum_sq`.
    #[test]
    fn fused_paths_match_unfused_exactly() {
        for d in [8usize, 64, 96, 128, 256] {
            let r = RandomizedHadamard::new(d, 11);
            let p = r.padded();
            let x: Vec<f32> = (0..d).map(|i| (i as f32 * 1.3).cos() * 3.0).collect();
            let (mut a, mut b) = (vec![0.0; p], vec![0.0; p]);
            let ss = r.forward_sum_sq(&x, &mut a);
            r.forward_portable(&x, &mut b);
            assert_eq!(a, b, "forward d={d}");
            assert_eq!(ss.to_bits(), crate::simd::sum_sq(&b).to_bits(), "d={d}");
            let (mut y1, mut y2) = (a.clone(), a.clone());
            let (mut o1, mut o2) = (vec![0.0; d], vec![0.0; d]);
            r.inverse(&mut y1, &mut o1);
            r.inverse_portable(&mut y2, &mut o2);
            assert_eq!(o1, o2, "inverse d={d}");
        }
    }

    #[test]
    fn fwht_matches_dense_sylvester() {
        for n in [1usize, 2, 4, 8, 16, 64, 128, 256] {
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
