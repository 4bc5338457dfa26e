//! Quantize f32 rows into ggml's block formats, and choose a type per tensor the way
//! llama.cpp's `llama-quantize` presets do. No I/O: rows in, block bytes out.
//!
//! * [`Format`]: the output types (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K,
//!   Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) with their exact block sizes and ggml ids.
//! * [`quantize_row`] / [`quantize_rows`]: f32 → blocks. The classic types use the
//!   rounding rules of ggml's reference quantizers (so a file they make is what
//!   llama.cpp would make from the same floats); the k-quants search scale and minimum
//!   per sub-block to minimise a weighted squared error, then quantize the sub-block
//!   scales against the super-block scale, as ggml's reference k-quantizers do.
//! * [`preset`]: `q4_k_m`, `q5_k_s`, … — which tensor gets which type.
//!
//! The block layouts are ggml's `block_*` structs (little-endian, packed); the engine's
//! dequantizers in `dhurandhar-engine` read them and are the round-trip reference in the
//! tests.

mod kquants;
mod legacy;
pub mod preset;

use rayon::prelude::*;
use thiserror::Error;

pub use preset::{Preset, TensorPlan, TensorRole};

/// Values per k-quant super-block.
pub const QK_K: usize = 256;
/// Values per classic block (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
pub const QK: usize = 32;

/// Why a row could not be quantized.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantizeError {
    /// The row length is not a whole number of the format's blocks.
    #[error("row length {len} is not a multiple of the {format} block size {block}")]
    RowLength {
        format: &'static str,
        len: usize,
        block: usize,
    },
    /// The output buffer does not have the size the row needs.
    #[error("{format} output for {values} values needs {need} bytes, got {got}")]
    OutputLength {
        format: &'static str,
        values: usize,
        need: usize,
        got: usize,
    },
}

/// An output tensor type.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

impl Format {
    /// Every format, classic then k-quants.
    pub const ALL: [Format; 15] = [
        Format::F32,
        Format::F16,
        Format::BF16,
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q2_K,
        Format::Q3_K,
        Format::Q4_K,
        Format::Q5_K,
        Format::Q6_K,
        Format::IQ4_NL,
        Format::IQ4_XS,
    ];

    /// ggml's name (`"Q4_K"`).
    pub fn name(self) -> &'static str {
        use Format::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q8_0 => "Q8_0",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
        }
    }

    /// The ggml type id (`enum ggml_type`), as stored in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        use Format::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            IQ4_NL => 20,
            IQ4_XS => 23,
            BF16 => 30,
        }
    }

    /// The format with ggml id `id`, if it is one of ours.
    pub fn from_ggml_id(id: u32) -> Option<Format> {
        Self::ALL.into_iter().find(|f| f.ggml_id() == id)
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        use Format::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | IQ4_NL => QK,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => QK_K,
        }
    }

    /// Bytes per block (ggml-common.h's `block_*` structs).
    pub fn block_bytes(self) -> usize {
        use Format::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q8_0 => 2 + 32,
            Q4_0 => 2 + 16,
            Q4_1 => 4 + 16,
            Q5_0 => 2 + 4 + 16,
            Q5_1 => 4 + 4 + 16,
            Q2_K => 16 + 64 + 4,
            Q3_K => 32 + 64 + 12 + 2,
            Q4_K => 4 + 12 + 128,
            Q5_K => 4 + 12 + 32 + 128,
            Q6_K => 128 + 64 + 16 + 2,
            IQ4_NL => 2 + 16,
            IQ4_XS => 2 + 2 + 4 + 128,
        }
    }

    /// Whether this is a block-quantized type (not F32/F16/BF16).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_size())
            .then(|| n / self.block_size() * self.block_bytes())
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Quantize one row `x` into `out` (exactly [`Format::row_bytes`]`(x.len())` bytes).
pub fn quantize_row(format: Format, x: &[f32], out: &mut [u8]) -> Result<(), QuantizeError> {
    let bs = format.block_size();
    let need = format.row_bytes(x.len()).ok_or(QuantizeError::RowLength {
        format: format.name(),
        len: x.len(),
        block: bs,
    })?;
    if out.len() != need {
        return Err(QuantizeError::OutputLength {
            format: format.name(),
            values: x.len(),
            need,
            got: out.len(),
        });
    }
    let bb = format.block_bytes();
    for (xb, ob) in x.chunks_exact(bs).zip(out.chunks_exact_mut(bb)) {
        quantize_block(format, xb, ob);
    }
    Ok(())
}

/// Quantize consecutive rows of `n_per_row` values (`x.len()` a multiple of it) into
/// `out`, rows in parallel on the rayon pool.
pub fn quantize_rows(
    format: Format,
    x: &[f32],
    n_per_row: usize,
    out: &mut [u8],
) -> Result<(), QuantizeError> {
    let rb = format
        .row_bytes(n_per_row)
        .ok_or(QuantizeError::RowLength {
            format: format.name(),
            len: n_per_row,
            block: format.block_size(),
        })?;
    let rows = x.len().checked_div(n_per_row).unwrap_or(0);
    if n_per_row == 0 || !x.len().is_multiple_of(n_per_row) || out.len() != rows * rb {
        return Err(QuantizeError::OutputLength {
            format: format.name(),
            values: x.len(),
            need: rows * rb,
            got: out.len(),
        });
    }
    x.par_chunks(n_per_row)
        .zip(out.par_chunks_mut(rb))
        .try_for_each(|(xr, or)| quantize_row(format, xr, or))
}

/// One block: `x` has `block_size` values, `out` `block_bytes` bytes.
fn quantize_block(format: Format, x: &[f32], out: &mut [u8]) {
    use Format::*;
    match format {
        F32 => out.copy_from_slice(&x[0].to_le_bytes()),
        F16 => out.copy_from_slice(&half::f16::from_f32(x[0]).to_bits().to_le_bytes()),
        BF16 => out.copy_from_slice(&half::bf16::from_f32(x[0]).to_bits().to_le_bytes()),
        Q8_0 => legacy::q8_0(x, out),
        Q4_0 => legacy::q4_0(x, out),
        Q4_1 => legacy::q4_1(x, out),
        Q5_0 => legacy::q5_0(x, out),
        Q5_1 => legacy::q5_1(x, out),
        Q2_K => kquants::q2_k(x, out),
        Q3_K => kquants::q3_k(x, out),
        Q4_K => kquants::q4_k(x, out),
        Q5_K => kquants::q5_k(x, out),
        Q6_K => kquants::q6_k(x, out),
        IQ4_NL => legacy::iq4_nl(x, out),
        IQ4_XS => legacy::iq4_xs(x, out),
    }
}

/// An f32 as the little-endian bytes of the nearest f16 (ties to even, as ggml).
#[inline]
pub(crate) fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// The f32 value an f16 written by [`f16_bytes`] reads back as.
#[inline]
pub(crate) fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Round to the nearest integer, ties to even (ggml's `nearest_int`).
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

#[cfg(test)]
mod tests;
