//! The classic 32-value block formats. Rounding follows ggml's reference quantizers so
//! the same floats give the same bytes as `llama-quantize` (without an imatrix):
//!
//! * Q8_0: `d = max|x| / 127`, `q = round(x / d)` (half away from zero).
//! * Q4_0 / Q5_0: symmetric around the value of largest magnitude `m`, `d = m / -8`
//!   (`-16`): that value maps exactly onto the lowest level, the opposite end may clip
//!   by one level (15 of 16 levels above zero).
//! * Q4_1 / Q5_1: `d = (max - min) / 15` (`31`), `m = min`, `q = trunc((x - min)/d + ½)`.
//!
//! The scale written is the f16 nearest to `d`; values are quantized with the f32 `d`,
//! as ggml does.

use crate::{f16_bytes, f16_round, nearest_int, QK, QK_K};

/// The value of largest magnitude (the first one on ties) and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// `trunc(v)` clamped to `0..=hi` (v is ≥ 0 up to rounding; NaN gives 0).
fn level(v: f32, hi: i32) -> u8 {
    (v as i32).clamp(0, hi) as u8
}

/// `d: f16, qs: [i8; 32]`.
pub(crate) fn q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    for (o, &v) in out[2..34].iter_mut().zip(x) {
        *o = ((v * id).round() as i8) as u8;
    }
}

/// Nibble `j` of `qs` holds value `j` (low) and value `j + 16` (high).
fn pack_nibbles(q: &[u8; 32], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
    }
}

/// Bit `j` of `qh` is bit 4 of value `j`.
fn high_bits(q: &[u8; 32]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= (((v >> 4) & 1) as u32) << j;
    }
    qh.to_le_bytes()
}

/// Symmetric levels `0..=2·half-1` with `d = max / -half`.
fn symmetric(x: &[f32], half: i32) -> (f32, [u8; 32]) {
    let (max, _) = signed_absmax(x);
    let d = max / -(half as f32);
    let id = inverse(d);
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        *o = level(v * id + half as f32 + 0.5, 2 * half - 1);
    }
    (d, q)
}

/// Levels `0..=n` above the minimum.
fn affine(x: &[f32], n: i32) -> (f32, f32, [u8; 32]) {
    let (min, max) = min_max(x);
    let d = (max - min) / n as f32;
    let id = inverse(d);
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        *o = level((v - min) * id + 0.5, n);
    }
    (d, min, q)
}

/// `d: f16, qs: [u8; 16]`, value `d·(q - 8)`.
pub(crate) fn q4_0(x: &[f32], out: &mut [u8]) {
    let (d, q) = symmetric(x, 8);
    out[0..2].copy_from_slice(&f16_bytes(d));
    pack_nibbles(&q, &mut out[2..18]);
}

/// ggml's 16 IQ4_NL levels (`kvalues_iq4nl`), denser near zero. This crate has no
/// dependencies, so the table is written here too; a test pins it to the engine's
/// `kquants::IQ4_LEVELS`, which reads what this writes.
pub(crate) const IQ4_LEVELS: [f32; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];

/// The level nearest `v` (in units of the block scale).
fn nearest_level(v: f32) -> usize {
    let mut best = 0;
    for (l, &q) in IQ4_LEVELS.iter().enumerate() {
        if (v - q).abs() < (v - IQ4_LEVELS[best]).abs() {
            best = l;
        }
    }
    best
}

/// The IQ4 scale of a block of 32, as ggml's reference searches it: start from the
/// scale that puts the largest-magnitude value on the −127 level, try 15 scales around
/// it, and keep the one whose least-squares refit (weights `x²`, so the large values
/// that dominate a dot product are fitted best) explains the most of the block. The
/// scale and each value's level at it; 0 and levels 0 for an all-zero block.
fn iq4_search(x: &[f32]) -> (f32, [usize; QK]) {
    let (max, _) = signed_absmax(x);
    let mut best_l = [0usize; QK];
    let mut d = 0f32;
    if max.abs() > 1e-30 {
        // (Σ w·q·x, Σ w·q²) of the levels nearest x / scale for scale = max / id.
        let fit = |id: f32, l: &mut [usize; QK]| {
            let (mut sqx, mut sq2) = (0f32, 0f32);
            for (j, &v) in x.iter().enumerate() {
                l[j] = nearest_level(v * id);
                let (q, w) = (IQ4_LEVELS[l[j]], v * v);
                sqx += w * q * v;
                sq2 += w * q * q;
            }
            (sqx, sq2)
        };
        let mut best = f32::NEG_INFINITY;
        for itry in -7..=7 {
            let id = (itry as f32 + IQ4_LEVELS[0]) / max;
            let mut l = [0usize; QK];
            let (sqx, sq2) = fit(id, &mut l);
            if sq2 > 0.0 && sqx * sqx / sq2 > best {
                best = sqx * sqx / sq2;
                d = sqx / sq2;
                best_l = l;
            }
        }
    }
    (d, best_l)
}

/// The levels of `x` at the stored scale `d` (each value's nearest), packed.
fn iq4_pack(x: &[f32], d: f32, qs: &mut [u8]) {
    let q: [u8; QK] =
        std::array::from_fn(|j| nearest_level(if d == 0.0 { 0.0 } else { x[j] / d }) as u8);
    pack_nibbles(&q, qs);
}

/// `d: f16, qs: [u8; 16]`, value `d·IQ4_LEVELS[q]`, the scale from [`iq4_search`].
pub(crate) fn iq4_nl(x: &[f32], out: &mut [u8]) {
    let (d, best_l) = iq4_search(x);
    out[0..2].copy_from_slice(&f16_bytes(d));
    // Indices against the stored (f16) scale, as they will be read back.
    let d = f16_round(d);
    if d == 0.0 {
        pack_nibbles(&best_l.map(|l| l as u8), &mut out[2..18]);
    } else {
        iq4_pack(x, d, &mut out[2..18]);
    }
}

/// `d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]` over 256 values: eight
/// blocks of 32, block `b` valued `d·(ls_b − 32)·IQ4_LEVELS[q]` with the 6-bit `ls_b`
/// split into a low nibble (`scales_l`) and two high bits (`scales_h`). As ggml's
/// reference without an importance matrix: each block's scale from [`iq4_search`], the
/// super-block scale `d = −(the largest-magnitude block scale) / 32`, each block's
/// scale rounded to a multiple of it in −32..=31, and the levels chosen again at that.
pub(crate) fn iq4_xs(x: &[f32], out: &mut [u8]) {
    let scales: [f32; QK_K / QK] = std::array::from_fn(|b| iq4_search(&x[b * QK..][..QK]).0);
    let (max, _) = signed_absmax(&scales);
    out[0..2].copy_from_slice(&f16_bytes(-max / 32.0));
    let d = f16_round(-max / 32.0);
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let (mut scales_h, mut scales_l) = (0u16, [0u8; QK_K / 64]);
    for (b, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        iq4_pack(
            &x[b * QK..][..QK],
            d * l as f32,
            &mut out[8 + 16 * b..][..16],
        );
        let ls = (l + 32) as u8;
        scales_l[b / 2] |= (ls & 0xF) << (4 * (b % 2));
        scales_h |= u16::from(ls >> 4) << (2 * b);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
    out[4..8].copy_from_slice(&scales_l);
}

/// `d: f16, m: f16, qs: [u8; 16]`, value `d·q + m`.
pub(crate) fn q4_1(x: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine(x, 15);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(m));
    pack_nibbles(&q, &mut out[4..20]);
}

/// `d: f16, qh: u32, qs: [u8; 16]`, value `d·(q - 16)`.
pub(crate) fn q5_0(x: &[f32], out: &mut [u8]) {
    let (d, q) = symmetric(x, 16);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..6].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[6..22]);
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`, value `d·q + m`.
pub(crate) fn q5_1(x: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine(x, 31);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(m));
    out[4..8].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[8..24]);
}
