//! The one element type of the workspace: safetensors' names, with conversions to and
//! from ggml's. The checkpoint readers, the `.dhp` pack and the engine all speak it, so a
//! tensor's type never goes through a string between them.

use serde::{Deserialize, Serialize};

use crate::gguf::GgmlType;

/// Element type of a tensor (one value per element; block-quantized ggml types have
/// no `DType`, see [`GgmlType`]). Spelled as in safetensors headers.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    BOOL,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    C64,
    F4,
    F6_E2M3,
    F6_E3M2,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 22] = [
        DType::BOOL,
        DType::U8,
        DType::I8,
        DType::F8_E5M2,
        DType::F8_E4M3,
        DType::F8_E8M0,
        DType::F8_E4M3FNUZ,
        DType::F8_E5M2FNUZ,
        DType::I16,
        DType::U16,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::U32,
        DType::F32,
        DType::F64,
        DType::I64,
        DType::U64,
        DType::C64,
        DType::F4,
        DType::F6_E2M3,
        DType::F6_E3M2,
    ];

    /// The safetensors spelling (`"F32"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            BOOL => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            F8_E8M0 => "F8_E8M0",
            F8_E4M3FNUZ => "F8_E4M3FNUZ",
            F8_E5M2FNUZ => "F8_E5M2FNUZ",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
            C64 => "C64",
            F4 => "F4",
            F6_E2M3 => "F6_E2M3",
            F6_E3M2 => "F6_E3M2",
        }
    }

    /// Parse the safetensors spelling.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bits per element (sub-byte types pack several elements per byte).
    pub fn bits(self) -> u64 {
        use DType::*;
        match self {
            F4 => 4,
            F6_E2M3 | F6_E3M2 => 6,
            BOOL | U8 | I8 | F8_E5M2 | F8_E4M3 | F8_E8M0 | F8_E4M3FNUZ | F8_E5M2FNUZ => 8,
            I16 | U16 | F16 | BF16 => 16,
            I32 | U32 | F32 => 32,
            F64 | I64 | U64 | C64 => 64,
        }
    }

    /// Whether each element is a whole number of bytes (everything but F4 / F6).
    pub fn is_whole_bytes(self) -> bool {
        self.bits().is_multiple_of(8)
    }

    /// Bytes per element; 0 for the sub-byte types (check [`is_whole_bytes`](Self::is_whole_bytes)).
    pub fn size(self) -> usize {
        if self.is_whole_bytes() {
            (self.bits() / 8) as usize
        } else {
            0
        }
    }

    /// Stored bytes of `n` elements, or `None` on overflow or a partial byte.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        n.checked_mul(self.bits())
            .filter(|b| b.is_multiple_of(8))
            .map(|b| b / 8)
    }

    /// Convert little-endian elements to f32, replacing `out`'s contents. Returns `false`
    /// (and leaves `out` empty) for types other than F32, F16 and BF16.
    pub fn to_f32(self, bytes: &[u8], out: &mut Vec<f32>) -> bool {
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
            _ => return false,
        }
        true
    }

    /// Write f32 values as little-endian F32, F16 or BF16 (round to nearest even) into
    /// `out`; returns `false` for other types.
    pub fn encode_f32(self, vals: &[f32], out: &mut [u8]) -> bool {
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
            _ => return false,
        }
        true
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DType::from_name(s).ok_or_else(|| format!("unknown dtype `{s}`"))
    }
}

/// A ggml type with one value per element has a `DType`; block-quantized ones
/// (Q4_0, Q4_K, IQ2_XS, ...) do not, and the error returns them.
impl TryFrom<GgmlType> for DType {
    type Error = GgmlType;
    fn try_from(g: GgmlType) -> Result<Self, GgmlType> {
        Ok(match g {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            GgmlType::F64 => DType::F64,
            GgmlType::I8 => DType::I8,
            GgmlType::I16 => DType::I16,
            GgmlType::I32 => DType::I32,
            GgmlType::I64 => DType::I64,
            other => return Err(other),
        })
    }
}

/// The ggml type storing this dtype, for the types ggml has (it has no unsigned,
/// bool, FP8, complex or sub-byte element types); the error returns the dtype.
impl TryFrom<DType> for GgmlType {
    type Error = DType;
    fn try_from(d: DType) -> Result<Self, DType> {
        Ok(match d {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::F64 => GgmlType::F64,
            DType::I8 => GgmlType::I8,
            DType::I16 => GgmlType::I16,
            DType::I32 => GgmlType::I32,
            DType::I64 => GgmlType::I64,
            other => return Err(other),
        })
    }
}

/// The `safetensors` crate's dtype (its enum is non-exhaustive: a type added upstream
/// that this build does not know is returned as the error).
impl TryFrom<::safetensors::Dtype> for DType {
    type Error = ::safetensors::Dtype;
    fn try_from(d: ::safetensors::Dtype) -> Result<Self, ::safetensors::Dtype> {
        use ::safetensors::Dtype as S;
        Ok(match d {
            S::BOOL => DType::BOOL,
            S::U8 => DType::U8,
            S::I8 => DType::I8,
            S::F8_E5M2 => DType::F8_E5M2,
            S::F8_E4M3 => DType::F8_E4M3,
            S::F8_E8M0 => DType::F8_E8M0,
            S::F8_E4M3FNUZ => DType::F8_E4M3FNUZ,
            S::F8_E5M2FNUZ => DType::F8_E5M2FNUZ,
            S::I16 => DType::I16,
            S::U16 => DType::U16,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I32 => DType::I32,
            S::U32 => DType::U32,
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::I64 => DType::I64,
            S::U64 => DType::U64,
            S::C64 => DType::C64,
            S::F4 => DType::F4,
            S::F6_E2M3 => DType::F6_E2M3,
            S::F6_E3M2 => DType::F6_E3M2,
            other => return Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_agree_with_the_safetensors_crate() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            assert_eq!(d.name().parse::<DType>(), Ok(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
            let s: ::safetensors::Dtype = serde_json::from_str(&format!("\"{d}\"")).unwrap();
            assert_eq!(DType::try_from(s), Ok(d));
            assert_eq!(s.bitsize() as u64, d.bits(), "{d}");
        }
        assert!(DType::from_name("Q4_K").is_none());
        assert_eq!((DType::F4.size(), DType::F4.bytes_for(3)), (0, None));
        assert_eq!(DType::F4.bytes_for(4), Some(2));
    }

    #[test]
    fn ggml_conversions_are_inverse_where_both_exist() {
        let mut n = 0;
        for g in GgmlType::ALL {
            if let Ok(d) = DType::try_from(g) {
                assert_eq!(GgmlType::try_from(d), Ok(g));
                assert_eq!(d.name(), g.name());
                n += 1;
            }
        }
        assert_eq!(n, 8);
        assert_eq!(DType::try_from(GgmlType::Q4_1), Err(GgmlType::Q4_1));
        assert_eq!(GgmlType::try_from(DType::U8), Err(DType::U8));
    }

    #[test]
    fn f32_conversions() {
        let vals = [1.0f32, -2.5, 0.0];
        for d in [DType::F32, DType::F16, DType::BF16] {
            let mut b = vec![0u8; 3 * d.size()];
            assert!(d.encode_f32(&vals, &mut b));
            let mut back = Vec::new();
            assert!(d.to_f32(&b, &mut back));
            assert_eq!(back, vals);
        }
        let mut out = vec![9.0];
        assert!(!DType::I32.to_f32(&[0; 4], &mut out));
        assert!(out.is_empty());
    }
}
