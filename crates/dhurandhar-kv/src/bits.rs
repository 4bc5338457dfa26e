//! Packing of b-bit codes (1..=8), LSB-first: code i occupies bits
//! `[i*b, (i+1)*b)` of the little-endian bit stream.

/// Bytes holding `n` codes of `bits` bits.
#[inline]
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Pack `codes` (each `< 2^bits`; higher bits are masked off) into `out`
/// (`packed_len(codes.len(), bits)` bytes).
#[inline(always)]
pub fn pack(codes: &[u8], bits: u32, out: &mut [u8]) {
    debug_assert_eq!(out.len(), packed_len(codes.len(), bits));
    match bits {
        8 => out.copy_from_slice(codes),
        4 => {
            let mut it = codes.chunks_exact(2);
            for (o, c) in out.iter_mut().zip(&mut it) {
                *o = (c[0] & 15) | (c[1] << 4);
            }
            if let [last] = it.remainder() {
                out[codes.len() / 2] = last & 15;
            }
        }
        2 => {
            let mut it = codes.chunks_exact(4);
            for (o, c) in out.iter_mut().zip(&mut it) {
                *o = (c[0] & 3) | (c[1] & 3) << 2 | (c[2] & 3) << 4 | (c[3] << 6);
            }
            let r = it.remainder();
            if !r.is_empty() {
                let mut b = 0u8;
                for (j, c) in r.iter().enumerate() {
                    b |= (c & 3) << (2 * j);
                }
                out[codes.len() / 4] = b;
            }
        }
        1 => {
            let mut it = codes.chunks_exact(8);
            for (o, c) in out.iter_mut().zip(&mut it) {
                let mut b = 0u8;
                for (j, v) in c.iter().enumerate() {
                    b |= (v & 1) << j;
                }
                *o = b;
            }
            let r = it.remainder();
            if !r.is_empty() {
                let mut b = 0u8;
                for (j, v) in r.iter().enumerate() {
                    b |= (v & 1) << j;
                }
                out[codes.len() / 8] = b;
            }
        }
        _ => pack_generic(codes, bits, out),
    }
}

fn pack_generic(codes: &[u8], bits: u32, out: &mut [u8]) {
    let mask = ((1u32 << bits) - 1) as u64;
    let mut acc = 0u64;
    let mut n = 0u32;
    let mut o = 0usize;
    for &c in codes {
        acc |= (c as u64 & mask) << n;
        n += bits;
        while n >= 8 {
            out[o] = acc as u8;
            o += 1;
            acc >>= 8;
            n -= 8;
        }
    }
    if n > 0 {
        out[o] = acc as u8;
    }
}

/// Inverse of [`pack`]: fill `codes` from `bytes`.
#[inline(always)]
pub fn unpack(bytes: &[u8], bits: u32, codes: &mut [u8]) {
    debug_assert_eq!(bytes.len(), packed_len(codes.len(), bits));
    match bits {
        8 => codes.copy_from_slice(bytes),
        4 => {
            let n = codes.len();
            let mut it = codes.chunks_exact_mut(2);
            for (c, b) in (&mut it).zip(bytes) {
                c[0] = b & 15;
                c[1] = b >> 4;
            }
            if let [last] = it.into_remainder() {
                *last = bytes[n / 2] & 15;
            }
        }
        1 => {
            for (i, c) in codes.iter_mut().enumerate() {
                *c = (bytes[i >> 3] >> (i & 7)) & 1;
            }
        }
        _ => {
            let mask = ((1u32 << bits) - 1) as u64;
            let mut acc = 0u64;
            let mut n = 0u32;
            let mut i = 0usize;
            for c in codes.iter_mut() {
                while n < bits {
                    acc |= (bytes[i] as u64) << n;
                    i += 1;
                    n += 8;
                }
                *c = (acc & mask) as u8;
                acc >>= bits;
                n -= bits;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(bits in 1u32..=8, raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let codes: Vec<u8> = raw.iter().map(|c| c & ((1u16 << bits) - 1) as u8).collect();
            let mut packed = vec![0u8; packed_len(codes.len(), bits)];
            pack(&codes, bits, &mut packed);
            let mut back = vec![0u8; codes.len()];
            unpack(&packed, bits, &mut back);
            prop_assert_eq!(back, codes);
        }
    }

    #[test]
    fn lsb_first_layout() {
        let mut out = [0u8; 1];
        pack(&[1, 0, 1, 1], 1, &mut out);
        assert_eq!(out[0], 0b1101);
        let mut out = [0u8; 2];
        pack(&[5, 3, 1], 3, &mut out);
        // 101 | 011<<3 | 001<<6 = 0b01_011_101, then 0
        assert_eq!(out, [0b0101_1101, 0]);
    }
}
