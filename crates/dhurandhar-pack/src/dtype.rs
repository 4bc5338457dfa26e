//! Element types the container knows. Names follow safetensors so the index reads naturally.

use serde::{Deserialize, Serialize};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    BOOL,
    F8_E4M3,
    F8_E5M2,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::BOOL | DType::F8_E4M3 | DType::F8_E5M2 => 1,
        }
    }

    /// Floats whose bytes are split into sign+exponent and mantissa planes.
    pub fn is_plane_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// Floats the quantizer accepts.
    pub fn is_quantizable(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The safetensors spelling ("BF16", "F32", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::BOOL => "BOOL",
            DType::F8_E4M3 => "F8_E4M3",
            DType::F8_E5M2 => "F8_E5M2",
        }
    }

    /// Parse the safetensors spelling; `None` for sub-byte or unknown types.
    pub fn parse(s: &str) -> Option<DType> {
        const ALL: [DType; 15] = [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U64,
            DType::U32,
            DType::U16,
            DType::U8,
            DType::BOOL,
            DType::F8_E4M3,
            DType::F8_E5M2,
        ];
        ALL.into_iter().find(|d| d.name() == s)
    }

    /// Convert little-endian elements of this (float) dtype to f32.
    pub(crate) fn to_f32(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.clear();
        match self {
            DType::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            DType::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            ),
            DType::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            ),
            _ => {}
        }
    }

    /// Write f32 values as this (float) dtype, rounding to nearest even.
    pub(crate) fn encode_f32(self, vals: &[f32], out: &mut [u8]) {
        match self {
            DType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(vals) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::F16 => {
                for (o, v) in out.chunks_exact_mut(2).zip(vals) {
                    o.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
                }
            }
            DType::BF16 => {
                for (o, v) in out.chunks_exact_mut(2).zip(vals) {
                    o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
