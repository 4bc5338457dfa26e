//! Canonical, length-limited Huffman coder for one byte plane.
//!
//! Why our own coder: the sign+exponent plane of BF16 weights carries ~2.6 bits/byte of
//! order-0 information and no useful repetition, so an order-0 coder reaches the same ratio
//! as zstd's literal coder while decoding much faster. Four interleaved bit streams give
//! the CPU independent dependency chains; codes are at most [`MAX_LEN`] bits so one
//! 2^11-entry table (4 KiB, L1-resident) decodes a symbol per lookup.
//!
//! Layout: 128 bytes of code lengths (two 4-bit lengths per byte, symbol 2k in the low
//! nibble), 4 little-endian u32 stream lengths, then the 4 MSB-first bit streams. The
//! symbol count is not stored: the caller knows the plane length.

/// Longest code in bits.
pub const MAX_LEN: u32 = 11;
const STREAMS: usize = 4;
const HEADER: usize = 128 + 4 * STREAMS;

/// Byte histogram.
pub fn histogram(data: &[u8]) -> [u64; 256] {
    // Four sub-histograms avoid store-to-load stalls on runs of equal bytes.
    let mut h = [[0u32; 256]; 4];
    let mut total = [0u64; 256];
    for block in data.chunks(1 << 24) {
        let mut it = block.chunks_exact(4);
        for c in &mut it {
            h[0][c[0] as usize] += 1;
            h[1][c[1] as usize] += 1;
            h[2][c[2] as usize] += 1;
            h[3][c[3] as usize] += 1;
        }
        for &b in it.remainder() {
            h[0][b as usize] += 1;
        }
        for (s, t) in total.iter_mut().enumerate() {
            *t += h.iter().map(|x| x[s] as u64).sum::<u64>();
        }
        h = [[0u32; 256]; 4];
    }
    total
}

/// Huffman code lengths limited to [`MAX_LEN`] (0 = symbol absent).
pub fn code_lengths(hist: &[u64; 256]) -> [u8; 256] {
    let mut freq = *hist;
    loop {
        let lens = unlimited_lengths(&freq);
        if lens.iter().all(|&l| u32::from(l) <= MAX_LEN) {
            return lens;
        }
        // Flatten the distribution until the tree is shallow enough; converges because
        // all-ones frequencies give a depth of at most 8.
        for f in freq.iter_mut().filter(|f| **f > 0) {
            *f = (*f >> 1).max(1);
        }
    }
}

fn unlimited_lengths(freq: &[u64; 256]) -> [u8; 256] {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut lens = [0u8; 256];
    let present: Vec<usize> = (0..256).filter(|&s| freq[s] > 0).collect();
    match present.len() {
        0 => return lens,
        1 => {
            lens[present[0]] = 1;
            return lens;
        }
        _ => {}
    }
    let mut parent = vec![usize::MAX; 512];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        present.iter().map(|&s| Reverse((freq[s], s))).collect();
    let mut next = 256;
    while heap.len() > 1 {
        let Reverse((fa, a)) = heap.pop().expect("len > 1");
        let Reverse((fb, b)) = heap.pop().expect("len > 1");
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((fa + fb, next)));
        next += 1;
    }
    for &s in &present {
        let mut d = 0u8;
        let mut n = s;
        while parent[n] != usize::MAX {
            n = parent[n];
            d = d.saturating_add(1);
        }
        lens[s] = d;
    }
    lens
}

/// Canonical codes for the lengths; `None` when the lengths over-subscribe the code space.
fn canonical_codes(lens: &[u8; 256]) -> Option<[u16; 256]> {
    let mut count = [0u32; MAX_LEN as usize + 1];
    for &l in lens {
        if u32::from(l) > MAX_LEN {
            return None;
        }
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut kraft = 0u32;
    for (l, &c) in count.iter().enumerate().skip(1) {
        kraft += c << (MAX_LEN as usize - l);
    }
    if kraft > 1 << MAX_LEN {
        return None;
    }
    let mut next = [0u32; MAX_LEN as usize + 2];
    let mut code = 0u32;
    for l in 1..=MAX_LEN as usize {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    let mut codes = [0u16; 256];
    for s in 0..256 {
        let l = lens[s] as usize;
        if l > 0 {
            codes[s] = next[l] as u16;
            next[l] += 1;
        }
    }
    Some(codes)
}

/// Exact encoded size for these lengths (used to pick the cheapest plane codec).
pub fn encoded_size(hist: &[u64; 256], lens: &[u8; 256]) -> usize {
    let bits: u64 = hist.iter().zip(lens).map(|(&f, &l)| f * l as u64).sum();
    HEADER + (bits / 8) as usize + STREAMS
}

fn segment(n: usize) -> usize {
    n.div_ceil(STREAMS)
}

/// Append the encoding of `data` (with lengths from [`code_lengths`]) to `out`.
pub fn encode(data: &[u8], lens: &[u8; 256], out: &mut Vec<u8>) {
    let codes = canonical_codes(lens).expect("code_lengths yields a valid prefix code");
    for pair in lens.chunks_exact(2) {
        out.push(pair[0] | (pair[1] << 4));
    }
    let table_at = out.len();
    out.extend_from_slice(&[0u8; 4 * STREAMS]);
    let seg = segment(data.len()).max(1);
    let mut streams = data.chunks(seg);
    for s in 0..STREAMS {
        let start = out.len();
        if let Some(part) = streams.next() {
            let mut acc = 0u64;
            let mut nbits = 0u32;
            for &b in part {
                let l = u32::from(lens[b as usize]);
                acc = (acc << l) | u64::from(codes[b as usize]);
                nbits += l;
                if nbits >= 32 {
                    nbits -= 32;
                    out.extend_from_slice(&((acc >> nbits) as u32).to_be_bytes());
                }
            }
            if nbits > 0 {
                let tail = (acc << (64 - nbits)).to_be_bytes();
                out.extend_from_slice(&tail[..nbits.div_ceil(8) as usize]);
            }
        }
        let len = (out.len() - start) as u32;
        out[table_at + 4 * s..table_at + 4 * s + 4].copy_from_slice(&len.to_le_bytes());
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    cnt: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            cnt: 0,
        }
    }

    /// Top up to at least 56 valid bits (bytes past the end read as zero).
    #[inline(always)]
    fn refill(&mut self) {
        let w = match self.data.get(self.pos..self.pos + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut tmp = [0u8; 8];
                if let Some(rest) = self.data.get(self.pos..) {
                    tmp[..rest.len()].copy_from_slice(rest);
                }
                u64::from_be_bytes(tmp)
            }
        };
        self.buf |= w >> self.cnt;
        let bytes = (63 - self.cnt) >> 3;
        self.pos += bytes as usize;
        self.cnt += bytes * 8;
    }

    /// Decode up to 3 symbols with one lookup, storing 4 bytes at `out[pos..]` (the caller
    /// leaves room); returns how many are real.
    #[inline(always)]
    fn decode_multi(&mut self, table: &[u32; 1 << MAX_LEN], out: &mut [u8], pos: usize) -> usize {
        let e = table[(self.buf >> (64 - MAX_LEN)) as usize];
        debug_assert!(pos + 4 <= out.len());
        // SAFETY: the main loop only runs while every stream has at least SLACK (16) bytes
        // left and 5 lookups advance a stream by at most 15, so pos + 4 <= out.len().
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().add(pos) as *mut u32, e.to_le()) };
        let len = (e >> 24) & 15;
        self.buf <<= len;
        self.cnt -= len;
        (e >> 28) as usize
    }

    #[inline(always)]
    fn decode(&mut self, table: &[u16; 1 << MAX_LEN]) -> u8 {
        let e = table[(self.buf >> (64 - MAX_LEN)) as usize];
        let len = u32::from(e >> 8);
        self.buf <<= len;
        self.cnt -= len;
        e as u8
    }
}

/// Expand a one-symbol table into one that decodes as many whole codes (up to 3) as fit
/// in the [`MAX_LEN`]-bit window: entry = 3 symbol bytes, bits used (4 bits), count (2 bits).
fn multi_table(single: &[u16; 1 << MAX_LEN]) -> Box<[u32; 1 << MAX_LEN]> {
    let mask = (1u32 << MAX_LEN) - 1;
    let mut t = Box::new([0u32; 1 << MAX_LEN]);
    for (idx, e) in t.iter_mut().enumerate() {
        let mut bits = idx as u32;
        let mut used = 0u32;
        let mut syms = 0u32;
        let mut count = 0u32;
        while count < 3 {
            let s = single[bits as usize];
            let l = u32::from(s >> 8);
            if used + l > MAX_LEN {
                break;
            }
            syms |= u32::from(s as u8) << (8 * count);
            used += l;
            count += 1;
            bits = (bits << l) & mask;
        }
        *e = syms | (used << 24) | (count << 28);
    }
    t
}

/// Decode exactly `out.len()` symbols from `enc`. Corrupt input yields an error or garbage,
/// never a panic (the chunk checksum catches corruption before this runs).
pub fn decode(enc: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    if enc.len() < HEADER {
        return Err("huffman header truncated");
    }
    let mut lens = [0u8; 256];
    for (i, &b) in enc[..128].iter().enumerate() {
        lens[2 * i] = b & 15;
        lens[2 * i + 1] = b >> 4;
    }
    let codes = canonical_codes(&lens).ok_or("huffman code lengths over-subscribed")?;
    // Unused table slots decode as symbol 0 with a full-length code: garbage, not a panic.
    let mut single = [(MAX_LEN as u16) << 8; 1 << MAX_LEN];
    for s in 0..256 {
        let l = u32::from(lens[s]);
        if l == 0 {
            continue;
        }
        let first = (codes[s] as usize) << (MAX_LEN - l);
        let n = 1usize << (MAX_LEN - l);
        for e in &mut single[first..first + n] {
            *e = ((l as u16) << 8) | s as u16;
        }
    }
    let multi = multi_table(&single);
    let mut sizes = [0usize; STREAMS];
    let mut total = HEADER;
    for (s, size) in sizes.iter_mut().enumerate() {
        let at = 128 + 4 * s;
        *size = u32::from_le_bytes(enc[at..at + 4].try_into().expect("4 bytes")) as usize;
        total = total
            .checked_add(*size)
            .ok_or("huffman stream sizes overflow")?;
    }
    if total != enc.len() {
        return Err("huffman stream sizes do not match the plane");
    }
    let mut at = HEADER;
    let mut next_reader = |size: usize| {
        let r = BitReader::new(&enc[at..at + size]);
        at += size;
        r
    };
    // Locals by value so the bit buffers live in registers.
    let mut r0 = next_reader(sizes[0]);
    let mut r1 = next_reader(sizes[1]);
    let mut r2 = next_reader(sizes[2]);
    let mut r3 = next_reader(sizes[3]);
    let n = out.len();
    let seg = segment(n).max(1);
    let ends = [seg.min(n), (2 * seg).min(n), (3 * seg).min(n), n];
    let mut pos = [0, seg.min(n), (2 * seg).min(n), (3 * seg).min(n)];
    // Main loop: 5 lookups per refill (5 × 11 ≤ 56 bits), each emitting up to 3 symbols
    // with a 4-byte store; stops while every stream still has room for the widest store.
    const SLACK: usize = 4 * 3 + 4;
    let single_tab: &[u16; 1 << MAX_LEN] = &single;
    let multi: &[u32; 1 << MAX_LEN] = &multi;
    while pos[0] + SLACK <= ends[0]
        && pos[1] + SLACK <= ends[1]
        && pos[2] + SLACK <= ends[2]
        && pos[3] + SLACK <= ends[3]
    {
        r0.refill();
        r1.refill();
        r2.refill();
        r3.refill();
        for _ in 0..5 {
            pos[0] += r0.decode_multi(multi, out, pos[0]);
            pos[1] += r1.decode_multi(multi, out, pos[1]);
            pos[2] += r2.decode_multi(multi, out, pos[2]);
            pos[3] += r3.decode_multi(multi, out, pos[3]);
        }
    }
    for (i, r) in [&mut r0, &mut r1, &mut r2, &mut r3].into_iter().enumerate() {
        for o in &mut out[pos[i]..ends[i]] {
            r.refill();
            *o = r.decode(single_tab);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let h = histogram(data);
        let lens = code_lengths(&h);
        let mut enc = Vec::new();
        encode(data, &lens, &mut enc);
        if !data.is_empty() {
            assert!(enc.len() <= encoded_size(&h, &lens));
        }
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn roundtrips_small_and_skewed_inputs() {
        roundtrip(&[]);
        roundtrip(&[7]);
        roundtrip(&[1, 2, 3]);
        roundtrip(&[5; 1000]);
        let skewed: Vec<u8> = (0..100_003u32)
            .map(|i| match i % 97 {
                0 => (i % 251) as u8,
                1..=10 => 120,
                _ => 121 + (i % 3) as u8,
            })
            .collect();
        roundtrip(&skewed);
        let all: Vec<u8> = (0..70_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        roundtrip(&all);
    }

    #[test]
    fn lengths_are_limited_for_geometric_distributions() {
        let mut h = [0u64; 256];
        for (s, f) in h.iter_mut().enumerate().take(40) {
            *f = 1u64 << (39 - s).min(62);
        }
        let lens = code_lengths(&h);
        assert!(lens.iter().all(|&l| u32::from(l) <= MAX_LEN));
        assert!(canonical_codes(&lens).is_some());
    }

    #[test]
    fn corrupt_headers_are_errors() {
        assert!(decode(&[0u8; 10], &mut [0u8; 4]).is_err());
        let mut bad = vec![0x11u8; 128];
        bad.extend_from_slice(&[0u8; 16]);
        // 256 symbols of length 1 over-subscribe the code space.
        assert!(decode(&bad, &mut [0u8; 4]).is_err());
    }
}
