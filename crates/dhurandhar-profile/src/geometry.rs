//! The shape of the table being profiled: `rows` token rows, each made of `slices` slices
//! of `slice_bytes` bytes (for a PLE table: one slice per decoder layer).

use serde::Serialize;

use crate::error::ProfileError;

/// Largest accepted scale of a synthetic file: beyond a few times the real table the file
/// only measures disk capacity, and a typo such as a scale of 100 should not try to write
/// 96 GiB.
pub const MAX_SCALE: f64 = 8.0;

/// A synthetic test file is never smaller than this, so that even a tiny scale spans many pages
/// and readahead windows.
pub const MIN_TEST_FILE_BYTES: u64 = 4 << 20;

/// Where the geometry came from, reported so a non-PLE model is not mistaken for a PLE one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// Per-layer embedding table: `ple_vocab_size` rows of `layers × ple_hidden_size` values.
    PerLayerEmbedding,
    /// Token-embedding table (`vocab × hidden`), used for models without PLE.
    TokenEmbedding,
    /// A byte range of a real checkpoint.
    FileRegion,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableGeometry {
    pub kind: TableKind,
    /// Token rows in the (full-size) table.
    pub rows: u64,
    /// Slices read per token (decoder layers for PLE; 1 for a plain embedding row).
    pub slices: u32,
    /// Bytes of one slice.
    pub slice_bytes: u64,
}

impl TableGeometry {
    /// Build a geometry, rejecting zero sizes and byte counts that overflow.
    pub fn new(
        kind: TableKind,
        rows: u64,
        slices: u32,
        slice_bytes: u64,
    ) -> Result<Self, ProfileError> {
        if rows == 0 || slices == 0 || slice_bytes == 0 {
            return Err(ProfileError::BadGeometry(format!(
                "rows ({rows}), slices ({slices}) and slice bytes ({slice_bytes}) must all be > 0"
            )));
        }
        let g = TableGeometry {
            kind,
            rows,
            slices,
            slice_bytes,
        };
        g.row_bytes()
            .checked_mul(rows)
            .ok_or_else(|| ProfileError::BadGeometry("table size overflows 64 bits".into()))?;
        Ok(g)
    }

    /// A per-layer-embedding table: `vocab` rows of `layers` slices of `ple_hidden` values
    /// at `bits` bits each.
    pub fn per_layer_embedding(
        vocab: u64,
        layers: u32,
        ple_hidden: u64,
        bits: u32,
    ) -> Result<Self, ProfileError> {
        Self::new(
            TableKind::PerLayerEmbedding,
            vocab,
            layers,
            packed_bytes(ple_hidden, bits)?,
        )
    }

    /// A token-embedding table: `vocab` rows of `hidden` values at `bits` bits, one slice per
    /// row.
    pub fn token_embedding(vocab: u64, hidden: u64, bits: u32) -> Result<Self, ProfileError> {
        Self::new(
            TableKind::TokenEmbedding,
            vocab,
            1,
            packed_bytes(hidden, bits)?,
        )
    }

    /// Bytes of one token row (all of its slices).
    pub fn row_bytes(&self) -> u64 {
        self.slice_bytes.saturating_mul(self.slices as u64)
    }

    /// Bytes of the full table.
    pub fn total_bytes(&self) -> u64 {
        self.row_bytes().saturating_mul(self.rows)
    }

    /// The same geometry with the row count of a `scale`-sized synthetic file: at least
    /// [`MIN_TEST_FILE_BYTES`], rounded down to whole rows, never fewer than one row.
    pub fn scaled(&self, scale: f64) -> Result<Self, ProfileError> {
        if !scale.is_finite() || scale <= 0.0 || scale > MAX_SCALE {
            return Err(ProfileError::BadScale(scale));
        }
        let row = self.row_bytes();
        let want = (self.total_bytes() as f64 * scale).max(MIN_TEST_FILE_BYTES as f64);
        let rows = ((want / row as f64).floor() as u64).max(1);
        Self::new(self.kind, rows, self.slices, self.slice_bytes)
    }
}

/// Pieces a row of `row_bytes` is split into for `random_scatter` when the caller does not
/// say: the largest k <= 16 dividing the row with pieces of at least 16 bytes (1 if none),
/// so scattered reads stay realistic for a real tensor whose layer structure is unknown.
pub fn default_slices(row_bytes: u64) -> u32 {
    (1..=16u32)
        .rev()
        .find(|&k| row_bytes.is_multiple_of(k as u64) && row_bytes / k as u64 >= 16)
        .unwrap_or(1)
}

/// Bytes holding `elements` values of `bits` bits, rounded up to a whole byte.
fn packed_bytes(elements: u64, bits: u32) -> Result<u64, ProfileError> {
    if bits == 0 || bits > 32 {
        return Err(ProfileError::BadGeometry(format!(
            "quantization bits must be 1..=32, got {bits}"
        )));
    }
    elements
        .checked_mul(bits as u64)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| ProfileError::BadGeometry("row size overflows 64 bits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2b_like() -> TableGeometry {
        TableGeometry::new(TableKind::PerLayerEmbedding, 262_144, 30, 128).unwrap()
    }

    #[test]
    fn e2b_table_is_960_mib_at_4_bits() {
        let g = e2b_like();
        assert_eq!(
            g,
            TableGeometry::per_layer_embedding(262_144, 30, 256, 4).unwrap()
        );
        assert_eq!(g.row_bytes(), 3840);
        assert_eq!(g.total_bytes(), 1_006_632_960);
    }

    #[test]
    fn scale_rounds_to_whole_rows_with_a_floor() {
        let g = e2b_like().scaled(0.1).unwrap();
        assert_eq!(g.rows, 26_214);
        let tiny = e2b_like().scaled(1e-9).unwrap();
        assert_eq!(tiny.rows, MIN_TEST_FILE_BYTES / 3840);
    }

    #[test]
    fn bad_scales_are_rejected() {
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_SCALE * 2.0] {
            assert!(matches!(
                e2b_like().scaled(s),
                Err(ProfileError::BadScale(_))
            ));
        }
    }

    #[test]
    fn zero_and_overflowing_geometries_are_rejected() {
        assert!(TableGeometry::new(TableKind::FileRegion, 0, 1, 1).is_err());
        assert!(TableGeometry::new(TableKind::FileRegion, u64::MAX, 2, u64::MAX / 2).is_err());
    }

    #[test]
    fn token_embedding_has_one_slice() {
        let g = TableGeometry::token_embedding(49_152, 576, 16).unwrap();
        assert_eq!((g.slices, g.slice_bytes), (1, 1152));
        assert!(TableGeometry::token_embedding(10, 10, 0).is_err());
    }

    #[test]
    fn default_slices_divide_the_row() {
        assert_eq!(default_slices(612), 12);
        assert_eq!(default_slices(4096), 16);
        assert_eq!(default_slices(360), 15);
        assert_eq!(default_slices(17), 1);
        assert_eq!(default_slices(8), 1);
    }

    #[test]
    fn odd_bit_widths_round_up() {
        assert_eq!(packed_bytes(256, 3).unwrap(), 96);
        assert_eq!(packed_bytes(5, 3).unwrap(), 2);
    }
}
