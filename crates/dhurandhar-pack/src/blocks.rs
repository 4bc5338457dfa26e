//! Lossless coding of GGUF tensor data: ggml quant blocks split into one plane per
//! block field, each plane entropy-coded on its own.
//!
//! A quant block interleaves fields of very different statistics: f16 scales whose high
//! byte (sign and exponent) takes a handful of values, small sub-block scales, and packed
//! quants that are close to uniform. Coded together they hardly compress; split, the
//! scale planes shrink to a fraction and the quant planes keep whatever skew they have.
//! Float ggml types reuse the float plane split; types without a layout here are one
//! byte plane.

use dhurandhar_checkpoint::gguf::GgmlType;

use crate::codec::{self, PlaneCfg};

/// The planes of one block: `(first byte, bytes)` ranges that tile the block. An f16
/// field is two one-byte ranges (low byte, then high byte).
fn layout(t: GgmlType) -> Option<&'static [(usize, usize)]> {
    use GgmlType::*;
    const D: [(usize, usize); 2] = [(0, 1), (1, 1)];
    Some(match t {
        // d, qs[16]
        Q4_0 | IQ4NL => &[D[0], D[1], (2, 16)],
        // d, m, qs[16]
        Q4_1 => &[D[0], D[1], (2, 1), (3, 1), (4, 16)],
        // d, qh[4], qs[16]
        Q5_0 => &[D[0], D[1], (2, 4), (6, 16)],
        // d, m, qh[4], qs[16]
        Q5_1 => &[D[0], D[1], (2, 1), (3, 1), (4, 4), (8, 16)],
        // d, qs[32]
        Q8_0 => &[D[0], D[1], (2, 32)],
        // scales[16], qs[64], d, dmin
        Q2K => &[(0, 16), (16, 64), (80, 1), (81, 1), (82, 1), (83, 1)],
        // hmask[32], qs[64], scales[12], d
        Q3K => &[(0, 32), (32, 64), (96, 12), (108, 1), (109, 1)],
        // d, dmin, scales[12], qs[128]
        Q4K => &[D[0], D[1], (2, 1), (3, 1), (4, 12), (16, 128)],
        // d, dmin, scales[12], qh[32], qs[128]
        Q5K => &[D[0], D[1], (2, 1), (3, 1), (4, 12), (16, 32), (48, 128)],
        // ql[128], qh[64], scales[16], d
        Q6K => &[(0, 128), (128, 64), (192, 16), (208, 1), (209, 1)],
        // d, scales_h, scales_l[4], qs[128]
        IQ4XS => &[D[0], D[1], (2, 2), (4, 4), (8, 128)],
        _ => return None,
    })
}

/// Float ggml types: their element size (coded as float planes).
fn float_size(t: GgmlType) -> Option<usize> {
    match t {
        GgmlType::F32 => Some(4),
        GgmlType::F16 | GgmlType::BF16 => Some(2),
        GgmlType::F64 => Some(8),
        _ => None,
    }
}

/// Bytes per chunk of a GGUF tensor of type `t` and ggml dims `dims`: whole rows when a
/// row fits in `chunk_size` (so a reader of row ranges, like a streamed output head or
/// an embedding lookup, decodes no chunk it only partly needs), else whole blocks.
pub(crate) fn chunk_bytes(t: GgmlType, dims: &[u64], chunk_size: u64) -> u64 {
    let unit = match t.tensor_bytes(&dims[..dims.len().min(1)]) {
        Some(row) if row > 0 && row <= chunk_size => row,
        _ => t.type_size().max(1),
    };
    (chunk_size / unit).max(1) * unit
}

/// Encode `bytes` (whole blocks of `t`) into one chunk blob.
pub(crate) fn encode(t: GgmlType, bytes: &[u8], cfg: PlaneCfg) -> Vec<u8> {
    if let Some(es) = float_size(t) {
        return codec::encode_lossless(bytes, es, true, cfg);
    }
    let Some(fields) = layout(t) else {
        return codec::encode_blob(codec::tag::BYTES, &[bytes], cfg);
    };
    let bs = t.type_size() as usize;
    let n = bytes.len() / bs;
    let mut planar = vec![0u8; bytes.len()];
    let mut at = 0;
    let mut bounds = Vec::with_capacity(fields.len());
    for &(off, len) in fields {
        let plane = &mut planar[at..at + n * len];
        for (dst, block) in plane.chunks_exact_mut(len).zip(bytes.chunks_exact(bs)) {
            dst.copy_from_slice(&block[off..off + len]);
        }
        bounds.push(at..at + n * len);
        at += n * len;
    }
    let planes: Vec<&[u8]> = bounds.into_iter().map(|r| &planar[r]).collect();
    codec::encode_blob(codec::tag::BLOCKS, &planes, cfg)
}

thread_local! {
    static PLANE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decode a chunk blob of type `t` into `out` (its raw length, whole blocks).
pub(crate) fn decode(t: GgmlType, blob: &[u8], out: &mut [u8]) -> Result<(), String> {
    if let Some(es) = float_size(t) {
        return codec::decode_lossless(blob, es, true, out);
    }
    let Some(fields) = layout(t) else {
        return codec::decode_lossless(blob, 1, false, out);
    };
    let bs = t.type_size() as usize;
    if !out.len().is_multiple_of(bs) {
        return Err(format!(
            "{} bytes is not a whole number of {t} blocks",
            out.len()
        ));
    }
    let n = out.len() / bs;
    let parsed = codec::parse_blob(blob)?;
    if parsed.tag != codec::tag::BLOCKS || parsed.planes.len() != fields.len() {
        return Err(format!("not a chunk of {t} blocks"));
    }
    if parsed
        .planes
        .iter()
        .zip(fields)
        .any(|(p, f)| p.1 != n * f.1)
    {
        return Err("plane lengths do not match the block count".into());
    }
    PLANE.with(|p| {
        // Reused across chunks on this thread; a raw plane is scattered straight from
        // the blob (the quant planes of a streaming pack are raw: no extra copy).
        let mut plane = p.borrow_mut();
        for (&(codec_id, raw, payload), &(off, len)) in parsed.planes.iter().zip(fields) {
            let src: &[u8] = if codec_id == codec::RAW {
                if payload.len() != raw {
                    return Err("raw plane length mismatch".into());
                }
                payload
            } else {
                if plane.len() < raw {
                    plane.resize(raw, 0);
                }
                codec::decode_plane(codec_id, payload, &mut plane[..raw])?;
                &plane[..raw]
            };
            scatter(src, out, bs, off, len);
        }
        Ok(())
    })
}

/// Put field bytes `src` (`len` per block) at `off` in each block of `bs` bytes. The
/// common field widths get a copy of constant length, which compiles to plain moves
/// instead of a `memcpy` call per block.
fn scatter(src: &[u8], out: &mut [u8], bs: usize, off: usize, len: usize) {
    fn fixed<const L: usize>(src: &[u8], out: &mut [u8], bs: usize, off: usize) {
        for (s, b) in src.chunks_exact(L).zip(out.chunks_exact_mut(bs)) {
            let s: &[u8; L] = s.try_into().expect("chunks_exact");
            b[off..off + L].copy_from_slice(s);
        }
    }
    match len {
        1 => fixed::<1>(src, out, bs, off),
        2 => fixed::<2>(src, out, bs, off),
        4 => fixed::<4>(src, out, bs, off),
        12 => fixed::<12>(src, out, bs, off),
        16 => fixed::<16>(src, out, bs, off),
        32 => fixed::<32>(src, out, bs, off),
        64 => fixed::<64>(src, out, bs, off),
        128 => fixed::<128>(src, out, bs, off),
        _ => {
            for (s, b) in src.chunks_exact(len).zip(out.chunks_exact_mut(bs)) {
                b[off..off + len].copy_from_slice(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_layout_tiles_its_block_exactly() {
        for t in GgmlType::ALL {
            let Some(fields) = layout(t) else { continue };
            let mut at = 0;
            for &(off, len) in fields {
                assert_eq!(off, at, "{t}: fields must be in order and contiguous");
                at += len;
            }
            assert_eq!(at as u64, t.type_size(), "{t}: fields cover the block");
        }
    }

    proptest! {
        #[test]
        fn blocks_roundtrip_any_bits(
            ti in 0usize..GgmlType::ALL.len(),
            blocks in 0usize..40,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let t = GgmlType::ALL[ti];
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // Skewed bytes, so Huffman and constant planes are exercised, not just raw.
            let bytes: Vec<u8> = (0..blocks * t.type_size() as usize)
                .map(|_| if rng.gen_bool(0.7) { rng.gen_range(0..4) } else { rng.gen() })
                .collect();
            let blob = encode(t, &bytes, PlaneCfg::new(None));
            let mut out = vec![0u8; bytes.len()];
            decode(t, &blob, &mut out).unwrap();
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn a_blob_of_the_wrong_type_is_an_error_not_a_panic() {
        let bytes = vec![7u8; 144 * 3];
        let blob = encode(GgmlType::Q4K, &bytes, PlaneCfg::new(None));
        let mut out = vec![0u8; 210 * 2];
        assert!(decode(GgmlType::Q6K, &blob, &mut out).is_err());
        let mut short = vec![0u8; 100];
        assert!(decode(GgmlType::Q4K, &blob, &mut short).is_err());
    }
}
