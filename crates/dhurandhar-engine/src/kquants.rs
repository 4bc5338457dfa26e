//! Q5_0, Q5_1, the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the 4-bit non-linear
//! IQ4_NL and IQ4_XS: dequantization and integer dot products against 8-bit activations,
//! weights kept in their stored form.
//!
//! Byte layouts are ggml's `block_*` structs (little-endian, packed):
//!
//! | type | bytes | layout |
//! |------|------:|--------|
//! | Q5_0 | 22 | `d: f16, qh: u32, qs: [u8; 16]` |
//! | Q5_1 | 24 | `d: f16, m: f16, qh: u32, qs: [u8; 16]` |
//! | Q2_K | 84 | `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16` |
//! | Q3_K | 110 | `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16` |
//! | Q4_K | 144 | `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]` |
//! | Q5_K | 176 | `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]` |
//! | Q6_K | 210 | `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16` |
//! | IQ4_NL | 18 | `d: f16, qs: [u8; 16]` (32 values: 4-bit indices into [`IQ4_LEVELS`]) |
//! | IQ4_XS | 136 | `d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]` (256 values) |
//!
//! # Activation format
//!
//! Every type here multiplies against the same [`Q8Acts`] the Q4_0/Q4_1/Q8_0 kernels use:
//! 8-bit values in blocks of 32 with an f32 scale `d` and `d·Σq` per block. ggml instead
//! quantizes activations for k-quants to Q8_K (one scale per 256 values plus 16-value
//! sums) so it can accumulate a whole super-block in integers. We keep blocks of 32
//! because (1) the k-quant sub-blocks are 32 (Q4_K, Q5_K) or 16 (Q2_K, Q3_K, Q6_K)
//! values, so each 32-value activation block meets whole sub-blocks and costs one
//! `cvt + fma` per 32 values, which is small next to unpacking the weights; (2) a
//! `Q4_K_M` file mixes Q4_K, Q5_0, Q6_K and Q8_0 matrices that read the same input, and
//! one activation format means one quantization per input, shared by all of them; and
//! (3) a scale per 32 values rounds the activations more finely than one per 256.
//! Offsets that would need 16-value activation sums (Q3_K's −4, Q6_K's −32) are taken
//! out with a second `maddubs` against a constant instead, and Q2_K's mins with a
//! `maddubs` of the min bytes against the activations.
//!
//! # Kernel boundary
//!
//! [`dot_portable`] is the reference-shaped scalar kernel; the `q8_avx2` module holds one
//! x86 kernel per type (built for AVX2 and again for AVX-512 VNNI), selected at run time
//! by [`crate::kernels::Simd`] ([`dot_on`] runs one tier). A NEON kernel per type would sit beside them in a
//! `q8_neon` module behind the same dispatch; none exists yet.

use crate::quant::{f16_at, scale_min_k4, GgmlType, Q8Acts, QK, QK_K};

/// Whether `t` is handled by this module's dot kernels.
pub fn supports(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::IQ4NL
            | GgmlType::IQ4XS
    )
}

/// The 16 levels a 4-bit IQ4_NL/IQ4_XS index selects (ggml's `kvalues_iq4nl`): denser
/// near zero, where trained weights are.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Scale of 32-value sub-block `ib` (0..8) of an IQ4_XS super-block, in units of its
/// `d`: six bits, the low four in `scales_l`, the high two in `scales_h`, stored +32.
#[inline]
pub(crate) fn iq4xs_scale(blk: &[u8], ib: usize) -> i32 {
    let high = u16::from_le_bytes([blk[2], blk[3]]);
    let lo = (blk[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    let hi = ((high >> (2 * ib)) & 3) as u8;
    (lo | (hi << 4)) as i32 - 32
}

/// The scale and the 16 index bytes of the `k`-th 32-value block of an IQ4_NL row
/// (`XS` false: 18-byte blocks) or of an IQ4_XS row (super-blocks of eight).
#[inline]
pub(crate) fn iq4_at<const XS: bool>(w: &[u8], k: usize) -> (f32, &[u8]) {
    if XS {
        let blk = &w[k / 8 * 136..][..136];
        let ib = k % 8;
        (
            f16_at(blk, 0) * iq4xs_scale(blk, ib) as f32,
            &blk[8 + ib * 16..][..16],
        )
    } else {
        let blk = &w[k * 18..][..18];
        (f16_at(blk, 0), &blk[2..18])
    }
}

/// The 16 signed 6-bit scales of a Q3_K super-block (`scales` is its 12 packed bytes):
/// low nibbles in bytes 0..8 (entries 0..8 low nibble, 8..16 high nibble), the top two
/// bits of entry `k` in bits `2·(k/4)..` of byte `8 + k%4`; stored with a +32 bias.
#[inline]
pub(crate) fn q3k_scales(scales: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let lo = if k < 8 {
            scales[k] & 0xF
        } else {
            scales[k - 8] >> 4
        };
        let hi = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

/// Dequantize one block of a type this module adds to the engine (Q5_0, Q5_1, Q2_K,
/// Q3_K, IQ4_NL, IQ4_XS; Q4_K..Q6_K dequantize in [`crate::quant`]). `b` is one block, `out` its values.
pub fn dequantize_block(t: GgmlType, b: &[u8], out: &mut [f32]) {
    match t {
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let d = f16_at(b, 0);
            let (m, off) = if t == GgmlType::Q5_1 {
                (f16_at(b, 2), 4)
            } else {
                (0.0, 2)
            };
            let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
            let qs = &b[off + 4..off + 20];
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                let q0 = (qs[j] & 0xF) as u32 | h0;
                let q1 = (qs[j] >> 4) as u32 | h1;
                if t == GgmlType::Q5_1 {
                    out[j] = d * q0 as f32 + m;
                    out[j + 16] = d * q1 as f32 + m;
                } else {
                    out[j] = d * (q0 as i32 - 16) as f32;
                    out[j + 16] = d * (q1 as i32 - 16) as f32;
                }
            }
        }
        GgmlType::Q2K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for (c, y) in out[..QK_K].chunks_exact_mut(16).enumerate() {
                // 16-value chunk c: half n, shift j, lanes h*16..h*16+16 of the 32 bytes.
                let (n, j, h) = (c / 8, (c % 8) / 2, c % 2);
                let sc = scales[c];
                let dl = d * (sc & 0xF) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = &qs[n * 32 + h * 16..n * 32 + h * 16 + 16];
                for (o, &v) in y.iter_mut().zip(q) {
                    *o = dl * ((v >> (2 * j)) & 3) as f32 - ml;
                }
            }
        }
        GgmlType::Q3K => {
            let (hm, qs) = (&b[0..32], &b[32..96]);
            let sc = q3k_scales(&b[96..108]);
            let d = f16_at(b, 108);
            for (c, y) in out[..QK_K].chunks_exact_mut(16).enumerate() {
                let (n, j, h) = (c / 8, (c % 8) / 2, c % 2);
                let dl = d * sc[c] as f32;
                let bit = 1u8 << (n * 4 + j);
                for (l, o) in y.iter_mut().enumerate() {
                    let lane = h * 16 + l;
                    let lo = ((qs[n * 32 + lane] >> (2 * j)) & 3) as i32;
                    let q = lo - if hm[lane] & bit != 0 { 0 } else { 4 };
                    *o = dl * q as f32;
                }
            }
        }
        GgmlType::IQ4NL | GgmlType::IQ4XS => {
            let xs = t == GgmlType::IQ4XS;
            for (k, y) in out[..t.block_size() as usize]
                .chunks_exact_mut(QK)
                .enumerate()
            {
                let (d, q) = if xs {
                    iq4_at::<true>(b, k)
                } else {
                    iq4_at::<false>(b, k)
                };
                for j in 0..16 {
                    y[j] = d * IQ4_LEVELS[(q[j] & 0xF) as usize] as f32;
                    y[j + 16] = d * IQ4_LEVELS[(q[j] >> 4) as usize] as f32;
                }
            }
        }
        _ => unreachable!("kquants::dequantize_block called for {}", t.name()),
    }
}

/// The 32 quantized weights of 32-value activation block `k` (0..8) inside a k-quant
/// super-block, as signed integers (offsets applied, scales not). Used by the portable
/// kernels; the AVX2 ones unpack the same 32 lanes into one register.
#[inline]
fn k_unpack(t: GgmlType, blk: &[u8], k: usize, q: &mut [i32; QK]) {
    match t {
        GgmlType::Q2K => {
            let (n, j) = (k / 4, k % 4);
            for (o, &b) in q.iter_mut().zip(&blk[16 + n * 32..48 + n * 32]) {
                *o = ((b >> (2 * j)) & 3) as i32;
            }
        }
        GgmlType::Q3K => {
            let (n, j) = (k / 4, k % 4);
            let lo = &blk[32 + n * 32..64 + n * 32];
            for ((o, &b), &h) in q.iter_mut().zip(lo).zip(&blk[..32]) {
                *o = ((b >> (2 * j)) & 3) as i32 - if h & (1 << k) != 0 { 0 } else { 4 };
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let off = if t == GgmlType::Q5K { 48 } else { 16 };
            let shift = 4 * (k % 2);
            let qs = &blk[off + (k / 2) * 32..off + (k / 2) * 32 + 32];
            for (o, &b) in q.iter_mut().zip(qs) {
                *o = ((b >> shift) & 0xF) as i32;
            }
            if t == GgmlType::Q5K {
                for (o, &h) in q.iter_mut().zip(&blk[16..48]) {
                    *o |= (((h >> k) & 1) << 4) as i32;
                }
            }
        }
        GgmlType::Q6K => {
            let (n, r) = (k / 4, k % 4);
            let ql = &blk[n * 64 + (r % 2) * 32..n * 64 + (r % 2) * 32 + 32];
            let qh = &blk[128 + n * 32..160 + n * 32];
            let shift = 4 * (r / 2);
            for ((o, &l), &h) in q.iter_mut().zip(ql).zip(qh) {
                *o = (((l >> shift) & 0xF) | (((h >> (2 * r)) & 3) << 4)) as i32 - 32;
            }
        }
        _ => unreachable!(),
    }
}

/// Portable dot product of one weight row (`t` blocks) with activation row `a_row`.
///
/// Panics if `w` is shorter than a row of `a.cols` values or `a_row` is out of range.
pub fn dot_portable(t: GgmlType, w: &[u8], a: &Q8Acts, a_row: usize) -> f32 {
    let nb = a.cols / QK;
    let qs = &a.qs[a_row * a.cols..(a_row + 1) * a.cols];
    let da = &a.d[a_row * nb..(a_row + 1) * nb];
    let sa = &a.s[a_row * nb..(a_row + 1) * nb];
    let ts = t.type_size() as usize;
    match t {
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let mut acc = 0f32;
            for b in 0..nb {
                let blk = &w[b * ts..(b + 1) * ts];
                let d = f16_at(blk, 0);
                let (m, off) = if t == GgmlType::Q5_1 {
                    (f16_at(blk, 2), 4)
                } else {
                    (-16.0 * d, 2)
                };
                let qh = u32::from_le_bytes([blk[off], blk[off + 1], blk[off + 2], blk[off + 3]]);
                let q = &blk[off + 4..off + 20];
                let qa = &qs[b * QK..(b + 1) * QK];
                let mut s = 0i32;
                for j in 0..16 {
                    let q0 = (q[j] & 0xF) as i32 | ((((qh >> j) & 1) as i32) << 4);
                    let q1 = (q[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) as i32) << 4);
                    s += q0 * qa[j] as i32 + q1 * qa[j + 16] as i32;
                }
                acc += d * da[b] * s as f32 + m * sa[b];
            }
            acc
        }
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            let mut acc = 0f32;
            for sb in 0..nb / 8 {
                let blk = &w[sb * ts..(sb + 1) * ts];
                acc +=
                    k_superblock_portable(t, blk, &qs[sb * QK_K..], &da[sb * 8..], &sa[sb * 8..]);
            }
            acc
        }
        GgmlType::IQ4NL | GgmlType::IQ4XS => {
            let mut acc = 0f32;
            for b in 0..nb {
                let (d, q) = if t == GgmlType::IQ4XS {
                    iq4_at::<true>(w, b)
                } else {
                    iq4_at::<false>(w, b)
                };
                let qa = &qs[b * QK..(b + 1) * QK];
                let mut s = 0i32;
                for j in 0..16 {
                    s += IQ4_LEVELS[(q[j] & 0xF) as usize] as i32 * qa[j] as i32
                        + IQ4_LEVELS[(q[j] >> 4) as usize] as i32 * qa[j + 16] as i32;
                }
                acc += d * da[b] * s as f32;
            }
            acc
        }
        _ => unreachable!("kquants::dot_portable called for {}", t.name()),
    }
}

/// One k-quant super-block against its eight 32-value activation blocks.
fn k_superblock_portable(t: GgmlType, blk: &[u8], qa: &[i8], da: &[f32], sa: &[f32]) -> f32 {
    let mut acc = 0f32;
    match t {
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let mut q = [0i32; QK];
            for k in 0..8 {
                let (sc, m) = scale_min_k4(k, &blk[4..16]);
                k_unpack(t, blk, k, &mut q);
                let s: i32 = q
                    .iter()
                    .zip(&qa[k * QK..(k + 1) * QK])
                    .map(|(&w, &x)| w * x as i32)
                    .sum();
                acc += d * sc as f32 * da[k] * s as f32 - dmin * m as f32 * sa[k];
            }
        }
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q6K => {
            // Sixteen 16-value sub-blocks, each with its own scale.
            let (d, scales): (f32, [i32; 16]) = match t {
                GgmlType::Q2K => (
                    f16_at(blk, 80),
                    std::array::from_fn(|c| (blk[c] & 0xF) as i32),
                ),
                GgmlType::Q3K => {
                    let sc = q3k_scales(&blk[96..108]);
                    (f16_at(blk, 108), std::array::from_fn(|c| sc[c] as i32))
                }
                _ => (
                    f16_at(blk, 208),
                    std::array::from_fn(|c| blk[192 + c] as i8 as i32),
                ),
            };
            let dmin = if t == GgmlType::Q2K {
                f16_at(blk, 82)
            } else {
                0.0
            };
            let mut q = [0i32; QK];
            for k in 0..8 {
                k_unpack(t, blk, k, &mut q);
                let (mut s, mut smin) = (0i32, 0i32);
                for h in 0..2 {
                    let (mut p, mut sum) = (0i32, 0i32);
                    for l in h * 16..h * 16 + 16 {
                        let x = qa[k * QK + l] as i32;
                        p += q[l] * x;
                        sum += x;
                    }
                    s += scales[2 * k + h] * p;
                    if t == GgmlType::Q2K {
                        smin += (blk[2 * k + h] >> 4) as i32 * sum;
                    }
                }
                acc += da[k] * (d * s as f32 - dmin * smin as f32);
            }
        }
        _ => unreachable!(),
    }
    acc
}

/// The SIMD kernel of tier `s` for `t` against activation rows `a_row..a_row + N` (the
/// prefill kernel when N = 4), or `None` when this CPU cannot run `s` or `s` has no
/// SIMD kernels. Panics on a short row or an out-of-range activation row, like
/// [`dot_portable`].
pub fn dot_on<const N: usize>(
    s: crate::kernels::Simd,
    t: GgmlType,
    w: &[u8],
    a: &Q8Acts,
    a_row: usize,
) -> Option<[f32; N]> {
    #[cfg(target_arch = "x86_64")]
    if s.avx2() && s.runnable() {
        check_rows(t, w, a, a_row, N);
        // SAFETY: `s` was detected on this CPU just above; shapes checked by check_rows.
        return Some(unsafe { crate::q8_avx2::dot::<N>(s, t, w, a, a_row) });
    }
    let _ = (s, t, w, a, a_row);
    None
}

/// Bounds the SIMD kernels rely on. Called once per weight row, so it is kept to a few
/// integer compares (no formatting unless it fails).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline]
pub(crate) fn check_rows(t: GgmlType, w: &[u8], a: &Q8Acts, a_row: usize, n: usize) {
    let bs = t.block_size() as usize;
    let ok = supports(t)
        && a.cols.is_multiple_of(bs)
        && w.len() >= a.cols / bs * t.type_size() as usize
        && n >= 1
        && (a_row + n) * a.cols <= a.qs.len()
        && (a_row + n) * (a.cols / QK) <= a.d.len().min(a.s.len());
    if !ok {
        bad_rows(t, w, a, a_row, n);
    }
}

#[cold]
#[inline(never)]
fn bad_rows(t: GgmlType, w: &[u8], a: &Q8Acts, a_row: usize, n: usize) -> ! {
    panic!(
        "{} kernel: weight row of {} bytes, activation rows {a_row}..{} of {} x {}",
        t.name(),
        w.len(),
        a_row + n,
        a.rows(),
        a.cols
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3k_scale_unpacking_matches_the_ggml_bit_shuffle() {
        // ggml unpacks via four u32 words; redo that word arithmetic here.
        let bytes: [u8; 12] = [
            0x12, 0xF3, 0x45, 0x9A, 0x0C, 0x77, 0xE1, 0x3B, 0xD4, 0x68, 0xAF, 0x05,
        ];
        let w = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let (a0, a1, tmp) = (w(0), w(1), w(2));
        let aux = [
            (a0 & k2) | ((tmp & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ];
        let want: Vec<i8> = aux
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(q3k_scales(&bytes).to_vec(), want);
    }

    #[test]
    fn simd_bounds_refuse_short_rows_and_missing_activation_rows() {
        let x = vec![0.5f32; 2 * 256];
        let mut a = Q8Acts::default();
        a.quantize_into(&x, 256);
        let w = vec![0u8; 144];
        check_rows(GgmlType::Q4K, &w, &a, 1, 1);
        for (w_len, row, n) in [(143, 0, 1), (144, 2, 1), (144, 0, 4), (144, 0, 0)] {
            let r = std::panic::catch_unwind(|| check_rows(GgmlType::Q4K, &w[..w_len], &a, row, n));
            assert!(r.is_err(), "{w_len} bytes, rows {row}+{n}");
        }
    }
}
