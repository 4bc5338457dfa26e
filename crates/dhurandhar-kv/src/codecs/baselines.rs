//! Baselines a user would pick instead.
//!
//! `q8_0` / `q4_0`: llama.cpp block formats, byte-identical to ggml's `block_q8_0`
//! (`[d: f16][qs: 32 × i8]`) and `block_q4_0` (`[d: f16][qs: 16 B]`, element j in the
//! low nibble of byte j, element j+16 in the high nibble, value (q − 8)·d). A head_dim
//! that is not a multiple of 32 is zero-padded to whole blocks (counted).
//! `q4_0-rot`: q4_0 after the randomized Hadamard rotation (padded length p).
//!
//! `kivi2`: KIVI. Keys per channel over groups of 32 tokens, values per token over
//! groups of 32 channels; asymmetric (min, step) in f16 per group.

use crate::bits::{pack, packed_len, unpack};
use crate::codec::{KvError, KvRole};
use crate::framed::{GroupCodec, Scratch};
use crate::hadamard::RandomizedHadamard;
use crate::quant::{asym_params, asym_quantize, f16_round, get_f16, put_f16, round_u8};

const QK: usize = 32;

#[derive(Debug, Clone)]
pub struct BlockQ {
    d: usize,
    /// Values per token after optional rotation, before block padding.
    m: usize,
    blocks: usize,
    q8: bool,
    rot: Option<RandomizedHadamard>,
}

impl BlockQ {
    pub fn q8_0(d: usize, seed: u64, rotate: bool) -> Self {
        Self::new(d, seed, rotate, true)
    }

    pub fn q4_0(d: usize, seed: u64, rotate: bool) -> Self {
        Self::new(d, seed, rotate, false)
    }

    fn new(d: usize, seed: u64, rotate: bool, q8: bool) -> Self {
        let rot = rotate.then(|| RandomizedHadamard::new(d, seed));
        let m = rot.as_ref().map_or(d, |r| r.padded());
        BlockQ {
            d,
            m,
            blocks: m.div_ceil(QK),
            q8,
            rot,
        }
    }

    fn block_len(&self) -> usize {
        if self.q8 {
            2 + QK
        } else {
            2 + QK / 2
        }
    }
}

impl GroupCodec for BlockQ {
    fn name(&self) -> &'static str {
        match (self.q8, self.rot.is_some()) {
            (true, _) => "q8_0",
            (false, false) => "q4_0",
            (false, true) => "q4_0-rot",
        }
    }
    fn head_dim(&self) -> usize {
        self.d
    }
    fn bits(&self) -> u32 {
        if self.q8 {
            8
        } else {
            4
        }
    }
    fn group(&self, _role: KvRole) -> usize {
        1
    }
    fn record_len(&self, _role: KvRole) -> usize {
        self.blocks * self.block_len()
    }
    fn scratch_len(&self) -> usize {
        self.blocks * QK
    }

    #[inline(always)]
    fn encode_group(
        &self,
        _role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let v = &mut s.f[..self.blocks * QK];
        match &self.rot {
            Some(r) => {
                r.forward(x, &mut v[..self.m]);
                v[self.m..].fill(0.0);
            }
            None => {
                v[..self.d].copy_from_slice(x);
                v[self.d..].fill(0.0);
            }
        }
        let bl = self.block_len();
        for (blk, o) in v.chunks_exact(QK).zip(out.chunks_exact_mut(bl)) {
            if self.q8 {
                let amax = crate::simd::abs_max(blk);
                let (db, d) = f16_round(amax / 127.0, 0)?;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                put_f16(o, 0, db);
                for (q, x) in o[2..].iter_mut().zip(blk) {
                    *q = round_u8((x * id).clamp(-127.0, 127.0));
                }
            } else {
                // ggml: the element of largest magnitude, with its sign, maps to −8.
                // The first element of largest magnitude (ggml's choice), found with a
                // vectorized max and one scan instead of a dependent compare chain.
                let amax = crate::simd::abs_max(blk);
                let mx = blk.iter().copied().find(|x| x.abs() == amax).unwrap_or(0.0);
                let (db, d) = f16_round(mx / -8.0, 0)?;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_f16(o, 0, db);
                let (lo, hi) = blk.split_at(QK / 2);
                for ((q, a), b) in o[2..].iter_mut().zip(lo).zip(hi) {
                    let qa = round_u8((a * id + 8.0).clamp(0.0, 15.0));
                    let qb = round_u8((b * id + 8.0).clamp(0.0, 15.0));
                    *q = qa | (qb << 4);
                }
            }
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
        let v = &mut s.f[..self.blocks * QK];
        let bl = self.block_len();
        for (blk, o) in v.chunks_exact_mut(QK).zip(rec.chunks_exact(bl)) {
            let d = get_f16(o, 0, "block scale")?;
            if self.q8 {
                for (x, &q) in blk.iter_mut().zip(&o[2..]) {
                    *x = (q as i8) as f32 * d;
                }
            } else {
                let (lo, hi) = blk.split_at_mut(QK / 2);
                for ((a, b), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&o[2..]) {
                    *a = ((q & 15) as f32 - 8.0) * d;
                    *b = ((q >> 4) as f32 - 8.0) * d;
                }
            }
        }
        match &self.rot {
            Some(r) => r.inverse(&mut v[..self.m], out),
            None => out.copy_from_slice(&v[..self.d]),
        }
        Ok(())
    }
}

/// Tokens per KIVI key group and channels per value group.
pub const KIVI_GROUP: usize = 32;

#[derive(Debug, Clone)]
pub struct Kivi {
    d: usize,
    bits: u32,
}

impl Kivi {
    pub fn new(d: usize, bits: u32) -> Self {
        Kivi { d, bits }
    }

    fn value_groups(&self) -> usize {
        self.d.div_ceil(KIVI_GROUP)
    }
}

impl GroupCodec for Kivi {
    fn name(&self) -> &'static str {
        "kivi2"
    }
    fn head_dim(&self) -> usize {
        self.d
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn group(&self, role: KvRole) -> usize {
        match role {
            KvRole::Key => KIVI_GROUP,
            KvRole::Value => 1,
        }
    }
    fn record_len(&self, role: KvRole) -> usize {
        match role {
            KvRole::Key => 4 * self.d + packed_len(KIVI_GROUP * self.d, self.bits),
            KvRole::Value => 4 * self.value_groups() + packed_len(self.d, self.bits),
        }
    }
    fn scratch_len(&self) -> usize {
        KIVI_GROUP * self.d
    }

    #[inline(always)]
    fn encode_group(
        &self,
        role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let (d, b) = (self.d, self.bits);
        match role {
            KvRole::Value => {
                let ng = self.value_groups();
                let codes = &mut s.c[..d];
                for (gi, (xg, cg)) in x
                    .chunks(KIVI_GROUP)
                    .zip(codes.chunks_mut(KIVI_GROUP))
                    .enumerate()
                {
                    let (mb, sb) = asym_quantize(xg, b, cg, 0)?;
                    put_f16(out, 4 * gi, mb);
                    put_f16(out, 4 * gi + 2, sb);
                }
                pack(codes, b, &mut out[4 * ng..]);
            }
            KvRole::Key => {
                let (lo, rest) = s.g.split_at_mut(d);
                let hi = &mut rest[..d];
                lo.fill(f32::INFINITY);
                hi.fill(f32::NEG_INFINITY);
                for xt in x.chunks_exact(d) {
                    for ((l, h), v) in lo.iter_mut().zip(hi.iter_mut()).zip(xt) {
                        *l = l.min(*v);
                        *h = h.max(*v);
                    }
                }
                let mn = &mut s.h[..d];
                let levels = ((1u32 << b) - 1) as f32;
                for c in 0..d {
                    let (mb, sb, m, st) = asym_params(lo[c], hi[c], b, 0)?;
                    put_f16(out, 4 * c, mb);
                    put_f16(out, 4 * c + 2, sb);
                    mn[c] = m;
                    hi[c] = if st > 0.0 { 1.0 / st } else { 0.0 };
                }
                let codes = &mut s.c[..KIVI_GROUP * d];
                for (ct, xt) in codes.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    for (((c, v), m), iv) in ct.iter_mut().zip(xt).zip(mn.iter()).zip(hi.iter()) {
                        *c = round_u8(((v - m) * iv).clamp(0.0, levels));
                    }
                }
                pack(codes, b, &mut out[4 * d..]);
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
        let (d, b) = (self.d, self.bits);
        match role {
            KvRole::Value => {
                let ng = self.value_groups();
                let codes = &mut s.c[..d];
                unpack(&rec[4 * ng..], b, codes);
                for (gi, (og, cg)) in out
                    .chunks_mut(KIVI_GROUP)
                    .zip(codes.chunks(KIVI_GROUP))
                    .enumerate()
                {
                    let mn = get_f16(rec, 4 * gi, "group min")?;
                    let st = get_f16(rec, 4 * gi + 2, "group step")?;
                    for (o, &c) in og.iter_mut().zip(cg) {
                        *o = mn + c as f32 * st;
                    }
                }
            }
            KvRole::Key => {
                let (mn, rest) = s.g.split_at_mut(d);
                let st = &mut rest[..d];
                for c in 0..d {
                    mn[c] = get_f16(rec, 4 * c, "channel min")?;
                    st[c] = get_f16(rec, 4 * c + 2, "channel step")?;
                }
                let codes = &mut s.c[..KIVI_GROUP * d];
                unpack(&rec[4 * d..], b, codes);
                for (ct, ot) in codes.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                    for (((o, &c), m), sv) in ot.iter_mut().zip(ct).zip(mn.iter()).zip(st.iter()) {
                        *o = m + c as f32 * sv;
                    }
                }
            }
        }
        Ok(())
    }
}
