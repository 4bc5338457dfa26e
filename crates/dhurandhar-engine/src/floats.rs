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
        assert!(supports(t) && w.len() >= 2 * x.len());
        // SAFETY: Simd::Avx2 means avx2/fma/f16c were detected; lengths checked.
        return unsafe { avx2::dot(t, w, x) };
    }
    let _ = s;
    dot_portable(t, w, x)
}

/// The AVX2 kernel, or `None` without AVX2/FMA/F16C.
pub fn dot_avx2(t: GgmlType, w: &[u8], x: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(supports(t) && w.len() >= 2 * x.len());
        // SAFETY: features detected above; lengths checked.
        return Some(unsafe { avx2::dot(t, w, x) });
    }
    let _ = (t, w, x);
    None
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

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
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(t: GgmlType, w: &[u8], x: &[f32]) -> f32 {
        let bf16 = t == GgmlType::BF16;
        let n = x.len();
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            _mm_prefetch::<_MM_HINT_T0>(wp.add(2 * i + 512) as *const i8);
            acc0 = _mm256_fmadd_ps(load8(bf16, wp.add(2 * i)), _mm256_loadu_ps(xp.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                load8(bf16, wp.add(2 * i + 16)),
                _mm256_loadu_ps(xp.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let v = _mm256_add_ps(acc0, acc1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
        while i < n {
            sum += super::to_f32(t, std::slice::from_raw_parts(wp.add(2 * i), 2)) * *xp.add(i);
            i += 1;
        }
        sum
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
        }
    }
}
