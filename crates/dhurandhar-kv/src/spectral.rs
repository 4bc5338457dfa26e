//! SpectralQuant: rotate into the PCA eigenbasis of calibration samples, allocate bits
//! per dimension by greedy reverse water-filling on the eigenvalues, and quantize two
//! regimes (signal: the first d_eff = round(participation ratio) dimensions; noise: the
//! rest) with a symmetric uniform (midrise) quantizer on whitened coordinates
//! y_i/σ_i, each regime with one f16 RMS scale per token and the MSE-optimal
//! Gaussian step for each dimension's width.
//!
//! The calibration is part of the stored format ([`Calibration::to_bytes`], with a
//! CRC-32) and counted via `side_bytes`; callers amortise it over a stated number of
//! tokens. The basis is stored as f16 and re-orthonormalised (QR) on load, by encoder
//! and decoder alike, so both use the same orthogonal matrix.
//!
//! Token record: `[scale: f16 per non-empty regime][codes: ⌈Σ b_i / 8⌉ B]`, where
//! dimension i is stored in b_i ∈ {0..16} bits (0 = dropped).

use half::f16;
use nalgebra::DMatrix;

use crate::codec::{KvError, KvRole};
use crate::framed::{GroupCodec, Scratch};
use crate::quant::{f16_round, get_f16, put_f16};

const MAGIC: &[u8; 4] = b"DHSQ";
const VERSION: u8 = 1;
/// Widest per-dimension allocation: strongly dominant directions need more than 8
/// bits at high budgets (a cap of 8 leaves an error floor in exactly the directions
/// queries align with).
pub const MAX_DIM_BITS: u32 = crate::lloyd::MAX_UNIFORM_BITS;

/// A fitted (or loaded) SpectralQuant calibration for one head and role.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub d: usize,
    pub d_eff: usize,
    pub bits: u32,
    /// Row i is the i-th eigenvector (descending eigenvalue), row-major d × d.
    basis: Vec<f32>,
    sigma: Vec<f32>,
    pub alloc: Vec<u8>,
    /// Per dimension: σ_i·Δ(b_i), the quantizer step in units of the regime scale
    /// (derived from `sigma` and `alloc` on load, not stored).
    unit: Vec<f32>,
    bytes: Vec<u8>,
}

impl Calibration {
    /// PCA on `samples` (`n × d`, n ≥ 2), then bit allocation for a budget of `bits`
    /// per dimension on average.
    pub fn fit(samples: &[f32], d: usize, bits: u32) -> Result<Self, KvError> {
        if d == 0 || !samples.len().is_multiple_of(d) {
            return Err(KvError::Calibration(format!(
                "{} calibration values is not a multiple of head_dim {d}",
                samples.len()
            )));
        }
        let n = samples.len() / d;
        if n < 2 {
            return Err(KvError::Calibration(format!(
                "need at least 2 calibration vectors, got {n}"
            )));
        }
        if let Some(i) = crate::simd::first_non_finite(samples) {
            return Err(KvError::Calibration(format!(
                "non-finite calibration value at vector {}, channel {}",
                i / d,
                i % d
            )));
        }
        let x = DMatrix::<f64>::from_row_iterator(n, d, samples.iter().map(|&v| v as f64));
        let c = (x.transpose() * &x) / n as f64;
        let eig = nalgebra::SymmetricEigen::new(c);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| {
            eig.eigenvalues[b]
                .partial_cmp(&eig.eigenvalues[a])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let lambda: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();
        let s1: f64 = lambda.iter().sum();
        let s2: f64 = lambda.iter().map(|l| l * l).sum();
        let pr = if s2 > 0.0 { s1 * s1 / s2 } else { 1.0 };
        let d_eff = (pr.round() as usize).clamp(1, d);
        let mut basis = Vec::with_capacity(d * d);
        for &i in &order {
            basis.extend(eig.eigenvectors.column(i).iter().map(|&v| v as f32));
        }
        // Directions the calibration barely saw (rank-deficient samples) get a floor
        // so later data along them stays in range of the f16 scales.
        let floor = lambda[0] * 1e-6;
        let lambda: Vec<f64> = lambda.iter().map(|l| l.max(floor)).collect();
        let mut sigma_bits = Vec::with_capacity(d);
        let mut lam_eff = lambda.clone();
        for (i, l) in lambda.iter().enumerate() {
            let h = f16::from_f32(l.sqrt() as f32);
            if !h.is_finite() {
                return Err(KvError::Calibration(format!(
                    "eigenvalue {l:e} too large for the f16 calibration format"
                )));
            }
            if h.to_f32() == 0.0 {
                lam_eff[i] = 0.0;
            }
            sigma_bits.push(h);
        }
        let alloc = allocate(&lam_eff, bits);
        let mut bytes = Vec::with_capacity(17 + 2 * d * d + 3 * d);
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&(d as u32).to_le_bytes());
        bytes.extend_from_slice(&(d_eff as u32).to_le_bytes());
        bytes.extend_from_slice(&bits.to_le_bytes());
        for v in &basis {
            bytes.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
        }
        for h in &sigma_bits {
            bytes.extend_from_slice(&h.to_bits().to_le_bytes());
        }
        bytes.extend_from_slice(&alloc);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Self::from_bytes(&bytes)
    }

    /// Load a stored calibration (checks magic, version, sizes and CRC-32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KvError> {
        let bad = |m: &str| KvError::Calibration(m.to_string());
        if bytes.len() < 21 || &bytes[..4] != MAGIC {
            return Err(bad("not a SpectralQuant calibration (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(bad("unsupported calibration version"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != want {
            return Err(bad("calibration checksum mismatch"));
        }
        let rd = |o: usize| u32::from_le_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]]);
        let d = rd(5) as usize;
        let d_eff = rd(9) as usize;
        let bits = rd(13);
        if d == 0 || d > crate::codec::MAX_HEAD_DIM || d_eff == 0 || d_eff > d {
            return Err(bad("calibration geometry out of range"));
        }
        if body.len() != 17 + 2 * d * d + 3 * d {
            return Err(bad("calibration length does not match its head_dim"));
        }
        let h = |o: usize| f16::from_bits(u16::from_le_bytes([body[o], body[o + 1]])).to_f32();
        let raw: Vec<f64> = (0..d * d).map(|i| h(17 + 2 * i) as f64).collect();
        let so = 17 + 2 * d * d;
        let sigma: Vec<f32> = (0..d).map(|i| h(so + 2 * i)).collect();
        let alloc = body[so + 2 * d..].to_vec();
        if raw.iter().any(|v| !v.is_finite()) || sigma.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad("non-finite calibration values"));
        }
        if alloc
            .iter()
            .zip(&sigma)
            .any(|(&b, &s)| b as u32 > MAX_DIM_BITS || (b > 0 && s <= 0.0))
        {
            return Err(bad("invalid bit allocation"));
        }
        // Columns of A are the stored eigenvectors; Q of its QR is the orthonormal
        // basis actually used (column signs follow R's diagonal).
        let a = DMatrix::<f64>::from_fn(d, d, |r, c| raw[c * d + r]);
        let qr = a.qr();
        let (q, r) = (qr.q(), qr.r());
        let mut basis = vec![0.0f32; d * d];
        for c in 0..d {
            let s = if r[(c, c)] < 0.0 { -1.0 } else { 1.0 };
            for rr in 0..d {
                basis[c * d + rr] = (q[(rr, c)] * s) as f32;
            }
        }
        let unit = sigma
            .iter()
            .zip(&alloc)
            .map(|(&s, &b)| {
                if b > 0 {
                    s * crate::lloyd::gaussian_uniform_step(b as u32)
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Calibration {
            d,
            d_eff,
            bits,
            basis,
            sigma,
            alloc,
            unit,
            bytes: bytes.to_vec(),
        })
    }

    /// The stored form (what `side_bytes` counts).
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn regimes(&self) -> [(usize, usize, bool); 2] {
        let has = |a: usize, b: usize| self.alloc[a..b].iter().any(|&x| x > 0);
        [
            (0, self.d_eff, has(0, self.d_eff)),
            (self.d_eff, self.d, has(self.d_eff, self.d)),
        ]
    }

    fn header_len(&self) -> usize {
        2 * self.regimes().iter().filter(|r| r.2).count()
    }

    fn record_len(&self) -> usize {
        let total: usize = self.alloc.iter().map(|&b| b as usize).sum();
        self.header_len() + total.div_ceil(8)
    }
}

/// Greedy integer reverse water-filling: repeatedly give the next bit to the dimension
/// with the largest remaining distortion λ_i·4^(−b_i), capped at [`MAX_DIM_BITS`]. Excess from
/// capped dimensions flows to the others; isotropic λ gives a uniform allocation.
pub fn allocate(lambda: &[f64], bits: u32) -> Vec<u8> {
    let d = lambda.len();
    let mut b = vec![0u32; d];
    let mut left = bits as usize * d;
    while left > 0 {
        let mut best: Option<(usize, f64)> = None;
        for i in 0..d {
            if b[i] >= MAX_DIM_BITS || lambda[i] <= 0.0 {
                continue;
            }
            let pr = lambda[i] * 4f64.powi(-(b[i] as i32));
            if best.is_none_or(|(_, p)| pr > p) {
                best = Some((i, pr));
            }
        }
        let Some((i, _)) = best else { break };
        b[i] += 1;
        left -= 1;
    }
    b.into_iter().map(|v| v as u8).collect()
}

/// The codec: one calibration for keys, one for values.
#[derive(Debug, Clone)]
pub struct Spectral {
    k: Calibration,
    v: Calibration,
}

impl Spectral {
    pub(crate) fn new(k: Calibration, v: Calibration) -> Self {
        Spectral { k, v }
    }

    fn cal(&self, role: KvRole) -> &Calibration {
        match role {
            KvRole::Key => &self.k,
            KvRole::Value => &self.v,
        }
    }
}

#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ia = a.chunks_exact(8);
    let mut ib = b.chunks_exact(8);
    for (x, y) in (&mut ia).zip(&mut ib) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut t = 0.0;
    for (x, y) in ia.remainder().iter().zip(ib.remainder()) {
        t += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + t
}

impl GroupCodec for Spectral {
    fn name(&self) -> &'static str {
        "spectral"
    }
    fn head_dim(&self) -> usize {
        self.k.d
    }
    fn bits(&self) -> u32 {
        self.k.bits
    }
    fn group(&self, _role: KvRole) -> usize {
        1
    }
    fn record_len(&self, role: KvRole) -> usize {
        self.cal(role).record_len()
    }
    fn scratch_len(&self) -> usize {
        self.k.d
    }
    fn side_bytes(&self, role: KvRole) -> usize {
        self.cal(role).bytes.len()
    }

    #[inline(always)]
    fn encode_group(
        &self,
        role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let c = self.cal(role);
        let d = c.d;
        let y = &mut s.f[..d];
        for (yi, row) in y.iter_mut().zip(c.basis.chunks_exact(d)) {
            *yi = dot(row, x);
        }
        let mut at = 0;
        let mut acc = 0u64;
        let mut nb = 0u32;
        let mut o = c.header_len();
        for (a, b, present) in c.regimes() {
            if !present {
                continue;
            }
            let (mut ss, mut cnt) = (0.0f32, 0usize);
            for i in a..b {
                if c.alloc[i] > 0 {
                    let z = y[i] / c.sigma[i];
                    ss += z * z;
                    cnt += 1;
                }
            }
            let (sb, scale) = f16_round((ss / cnt.max(1) as f32).sqrt(), 0)?;
            let inv_scale = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            put_f16(out, at, sb);
            at += 2;
            for i in a..b {
                let bits = c.alloc[i] as u32;
                if bits == 0 {
                    continue;
                }
                let n = (1u32 << bits) as f32;
                let z = if scale > 0.0 {
                    y[i] * inv_scale / c.unit[i]
                } else {
                    0.0
                };
                let code = (z + n / 2.0).floor().clamp(0.0, n - 1.0) as u64;
                acc |= code << nb;
                nb += bits;
                while nb >= 8 {
                    out[o] = acc as u8;
                    o += 1;
                    acc >>= 8;
                    nb -= 8;
                }
            }
        }
        if nb > 0 {
            out[o] = acc as u8;
        }
        Ok(())
    }

    #[inline(always)]
    fn decode_group(
        &self,
        role: KvRole,
        rec: &[u8],
        out: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let c = self.cal(role);
        let d = c.d;
        let y = &mut s.f[..d];
        y.fill(0.0);
        let mut at = 0;
        let mut o = c.header_len();
        let mut acc = 0u64;
        let mut nb = 0u32;
        for (a, b, present) in c.regimes() {
            if !present {
                continue;
            }
            let scale = get_f16(rec, at, "regime scale")?;
            at += 2;
            for i in a..b {
                let bits = c.alloc[i] as u32;
                if bits == 0 {
                    continue;
                }
                while nb < bits {
                    acc |= (rec[o] as u64) << nb;
                    o += 1;
                    nb += 8;
                }
                let code = (acc & ((1u64 << bits) - 1)) as f32;
                acc >>= bits;
                nb -= bits;
                let n = (1u32 << bits) as f32;
                y[i] = (code + 0.5 - n / 2.0) * c.unit[i] * scale;
            }
        }
        out.fill(0.0);
        for (&yi, row) in y.iter().zip(c.basis.chunks_exact(d)) {
            if yi != 0.0 {
                for (o, r) in out.iter_mut().zip(row) {
                    *o += yi * r;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotropic_allocation_is_uniform_and_sums_to_budget() {
        for bits in 2..=8 {
            let a = allocate(&[1.0; 64], bits);
            assert!(a.iter().all(|&b| b as u32 == bits), "bits={bits} {a:?}");
        }
        let a = allocate(&[1.0; 64], 1);
        assert!(a.iter().all(|&b| b == 1));
    }

    #[test]
    fn decaying_spectrum_gets_more_bits_first_and_caps_redistribute() {
        let lambda: Vec<f64> = (0..32).map(|i| 1000.0 * 0.7f64.powi(i)).collect();
        let a = allocate(&lambda, 4);
        assert!(a.windows(2).all(|w| w[0] >= w[1]), "{a:?}");
        assert!(a[0] >= 8 && a[31] < 4, "{a:?}");
        assert_eq!(a.iter().map(|&b| b as usize).sum::<usize>(), 4 * 32);
        // A capped dimension's excess flows to the others.
        let a = allocate(&[1e12, 1.0, 1.0, 1.0], 8);
        assert_eq!(a, vec![MAX_DIM_BITS as u8, 6, 5, 5]);
    }

    #[test]
    fn calibration_round_trips_and_detects_corruption() {
        let d = 16;
        let samples: Vec<f32> = (0..d * 50)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let c = Calibration::fit(&samples, d, 4).unwrap();
        let again = Calibration::from_bytes(c.to_bytes()).unwrap();
        assert_eq!(c.basis, again.basis);
        let mut bad = c.to_bytes().to_vec();
        bad[30] ^= 1;
        assert!(Calibration::from_bytes(&bad).is_err());
        assert!(Calibration::from_bytes(&bad[..10]).is_err());
    }
}
