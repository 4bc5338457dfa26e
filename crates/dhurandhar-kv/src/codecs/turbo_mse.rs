//! TurboQuant as published (arXiv 2504.19874).
//!
//! `turbo-mse`: keep ‖x‖, rotate the unit vector with a randomized Hadamard transform,
//! quantize each coordinate with the Lloyd–Max codebook of its exact post-rotation
//! density. Record: `[‖x‖: f16][codes: ⌈p·b/8⌉ B]`.
//!
//! `turbo-prod`: `turbo-mse` at b−1 bits, then 1-bit QJL on the residual e of the unit
//! vector: signs of M·e with an independent randomized Hadamard M, and ‖e‖. Decoding
//! adds √(π/2)/√p·‖e‖·Mᵀ·sign(M e), an (approximately, since M is structured rather
//! than Gaussian) unbiased estimate of e, so inner products are unbiased.
//! Record: `[‖x‖: f16][‖e‖: f16][codes: ⌈p·(b−1)/8⌉ B][signs: ⌈p/8⌉ B]`.

use std::sync::Arc;

use crate::bits::{pack, packed_len, unpack};
use crate::codec::{KvError, KvRole};
use crate::framed::{GroupCodec, Scratch};
use crate::hadamard::RandomizedHadamard;
use crate::lloyd::{codebook, Codebook};
use crate::quant::{f16_round, get_f16, put_f16};

#[derive(Debug, Clone)]
pub struct TurboMse {
    d: usize,
    p: usize,
    bits: u32,
    /// Bits of the Lloyd–Max stage (bits, or bits − 1 with QJL).
    mse_bits: u32,
    rh: RandomizedHadamard,
    cb: Option<Arc<Codebook>>,
    /// The codebook levels padded to 256 entries, so a u8 code indexes it without a
    /// bounds check.
    table: Box<[f32; 256]>,
    qjl: Option<RandomizedHadamard>,
    /// The 7 positive thresholds of a 4-bit codebook (it is symmetric).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pos4: [f32; 7],
    /// Use the AVX2 4-bit quantize/pack and unpack/lookup kernels (never set off x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2_4bit: bool,
    /// Also fuse rotation, norm and quantization in registers (d = p ∈ {64, 128}, F16C).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2_fused: bool,
}

impl TurboMse {
    pub fn new(d: usize, bits: u32, seed: u64, prod: bool) -> Self {
        let rh = RandomizedHadamard::new(d, seed);
        let p = rh.padded();
        let mse_bits = if prod { bits - 1 } else { bits };
        let cb = (mse_bits > 0).then(|| codebook(p, mse_bits));
        let qjl = prod.then(|| RandomizedHadamard::new(p, seed ^ 0x9e37_79b9_7f4a_7c15));
        let mut table = Box::new([0.0f32; 256]);
        if let Some(cb) = &cb {
            table[..cb.levels.len()].copy_from_slice(&cb.levels);
        }
        let mut pos4 = [0.0f32; 7];
        let mut four = false;
        if let Some(cb) = cb.as_ref().filter(|cb| cb.bits == 4) {
            pos4.copy_from_slice(&cb.bounds[8..]);
            four = true;
        }
        let avx2_4bit = four && !prod && p.is_multiple_of(64) && crate::simd::has_avx2();
        #[cfg(target_arch = "x86_64")]
        let avx2_fused = avx2_4bit
            && matches!(rh.registers(), 8 | 16)
            && std::arch::is_x86_feature_detected!("f16c");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2_fused = false;
        TurboMse {
            avx2_fused,
            pos4,
            avx2_4bit,
            table,
            d,
            p,
            bits,
            mse_bits,
            rh,
            cb,
            qjl,
        }
    }

    fn head(&self) -> usize {
        if self.qjl.is_some() {
            4
        } else {
            2
        }
    }
}

impl GroupCodec for TurboMse {
    fn name(&self) -> &'static str {
        if self.qjl.is_some() {
            "turbo-prod"
        } else {
            "turbo-mse"
        }
    }
    fn head_dim(&self) -> usize {
        self.d
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn group(&self, _role: KvRole) -> usize {
        1
    }
    fn record_len(&self, _role: KvRole) -> usize {
        let q = if self.qjl.is_some() {
            packed_len(self.p, 1)
        } else {
            0
        };
        self.head() + packed_len(self.p, self.mse_bits) + q
    }
    fn scratch_len(&self) -> usize {
        self.p
    }

    #[inline(always)]
    fn encode_group(
        &self,
        _role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let p = self.p;
        #[cfg(target_arch = "x86_64")]
        if self.avx2_fused {
            let cl = packed_len(p, 4);
            // SAFETY: `avx2_fused` is set only with AVX2, FMA and F16C present, 4-bit
            // codes, no QJL and d = p = 8·registers; the kernels assert the lengths.
            return unsafe {
                match self.rh.registers() {
                    8 => avx2::encode_fused::<8>(&self.rh, x, &self.pos4, &mut out[..2 + cl]),
                    _ => avx2::encode_fused::<16>(&self.rh, x, &self.pos4, &mut out[..2 + cl]),
                }
            };
        }
        let r = &mut s.f[..p];
        let ss = self.rh.forward_sum_sq(x, r);
        let (nb, n) = f16_round(ss.sqrt(), 0)?;
        put_f16(out, 0, nb);
        let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
        let h = self.head();
        let cl = packed_len(p, self.mse_bits);
        #[cfg(target_arch = "x86_64")]
        if self.avx2_4bit {
            // SAFETY: `avx2_4bit` is set only with AVX2 present, 4-bit codes, no QJL
            // and p a multiple of 64; the kernel asserts the lengths.
            unsafe { avx2::quantize_pack4(r, inv, &self.pos4, &mut out[h..h + cl]) };
            return Ok(());
        }
        let codes = &mut s.c[..p];
        if let Some(cb) = &self.cb {
            if cb.bits <= 4 && p.is_multiple_of(8) {
                // One fused pass in 8-lane blocks: scale, |u|, count the positive
                // thresholds exceeded (the codebook is symmetric), place by sign.
                let k = cb.levels.len();
                let pos = &cb.bounds[k / 2..];
                let half = (k / 2) as i32;
                for (rc, cc) in r.chunks_exact_mut(8).zip(codes.chunks_exact_mut(8)) {
                    let mut u = [0.0f32; 8];
                    let mut cnt = [0i32; 8];
                    for i in 0..8 {
                        u[i] = rc[i] * inv;
                        rc[i] = u[i];
                    }
                    for &t in pos {
                        for i in 0..8 {
                            cnt[i] += (u[i].abs() > t) as i32;
                        }
                    }
                    for i in 0..8 {
                        let q = if u[i] > 0.0 {
                            half + cnt[i]
                        } else {
                            half - 1 - cnt[i]
                        };
                        cc[i] = q as u8;
                    }
                }
            } else {
                for (c, v) in codes.iter_mut().zip(r.iter_mut()) {
                    *v *= inv;
                    *c = cb.quantize(*v);
                }
            }
            pack(codes, self.mse_bits, &mut out[h..h + cl]);
        } else {
            for v in r.iter_mut() {
                *v *= inv;
            }
        }
        if let Some(qjl) = &self.qjl {
            // Residual of the unit vector after the Lloyd–Max stage.
            if let Some(cb) = &self.cb {
                for (v, &c) in r.iter_mut().zip(codes.iter()) {
                    *v -= cb.levels[c as usize];
                }
            }
            let (rb, _) = f16_round(crate::simd::sum_sq(r).sqrt(), 0)?;
            put_f16(out, 2, rb);
            let z = &mut s.g[..p];
            qjl.forward(r, z);
            let signs = &mut s.c2[..p];
            for (c, v) in signs.iter_mut().zip(z.iter()) {
                *c = (*v >= 0.0) as u8;
            }
            pack(signs, 1, &mut out[h + cl..]);
        }
        Ok(())
    }

    #[inline(always)]
    fn decode_group(
        &self,
        _role: KvRole,
        rec: &[u8],
        out: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let p = self.p;
        let n = get_f16(rec, 0, "norm")?;
        let h = self.head();
        let cl = packed_len(p, self.mse_bits);
        let y = &mut s.f[..p];
        #[cfg(target_arch = "x86_64")]
        if self.avx2_4bit {
            let codes = &rec[h..h + cl];
            // SAFETY: as in `encode_group`; `inverse_from` asserts its register count.
            unsafe {
                match self.rh.registers() {
                    8 => avx2::decode_fused::<8>(&self.rh, codes, &self.table, n, out),
                    16 => avx2::decode_fused::<16>(&self.rh, codes, &self.table, n, out),
                    _ => {
                        avx2::unpack_lookup4(codes, &self.table, n, y);
                        self.rh.inverse(y, out);
                    }
                }
            }
            return Ok(());
        }
        if self.cb.is_some() {
            let codes = &mut s.c[..p];
            unpack(&rec[h..h + cl], self.mse_bits, codes);
            let t = &*self.table;
            for (v, &c) in y.iter_mut().zip(codes.iter()) {
                *v = t[c as usize] * n;
            }
        } else {
            y.fill(0.0);
        }
        if let Some(qjl) = &self.qjl {
            let rn = get_f16(rec, 2, "residual norm")?;
            let signs = &mut s.c2[..p];
            unpack(&rec[h + cl..], 1, signs);
            let a = (std::f32::consts::PI / 2.0).sqrt() / (p as f32).sqrt() * rn * n;
            let z = &mut s.g[..p];
            for (v, &c) in z.iter_mut().zip(signs.iter()) {
                *v = if c != 0 { a } else { -a };
            }
            let e = &mut s.h[..p];
            qjl.inverse(z, e);
            for (v, w) in y.iter_mut().zip(e.iter()) {
                *v += w;
            }
        }
        self.rh.inverse(y, out);
        Ok(())
    }
}

/// AVX2 kernels of the 4-bit `turbo-mse` record (bit-identical to the portable loops).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::codec::KvError;

    /// Scale the rotated vector by `inv`, count the positive thresholds below |u| (the
    /// codebook is symmetric), place the code by sign, and pack two codes per byte
    /// (LSB first) into `out` (p/2 bytes). `r.len()` must be a multiple of 64.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_pack4(r: &[f32], inv: f32, pos: &[f32; 7], out: &mut [u8]) {
        let p = r.len();
        assert!(p.is_multiple_of(64) && out.len() == p / 2);
        // SAFETY: register i reads r[8i..8i+8], inside r (p is a multiple of 64).
        let load = |i: usize| unsafe { _mm256_loadu_ps(r.as_ptr().add(8 * i)) };
        quantize_pack4_from(load, p, inv, pos, out)
    }

    /// Rotate, take the norm, round it to f16 and quantize without leaving registers:
    /// `out` is the record `[‖x‖: f16][p/2 code bytes]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn encode_fused<const R: usize>(
        rh: &crate::hadamard::RandomizedHadamard,
        x: &[f32],
        pos: &[f32; 7],
        out: &mut [u8],
    ) -> Result<(), KvError> {
        assert!(out.len() == 2 + 4 * R && R.is_multiple_of(8));
        rh.forward_then::<R, _>(x, |v| {
            // Σ v² in the order of `simd::sum_sq`, so the norm matches the portable path.
            let norm = crate::simd::sum_sq_registers(v).sqrt();
            let (nb, n) = f16_round_hw(norm);
            if !n.is_finite() {
                return Err(KvError::Overflow {
                    token: 0,
                    magnitude: norm.abs(),
                });
            }
            out[..2].copy_from_slice(&nb.to_le_bytes());
            let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
            quantize_pack4_from(|i| v[i], 8 * R, inv, pos, &mut out[2..]);
            Ok(())
        })
    }

    /// f32 → f16 bits (round to nearest even, as `half`) and back, with F16C.
    #[target_feature(enable = "f16c")]
    #[inline]
    pub fn f16_round_hw(v: f32) -> (u16, f32) {
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
        let bits = _mm_extract_epi16::<0>(h) as u16;
        (bits, _mm_cvtss_f32(_mm_cvtph_ps(h)))
    }

    /// [`quantize_pack4`] over registers produced by `load(i)` (8 values each).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn quantize_pack4_from(
        load: impl Fn(usize) -> __m256,
        p: usize,
        inv: f32,
        pos: &[f32; 7],
        out: &mut [u8],
    ) {
        assert!(p.is_multiple_of(64) && out.len() == p / 2);
        let vinv = _mm256_set1_ps(inv);
        let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let zero = _mm256_setzero_ps();
        let t: [__m256; 7] = std::array::from_fn(|i| _mm256_set1_ps(pos[i]));
        let eight = _mm256_set1_epi32(8);
        let seven = _mm256_set1_epi32(7);
        let nib = _mm256_set1_epi16(0x1001);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let codes8 = |i: usize| -> __m256i {
            let u = _mm256_mul_ps(load(i), vinv);
            let a = _mm256_and_ps(u, absmask);
            // Each compare is all-ones (−1) where |u| > t: `neg` is −count.
            let mut neg = _mm256_setzero_si256();
            for tk in &t {
                neg = _mm256_add_epi32(neg, _mm256_castps_si256(_mm256_cmp_ps(a, *tk, _CMP_GT_OQ)));
            }
            let gt0 = _mm256_castps_si256(_mm256_cmp_ps(u, zero, _CMP_GT_OQ));
            let qp = _mm256_sub_epi32(eight, neg); // 8 + count
            let qn = _mm256_add_epi32(seven, neg); // 7 − count
            _mm256_blendv_epi8(qn, qp, gt0)
        };
        // 64 codes → 32 bytes per step.
        for blk in 0..p / 64 {
            let mut m = [_mm256_setzero_si256(); 2];
            for (half, mh) in m.iter_mut().enumerate() {
                let b = 8 * blk + 4 * half;
                let a = _mm256_packs_epi32(codes8(b), codes8(b + 1));
                let c = _mm256_packs_epi32(codes8(b + 2), codes8(b + 3));
                // 32 codes as bytes, restored to order across the 128-bit lanes.
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, c), order);
                // Byte pairs (lo, hi) → lo + 16·hi as i16.
                *mh = _mm256_maddubs_epi16(bytes, nib);
            }
            let packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(m[0], m[1]), 0xD8);
            let dst = &mut out[32 * blk..32 * blk + 32];
            // SAFETY: `dst` is exactly the 32 bytes written.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, packed) };
        }
    }

    /// Levels `table[code] · n` of codes 8i..8i+8, looked up with two in-register
    /// permutes (bit 3 of the code, moved to the sign bit, selects the upper half).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn lookup8(bytes: &[u8], i: usize, lo_t: __m256, hi_t: __m256, vn: __m256) -> __m256 {
        let mask = _mm_set1_epi8(0x0f);
        let block = &bytes[16 * (i / 4)..16 * (i / 4) + 16];
        // SAFETY: `block` is exactly the 16 bytes read.
        let b = unsafe { _mm_loadu_si128(block.as_ptr() as *const __m128i) };
        let lo = _mm_and_si128(b, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
        let c = if i % 4 < 2 {
            _mm_unpacklo_epi8(lo, hi)
        } else {
            _mm_unpackhi_epi8(lo, hi)
        };
        let c = if i % 2 == 1 { _mm_srli_si128(c, 8) } else { c };
        let idx = _mm256_cvtepu8_epi32(c);
        let l = _mm256_permutevar8x32_ps(lo_t, idx);
        let h = _mm256_permutevar8x32_ps(hi_t, idx);
        let sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
        _mm256_mul_ps(_mm256_blendv_ps(l, h, sel), vn)
    }

    /// Unpack, look up and inverse-rotate in registers at d = p = 8·R.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decode_fused<const R: usize>(
        rh: &crate::hadamard::RandomizedHadamard,
        bytes: &[u8],
        table: &[f32; 256],
        n: f32,
        out: &mut [f32],
    ) {
        assert!(bytes.len() == 4 * R && R.is_multiple_of(4));
        let lo_t = _mm256_loadu_ps(table.as_ptr());
        let hi_t = _mm256_loadu_ps(table.as_ptr().add(8));
        let vn = _mm256_set1_ps(n);
        rh.inverse_from::<R>(|i| lookup8(bytes, i, lo_t, hi_t, vn), out);
    }

    /// Unpack p 4-bit codes from `bytes` (p/2) and write `table[code] · n` into `y` (p),
    /// looking the 16 levels up with two in-register permutes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn unpack_lookup4(bytes: &[u8], table: &[f32; 256], n: f32, y: &mut [f32]) {
        let p = y.len();
        assert!(p.is_multiple_of(32) && bytes.len() == p / 2);
        let lo_t = _mm256_loadu_ps(table.as_ptr());
        let hi_t = _mm256_loadu_ps(table.as_ptr().add(8));
        let vn = _mm256_set1_ps(n);
        let mask = _mm_set1_epi8(0x0f);
        let look = |c: __m128i, dst: *mut f32| {
            let idx = _mm256_cvtepu8_epi32(c);
            let l = _mm256_permutevar8x32_ps(lo_t, idx);
            let h = _mm256_permutevar8x32_ps(hi_t, idx);
            // Bit 3 of the code moved to the sign bit selects the upper half.
            let sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
            _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_blendv_ps(l, h, sel), vn));
        };
        for blk in 0..p / 32 {
            let b = _mm_loadu_si128(bytes.as_ptr().add(16 * blk) as *const __m128i);
            let lo = _mm_and_si128(b, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
            let c0 = _mm_unpacklo_epi8(lo, hi); // codes 0..16
            let c1 = _mm_unpackhi_epi8(lo, hi); // codes 16..32
            let dst = y.as_mut_ptr().add(32 * blk);
            look(c0, dst);
            look(_mm_srli_si128(c0, 8), dst.add(8));
            look(c1, dst.add(16));
            look(_mm_srli_si128(c1, 8), dst.add(24));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 4-bit kernels (when the CPU has AVX2) produce exactly the bytes and the
    /// floats of the portable loops, including a zero vector and d = 96 (padded, so
    /// portable only).
    #[test]
    fn avx2_and_portable_4bit_paths_agree_exactly() {
        for d in [64usize, 96, 128, 256] {
            let fast = TurboMse::new(d, 4, 5, false);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                fast.avx2_fused,
                crate::simd::has_avx2()
                    && std::arch::is_x86_feature_detected!("f16c")
                    && d <= 128
                    && d != 96
            );
            // Unfused AVX2 kernels, then fully portable.
            let mut mid = fast.clone();
            mid.avx2_fused = false;
            let mut port = mid.clone();
            port.avx2_4bit = false;
            let rl = fast.record_len(KvRole::Key);
            let mut s = Scratch::new(fast.scratch_len());
            for t in 0..40 {
                let x: Vec<f32> = if t == 0 {
                    vec![0.0; d]
                } else {
                    (0..d)
                        .map(|i| ((i * 7 + t * 13) as f32 * 0.37).sin() * (1.0 + t as f32))
                        .collect()
                };
                let (mut a, mut b, mut c) = (vec![0u8; rl], vec![0u8; rl], vec![0u8; rl]);
                fast.encode_group(KvRole::Key, &x, &mut a, &mut s).unwrap();
                mid.encode_group(KvRole::Key, &x, &mut c, &mut s).unwrap();
                port.encode_group(KvRole::Key, &x, &mut b, &mut s).unwrap();
                assert_eq!(a, b, "encode d={d} t={t}");
                assert_eq!(c, b, "encode (unfused) d={d} t={t}");
                let (mut ya, mut yb) = (vec![0.0f32; d], vec![0.0f32; d]);
                fast.decode_group(KvRole::Key, &a, &mut ya, &mut s).unwrap();
                port.decode_group(KvRole::Key, &a, &mut yb, &mut s).unwrap();
                assert_eq!(ya, yb, "decode d={d} t={t}");
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod f16_tests {
    /// The F16C rounding of the fused encoder equals `half`'s (ties to even, overflow to
    /// infinity, subnormals), which the portable path uses.
    #[test]
    fn hardware_f16_rounding_matches_half() {
        if !std::arch::is_x86_feature_detected!("f16c") {
            return;
        }
        let mut v = 1e-9f32;
        while v < 1e6 {
            for x in [v, v * 1.000_3, f32::from_bits(v.to_bits() | 0xfff)] {
                // SAFETY: F16C checked above.
                let (hb, hv) = unsafe { super::avx2::f16_round_hw(x) };
                let h = half::f16::from_f32(x);
                assert_eq!(hb, h.to_bits(), "x={x}");
                assert_eq!(hv.to_bits(), h.to_f32().to_bits(), "x={x}");
            }
            v *= 1.37;
        }
    }
}
