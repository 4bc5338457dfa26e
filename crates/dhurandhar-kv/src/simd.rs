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

/// Σ x² with 8 independent accumulators (vectorizable, and the same result on every
/// kernel path because the summation order is fixed).
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    let mut tail = 0.0;
    for v in it.remainder() {
        tail += v * v;
    }
    let s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    s + tail
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
