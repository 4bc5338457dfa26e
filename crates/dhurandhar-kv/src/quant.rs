//! Shared scalar helpers: f16 side information and symmetric / asymmetric uniform
//! quantizers.

use half::f16;

use crate::codec::KvError;

/// Round-half-even of `x` (|x| < 2^22) as a wrapping u8: adding 1.5·2^23 leaves the
/// rounded integer in the low mantissa bits. Unlike `x.round() as u8` (a saturating
/// float-to-int cast, which compilers scalarize), this vectorizes.
#[inline(always)]
pub fn round_u8(x: f32) -> u8 {
    (x + 12_582_912.0).to_bits() as u8
}

/// Round `v` to f16, returning the stored bits and the value the decoder will see.
/// Errors when the value is not representable (the caller reports which token).
#[inline(always)]
pub fn f16_round(v: f32, token: usize) -> Result<(u16, f32), KvError> {
    let h = f16::from_f32(v);
    if !h.is_finite() {
        return Err(KvError::Overflow {
            token,
            magnitude: v.abs(),
        });
    }
    Ok((h.to_bits(), h.to_f32()))
}

#[inline(always)]
pub fn put_f16(out: &mut [u8], at: usize, bits: u16) {
    out[at..at + 2].copy_from_slice(&bits.to_le_bytes());
}

/// Read an f16 side value; a NaN/Inf means the buffer is corrupted.
#[inline(always)]
pub fn get_f16(rec: &[u8], at: usize, what: &str) -> Result<f32, KvError> {
    let v = f16::from_bits(u16::from_le_bytes([rec[at], rec[at + 1]])).to_f32();
    if !v.is_finite() {
        return Err(KvError::Corrupted(format!("non-finite {what}")));
    }
    Ok(v)
}

/// Symmetric quantizer with `2^(bits−1) − 1` positive levels (bits ≥ 2): code
/// `q + qmax` in `[0, 2·qmax]`. Returns the f16-rounded scale actually used.
#[inline(always)]
pub fn sym_quantize(
    x: &[f32],
    bits: u32,
    codes: &mut [u8],
    token: usize,
) -> Result<(u16, f32), KvError> {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let amax = crate::simd::abs_max(x);
    let (sb, scale) = f16_round(amax / qmax, token)?;
    // A tiny amax can round the scale to zero: then every code is the zero level.
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (c, v) in codes.iter_mut().zip(x) {
        *c = round_u8((v * inv).clamp(-qmax, qmax) + qmax);
    }
    Ok((sb, scale))
}

#[inline(always)]
pub fn sym_dequantize(codes: &[u8], bits: u32, scale: f32, out: &mut [f32]) {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = (c as f32 - qmax) * scale;
    }
}

/// Asymmetric (min, step) quantizer with 2^bits levels; returns the f16 bits of
/// (min, step) and fills `codes`.
#[inline(always)]
pub fn asym_quantize(
    x: &[f32],
    bits: u32,
    codes: &mut [u8],
    token: usize,
) -> Result<(u16, u16), KvError> {
    let levels = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = crate::simd::min_max(x);
    let (mb, mn) = f16_round(lo, token)?;
    let (sb, step) = f16_round((hi - mn) / levels, token)?;
    let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
    for (c, v) in codes.iter_mut().zip(x) {
        *c = round_u8(((v - mn) * inv).clamp(0.0, levels));
    }
    Ok((mb, sb))
}

/// Gather-style variant of [`asym_quantize`] over a strided column (per-channel groups).
#[inline(always)]
pub fn asym_params(
    lo: f32,
    hi: f32,
    bits: u32,
    token: usize,
) -> Result<(u16, u16, f32, f32), KvError> {
    let levels = ((1u32 << bits) - 1) as f32;
    let (mb, mn) = f16_round(lo, token)?;
    let (sb, step) = f16_round((hi - mn) / levels, token)?;
    Ok((mb, sb, mn, step))
}
