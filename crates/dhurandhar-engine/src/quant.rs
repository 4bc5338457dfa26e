//! ggml block formats: sizes, dequantization, and activation quantization.
//!
//! Layouts follow ggml's `block_*` structs (little-endian, packed). Weights are never
//! expanded wholesale: callers dequantize one block at a time ([`dequantize_block`]) or
//! use the integer kernels in [`crate::kernels`].

use half::{bf16, f16};

use crate::EngineError;

/// Super-block length of the k-quants.
pub const QK_K: usize = 256;
/// Block length of the classic quants (Q4_0, Q4_1, Q8_0) and of quantized activations.
pub const QK: usize = 32;

pub use dhurandhar_checkpoint::gguf::GgmlType;

/// Whether the engine computes with tensors stored as `t`: dequantizes them and uses
/// them in matrix products. Everything else is refused when a model is loaded.
pub fn computes_with(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        t,
        F32 | F16
            | BF16
            | Q8_0
            | Q4_0
            | Q4_1
            | Q4K
            | Q5K
            | Q6K
            | Q5_0
            | Q5_1
            | Q2K
            | Q3K
            | IQ4NL
            | IQ4XS
    )
}

/// Bytes of a row of `n` values stored as `t`, or an error when the engine does not
/// compute with `t` or `n` is not a whole number of blocks.
pub fn row_bytes(t: GgmlType, n: usize) -> Result<usize, EngineError> {
    if !computes_with(t) {
        return Err(EngineError::Invalid(format!(
            "the engine cannot compute with {} tensors",
            t.name()
        )));
    }
    let bs = t.block_size() as usize;
    if !n.is_multiple_of(bs) {
        return Err(EngineError::Shape(format!(
            "row length {n} is not a multiple of the {} block size {bs}",
            t.name()
        )));
    }
    Ok(n / bs * t.type_size() as usize)
}

#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Unpack the 6-bit scale and min `j` (0..8) of a Q4_K/Q5_K super-block.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantize one block (`t.type_size()` bytes) into `out` (`t.block_size()` values).
/// Both lengths are checked by the caller ([`dequantize_row`]); this is the inner loop.
pub fn dequantize_block(t: GgmlType, b: &[u8], out: &mut [f32]) {
    match t {
        GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::IQ4NL
        | GgmlType::IQ4XS => crate::kquants::dequantize_block(t, b, out),
        GgmlType::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => out[0] = f16_at(b, 0),
        GgmlType::BF16 => out[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out[..QK].iter_mut().zip(&b[2..2 + QK]) {
                *o = d * (q as i8) as f32;
            }
        }
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                out[j] = d * ((qs[j] & 0xF) as i32 - 8) as f32;
                out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
            }
        }
        GgmlType::Q4_1 => {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            let qs = &b[4..20];
            for j in 0..16 {
                out[j] = d * (qs[j] & 0xF) as f32 + m;
                out[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
        }
        GgmlType::Q4K => {
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let qs = &b[16..144];
            for (g, chunk) in out[..QK_K].chunks_exact_mut(64).enumerate() {
                let q = &qs[g * 32..g * 32 + 32];
                let (sc1, m1) = scale_min_k4(2 * g, scales);
                let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
                let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    chunk[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    chunk[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
        GgmlType::Q5K => {
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let qh = &b[16..48];
            let qs = &b[48..176];
            for (g, chunk) in out[..QK_K].chunks_exact_mut(64).enumerate() {
                let ql = &qs[g * 32..g * 32 + 32];
                let (u1, u2) = (1u8 << (2 * g), 2u8 << (2 * g));
                let (sc1, m1) = scale_min_k4(2 * g, scales);
                let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
                let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    chunk[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                    chunk[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                }
            }
        }
        GgmlType::Q6K => {
            let ql_all = &b[0..128];
            let qh_all = &b[128..192];
            let sc_all = &b[192..208];
            let d = f16_at(b, 208);
            for (n, y) in out[..QK_K].chunks_exact_mut(128).enumerate() {
                let ql = &ql_all[n * 64..n * 64 + 64];
                let qh = &qh_all[n * 32..n * 32 + 32];
                let sc = &sc_all[n * 8..n * 8 + 8];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        // `dequantize_row` and `QMatrix::new` refuse these before any block is read.
        other => unreachable!("{} is not a type the engine computes with", other.name()),
    }
}

/// Dequantize a row of `out.len()` values stored as `t` in `bytes`.
pub fn dequantize_row(t: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), EngineError> {
    let need = row_bytes(t, out.len())?;
    if bytes.len() != need {
        return Err(EngineError::Shape(format!(
            "{} row of {} values needs {need} bytes, got {}",
            t.name(),
            out.len(),
            bytes.len()
        )));
    }
    let (bs, ts) = (t.block_size() as usize, t.type_size() as usize);
    for (o, b) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(ts)) {
        dequantize_block(t, b, o);
    }
    Ok(())
}

/// Activations quantized to 8-bit blocks of 32 (ggml's Q8_1: scale plus `d·Σq`), the
/// right-hand side of the integer dot products with Q8_0 / Q4_0 / Q4_1 weights.
#[derive(Debug, Clone, Default)]
pub struct Q8Acts {
    /// Quantized values, `rows × cols`.
    pub qs: Vec<i8>,
    /// Per-block scale, `rows × cols/32`.
    pub d: Vec<f32>,
    /// Per-block `d · Σ qs` (needed for the min/offset term of Q4_1 / Q4_0).
    pub s: Vec<f32>,
    /// `(d, s)` interleaved, so SIMD kernels fetch both with one load.
    pub ds: Vec<f32>,
    pub cols: usize,
}

/// `x.round() as i32` for |x| < 2²³ (NaN gives 0, as the cast does), without the libm
/// call `round` compiles to on baseline x86-64: truncation and the fraction are exact,
/// so the loop vectorizes and every result equals `roundf`'s.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    let t = x as i32;
    let frac = x - t as f32;
    t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
}

/// One block of 32 activations to 8 bits: values, scale `d`, `d·Σq` (also interleaved
/// into `ds`).
#[inline]
fn quantize_block(blk: &[f32], q: &mut [i8], d: &mut f32, s: &mut f32, ds: &mut [f32]) {
    let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(blk) {
        let r = round_half_away(v * id);
        *q = r as i8;
        sum += r;
    }
    *d = scale;
    *s = scale * sum as f32;
    ds[0] = scale;
    ds[1] = scale * sum as f32;
}

impl Q8Acts {
    /// Quantize `x` (`rows × cols`, `cols` a multiple of 32) reusing the buffers.
    pub fn quantize_into(&mut self, x: &[f32], cols: usize) {
        self.quantize_with(x, cols, false)
    }

    /// [`Self::quantize_into`], split across the current rayon pool when `parallel` and
    /// `x` is large (a prefill chunk: serial, it was a tenth of the two-thread time).
    pub fn quantize_with(&mut self, x: &[f32], cols: usize, parallel: bool) {
        use rayon::prelude::*;
        debug_assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        let nb = x.len() / QK;
        self.cols = cols;
        self.qs.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.ds.resize(2 * nb, 0.0);
        // Below this many blocks the pool's hand-off costs more than it saves.
        const PAR_BLOCKS: usize = 1024;
        if parallel && nb >= PAR_BLOCKS {
            x.par_chunks_exact(QK)
                .zip(self.qs.par_chunks_exact_mut(QK))
                .zip(self.d.par_iter_mut().zip(self.s.par_iter_mut()))
                .zip(self.ds.par_chunks_exact_mut(2))
                .with_min_len(PAR_BLOCKS / 4)
                .for_each(|(((blk, q), (d, s)), ds)| quantize_block(blk, q, d, s, ds));
        } else {
            x.chunks_exact(QK)
                .zip(self.qs.chunks_exact_mut(QK))
                .zip(self.d.iter_mut().zip(self.s.iter_mut()))
                .zip(self.ds.chunks_exact_mut(2))
                .for_each(|(((blk, q), (d, s)), ds)| quantize_block(blk, q, d, s, ds));
        }
    }

    /// Number of rows (tokens) held.
    pub fn rows(&self) -> usize {
        self.qs.len().checked_div(self.cols).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // reference loops mirror the format definitions
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_bits().to_le_bytes()
    }

    #[test]
    fn parallel_quantization_equals_serial() {
        let cols = 576;
        let x: Vec<f32> = (0..cols * 64)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0)
            .collect();
        let (mut serial, mut par) = (Q8Acts::default(), Q8Acts::default());
        serial.quantize_into(&x, cols);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| par.quantize_with(&x, cols, true));
        assert!(
            x.len() / QK >= 1024,
            "large enough to take the parallel path"
        );
        assert_eq!(
            (&serial.qs, &serial.d, &serial.s),
            (&par.qs, &par.d, &par.s)
        );
        assert_eq!(serial.ds, par.ds);
    }

    #[test]
    fn rounding_equals_roundf_including_ties() {
        let mut xs: Vec<f32> = (-2540..=2540).map(|i| i as f32 / 20.0).collect();
        xs.extend([
            0.49999997,
            -0.49999997,
            0.5,
            -0.5,
            126.5,
            -126.5,
            127.0,
            f32::NAN,
        ]);
        xs.extend((0..10_000).map(|i| ((i as f32) * 0.7311).sin() * 127.0));
        for x in xs {
            assert_eq!(round_half_away(x), x.round() as i32, "{x}");
        }
    }

    #[test]
    fn float_types() {
        let mut out = [0f32; 3];
        let b: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize_row(GgmlType::F32, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0, 0.25]);
        let b: Vec<u8> = [1.5f32, -2.0, 0.25].iter().flat_map(|&v| h(v)).collect();
        dequantize_row(GgmlType::F16, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0, 0.25]);
        let b: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        dequantize_row(GgmlType::BF16, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0, 0.25]);
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q8_0, &b, &mut out).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, 0.5 * (i as f32 - 16.0));
        }
    }

    #[test]
    fn q4_0_and_q4_1_blocks() {
        // Byte j holds element j in the low nibble and element j+16 in the high nibble.
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let mut b = h(2.0).to_vec();
        b.extend(&qs);
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert_eq!(out[0], 2.0 * -8.0);
        assert_eq!(out[15], 2.0 * 7.0);
        assert_eq!(out[16], 2.0 * 7.0);
        assert_eq!(out[31], 2.0 * -8.0);

        let mut b = h(0.5).to_vec();
        b.extend(h(-1.0));
        b.extend(&qs);
        dequantize_row(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[3], 0.5 * 3.0 - 1.0);
        assert_eq!(out[19], 0.5 * 12.0 - 1.0);
    }

    /// Scales/mins packing of Q4_K/Q5_K: entries 0..4 in the low 6 bits of bytes 0..8,
    /// entries 4..8 split across the nibbles of bytes 8..12 and the top bits of 0..8.
    fn pack_k4_scales(sc: [u8; 8], mn: [u8; 8]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for j in 0..4 {
            q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            q[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            q[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
        }
        q
    }

    #[test]
    fn k4_scale_packing_round_trips() {
        let sc = [1, 63, 17, 40, 5, 62, 33, 48];
        let mn = [0, 2, 63, 9, 50, 16, 31, 7];
        let q = pack_k4_scales(sc, mn);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], mn[j]), "entry {j}");
        }
    }

    #[test]
    fn q4_k_block() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 60];
        let mn = [8, 7, 6, 5, 4, 3, 2, 33];
        let mut b = h(0.5).to_vec();
        b.extend(h(0.25));
        b.extend(pack_k4_scales(sc, mn));
        // qs: 4 groups of 32 bytes; low nibble -> sub-block 2g, high -> 2g+1.
        let qs: Vec<u8> = (0..128u32)
            .map(|i| ((i % 16) | ((15 - i % 16) << 4)) as u8)
            .collect();
        b.extend(&qs);
        assert_eq!(b.len(), 144);
        let mut out = [0f32; 256];
        dequantize_row(GgmlType::Q4K, &b, &mut out).unwrap();
        for i in 0..256 {
            let sub = i / 32; // sub-block 0..8
            let g = sub / 2;
            let l = i % 32;
            let byte = qs[g * 32 + l];
            let q = if sub % 2 == 0 { byte & 0xF } else { byte >> 4 };
            let want = 0.5 * sc[sub] as f32 * q as f32 - 0.25 * mn[sub] as f32;
            assert_eq!(out[i], want, "element {i}");
        }
    }

    #[test]
    fn q5_k_block() {
        let sc = [3, 1, 4, 1, 5, 9, 2, 6];
        let mn = [2, 7, 1, 8, 2, 8, 1, 8];
        let mut b = h(0.125).to_vec();
        b.extend(h(1.0));
        b.extend(pack_k4_scales(sc, mn));
        // qh bit `sub` of byte l is the fifth bit of element l of sub-block `sub`.
        let qh: Vec<u8> = (0..32u32).map(|l| (l * 37 % 256) as u8).collect();
        b.extend(&qh);
        let qs: Vec<u8> = (0..128u32).map(|i| (i * 11 % 256) as u8).collect();
        b.extend(&qs);
        assert_eq!(b.len(), 176);
        let mut out = [0f32; 256];
        dequantize_row(GgmlType::Q5K, &b, &mut out).unwrap();
        for i in 0..256 {
            let sub = i / 32;
            let l = i % 32;
            let byte = qs[(sub / 2) * 32 + l];
            let lo = if sub % 2 == 0 { byte & 0xF } else { byte >> 4 };
            let hi = (qh[l] >> sub) & 1;
            let q = lo as f32 + 16.0 * hi as f32;
            let want = 0.125 * sc[sub] as f32 * q - mn[sub] as f32;
            assert_eq!(out[i], want, "element {i}");
        }
    }

    #[test]
    fn q6_k_block() {
        let ql: Vec<u8> = (0..128u32).map(|i| (i * 7 % 256) as u8).collect();
        let qh: Vec<u8> = (0..64u32).map(|i| (i * 29 % 256) as u8).collect();
        let sc: Vec<i8> = (0..16).map(|i| (i as i8 - 8) * 3).collect();
        let mut b = ql.clone();
        b.extend(&qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(0.5));
        assert_eq!(b.len(), 210);
        let mut out = [0f32; 256];
        dequantize_row(GgmlType::Q6K, &b, &mut out).unwrap();
        // Reference from the format definition: element i of half n (128 values) at
        // quarter r (32 values) and lane l uses ql nibble (r>=2: high) of byte
        // n*64 + (r%2)*32 + l, qh bits 2r..2r+2 of byte n*32 + l, scale n*8 + r*2 + l/16.
        for i in 0..256 {
            let n = i / 128;
            let r = (i % 128) / 32;
            let l = i % 32;
            let qlb = ql[n * 64 + (r % 2) * 32 + l];
            let lo = if r >= 2 { qlb >> 4 } else { qlb & 0xF };
            let hi = (qh[n * 32 + l] >> (2 * r)) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            let s = sc[n * 8 + r * 2 + l / 16];
            let want = 0.5 * s as f32 * q as f32;
            assert_eq!(out[i], want, "element {i}");
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut out = [0f32; 31];
        assert!(dequantize_row(GgmlType::Q8_0, &[0u8; 34], &mut out).is_err());
        let mut out = [0f32; 32];
        assert!(dequantize_row(GgmlType::Q8_0, &[0u8; 33], &mut out).is_err());
    }

    #[test]
    fn q8_acts_round_trip() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = Q8Acts::default();
        a.quantize_into(&x, 64);
        assert_eq!(a.rows(), 1);
        for (i, v) in x.iter().enumerate() {
            let r = a.d[i / 32] * a.qs[i] as f32;
            assert!((r - v).abs() <= a.d[i / 32] * 0.5 + 1e-6);
        }
        let s0: i32 = a.qs[..32].iter().map(|&q| q as i32).sum();
        assert!((a.s[0] - a.d[0] * s0 as f32).abs() < 1e-6);
    }
}
