//! Runtime CPU feature detection. Kernels are written as plain loops over fixed-width
//! chunks (auto-vectorized) and compiled twice: once portable, once inside an
//! `avx2,fma` `#[target_feature]` function picked at run time on x86-64.

/// True when the AVX2 + FMA kernels may run (cached by `std` after the first call).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which kernel family [`has_avx2`] selects, for reports.
pub fn kernel_name() -> &'static str {
    if has_avx2() {
        "avx2+fma"
    } else {
        "portable"
    }
}

/// Σ x² with 4 × 8 independent accumulators (vectorizable, a short dependency chain, and
/// the same result on every kernel path because the summation order is fixed: chunk
/// 8k..8k+8 of each 32 goes to accumulator k, leftover 8-chunks to accumulator 0, then
/// `(a0 + a1) + (a2 + a3)` per lane, lanes `(l0 + l4) + (l1 + l5) + …`, then the tail).
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [[0.0f32; 8]; 4];
    let mut it = x.chunks_exact(32);
    for c in &mut it {
        for (k, a) in acc.iter_mut().enumerate() {
            for i in 0..8 {
                a[i] += c[8 * k + i] * c[8 * k + i];
            }
        }
    }
    let mut it8 = it.remainder().chunks_exact(8);
    for c in &mut it8 {
        for i in 0..8 {
            acc[0][i] += c[i] * c[i];
        }
    }
    let mut tail = 0.0;
    for v in it8.remainder() {
        tail += v * v;
    }
    let l: [f32; 8] = std::array::from_fn(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]));
    let s = (l[0] + l[4]) + (l[1] + l[5]) + (l[2] + l[6]) + (l[3] + l[7]);
    s + tail
}

/// [`sum_sq`] of `8·R` values held in registers (R a multiple of 4), in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(crate) fn sum_sq_registers<const R: usize>(v: &[std::arch::x86_64::__m256; R]) -> f32 {
    use std::arch::x86_64::*;
    assert!(R.is_multiple_of(4));
    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, r) in v.iter().enumerate() {
        acc[i % 4] = _mm256_add_ps(acc[i % 4], _mm256_mul_ps(*r, *r));
    }
    let l = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut a = [0.0f32; 8];
    // SAFETY: `a` holds 8 floats.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), l) };
    (a[0] + a[4]) + (a[1] + a[5]) + (a[2] + a[6]) + (a[3] + a[7])
}

/// max |x| with 8 lanes.
#[inline(always)]
pub fn abs_max(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i].abs());
        }
    }
    let mut m = it.remainder().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// (min, max) of x with 8 lanes.
#[inline(always)]
pub fn min_max(x: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in it.remainder() {
        a = a.min(*v);
        b = b.max(*v);
    }
    for i in 0..8 {
        a = a.min(lo[i]);
        b = b.max(hi[i]);
    }
    (a, b)
}

/// Index of the first NaN/Inf, checked branch-free per chunk.
#[inline(always)]
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    for (ci, c) in x.chunks(64).enumerate() {
        let bad = c
            .iter()
            .fold(false, |acc, v| acc | (v.to_bits() & EXP == EXP));
        if bad {
            let j = c.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some(ci * 64 + j);
        }
    }
    None
}

/// Run `f` inside an `avx2,fma` function when the CPU has them, so the loops it
/// inlines are compiled for AVX2; otherwise run it as is.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports avx2 and fma (checked just above).
        return unsafe { run_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
