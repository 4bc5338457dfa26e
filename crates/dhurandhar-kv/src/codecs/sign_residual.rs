//! `turbo` (randomized Hadamard) and `rotor` (Cl(3,0) rotors on 3-blocks), both
//! followed by the sign + residual stage of the Python tool:
//! norm n of the rotated vector, sign bits, base ±n/√m, residual quantized
//! symmetrically at `bits` with one scale.
//!
//! Record (m = rotated length: next power of two ≥ d for `turbo`, d for `rotor`):
//! `[n: f16][scale: f16][signs: ⌈m/8⌉ B][residual codes: ⌈m·bits/8⌉ B]`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::bits::{pack, packed_len, unpack};
use crate::codec::{KvError, KvRole};
use crate::framed::{GroupCodec, Scratch};
use crate::hadamard::RandomizedHadamard;
use crate::quant::{f16_round, get_f16, put_f16, sym_dequantize, sym_quantize};

/// Unit rotors of Cl(3,0), one per block of 3 channels, expanded to their 3×3
/// rotation matrices: R v R̃ = M v. Channels past the last full block pass through.
#[derive(Debug, Clone)]
pub struct Rotors {
    d: usize,
    mats: Vec<[f32; 9]>,
}

impl Rotors {
    pub fn new(d: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mats = (0..d / 3)
            .map(|_| {
                let mut q = [0.0f64; 4];
                for v in q.iter_mut() {
                    *v = StandardNormal.sample(&mut rng);
                }
                let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
                let [s, x, y, z] = if n > 0.0 {
                    q.map(|v| v / n)
                } else {
                    [1.0, 0.0, 0.0, 0.0]
                };
                // (s; x e23 + y e31 + z e12) acting by the sandwich product.
                [
                    1.0 - 2.0 * (y * y + z * z),
                    2.0 * (x * y - s * z),
                    2.0 * (x * z + s * y),
                    2.0 * (x * y + s * z),
                    1.0 - 2.0 * (x * x + z * z),
                    2.0 * (y * z - s * x),
                    2.0 * (x * z - s * y),
                    2.0 * (y * z + s * x),
                    1.0 - 2.0 * (x * x + y * y),
                ]
                .map(|v| v as f32)
            })
            .collect();
        Rotors { d, mats }
    }

    #[inline(always)]
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        for ((m, v), o) in self
            .mats
            .iter()
            .zip(x.chunks_exact(3))
            .zip(out.chunks_exact_mut(3))
        {
            o[0] = m[0] * v[0] + m[1] * v[1] + m[2] * v[2];
            o[1] = m[3] * v[0] + m[4] * v[1] + m[5] * v[2];
            o[2] = m[6] * v[0] + m[7] * v[1] + m[8] * v[2];
        }
        let t = self.mats.len() * 3;
        out[t..self.d].copy_from_slice(&x[t..self.d]);
    }

    #[inline(always)]
    pub fn inverse(&self, y: &[f32], out: &mut [f32]) {
        for ((m, v), o) in self
            .mats
            .iter()
            .zip(y.chunks_exact(3))
            .zip(out.chunks_exact_mut(3))
        {
            o[0] = m[0] * v[0] + m[3] * v[1] + m[6] * v[2];
            o[1] = m[1] * v[0] + m[4] * v[1] + m[7] * v[2];
            o[2] = m[2] * v[0] + m[5] * v[1] + m[8] * v[2];
        }
        let t = self.mats.len() * 3;
        out[t..self.d].copy_from_slice(&y[t..self.d]);
    }

    /// 9 multiply(-add)s per 3-block.
    pub fn ops(d: usize) -> u64 {
        (d / 3) as u64 * 9
    }
}

#[derive(Debug, Clone)]
enum Stage1 {
    Hadamard(RandomizedHadamard),
    Rotor(Rotors),
}

#[derive(Debug, Clone)]
pub struct SignResidual {
    name: &'static str,
    d: usize,
    m: usize,
    bits: u32,
    rot: Stage1,
}

impl SignResidual {
    pub fn turbo(d: usize, bits: u32, seed: u64) -> Self {
        let h = RandomizedHadamard::new(d, seed);
        SignResidual {
            name: "turbo",
            d,
            m: h.padded(),
            bits,
            rot: Stage1::Hadamard(h),
        }
    }

    pub fn rotor(d: usize, bits: u32, seed: u64) -> Self {
        SignResidual {
            name: "rotor",
            d,
            m: d,
            bits,
            rot: Stage1::Rotor(Rotors::new(d, seed)),
        }
    }

    fn signs_len(&self) -> usize {
        packed_len(self.m, 1)
    }
}

impl GroupCodec for SignResidual {
    fn name(&self) -> &'static str {
        self.name
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
        4 + self.signs_len() + packed_len(self.m, self.bits)
    }
    fn scratch_len(&self) -> usize {
        self.m
    }

    #[inline(always)]
    fn encode_group(
        &self,
        _role: KvRole,
        x: &[f32],
        out: &mut [u8],
        s: &mut Scratch,
    ) -> Result<(), KvError> {
        let m = self.m;
        let r = &mut s.f[..m];
        match &self.rot {
            Stage1::Hadamard(h) => h.forward(x, r),
            Stage1::Rotor(ro) => ro.forward(x, r),
        }
        let (nb, n) = f16_round(crate::simd::sum_sq(r).sqrt(), 0)?;
        let base = n / (m as f32).sqrt();
        let signs = &mut s.c[..m];
        for (c, v) in signs.iter_mut().zip(r.iter_mut()) {
            let pos = *v >= 0.0;
            *c = pos as u8;
            *v -= if pos { base } else { -base };
        }
        let sl = self.signs_len();
        let (head, rest) = out.split_at_mut(4 + sl);
        pack(signs, 1, &mut head[4..]);
        let codes = &mut s.c2[..m];
        let (sb, _) = sym_quantize(r, self.bits, codes, 0)?;
        pack(codes, self.bits, rest);
        put_f16(head, 0, nb);
        put_f16(head, 2, sb);
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
        let m = self.m;
        let n = get_f16(rec, 0, "norm")?;
        let scale = get_f16(rec, 2, "residual scale")?;
        let sl = self.signs_len();
        let signs = &mut s.c[..m];
        unpack(&rec[4..4 + sl], 1, signs);
        let codes = &mut s.c2[..m];
        unpack(&rec[4 + sl..], self.bits, codes);
        let y = &mut s.f[..m];
        sym_dequantize(codes, self.bits, scale, y);
        let base = n / (m as f32).sqrt();
        for (v, &c) in y.iter_mut().zip(signs.iter()) {
            *v += if c != 0 { base } else { -base };
        }
        match &self.rot {
            Stage1::Hadamard(h) => h.inverse(y, out),
            Stage1::Rotor(ro) => ro.inverse(y, out),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotors_are_orthogonal_and_invertible_for_every_head_dim() {
        for d in 1..=260 {
            let r = Rotors::new(d, 3);
            let x: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).cos()).collect();
            let mut y = vec![0.0; d];
            r.forward(&x, &mut y);
            let nx: f32 = x.iter().map(|v| v * v).sum();
            let ny: f32 = y.iter().map(|v| v * v).sum();
            assert!((nx - ny).abs() < 1e-4 * nx.max(1.0), "d={d}");
            let mut back = vec![0.0; d];
            r.inverse(&y, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-5, "d={d}");
            }
        }
        // Each matrix is orthonormal with determinant +1 (a rotation, not a reflection).
        for m in &Rotors::new(30, 9).mats {
            let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
                + m[2] * (m[3] * m[7] - m[4] * m[6]);
            assert!((det - 1.0).abs() < 1e-5);
        }
    }

    /// A 90° rotor about e12 (z axis) maps e1 to +e2: checks the direction, not just
    /// magnitudes.
    #[test]
    fn rotor_direction() {
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let (s, z) = (h as f64, h as f64);
        let m = [
            1.0 - 2.0 * z * z,
            -2.0 * s * z,
            0.0,
            2.0 * s * z,
            1.0 - 2.0 * z * z,
            0.0,
            0.0,
            0.0,
            1.0,
        ]
        .map(|v| v as f32);
        let r = Rotors {
            d: 3,
            mats: vec![m],
        };
        let mut y = [0.0; 3];
        r.forward(&[1.0, 0.0, 0.0], &mut y);
        assert!((y[0]).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6, "{y:?}");
    }
}
