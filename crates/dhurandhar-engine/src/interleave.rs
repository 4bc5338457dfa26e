//! Eight rows interleaved block by block: the layout resident Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL, Q4_K and Q5_K matrices are rearranged into when they are loaded, so one pass of the x86 kernel computes eight
//! rows at once.
//!
//! Why: a row-major Q4_0 row of 576 values is only 18 blocks, and a one-row kernel spends
//! as much on per-block scale handling and the final horizontal sum as on the products
//! (measured compute-bound at about 10 GB/s on the Q4_0 SmolLM2, where Q8_0 rows stream
//! at 13). With eight rows side by side, one byte dot product covers four values of all
//! eight rows (one row per 32-bit lane), the eight scales are one f16 conversion and the
//! sums land in one vector of eight outputs; no horizontal sum remains. llama.cpp
//! rearranges Q4_0 for the same reason (`q4_0_8x8`); this layout is our own.
//!
//! # Layout
//! Rows `8g..8g + 8` form group `g`, which takes exactly the bytes the eight rows did.
//! Within it, block column `b` comes after column `b − 1`. A block is its f16 fields
//! (`d`; Q4_1 and Q5_1: `d`, then `m`) followed by 4-byte words (Q5's 32 high bits, then
//! the quant bytes four at a time), and the column holds each of them for the eight rows
//! side by side:
//! 1. each f16 field: 8 × 2 = 16 bytes;
//! 2. each 4-byte word as a 32-byte vector, row `j` in 32-bit lane `j`: Q5's high bits,
//!    then the quants (four vectors for Q4/Q5, eight for Q8_0; vector `k` holds quant
//!    bytes `4k..4k + 4`).
//!
//! The bytes themselves are unchanged: a Q4/Q5 byte `i` still holds value `i` in its low
//! nibble and value `i + 16` in its high one, so the low nibbles of vector `k` are values
//! `4k..4k + 4` of every row and the high nibbles values `16 + 4k..16 + 4k + 4`.

use crate::quant::GgmlType;
use crate::EngineError;

/// Rows per interleaved group.
pub const ROWS: usize = 8;

/// Whether matrices of type `t` can be interleaved.
pub fn supports(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::IQ4NL
            | GgmlType::Q4K
            | GgmlType::Q5K
    )
}

/// Bytes of one block's f16 fields for a supported type (the rest are 4-byte words).
fn header_bytes(t: GgmlType) -> usize {
    match t {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => 4,
        _ => 2,
    }
}

/// Where byte `i` of block `b` of row `j` of a group lives in the interleaved group,
/// for blocks of `ts` bytes whose first `hb` are f16 fields.
#[inline]
fn position(hb: usize, ts: usize, j: usize, b: usize, i: usize) -> usize {
    let column = b * ts * ROWS;
    if i < hb {
        column + (i / 2) * 2 * ROWS + j * 2 + i % 2
    } else {
        let q = i - hb;
        column + hb * ROWS + (q / 4) * 4 * ROWS + j * 4 + q % 4
    }
}

/// The block geometry of type `t` for interleaving rows of `cols` values: `(header
/// bytes, block bytes, blocks per row)`, or why it cannot be done.
fn geometry(t: GgmlType, rows: usize, cols: usize) -> Result<(usize, usize, usize), EngineError> {
    let bs = t.block_size() as usize;
    if !supports(t) || !rows.is_multiple_of(ROWS) || bs == 0 || !cols.is_multiple_of(bs) {
        return Err(EngineError::Shape(format!(
            "a {} matrix of {rows}×{cols} cannot be interleaved by {ROWS} rows",
            t.name()
        )));
    }
    Ok((header_bytes(t), t.type_size() as usize, cols / bs))
}

/// Whether a `rows × cols` matrix of type `t` can be interleaved.
pub fn fits(t: GgmlType, rows: usize, cols: usize) -> bool {
    geometry(t, rows, cols).is_ok()
}

/// Rearrange the row-major matrix in `data` (`rows × cols` of type `t`) into groups of
/// eight interleaved rows, in place (one group's worth of scratch).
pub fn interleave(
    t: GgmlType,
    rows: usize,
    cols: usize,
    data: &mut [u8],
) -> Result<(), EngineError> {
    let (hb, ts, nb) = geometry(t, rows, cols)?;
    let group = ROWS * nb * ts;
    if data.len() != rows / ROWS * group {
        return Err(EngineError::Shape(format!(
            "{} matrix {rows}×{cols} needs {} bytes, got {}",
            t.name(),
            rows / ROWS * group,
            data.len()
        )));
    }
    // The group is written front to back in layout order (the order `position` counts
    // in: per column, each field for rows 0..8), reading from a copy of the rows.
    let mut src = vec![0u8; group];
    for g in data.chunks_exact_mut(group) {
        src.copy_from_slice(g);
        let mut at = 0;
        for b in 0..nb {
            for (i, w) in fields(hb, ts) {
                for j in 0..ROWS {
                    copy_field(&mut g[at..], &src[(j * nb + b) * ts + i..], w);
                    at += w;
                }
            }
        }
    }
    Ok(())
}

/// Interleave `data` as [`interleave`] does where [`fits`] says the matrix can be, and
/// say whether it did (resident matrices at load, pinned streamed layers when read).
pub fn interleave_if_fits(
    t: GgmlType,
    rows: usize,
    cols: usize,
    data: &mut [u8],
) -> Result<bool, EngineError> {
    if !fits(t, rows, cols) {
        return Ok(false);
    }
    interleave(t, rows, cols, data)?;
    Ok(true)
}

/// The first `w` (2 or 4) bytes of `src` to `dst`, as one fixed-size move (a
/// `copy_from_slice` of a run-time length is a `memmove` call per field).
#[inline]
fn copy_field(dst: &mut [u8], src: &[u8], w: usize) {
    if w == 2 {
        dst[..2].copy_from_slice(&src[..2]);
    } else {
        dst[..4].copy_from_slice(&src[..4]);
    }
}

/// Each field of a block, `(first byte, width)`: the f16 fields, then the 4-byte words.
/// A field keeps its bytes together in the interleaved group, so it moves as one copy.
fn fields(hb: usize, ts: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..hb)
        .step_by(2)
        .map(|i| (i, 2))
        .chain((hb..ts).step_by(4).map(|i| (i, 4)))
}

/// Row `r` of an interleaved `rows × cols` matrix of type `t`, in the row-major form
/// (for the paths without an interleaved kernel: f32 activations, training, checks).
pub fn row(t: GgmlType, rows: usize, cols: usize, data: &[u8], r: usize) -> Vec<u8> {
    let (hb, ts, nb) = geometry(t, rows, cols).expect("an interleaved matrix has a valid shape");
    let group = &data[r / ROWS * ROWS * nb * ts..][..ROWS * nb * ts];
    let j = r % ROWS;
    let mut out = vec![0u8; nb * ts];
    for (b, blk) in out.chunks_exact_mut(ts).enumerate() {
        for (i, w) in fields(hb, ts) {
            copy_field(&mut blk[i..], &group[position(hb, ts, j, b, i)..], w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every byte of a group has exactly one place: the layout is a permutation.
    #[test]
    fn positions_tile_the_group() {
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::IQ4NL,
        ] {
            let (hb, ts) = (header_bytes(t), t.type_size() as usize);
            let nb = 3;
            let mut seen = vec![false; ROWS * nb * ts];
            for j in 0..ROWS {
                for b in 0..nb {
                    for i in 0..ts {
                        let p = position(hb, ts, j, b, i);
                        assert!(!seen[p], "{} byte {i} of block {b} row {j}", t.name());
                        seen[p] = true;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    /// The quants of a block column are lane-per-row: row 5's bytes 4..8 sit in lane 5
    /// of the second vector, after the header fields of all eight rows.
    #[test]
    fn a_q4_1_block_column_by_hand() {
        let (hb, ts) = (4, 20);
        // d of row 3: after nothing, at 3·2.
        assert_eq!(position(hb, ts, 3, 0, 0), 6);
        // m of row 3: after the 16 bytes of d.
        assert_eq!(position(hb, ts, 3, 0, 2), 16 + 6);
        // quant byte 4 (vector 1, lane byte 0) of row 5: header 32, vector 1 at +32.
        assert_eq!(position(hb, ts, 5, 0, hb + 4), 32 + 32 + 5 * 4);
        // the same byte one block column later.
        assert_eq!(position(hb, ts, 5, 1, hb + 4), 160 + 32 + 32 + 5 * 4);
        // Q5_0 (d, then the high bits as the first vector): row 2's high-bit byte 1 at
        // 16 + 2·4 + 1, its quant byte 0 one vector later.
        assert_eq!(position(2, 22, 2, 0, 3), 16 + 9);
        assert_eq!(position(2, 22, 2, 0, 6), 16 + 32 + 8);
    }

    #[test]
    fn refuses_shapes_it_cannot_group() {
        assert!(!fits(GgmlType::Q4_0, 12, 64));
        assert!(!fits(GgmlType::Q6K, 8, 256));
        assert!(!fits(GgmlType::Q4K, 8, 288));
        assert!(fits(GgmlType::Q4_1, 16, 64));
        let mut short = vec![0u8; 10];
        assert!(interleave(GgmlType::Q4_0, 8, 32, &mut short).is_err());
    }

    proptest! {
        /// Interleaving then reading rows back gives the row-major bytes.
        #[test]
        fn rows_survive_interleaving(kind in 0usize..8, groups in 1usize..4, nb in 1usize..6, seed in any::<u64>()) {
            let t = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::IQ4NL][kind];
            let (rows, cols) = (groups * ROWS, nb * t.block_size() as usize);
            let rb = nb * t.type_size() as usize;
            let mut s = seed | 1;
            let orig: Vec<u8> = (0..rows * rb)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            let mut data = orig.clone();
            interleave(t, rows, cols, &mut data).unwrap();
            for r in 0..rows {
                prop_assert_eq!(&row(t, rows, cols, &data, r)[..], &orig[r * rb..(r + 1) * rb]);
            }
        }
    }
}
