//! F16 and BF16 weights against f32 activations: a portable kernel and an AVX2/F16C one
//! that converts 8 values per instruction straight from the mapped bytes.
//!
//! The portable kernel converts through `half` in chunks of 64 and dots in f32; a NEON
//! kernel (`fcvtl` for F16, a shift for BF16) would sit beside the AVX2 one.

use crate::quant::GgmlType;

/// Whether `t` is handled here.
pub fn supports(t: GgmlType) -> bool {
    matches!(t, GgmlType::F16 | GgmlType::BF16)
}

#[inline]
fn to_f32(t: GgmlType, b: &[u8]) -> f32 {
    let bits = u16::from_le_bytes([b[0], b[1]]);
    if t == GgmlType::F16 {
        half::f16::from_bits(bits).to_f32()
    } else {
        f32::from_bits((bits as u32) << 16)
    }
}

/// Portable dot product of an F16/BF16 row (`2·x.len()` bytes) with f32 activations.
pub fn dot_portable(t: GgmlType, w: &[u8], x: &[f32]) -> f32 {
    assert!(supports(t) && w.len() >= 2 * x.len());
    let mut acc = [0f32; 8];
    let mut buf = [0f32; 64];
    for (wc, xc) in w.chunks(128).zip(x.chunks(64)) {
        for (o, b) in buf.iter_mut().zip(wc.chunks_exact(2)) {
            *o = to_f32(t, b);
        }
        for (j, (&wv, &xv)) in buf.iter().zip(xc).enumerate() {
            acc[j % 8] += wv * xv;
        }
    }
    acc.iter().sum()
}

/// The best kernel for this CPU.
#[inline]
pub fn dot_simd(t: GgmlType, w: &[u8], x: &[f32], s: crate::kernels::Simd) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if s.avx2() {
        assert!(s.runnable() && supports(t) && w.len() >= 2 * x.len());
        // SAFETY: the tier was detected on this CPU; lengths checked.
        return unsafe { avx2::dot(t, w, x) };
    }
    let _ = s;
    dot_portable(t, w, x)
}

/// Weight rows `r0..r1` of a matrix whose rows are `row_bytes` apart from `w`, against
/// four activation rows (prefill), into `out(row, token, value)`: two rows at a time,
/// so each 8 weights are converted once for the four tokens and each 8 activations
/// loaded once for both rows. `false` when the CPU has no AVX2 kernel.
#[inline]
pub fn rows_x4_simd(
    t: GgmlType,
    w: &[u8],
    row_bytes: usize,
    (r0, r1): (usize, usize),
    x: [&[f32]; 4],
    s: crate::kernels::Simd,
    mut out: impl FnMut(usize, usize, f32),
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if s.avx2() {
        let n = x[0].len();
        assert!(s.runnable() && supports(t) && row_bytes >= 2 * n);
        assert!(x.iter().all(|r| r.len() == n));
        assert!(r0 <= r1 && r1 * row_bytes <= w.len());
        let base = w.as_ptr();
        let mut r = r0;
        while r < r1 {
            let p = base.wrapping_add(r * row_bytes);
            // SAFETY: the tier was detected on this CPU; the asserts above cover every
            // row read and every activation row.
            if r + 2 <= r1 {
                let v = unsafe { avx2::rows_x4::<2>(t, p, row_bytes, x) };
                for (k, vr) in v.into_iter().enumerate() {
                    vr.into_iter()
                        .enumerate()
                        .for_each(|(j, v)| out(r + k, j, v));
                }
                r += 2;
            } else {
                let [v] = unsafe { avx2::rows_x4::<1>(t, p, row_bytes, x) };
                v.into_iter().enumerate().for_each(|(j, v)| out(r, j, v));
                r += 1;
            }
        }
        return true;
    }
    let _ = (t, w, row_bytes, r0, r1, x, s, &mut out);
    false
}

/// Rows `r0..r1` of a matrix whose rows are `row_bytes` apart from `w`, against one
/// activation row (decode), into `out[r - r0]`. `false` when the CPU has no AVX2
/// kernel.
#[inline]
pub fn dot_rows_simd(
    t: GgmlType,
    w: &[u8],
    row_bytes: usize,
    (r0, r1): (usize, usize),
    x: &[f32],
    out: &mut [f32],
    s: crate::kernels::Simd,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if s.avx2() {
        assert!(s.runnable() && supports(t) && row_bytes >= 2 * x.len());
        assert!(r0 <= r1 && r1 * row_bytes <= w.len() && r1 - r0 == out.len());
        let o = out.as_mut_ptr();
        // SAFETY: the tier was detected on this CPU; the asserts cover every read and
        // write.
        unsafe { avx2::dot_rows(t, w.as_ptr(), row_bytes, (r0, r1), x, o) };
        return true;
    }
    let _ = (t, w, row_bytes, r0, r1, x, out, s);
    false
}

/// The AVX2 kernel, or `None` without AVX2/FMA/F16C.
pub fn dot_avx2(t: GgmlType, w: &[u8], x: &[f32]) -> Option<f32> {
    let s = crate::kernels::Simd::Avx2;
    s.runnable().then(|| dot_simd(t, w, x, s))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::kernels::avx2::hsum;
    use crate::quant::GgmlType;

    /// Eight weights at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(bf16: bool, p: *const u8) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        if bf16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    /// # Safety
    /// AVX2/FMA/F16C present; `w.len() >= 2·x.len()`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(t: GgmlType, w: &[u8], x: &[f32]) -> f32 {
        let bf16 = t == GgmlType::BF16;
        let n = x.len();
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                *a = _mm256_fmadd_ps(load8(bf16, wp.add(2 * j)), _mm256_loadu_ps(xp.add(j)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                load8(bf16, wp.add(2 * i)),
                _mm256_loadu_ps(xp.add(i)),
                acc[0],
            );
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            sum += super::to_f32(t, std::slice::from_raw_parts(wp.add(2 * i), 2)) * *xp.add(i);
            i += 1;
        }
        sum
    }

    /// Rows `r0..r1` (`row_bytes` apart from `w`) against one activation row, in
    /// one function: the matrix is read front to back with no dispatch per row.
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `w` holds `r1` rows of `row_bytes >= 2·x.len()` bytes;
    /// `out` has room for `r1 - r0` values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(
        t: GgmlType,
        w: *const u8,
        row_bytes: usize,
        (r0, r1): (usize, usize),
        x: &[f32],
        out: *mut f32,
    ) {
        for r in r0..r1 {
            let row = std::slice::from_raw_parts(w.add(r * row_bytes), row_bytes);
            *out.add(r - r0) = dot(t, row, x);
        }
    }

    /// `R` weight rows (`row_bytes` apart from `w`) against four activation rows, one
    /// accumulator per pair: each 8 weights are converted once for the four tokens and
    /// each 8 activations loaded once for the `R` rows. Returns `[row][token]`.
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; every `x[j]` has the same length `n`; `w` holds `R` rows
    /// of `row_bytes >= 2·n` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows_x4<const R: usize>(
        t: GgmlType,
        w: *const u8,
        row_bytes: usize,
        x: [&[f32]; 4],
    ) -> [[f32; 4]; R] {
        let bf16 = t == GgmlType::BF16;
        let n = x[0].len();
        let xp = [x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr()];
        // Plain loops over constant bounds, no closures: a closure is not always inlined
        // into this function, and one that borrows `acc` keeps it in memory.
        let mut wp = [w; R];
        for (r, p) in wp.iter_mut().enumerate() {
            *p = w.add(r * row_bytes);
        }
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut wv = [_mm256_setzero_ps(); R];
        let mut i = 0;
        while i + 8 <= n {
            for r in 0..R {
                wv[r] = load8(bf16, wp[r].add(2 * i));
            }
            for j in 0..4 {
                let xv = _mm256_loadu_ps(xp[j].add(i));
                for r in 0..R {
                    acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; 4]; R];
        for r in 0..R {
            for j in 0..4 {
                let mut sum = hsum(acc[r][j]);
                for k in i..n {
                    let wk = super::to_f32(t, std::slice::from_raw_parts(wp[r].add(2 * k), 2));
                    sum += wk * *xp[j].add(k);
                }
                out[r][j] = sum;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_including_the_tail() {
        // 37 values: two 16-value AVX2 steps and a 5-value scalar tail.
        let vals: Vec<f32> = (0..37).map(|i| (i as f32 * 0.61).sin()).collect();
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.23).cos()).collect();
        for t in [GgmlType::F16, GgmlType::BF16] {
            let w: Vec<u8> = vals
                .iter()
                .flat_map(|&v| match t {
                    GgmlType::F16 => half::f16::from_f32(v).to_bits().to_le_bytes(),
                    _ => half::bf16::from_f32(v).to_bits().to_le_bytes(),
                })
                .collect();
            let want: f32 = w
                .chunks_exact(2)
                .zip(&x)
                .map(|(b, xv)| to_f32(t, b) * xv)
                .sum();
            assert!((dot_portable(t, &w, &x) - want).abs() < 1e-5, "{t:?}");
            if let Some(v) = dot_avx2(t, &w, &x) {
                assert!((v - want).abs() < 1e-5, "{t:?} avx2 {v} vs {want}");
            }
            // Two weight rows by four activation rows agree with the one-row kernel.
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|j| x.iter().map(|v| v * (j as f32 - 1.5)).collect())
                .collect();
            let w3: Vec<u8> = w.iter().chain(&w).chain(&w).copied().collect();
            for s in crate::kernels::Simd::available() {
                let four = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
                let mut seen = 0;
                let ran = rows_x4_simd(t, &w3, w.len(), (0, 3), four, s, |r, j, v| {
                    let one = dot_portable(t, &w3[r * w.len()..(r + 1) * w.len()], four[j]);
                    assert!((v - one).abs() < 1e-5, "{t:?} {s:?} row {r} token {j}");
                    seen += 1;
                });
                assert_eq!(seen, if ran { 12 } else { 0 }, "{t:?} {s:?}");
            }
        }
    }
}
