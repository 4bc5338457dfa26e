//! Chunk blobs: a transform tag, then byte planes each stored with the cheapest codec
//! (raw, constant, Huffman, zstd).
//!
//! Blob layout: `tag: u8, nplanes: u8`, then per plane `codec: u8, raw_len: u32 LE,
//! enc_len: u32 LE`, then the plane payloads back to back. Planes are independent so a
//! chunk decodes without any state from its neighbours.

use crate::huffman;

/// What the planes of a blob mean.
pub(crate) mod tag {
    /// One plane: the raw bytes (non-float dtypes).
    pub const BYTES: u8 = 0;
    /// Float bit patterns rotated left by one (sign to the bottom), split MSB-first.
    pub const FLOAT: u8 = 1;
    /// XOR with the base checkpoint's bit patterns, split MSB-first.
    pub const XOR: u8 = 2;
    /// Zig-zagged difference of order-preserving integer keys, split MSB-first.
    pub const SUB: u8 = 3;
    /// Quantized base + sparse residual sections.
    pub const QUANT: u8 = 4;
    /// ggml quant blocks, one plane per block field (see `blocks`).
    pub const BLOCKS: u8 = 5;
}

pub(crate) const RAW: u8 = 0;
const CONST: u8 = 1;
const HUFFMAN: u8 = 2;
const ZSTD: u8 = 3;

/// Which codecs the encoder may try per plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaneCfg {
    /// zstd level to also try (slower to encode, wins on sparse / repetitive planes).
    pub zstd_level: Option<i32>,
    /// Least share of a plane a codec must save to be used; below it the plane is stored
    /// raw, which decodes at copy speed.
    pub min_saving: f64,
}

/// Default least saving for a plane to be entropy-coded: below ~2% the decode time is
/// not worth it.
pub const DEFAULT_MIN_SAVING: f64 = 0.02;

impl PlaneCfg {
    pub(crate) const fn new(zstd_level: Option<i32>) -> Self {
        PlaneCfg {
            zstd_level,
            min_saving: DEFAULT_MIN_SAVING,
        }
    }
}

/// Encode `planes` (each a byte slice) under `tag` into one blob.
pub(crate) fn encode_blob(tag: u8, planes: &[&[u8]], cfg: PlaneCfg) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        2 + 9 * planes.len() + planes.iter().map(|p| p.len()).sum::<usize>() / 2,
    );
    out.push(tag);
    out.push(planes.len() as u8);
    let dir_at = out.len();
    out.resize(dir_at + 9 * planes.len(), 0);
    for (i, plane) in planes.iter().enumerate() {
        let start = out.len();
        let codec = encode_plane(plane, cfg, &mut out);
        let enc_len = (out.len() - start) as u32;
        let d = dir_at + 9 * i;
        out[d] = codec;
        out[d + 1..d + 5].copy_from_slice(&(plane.len() as u32).to_le_bytes());
        out[d + 5..d + 9].copy_from_slice(&enc_len.to_le_bytes());
    }
    out
}

fn encode_plane(plane: &[u8], cfg: PlaneCfg, out: &mut Vec<u8>) -> u8 {
    if plane.is_empty() {
        return RAW;
    }
    if plane.iter().all(|&b| b == plane[0]) {
        out.push(plane[0]);
        return CONST;
    }
    let hist = huffman::histogram(plane);
    let lens = huffman::code_lengths(&hist);
    let huff_size = huffman::encoded_size(&hist, &lens);
    let limit = plane.len() as f64 * (1.0 - cfg.min_saving.clamp(0.0, 1.0));
    let huff_ok = (huff_size as f64) < limit;
    if let Some(level) = cfg.zstd_level {
        if let Ok(z) = zstd::bulk::compress(plane, level) {
            if (z.len() as f64) < limit && (!huff_ok || z.len() < huff_size) {
                out.extend_from_slice(&z);
                return ZSTD;
            }
        }
    }
    if huff_ok {
        huffman::encode(plane, &lens, out);
        return HUFFMAN;
    }
    out.extend_from_slice(plane);
    RAW
}

/// Parsed blob directory: tag and, per plane, (codec, raw_len, payload).
pub(crate) struct Blob<'a> {
    pub tag: u8,
    pub planes: Vec<(u8, usize, &'a [u8])>,
}

pub(crate) fn parse_blob(blob: &[u8]) -> Result<Blob<'_>, String> {
    if blob.len() < 2 {
        return Err("chunk shorter than its header".into());
    }
    let tag = blob[0];
    let n = blob[1] as usize;
    let mut at = 2 + 9 * n;
    if blob.len() < at {
        return Err("chunk plane directory truncated".into());
    }
    let mut planes = Vec::with_capacity(n);
    for i in 0..n {
        let d = 2 + 9 * i;
        let codec = blob[d];
        let raw = u32::from_le_bytes(blob[d + 1..d + 5].try_into().expect("4")) as usize;
        let enc = u32::from_le_bytes(blob[d + 5..d + 9].try_into().expect("4")) as usize;
        let end = at
            .checked_add(enc)
            .filter(|&e| e <= blob.len())
            .ok_or("plane payload runs past the chunk")?;
        planes.push((codec, raw, &blob[at..end]));
        at = end;
    }
    if at != blob.len() {
        return Err("trailing bytes after the last plane".into());
    }
    Ok(Blob { tag, planes })
}

/// Decode one plane into `dst` (whose length is the plane's raw length).
pub(crate) fn decode_plane(codec: u8, payload: &[u8], dst: &mut [u8]) -> Result<(), String> {
    match codec {
        RAW => {
            if payload.len() != dst.len() {
                return Err("raw plane length mismatch".into());
            }
            dst.copy_from_slice(payload);
        }
        CONST => {
            let [b] = payload else {
                return Err("constant plane must hold one byte".into());
            };
            dst.fill(*b);
        }
        HUFFMAN => huffman::decode(payload, dst)?,
        ZSTD => {
            let n =
                zstd::bulk::decompress_to_buffer(payload, dst).map_err(|e| format!("zstd: {e}"))?;
            if n != dst.len() {
                return Err("zstd plane decoded to the wrong length".into());
            }
        }
        c => return Err(format!("unknown plane codec {c}")),
    }
    Ok(())
}

/// Decode every plane of `blob` back to back into `planar` (resized), checking the tag,
/// the plane count and that the raw lengths add up to `expect_len`.
pub(crate) fn decode_planar(
    blob: &Blob<'_>,
    expect_tag: &[u8],
    expect_planes: usize,
    expect_len: Option<usize>,
    planar: &mut Vec<u8>,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    if !expect_tag.contains(&blob.tag) {
        return Err(format!("unexpected chunk transform {}", blob.tag));
    }
    if blob.planes.len() != expect_planes {
        return Err(format!(
            "chunk holds {} planes, {expect_planes} expected",
            blob.planes.len()
        ));
    }
    let total: usize = blob.planes.iter().map(|p| p.1).sum();
    if let Some(e) = expect_len {
        if total != e {
            return Err(format!("chunk decodes to {total} bytes, {e} expected"));
        }
    }
    // Bounded: every length was checked against the index or against the chunk size.
    planar.clear();
    planar.resize(total, 0);
    let mut ranges = Vec::with_capacity(blob.planes.len());
    let mut at = 0;
    for &(codec, raw, payload) in &blob.planes {
        decode_plane(codec, payload, &mut planar[at..at + raw])?;
        ranges.push(at..at + raw);
        at += raw;
    }
    Ok(ranges)
}

/// Split elements of `esize` bytes into MSB-first planes, optionally rotating each value
/// left by one bit first (moves the sign next to the mantissa so the top plane is the
/// exponent alone for BF16 and F32).
pub(crate) fn split_planes(bytes: &[u8], esize: usize, rotate: bool, planar: &mut Vec<u8>) {
    let n = bytes.len() / esize;
    planar.clear();
    planar.resize(bytes.len(), 0);
    match esize {
        1 => planar.copy_from_slice(bytes),
        2 => {
            let (hi, lo) = planar.split_at_mut(n);
            for ((src, h), l) in bytes.chunks_exact(2).zip(hi).zip(lo) {
                let mut v = u16::from_le_bytes([src[0], src[1]]);
                if rotate {
                    v = v.rotate_left(1);
                }
                *h = (v >> 8) as u8;
                *l = v as u8;
            }
        }
        4 => {
            let (p0, rest) = planar.split_at_mut(n);
            let (p1, rest) = rest.split_at_mut(n);
            let (p2, p3) = rest.split_at_mut(n);
            for (i, src) in bytes.chunks_exact(4).enumerate() {
                let mut v = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                if rotate {
                    v = v.rotate_left(1);
                }
                p0[i] = (v >> 24) as u8;
                p1[i] = (v >> 16) as u8;
                p2[i] = (v >> 8) as u8;
                p3[i] = v as u8;
            }
        }
        _ => {
            for (i, src) in bytes.chunks_exact(esize).enumerate() {
                let mut v = 0u64;
                for (k, &b) in src.iter().enumerate() {
                    v |= u64::from(b) << (8 * k);
                }
                if rotate {
                    v = rotl(v, esize);
                }
                for p in 0..esize {
                    planar[p * n + i] = (v >> (8 * (esize - 1 - p))) as u8;
                }
            }
        }
    }
}

/// Inverse of [`split_planes`]: interleave planes back into `out`.
pub(crate) fn merge_planes(planar: &[u8], esize: usize, rotate: bool, out: &mut [u8]) {
    let n = out.len() / esize;
    let planes: Vec<&[u8]> = (0..esize).map(|p| &planar[p * n..(p + 1) * n]).collect();
    merge_plane_slices(&planes, esize, rotate, out);
}

/// [`merge_planes`] from separate plane slices (each `out.len() / esize` long), so raw
/// planes can be read straight from the mapped file without a copy.
pub(crate) fn merge_plane_slices(planes: &[&[u8]], esize: usize, rotate: bool, out: &mut [u8]) {
    let n = out.len() / esize;
    if n == 0 {
        return;
    }
    match esize {
        1 => out.copy_from_slice(&planes[0][..n]),
        2 => {
            let (hi, lo) = (&planes[0][..n], &planes[1][..n]);
            let join = |h: u8, l: u8| {
                let v = (u16::from(h) << 8) | u16::from(l);
                if rotate {
                    v.rotate_right(1)
                } else {
                    v
                }
            };
            // Aligned fast path: plain u16 stores vectorize; fall back to bytes otherwise.
            match bytemuck::try_cast_slice_mut::<u8, u16>(out) {
                Ok(o16) if cfg!(target_endian = "little") => {
                    for ((d, &h), &l) in o16.iter_mut().zip(hi).zip(lo) {
                        *d = join(h, l);
                    }
                }
                _ => {
                    for ((dst, &h), &l) in out.chunks_exact_mut(2).zip(hi).zip(lo) {
                        dst.copy_from_slice(&join(h, l).to_le_bytes());
                    }
                }
            }
        }
        4 => {
            let (p0, p1, p2, p3) = (
                &planes[0][..n],
                &planes[1][..n],
                &planes[2][..n],
                &planes[3][..n],
            );
            let join = |i: usize| {
                let v = (u32::from(p0[i]) << 24)
                    | (u32::from(p1[i]) << 16)
                    | (u32::from(p2[i]) << 8)
                    | u32::from(p3[i]);
                if rotate {
                    v.rotate_right(1)
                } else {
                    v
                }
            };
            match bytemuck::try_cast_slice_mut::<u8, u32>(out) {
                Ok(o32) if cfg!(target_endian = "little") => {
                    for (i, d) in o32.iter_mut().enumerate() {
                        *d = join(i);
                    }
                }
                _ => {
                    for (i, dst) in out.chunks_exact_mut(4).enumerate() {
                        dst.copy_from_slice(&join(i).to_le_bytes());
                    }
                }
            }
        }
        _ => {
            for (i, dst) in out.chunks_exact_mut(esize).enumerate() {
                let mut v = 0u64;
                for (p, plane) in planes.iter().enumerate().take(esize) {
                    v |= u64::from(plane[i]) << (8 * (esize - 1 - p));
                }
                if rotate {
                    v = rotr(v, esize);
                }
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = (v >> (8 * k)) as u8;
                }
            }
        }
    }
}

fn width_mask(esize: usize) -> u64 {
    if esize >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * esize)) - 1
    }
}

fn rotl(v: u64, esize: usize) -> u64 {
    let bits = 8 * esize as u32;
    ((v << 1) | (v >> (bits - 1))) & width_mask(esize)
}

fn rotr(v: u64, esize: usize) -> u64 {
    let bits = 8 * esize as u32;
    ((v >> 1) | (v << (bits - 1))) & width_mask(esize)
}

/// Encode one chunk of lossless data (float planes for float dtypes, one plane otherwise).
pub(crate) fn encode_lossless(bytes: &[u8], esize: usize, float: bool, cfg: PlaneCfg) -> Vec<u8> {
    if !float {
        return encode_blob(tag::BYTES, &[bytes], cfg);
    }
    let mut planar = Vec::new();
    split_planes(bytes, esize, true, &mut planar);
    let n = bytes.len() / esize;
    let planes: Vec<&[u8]> = (0..esize).map(|p| &planar[p * n..(p + 1) * n]).collect();
    let blob = encode_blob(tag::FLOAT, &planes, cfg);
    // Tiny tensors (biases, norms) do not pay for a plane directory: one plane instead.
    if blob.len() > bytes.len() + 11 {
        return encode_blob(tag::BYTES, &[bytes], cfg);
    }
    blob
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decode a lossless chunk into `out` (whose length is the chunk's raw length).
pub(crate) fn decode_lossless(
    blob: &[u8],
    esize: usize,
    float: bool,
    out: &mut [u8],
) -> Result<(), String> {
    let parsed = parse_blob(blob)?;
    if !float || parsed.tag == tag::BYTES {
        if parsed.tag != tag::BYTES || parsed.planes.len() != 1 {
            return Err("unexpected chunk layout for a byte tensor".into());
        }
        let (codec, raw, payload) = parsed.planes[0];
        if raw != out.len() {
            return Err(format!(
                "chunk decodes to {raw} bytes, {} expected",
                out.len()
            ));
        }
        return decode_plane(codec, payload, out);
    }
    if parsed.tag != tag::FLOAT || parsed.planes.len() != esize {
        return Err("unexpected chunk layout for a float tensor".into());
    }
    let n = out.len() / esize;
    if parsed.planes.iter().any(|p| p.1 != n) {
        return Err("plane lengths do not match the element count".into());
    }
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        // Reused across chunks on this thread: no per-chunk allocation or zero fill.
        if scratch.len() < n * esize {
            scratch.resize(n * esize, 0);
        }
        let scratch = &mut scratch[..n * esize];
        // Decode non-raw planes into scratch; raw planes are merged straight from the blob.
        let mut regions = scratch.chunks_mut(n.max(1));
        let mut decoded: Vec<Option<&[u8]>> = Vec::with_capacity(esize);
        for &(codec, _, payload) in &parsed.planes {
            let region = regions.next().unwrap_or_default();
            if codec == RAW {
                decoded.push(Some(payload));
            } else {
                decode_plane(codec, payload, region)?;
                decoded.push(None);
                let _ = region;
            }
        }
        let mut slices: Vec<&[u8]> = Vec::with_capacity(esize);
        let mut regions = scratch.chunks(n.max(1));
        for d in decoded {
            let region = regions.next().unwrap_or_default();
            slices.push(d.unwrap_or(region));
        }
        merge_plane_slices(&slices, esize, true, out);
        Ok(())
    })
}

/// Map a float bit pattern to an unsigned key whose order follows the float order, so
/// the difference of two nearby values is a small integer even across zero.
fn key(v: u64, esize: usize) -> u64 {
    let sign = 1u64 << (8 * esize - 1);
    if v & sign != 0 {
        !v & width_mask(esize)
    } else {
        v | sign
    }
}

fn unkey(k: u64, esize: usize) -> u64 {
    let sign = 1u64 << (8 * esize - 1);
    if k & sign != 0 {
        k & !sign
    } else {
        !k & width_mask(esize)
    }
}

fn read_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn write_le(v: u64, out: &mut [u8]) {
    for (k, o) in out.iter_mut().enumerate() {
        *o = (v >> (8 * k)) as u8;
    }
}

/// Delta transform of `new` against `base` (same length), as little-endian elements.
pub(crate) fn delta_forward(base: &[u8], new: &[u8], esize: usize, xor: bool, out: &mut Vec<u8>) {
    out.clear();
    out.resize(new.len(), 0);
    let bits = 8 * esize as u32;
    let mask = width_mask(esize);
    for ((b, n), o) in base
        .chunks_exact(esize)
        .zip(new.chunks_exact(esize))
        .zip(out.chunks_exact_mut(esize))
    {
        let (bv, nv) = (read_le(b), read_le(n));
        let d = if xor {
            bv ^ nv
        } else {
            let diff = key(nv, esize).wrapping_sub(key(bv, esize)) & mask;
            // zig-zag within the element width: small |diff| -> small code
            let neg = (diff >> (bits - 1)) & 1;
            ((diff << 1) ^ (0u64.wrapping_sub(neg))) & mask
        };
        write_le(d, o);
    }
}

/// Inverse of [`delta_forward`], writing `new` into `out`.
pub(crate) fn delta_inverse(base: &[u8], d: &[u8], esize: usize, xor: bool, out: &mut [u8]) {
    let mask = width_mask(esize);
    for ((b, dd), o) in base
        .chunks_exact(esize)
        .zip(d.chunks_exact(esize))
        .zip(out.chunks_exact_mut(esize))
    {
        let (bv, dv) = (read_le(b), read_le(dd));
        let nv = if xor {
            bv ^ dv
        } else {
            let diff = ((dv >> 1) ^ 0u64.wrapping_sub(dv & 1)) & mask;
            unkey(key(bv, esize).wrapping_add(diff) & mask, esize)
        };
        write_le(nv, o);
    }
}

/// Encode a delta chunk: transform, byte planes, zstd allowed (delta planes are often
/// mostly zero, where Huffman's 1 bit/byte floor loses to zstd).
pub(crate) fn encode_delta(
    base: &[u8],
    new: &[u8],
    esize: usize,
    xor: bool,
    level: i32,
) -> Vec<u8> {
    let mut d = Vec::new();
    delta_forward(base, new, esize, xor, &mut d);
    let mut planar = Vec::new();
    split_planes(&d, esize, false, &mut planar);
    let n = new.len() / esize;
    let planes: Vec<&[u8]> = (0..esize).map(|p| &planar[p * n..(p + 1) * n]).collect();
    let t = if xor { tag::XOR } else { tag::SUB };
    encode_blob(t, &planes, PlaneCfg::new(Some(level)))
}

/// Decode a delta chunk against `base` into `out`.
pub(crate) fn decode_delta(
    blob: &[u8],
    base: &[u8],
    esize: usize,
    out: &mut [u8],
) -> Result<(), String> {
    let parsed = parse_blob(blob)?;
    let mut planar = Vec::new();
    decode_planar(
        &parsed,
        &[tag::XOR, tag::SUB],
        esize,
        Some(out.len()),
        &mut planar,
    )?;
    if parsed.planes.iter().any(|p| p.1 != out.len() / esize) {
        return Err("plane lengths do not match the element count".into());
    }
    if base.len() != out.len() {
        return Err("base chunk length mismatch".into());
    }
    let mut d = vec![0u8; out.len()];
    merge_planes(&planar, esize, false, &mut d);
    delta_inverse(base, &d, esize, parsed.tag == tag::XOR, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFG: PlaneCfg = PlaneCfg::new(None);

    proptest! {
        #[test]
        fn lossless_roundtrips_any_bits(esize in prop::sample::select(vec![1usize, 2, 4, 8]),
                                        float in any::<bool>(),
                                        raw in prop::collection::vec(any::<u8>(), 0..2048)) {
            let n = raw.len() / esize * esize;
            let bytes = &raw[..n];
            let float = float && esize > 1;
            let blob = encode_lossless(bytes, esize, float, CFG);
            let mut out = vec![0u8; n];
            decode_lossless(&blob, esize, float, &mut out).unwrap();
            prop_assert_eq!(&out[..], bytes);
        }

        #[test]
        fn delta_roundtrips_any_bits(esize in prop::sample::select(vec![1usize, 2, 4, 8]),
                                     xor in any::<bool>(),
                                     pairs in prop::collection::vec(any::<(u8, u8)>(), 0..1024)) {
            let n = pairs.len() / esize * esize;
            let base: Vec<u8> = pairs[..n].iter().map(|p| p.0).collect();
            let new: Vec<u8> = pairs[..n].iter().map(|p| p.1).collect();
            let blob = encode_delta(&base, &new, esize, xor, 1);
            let mut out = vec![0u8; n];
            decode_delta(&blob, &base, esize, &mut out).unwrap();
            prop_assert_eq!(out, new);
        }
    }

    #[test]
    fn float_specials_roundtrip_bit_exactly() {
        let vals: [u32; 8] = [
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0001,
            0xffbf_ffff,
            0x0000_0001,
            0x3f80_0000,
        ];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let blob = encode_lossless(&bytes, 4, true, CFG);
        let mut out = vec![0u8; bytes.len()];
        decode_lossless(&blob, 4, true, &mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn sub_delta_of_nearby_floats_is_small() {
        let base: Vec<u8> = [1.0f32, -1.0, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let new: Vec<u8> = [
            f32::from_bits(1.0f32.to_bits() + 1),
            f32::from_bits((-1.0f32).to_bits() + 1),
            -0.0,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        let mut d = Vec::new();
        delta_forward(&base, &new, 4, false, &mut d);
        let codes: Vec<u32> = d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // +1 ulp -> zigzag 2; -1 ulp (magnitude grows on the negative side) -> 1; +0 -> -0 is one step down -> 1
        assert_eq!(codes, vec![2, 1, 1]);
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let bytes: Vec<u8> = (0..4000u32).map(|i| (i * 31 % 7) as u8).collect();
        let blob = encode_lossless(&bytes, 2, true, CFG);
        let mut out = vec![0u8; bytes.len()];
        for cut in [0, 1, 5, blob.len() / 2, blob.len() - 1] {
            assert!(decode_lossless(&blob[..cut], 2, true, &mut out).is_err());
        }
        let mut wrong = vec![0u8; bytes.len() - 2];
        assert!(decode_lossless(&blob, 2, true, &mut wrong).is_err());
    }
}
