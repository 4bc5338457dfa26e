//! Element types: the workspace's one [`DType`] (from `dhurandhar-checkpoint`), plus
//! what the container needs to know about each.

pub use dhurandhar_checkpoint::DType;

/// How the container treats a dtype.
pub(crate) trait PackDType {
    /// Floats whose bytes are split into sign+exponent and mantissa planes.
    fn is_plane_float(&self) -> bool;
    /// Floats the quantizer accepts.
    fn is_quantizable(&self) -> bool;
}

impl PackDType for DType {
    fn is_plane_float(&self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
    fn is_quantizable(&self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

/// Cast little-endian f32 bytes to BF16 or F16 with round-to-nearest-even (benchmarks use
/// this to get realistic half-precision weights from a float32 checkpoint).
pub fn cast_f32_bytes(bytes: &[u8], to: DType) -> Vec<u8> {
    let n = bytes.len() / 4;
    let mut vals = Vec::with_capacity(n);
    DType::F32.to_f32(bytes, &mut vals);
    let mut out = vec![0u8; n * to.size()];
    to.encode_f32(&vals, &mut out);
    out
}
