//! OScaR (arXiv 2605.19660).
//!
//! Keys: randomized Hadamard, divide each key by its post-rotation norm τ (f16), then
//! quantize **per channel** over groups of 32 tokens (asymmetric min/step in f16 per
//! channel per group) — true per-channel scales shared across tokens, unlike the
//! Python tool's per-token groups. Record of 32 keys:
//! `[τ: 32 × f16][(min, step): p × 2 × f16][codes: ⌈32·p·b/8⌉ B, token-major]`.
//!
//! Values: rotated only, quantized per token (asymmetric min/step).
//! Record: `[min: f16][step: f16][codes: ⌈p·b/8⌉ B]`.

use crate::bits::{pack, packed_len, unpack};
use crate::codec::{KvError, KvRole};
use crate::framed::{GroupCodec, Scratch};
use crate::hadamard::RandomizedHadamard;
use crate::quant::{asym_params, asym_quantize, f16_round, get_f16, put_f16, round_u8};

/// Tokens per key group (per-channel scale span).
pub const OSCAR_GROUP: usize = 32;

#[derive(Debug, Clone)]
pub struct Oscar {
    d: usize,
    p: usize,
    bits: u32,
    rh: RandomizedHadamard,
}

impl Oscar {
    pub fn new(d: usize, bits: u32, seed: u64) -> Self {
        let rh = RandomizedHadamard::new(d, seed);
        Oscar {
            d,
            p: rh.padded(),
            bits,
            rh,
        }
    }
}

impl GroupCodec for Oscar {
    fn name(&self) -> &'static str {
        "oscar"
    }
    fn head_dim(&self) -> usize {
        self.d
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn group(&self, role: KvRole) -> usize {
        match role {
            KvRole::Key => OSCAR_GROUP,
            KvRole::Value => 1,
        }
    }
    fn record_len(&self, role: KvRole) -> usize {
        match role {
            KvRole::Key => {
                2 * OSCAR_GROUP + 4 * self.p + packed_len(OSCAR_GROUP * self.p, self.bits)
            }
            KvRole::Value => 4 + packed_len(self.p, self.bits),
        }
    }
    fn scratch_len(&self) -> usize {
        OSCAR_GROUP * self.p
    }

    #[inline(always)]
    fn encode_group(
        &self,
        role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let (d, p, b) = (self.d, self.p, self.bits);
        match role {
            KvRole::Value => {
                let r = &mut s.f[..p];
                self.rh.forward(x, r);
                let codes = &mut s.c[..p];
                let (mb, sb) = asym_quantize(r, b, codes, 0)?;
                put_f16(out, 0, mb);
                put_f16(out, 2, sb);
                pack(codes, b, &mut out[4..]);
            }
            KvRole::Key => {
                let u = &mut s.f[..OSCAR_GROUP * p];
                for (t, (xt, ut)) in x.chunks_exact(d).zip(u.chunks_exact_mut(p)).enumerate() {
                    self.rh.forward(xt, ut);
                    let (tb, tau) = f16_round(crate::simd::sum_sq(ut).sqrt(), t)?;
                    put_f16(out, 2 * t, tb);
                    let inv = if tau > 0.0 { 1.0 / tau } else { 0.0 };
                    for v in ut.iter_mut() {
                        *v *= inv;
                    }
                }
                let (lo, rest) = s.g.split_at_mut(p);
                let hi = &mut rest[..p];
                lo.fill(f32::INFINITY);
                hi.fill(f32::NEG_INFINITY);
                for ut in u.chunks_exact(p) {
                    for ((l, h), v) in lo.iter_mut().zip(hi.iter_mut()).zip(ut) {
                        *l = l.min(*v);
                        *h = h.max(*v);
                    }
                }
                let base = 2 * OSCAR_GROUP;
                let mn = &mut s.h[..p];
                let levels = ((1u32 << b) - 1) as f32;
                // Per-channel (min, 1/step); the side info is written as f16 and the
                // rounded values are the ones used, so decode sees the same numbers.
                for c in 0..p {
                    let (mb, sb, m, st) = asym_params(lo[c], hi[c], b, 0)?;
                    put_f16(out, base + 4 * c, mb);
                    put_f16(out, base + 4 * c + 2, sb);
                    mn[c] = m;
                    hi[c] = if st > 0.0 { 1.0 / st } else { 0.0 };
                }
                let codes = &mut s.c[..OSCAR_GROUP * p];
                for (ct, ut) in codes.chunks_exact_mut(p).zip(u.chunks_exact(p)) {
                    for (((c, v), m), iv) in ct.iter_mut().zip(ut).zip(mn.iter()).zip(hi.iter()) {
                        *c = round_u8(((v - m) * iv).clamp(0.0, levels));
                    }
                }
                pack(codes, b, &mut out[base + 4 * p..]);
            }
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
        let (d, p, b) = (self.d, self.p, self.bits);
        match role {
            KvRole::Value => {
                let mn = get_f16(rec, 0, "min")?;
                let st = get_f16(rec, 2, "step")?;
                let codes = &mut s.c[..p];
                unpack(&rec[4..], b, codes);
                let y = &mut s.f[..p];
                for (v, &c) in y.iter_mut().zip(codes.iter()) {
                    *v = mn + c as f32 * st;
                }
                self.rh.inverse(y, out);
            }
            KvRole::Key => {
                let base = 2 * OSCAR_GROUP;
                let (mn, rest) = s.g.split_at_mut(p);
                let st = &mut rest[..p];
                for c in 0..p {
                    mn[c] = get_f16(rec, base + 4 * c, "channel min")?;
                    st[c] = get_f16(rec, base + 4 * c + 2, "channel step")?;
                }
                let codes = &mut s.c[..OSCAR_GROUP * p];
                unpack(&rec[base + 4 * p..], b, codes);
                let y = &mut s.f[..p];
                for (t, (ct, ot)) in codes
                    .chunks_exact(p)
                    .zip(out.chunks_exact_mut(d))
                    .enumerate()
                {
                    let tau = get_f16(rec, 2 * t, "key norm")?;
                    for (((v, &c), m), sv) in y.iter_mut().zip(ct).zip(mn.iter()).zip(st.iter()) {
                        *v = (m + c as f32 * sv) * tau;
                    }
                    self.rh.inverse(y, ot);
                }
            }
        }
        Ok(())
    }
}
