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
        TurboMse {
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
        let r = &mut s.f[..p];
        self.rh.forward(x, r);
        let (nb, n) = f16_round(crate::simd::sum_sq(r).sqrt(), 0)?;
        put_f16(out, 0, nb);
        let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
        let h = self.head();
        let cl = packed_len(p, self.mse_bits);
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
