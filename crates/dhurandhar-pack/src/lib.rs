//! dhurandhar-pack: the `.dhp` weight container.
//!
//! Three ways to store a checkpoint, one container:
//! - **lossless**: float bytes split into sign+exponent and mantissa planes, each plane
//!   entropy-coded per chunk (own 4-stream Huffman, or raw when incompressible);
//! - **delta**: a checkpoint relative to a base (XOR or zig-zag difference per chunk,
//!   whichever is smaller), unchanged tensors free;
//! - **quant-residual**: INT4/INT8 group quantization plus the top residuals, with a fused
//!   matmul that never materialises the dense matrix.
//!
//! Chunks decode independently (and in parallel); the index at the end gives random
//! access by tensor, chunk or element range ([`PackReader`]). Format spec:
//! `docs/PACK_FORMAT.md`.

mod blocks;
pub mod codec;
pub mod dtype;
pub mod error;
pub mod format;
pub mod gguf;
pub mod huffman;
pub mod ops;
pub mod quant;
pub mod read;
pub mod write;

pub use dhurandhar_checkpoint::{TensorMeta, TensorSource, WeightTensor, Weights};
pub use dtype::{cast_f32_bytes, DType};
pub use error::{PackError, Result};
pub use format::{
    ChunkRef, GgmlTensor, GgufLayout, Index, Mode, PackKind, PackReader, PackWriter, TensorEntry,
    DEFAULT_CHUNK_SIZE,
};
pub use gguf::{is_pack, pack_gguf, GgufPackReader, ReadCost, ReadScratch};
pub use ops::{
    apply_delta, delta, pack, report, unpack, PackMode, PackOptions, PackReport, Progress,
    TensorReport, UnpackReport,
};
pub use quant::{dense_matmul, QuantConfig, QuantResidualTensor, QuantStats};
pub use read::VerifyReport;
pub use write::write_safetensors;

use dtype::PackDType;
use rayon::prelude::*;

/// In-memory lossless compression of one tensor's bytes, chunk by chunk in parallel (the
/// same encoding `pack` stores). Used by benchmarks and by callers holding tensors in RAM.
pub fn compress_lossless(bytes: &[u8], dtype: DType, chunk_size: usize) -> Vec<Vec<u8>> {
    let es = dtype.size();
    let per = (chunk_size / es).max(1) * es;
    let cfg = codec::PlaneCfg::new(if dtype.is_plane_float() {
        None
    } else {
        Some(3)
    });
    bytes
        .par_chunks(per)
        .map(|c| codec::encode_lossless(c, es, dtype.is_plane_float(), cfg))
        .collect()
}

/// Inverse of [`compress_lossless`] into `out` (the original length).
pub fn decompress_lossless(
    blobs: &[Vec<u8>],
    dtype: DType,
    chunk_size: usize,
    out: &mut [u8],
) -> Result<()> {
    let es = dtype.size();
    let per = (chunk_size / es).max(1) * es;
    if out.len().div_ceil(per) != blobs.len() {
        return Err(PackError::InvalidRequest(format!(
            "{} chunks for {} bytes",
            blobs.len(),
            out.len()
        )));
    }
    out.par_chunks_mut(per)
        .zip(blobs)
        .enumerate()
        .try_for_each(|(i, (o, b))| {
            codec::decode_lossless(b, es, dtype.is_plane_float(), o).map_err(|detail| {
                PackError::ChunkDecode {
                    path: "<memory>".into(),
                    tensor: String::new(),
                    chunk: i,
                    detail,
                }
            })
        })
}
