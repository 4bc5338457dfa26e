//! Mode 3: group-quantized base (INT4 / INT8, asymmetric, f16 scale and minimum per
//! group) plus a sparse residual — the largest `residual_frac` of |W − dequant(base)|
//! per chunk, with gap-encoded indices and f16 values — and the fused kernel
//! y = x·dequant(W_base)ᵀ + x·ΔW_sparseᵀ that never materialises W.
//!
//! Tensors are viewed as `[rows, cols]` with `cols` the last dimension; groups run along
//! a row. A chunk is a range of whole rows, so each chunk decodes on its own. The residual
//! budget is spent per chunk (top fraction of each chunk), which keeps encoding parallel
//! and memory-bounded.

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::codec::{self, tag, PlaneCfg};
use crate::error::PackError;

/// Quantizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// 4 or 8.
    pub bits: u8,
    /// Elements per scale/minimum pair, along a row.
    pub group: usize,
    /// Fraction of each chunk's elements whose residual is kept (0.0 ..= 1.0).
    pub residual_frac: f64,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            bits: 4,
            group: 32,
            residual_frac: 0.01,
        }
    }
}

impl QuantConfig {
    pub fn validate(&self) -> Result<(), PackError> {
        if self.bits != 4 && self.bits != 8 {
            return Err(PackError::invalid(
                "bits",
                format!("must be 4 or 8, got {}", self.bits),
            ));
        }
        if self.group == 0 || self.group > 1 << 20 {
            return Err(PackError::invalid(
                "group",
                format!("must be between 1 and 1048576, got {}", self.group),
            ));
        }
        if !(0.0..=1.0).contains(&self.residual_frac) {
            return Err(PackError::invalid(
                "residual_frac",
                format!("must be within 0..=1, got {}", self.residual_frac),
            ));
        }
        Ok(())
    }

    fn qmax(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// Bytes of one packed row of codes.
    pub fn row_stride(&self, cols: usize) -> usize {
        (cols * self.bits as usize).div_ceil(8)
    }
}

/// Error accounting of a quantized tensor (sums over its chunks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantStats {
    /// Σ w².
    pub sum_sq: f64,
    /// Σ (w − base)².
    pub err_sq_base: f64,
    /// Σ (w − base − residual)².
    pub err_sq_residual: f64,
    /// max |w − base|.
    pub max_err_base: f64,
    /// max |w − base − residual|.
    pub max_err_residual: f64,
    /// Residual entries stored.
    pub residual_count: u64,
}

impl QuantStats {
    pub(crate) fn merge(&mut self, o: &QuantStats) {
        self.sum_sq += o.sum_sq;
        self.err_sq_base += o.err_sq_base;
        self.err_sq_residual += o.err_sq_residual;
        self.max_err_base = self.max_err_base.max(o.max_err_base);
        self.max_err_residual = self.max_err_residual.max(o.max_err_residual);
        self.residual_count += o.residual_count;
    }

    /// ‖W − base‖_F / ‖W‖_F (0 for an all-zero tensor).
    pub fn rel_error_base(&self) -> f64 {
        rel(self.err_sq_base, self.sum_sq)
    }

    /// ‖W − base − residual‖_F / ‖W‖_F.
    pub fn rel_error_with_residual(&self) -> f64 {
        rel(self.err_sq_residual, self.sum_sq)
    }
}

fn rel(e: f64, s: f64) -> f64 {
    if s > 0.0 {
        (e / s).sqrt()
    } else {
        0.0
    }
}

/// Whether a tensor can be quantized (finite and within f16 range, so the f16 scales and
/// minimums are exact enough); otherwise it is stored losslessly.
pub(crate) fn quantizable(w: &[f32]) -> bool {
    w.iter().all(|v| v.is_finite() && v.abs() <= 60000.0)
}

const PLANES: usize = 8;

/// Quantize `rows × cols` values of one chunk; returns the blob and its error stats.
pub(crate) fn encode_chunk(
    w: &[f32],
    rows: usize,
    cols: usize,
    cfg: &QuantConfig,
) -> (Vec<u8>, QuantStats) {
    let g = cfg.group;
    let gpr = cols.div_ceil(g);
    let stride = cfg.row_stride(cols);
    let qmax = cfg.qmax();
    let mut codes = vec![0u8; rows * stride];
    let mut scales = Vec::with_capacity(rows * gpr);
    let mut mins = Vec::with_capacity(rows * gpr);
    let mut deq = vec![0f32; w.len()];
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let crow = &mut codes[r * stride..(r + 1) * stride];
        for gi in 0..gpr {
            let c0 = gi * g;
            let c1 = (c0 + g).min(cols);
            let vals = &row[c0..c1];
            let lo = vals.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s16 = f16::from_f32((hi - lo) / qmax);
            let m16 = f16::from_f32(lo);
            let (s, m) = (s16.to_f32(), m16.to_f32());
            scales.push(s16);
            mins.push(m16);
            for (k, &v) in vals.iter().enumerate() {
                let c = c0 + k;
                let q = if s > 0.0 {
                    ((v - m) / s).round().clamp(0.0, qmax)
                } else {
                    0.0
                };
                let qi = q as u8;
                deq[r * cols + c] = m + q * s;
                if cfg.bits == 8 {
                    crow[c] = qi;
                } else {
                    crow[c / 2] |= qi << (4 * (c & 1));
                }
            }
        }
    }
    // Residual: top fraction of |w − deq| within this chunk.
    let n = w.len();
    let k = ((cfg.residual_frac * n as f64).round() as usize).min(n);
    let resid: Vec<f32> = w.iter().zip(&deq).map(|(a, b)| a - b).collect();
    let mut idx: Vec<u32> = Vec::new();
    if k > 0 {
        idx = (0..n as u32).collect();
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            resid[b as usize].abs().total_cmp(&resid[a as usize].abs())
        });
        idx.truncate(k);
        idx.sort_unstable();
    }
    let mut stats = QuantStats::default();
    for i in 0..n {
        let e = f64::from(resid[i]);
        stats.sum_sq += f64::from(w[i]) * f64::from(w[i]);
        stats.err_sq_base += e * e;
        stats.max_err_base = stats.max_err_base.max(e.abs());
    }
    let mut kept = vec![false; if k > 0 { n } else { 0 }];
    let mut gaps = Vec::with_capacity(k * 2);
    let mut val_hi = Vec::with_capacity(k);
    let mut val_lo = Vec::with_capacity(k);
    let mut prev: i64 = -1;
    for &i in &idx {
        let v16 = f16::from_f32(resid[i as usize]);
        let e = f64::from(w[i as usize] - (deq[i as usize] + v16.to_f32()));
        stats.err_sq_residual += e * e;
        stats.max_err_residual = stats.max_err_residual.max(e.abs());
        kept[i as usize] = true;
        put_varint(&mut gaps, (i64::from(i) - prev - 1) as u64);
        prev = i64::from(i);
        let b = v16.to_bits();
        val_hi.push((b >> 8) as u8);
        val_lo.push(b as u8);
    }
    for i in 0..n {
        if k == 0 || !kept[i] {
            let e = f64::from(resid[i]);
            stats.err_sq_residual += e * e;
            stats.max_err_residual = stats.max_err_residual.max(e.abs());
        }
    }
    stats.residual_count = idx.len() as u64;
    let (sh, sl) = split16(&scales);
    let (mh, ml) = split16(&mins);
    let planes: [&[u8]; PLANES] = [&codes, &sh, &sl, &mh, &ml, &gaps, &val_hi, &val_lo];
    let blob = codec::encode_blob(tag::QUANT, &planes, PlaneCfg::new(Some(3)));
    (blob, stats)
}

fn split16(v: &[f16]) -> (Vec<u8>, Vec<u8>) {
    (
        v.iter().map(|x| (x.to_bits() >> 8) as u8).collect(),
        v.iter().map(|x| x.to_bits() as u8).collect(),
    )
}

fn join16(hi: &[u8], lo: &[u8]) -> Vec<f32> {
    hi.iter()
        .zip(lo)
        .map(|(&h, &l)| f16::from_bits((u16::from(h) << 8) | u16::from(l)).to_f32())
        .collect()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One decoded chunk, still quantized.
pub(crate) struct QuantChunk {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub mins: Vec<f32>,
    /// (index within the chunk, value), ascending.
    pub residual: Vec<(u32, f32)>,
}

/// Decode a chunk of `rows × cols`, validating every length before allocating.
pub(crate) fn decode_chunk(
    blob: &[u8],
    rows: usize,
    cols: usize,
    cfg: &QuantConfig,
) -> Result<QuantChunk, String> {
    let parsed = codec::parse_blob(blob)?;
    if parsed.tag != tag::QUANT || parsed.planes.len() != PLANES {
        return Err("unexpected chunk layout for a quantized tensor".into());
    }
    let n = rows * cols;
    let gpr = cols.div_ceil(cfg.group);
    let stride = cfg.row_stride(cols);
    let p = &parsed.planes;
    let fixed = [
        rows * stride,
        rows * gpr,
        rows * gpr,
        rows * gpr,
        rows * gpr,
    ];
    for (i, want) in fixed.iter().enumerate() {
        if p[i].1 != *want {
            return Err(format!(
                "quant plane {i} holds {} bytes, {want} expected",
                p[i].1
            ));
        }
    }
    if p[5].1 > 10 * n || p[6].1 > n || p[7].1 != p[6].1 {
        return Err("residual planes have impossible lengths".into());
    }
    let mut planes: Vec<Vec<u8>> = Vec::with_capacity(PLANES);
    for &(c, raw, payload) in p {
        let mut v = vec![0u8; raw];
        codec::decode_plane(c, payload, &mut v)?;
        planes.push(v);
    }
    let count = planes[6].len();
    let mut residual = Vec::with_capacity(count);
    let vals = join16(&planes[6], &planes[7]);
    let mut pos: i64 = -1;
    let mut rd = planes[5].as_slice();
    for v in vals {
        let gap = get_varint(&mut rd).ok_or("residual index stream truncated")?;
        pos = pos
            .checked_add(1)
            .and_then(|x| x.checked_add(i64::try_from(gap).ok()?))
            .ok_or("residual index overflow")?;
        if pos >= n as i64 {
            return Err("residual index out of range".into());
        }
        residual.push((pos as u32, v));
    }
    if !rd.is_empty() {
        return Err("trailing residual indices".into());
    }
    let codes = std::mem::take(&mut planes[0]);
    Ok(QuantChunk {
        codes,
        scales: join16(&planes[1], &planes[2]),
        mins: join16(&planes[3], &planes[4]),
        residual,
    })
}

fn get_varint(rd: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = rd.split_first()?;
        *rd = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[inline]
fn code_at(codes: &[u8], bits: u8, c: usize) -> f32 {
    if bits == 8 {
        codes[c] as f32
    } else {
        ((codes[c / 2] >> (4 * (c & 1))) & 15) as f32
    }
}

impl QuantChunk {
    /// Dequantize into `out` (`rows × cols`), with or without the residual.
    pub(crate) fn dequantize(
        &self,
        rows: usize,
        cols: usize,
        cfg: &QuantConfig,
        residual: bool,
        out: &mut [f32],
    ) {
        let gpr = cols.div_ceil(cfg.group);
        let stride = cfg.row_stride(cols);
        for r in 0..rows {
            let crow = &self.codes[r * stride..(r + 1) * stride];
            for c in 0..cols {
                let gi = r * gpr + c / cfg.group;
                out[r * cols + c] = self.mins[gi] + code_at(crow, cfg.bits, c) * self.scales[gi];
            }
        }
        if residual {
            for &(i, v) in &self.residual {
                out[i as usize] += v;
            }
        }
    }
}

/// A whole quantized tensor in memory: packed codes, f32 scales/minimums and the residual
/// as CSR rows. Memory is ~bits/8 bytes per weight plus the residual, never `rows × cols`
/// floats.
#[derive(Debug, Clone)]
pub struct QuantResidualTensor {
    pub rows: usize,
    pub cols: usize,
    pub config: QuantConfig,
    codes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    row_ptr: Vec<usize>,
    res_col: Vec<u32>,
    res_val: Vec<f32>,
}

impl QuantResidualTensor {
    /// Assemble from decoded chunks in row order; `chunk_rows[i]` rows each.
    pub(crate) fn from_chunks(
        rows: usize,
        cols: usize,
        config: QuantConfig,
        chunks: Vec<(usize, QuantChunk)>,
    ) -> Self {
        let mut t = QuantResidualTensor {
            rows,
            cols,
            config,
            codes: Vec::with_capacity(rows * config.row_stride(cols)),
            scales: Vec::new(),
            mins: Vec::new(),
            row_ptr: vec![0; rows + 1],
            res_col: Vec::new(),
            res_val: Vec::new(),
        };
        let mut row0 = 0usize;
        let mut per_row = vec![0usize; rows];
        for (nrows, ch) in chunks {
            t.codes.extend_from_slice(&ch.codes);
            t.scales.extend_from_slice(&ch.scales);
            t.mins.extend_from_slice(&ch.mins);
            for (i, v) in ch.residual {
                let r = row0 + i as usize / cols.max(1);
                per_row[r] += 1;
                t.res_col.push((i as usize % cols.max(1)) as u32);
                t.res_val.push(v);
            }
            row0 += nrows;
        }
        for (r, n) in per_row.iter().enumerate() {
            t.row_ptr[r + 1] = t.row_ptr[r] + n;
        }
        t
    }

    /// Quantize a dense `rows × cols` matrix directly (tests and benchmarks).
    pub fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        config: QuantConfig,
    ) -> Result<(Self, QuantStats), PackError> {
        config.validate()?;
        if w.len() != rows * cols {
            return Err(PackError::InvalidRequest(format!(
                "{} values for a {rows}×{cols} matrix",
                w.len()
            )));
        }
        let (blob, stats) = encode_chunk(w, rows, cols, &config);
        let ch = decode_chunk(&blob, rows, cols, &config).map_err(PackError::InvalidRequest)?;
        Ok((
            Self::from_chunks(rows, cols, config, vec![(rows, ch)]),
            stats,
        ))
    }

    /// Residual entries stored.
    pub fn residual_len(&self) -> usize {
        self.res_val.len()
    }

    /// Materialise dequant(base) (+ residual): what the fused kernel avoids; for tests,
    /// `unpack` and the baseline benchmark.
    pub fn dequantize(&self, residual: bool) -> Vec<f32> {
        let (rows, cols, cfg) = (self.rows, self.cols, self.config);
        let gpr = cols.div_ceil(cfg.group);
        let stride = cfg.row_stride(cols);
        let mut out = vec![0f32; rows * cols];
        out.par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(r, o)| {
                let crow = &self.codes[r * stride..(r + 1) * stride];
                for (c, v) in o.iter_mut().enumerate() {
                    let gi = r * gpr + c / cfg.group;
                    *v = self.mins[gi] + code_at(crow, cfg.bits, c) * self.scales[gi];
                }
                if residual {
                    for k in self.row_ptr[r]..self.row_ptr[r + 1] {
                        o[self.res_col[k] as usize] += self.res_val[k];
                    }
                }
            });
        out
    }

    /// Fused y = x·dequant(W_base)ᵀ + x·ΔW_sparseᵀ for `x: [batch, cols]`,
    /// `y: [batch, rows]`, dequantizing one group at a time in registers/L1.
    pub fn matmul(&self, x: &[f32], batch: usize, y: &mut [f32]) -> Result<(), PackError> {
        let (rows, cols, cfg) = (self.rows, self.cols, self.config);
        if x.len() != batch * cols || y.len() != batch * rows {
            return Err(PackError::InvalidRequest(format!(
                "matmul: x has {} values and y {} for batch {batch}, {rows}×{cols}",
                x.len(),
                y.len()
            )));
        }
        let g = cfg.group;
        let gpr = cols.div_ceil(g);
        let stride = cfg.row_stride(cols);
        // Σx per group: the minimum term m·Σx needs no per-element work.
        let mut xs = vec![0f32; batch * gpr];
        for b in 0..batch {
            for gi in 0..gpr {
                let c0 = gi * g;
                xs[b * gpr + gi] = x[b * cols + c0..b * cols + (c0 + g).min(cols)].iter().sum();
            }
        }
        let mut yt = vec![0f32; rows * batch];
        yt.par_chunks_mut(batch.max(1))
            .enumerate()
            .for_each(|(r, yr)| {
                let crow = &self.codes[r * stride..(r + 1) * stride];
                let mut qf = vec![0f32; g];
                for gi in 0..gpr {
                    let c0 = gi * g;
                    let c1 = (c0 + g).min(cols);
                    let q = &mut qf[..c1 - c0];
                    if cfg.bits == 8 {
                        for (d, &b) in q.iter_mut().zip(&crow[c0..c1]) {
                            *d = b as f32;
                        }
                    } else if c0 % 2 == 0 {
                        let bytes = &crow[c0 / 2..c1.div_ceil(2)];
                        for (k, d) in q.iter_mut().enumerate() {
                            *d = ((bytes[k / 2] >> (4 * (k & 1))) & 15) as f32;
                        }
                    } else {
                        for (k, d) in q.iter_mut().enumerate() {
                            *d = code_at(crow, 4, c0 + k);
                        }
                    }
                    let (s, m) = (self.scales[r * gpr + gi], self.mins[r * gpr + gi]);
                    for (b, yb) in yr.iter_mut().enumerate() {
                        let xb = &x[b * cols + c0..b * cols + c1];
                        let dot: f32 = xb.iter().zip(q.iter()).map(|(a, b)| a * b).sum();
                        *yb += s * dot + m * xs[b * gpr + gi];
                    }
                }
                for k in self.row_ptr[r]..self.row_ptr[r + 1] {
                    let (c, v) = (self.res_col[k] as usize, self.res_val[k]);
                    for (b, yb) in yr.iter_mut().enumerate() {
                        *yb += x[b * cols + c] * v;
                    }
                }
            });
        for r in 0..rows {
            for b in 0..batch {
                y[b * rows + r] = yt[r * batch + b];
            }
        }
        Ok(())
    }
}

/// Dense y = x·Wᵀ (`w: [rows, cols]`): the materialise-then-matmul baseline.
pub fn dense_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32], batch: usize, y: &mut [f32]) {
    let mut yt = vec![0f32; rows * batch];
    yt.par_chunks_mut(batch.max(1))
        .enumerate()
        .for_each(|(r, yr)| {
            let wr = &w[r * cols..(r + 1) * cols];
            for (b, yb) in yr.iter_mut().enumerate() {
                *yb = x[b * cols..(b + 1) * cols]
                    .iter()
                    .zip(wr)
                    .map(|(a, b)| a * b)
                    .sum();
            }
        });
    for r in 0..rows {
        for b in 0..batch {
            y[b * rows + r] = yt[r * batch + b];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StudentT};

    fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = StudentT::new(4.0).unwrap();
        (0..rows * cols)
            .map(|_| 0.02 * t.sample(&mut rng) as f32)
            .collect()
    }

    #[test]
    fn residual_reduces_error_and_is_accounted() {
        let (rows, cols) = (64, 96);
        let w = weights(rows, cols, 1);
        for bits in [4u8, 8] {
            let cfg = QuantConfig {
                bits,
                group: 32,
                residual_frac: 0.02,
            };
            let (t, st) = QuantResidualTensor::quantize(&w, rows, cols, cfg).unwrap();
            assert_eq!(
                st.residual_count as usize,
                (0.02 * (rows * cols) as f64).round() as usize
            );
            assert_eq!(t.residual_len() as u64, st.residual_count);
            assert!(st.rel_error_with_residual() < st.rel_error_base());
            assert!(st.max_err_residual <= st.max_err_base);
            // The stats describe exactly what decoding yields.
            let d = t.dequantize(true);
            let err: f64 = w
                .iter()
                .zip(&d)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let rel = (err / st.sum_sq).sqrt();
            assert!(
                (rel - st.rel_error_with_residual()).abs() < 1e-9,
                "{rel} vs {}",
                st.rel_error_with_residual()
            );
        }
        let cfg4 = QuantConfig {
            bits: 4,
            group: 32,
            residual_frac: 0.0,
        };
        let cfg8 = QuantConfig { bits: 8, ..cfg4 };
        let e4 = QuantResidualTensor::quantize(&w, rows, cols, cfg4)
            .unwrap()
            .1
            .rel_error_base();
        let e8 = QuantResidualTensor::quantize(&w, rows, cols, cfg8)
            .unwrap()
            .1
            .rel_error_base();
        assert!(e8 < e4 / 8.0, "int8 {e8} vs int4 {e4}");
    }

    #[test]
    fn fused_matches_dense_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (rows, cols, group, bits) in [
            (33, 70, 32, 4u8),
            (16, 64, 16, 8),
            (5, 9, 3, 4),
            (1, 1, 32, 4),
        ] {
            let w = weights(rows, cols, rows as u64);
            let cfg = QuantConfig {
                bits,
                group,
                residual_frac: 0.05,
            };
            let (t, _) = QuantResidualTensor::quantize(&w, rows, cols, cfg).unwrap();
            let batch = 3;
            let x: Vec<f32> = (0..batch * cols)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let mut y = vec![0f32; batch * rows];
            t.matmul(&x, batch, &mut y).unwrap();
            let dense = t.dequantize(true);
            let mut y_ref = vec![0f32; batch * rows];
            dense_matmul(&dense, rows, cols, &x, batch, &mut y_ref);
            for (a, b) in y.iter().zip(&y_ref) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b} ({rows}x{cols} g{group} b{bits})"
                );
            }
        }
    }

    #[test]
    fn constant_groups_and_bad_config() {
        let w = vec![0.5f32; 64];
        let (t, st) = QuantResidualTensor::quantize(&w, 2, 32, QuantConfig::default()).unwrap();
        assert_eq!(st.err_sq_base, 0.0);
        assert_eq!(t.dequantize(false), w);
        assert!(QuantConfig {
            bits: 3,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(QuantConfig {
            group: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(QuantConfig {
            residual_frac: 1.5,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
