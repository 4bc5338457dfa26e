//! GGUF (v2, v3) header reader: metadata key/values, tensor infos, alignment and the
//! data offset. Only the header is decoded; tensor data stays in the (memory-mapped)
//! file and is located by absolute offset.
//!
//! Every count read from the file is bounded by the bytes that remain before anything
//! is allocated, so a 40-byte file claiming 2^60 tensors fails fast instead of
//! exhausting memory.

use std::path::Path;

use crate::error::CheckpointError;
use crate::gguf_write::{put_str, put_value};
use crate::mmap::map_file;

/// `GGUF` as a little-endian u32.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Default data alignment when `general.alignment` is absent (GGUF spec).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but never deep in practice; bound recursion.
const MAX_ARRAY_DEPTH: u32 = 4;

/// A ggml tensor element type, with its on-disk block layout.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    /// Interleaved Q4_0 (legacy files only; same bytes per block as Q4_0).
    Q4_0_4_4,
    Q4_0_4_8,
    Q4_0_8_8,
    TQ1_0,
    TQ2_0,
    /// Interleaved IQ4_NL (legacy files only; same bytes per block as IQ4_NL).
    IQ4NL_4_4,
    IQ4NL_4_8,
    IQ4NL_8_8,
    MXFP4,
}

/// Super-block size of the k-quants and i-quants.
const QK_K: u64 = 256;

impl GgmlType {
    /// Every known type, in ggml id order.
    pub const ALL: [GgmlType; 38] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::IQ2XXS,
        GgmlType::IQ2XS,
        GgmlType::IQ3XXS,
        GgmlType::IQ1S,
        GgmlType::IQ4NL,
        GgmlType::IQ3S,
        GgmlType::IQ2S,
        GgmlType::IQ4XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1M,
        GgmlType::BF16,
        GgmlType::Q4_0_4_4,
        GgmlType::Q4_0_4_8,
        GgmlType::Q4_0_8_8,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::IQ4NL_4_4,
        GgmlType::IQ4NL_4_8,
        GgmlType::IQ4NL_8_8,
        GgmlType::MXFP4,
    ];

    /// The ggml type id (`enum ggml_type`). Ids 4 and 5 (Q4_2, Q4_3) were removed upstream.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            IQ2XXS => 16,
            IQ2XS => 17,
            IQ3XXS => 18,
            IQ1S => 19,
            IQ4NL => 20,
            IQ3S => 21,
            IQ2S => 22,
            IQ4XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1M => 29,
            BF16 => 30,
            Q4_0_4_4 => 31,
            Q4_0_4_8 => 32,
            Q4_0_8_8 => 33,
            TQ1_0 => 34,
            TQ2_0 => 35,
            IQ4NL_4_4 => 36,
            IQ4NL_4_8 => 37,
            IQ4NL_8_8 => 38,
            MXFP4 => 39,
        }
    }

    /// The type with ggml id `id`, if known.
    /// The type whose ggml name is `name` (`"Q4_K"`, `"q4_k"`, `"F32"`), ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn from_u32(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | F64 | I8 | I16 | I32 | I64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4NL | MXFP4 => 32,
            Q4_0_4_4 | Q4_0_4_8 | Q4_0_8_8 | IQ4NL_4_4 | IQ4NL_4_8 | IQ4NL_8_8 => 32,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K => QK_K,
            IQ2XXS | IQ2XS | IQ3XXS | IQ1S | IQ3S | IQ2S | IQ4XS | IQ1M | TQ1_0 | TQ2_0 => QK_K,
        }
    }

    /// Bytes per block, from the block structs of ggml-common.h (`h` = one f16).
    pub fn type_size(self) -> u64 {
        use GgmlType::*;
        const H: u64 = 2; // ggml_half
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            F64 => 8,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 => 8,
            // d, 16 bytes of nibbles
            Q4_0 | Q4_0_4_4 | Q4_0_4_8 | Q4_0_8_8 => H + 16,
            // d, m, nibbles
            Q4_1 => 2 * H + 16,
            // d, 4 bytes of high bits, nibbles
            Q5_0 => H + 4 + 16,
            Q5_1 => 2 * H + 4 + 16,
            Q8_0 => H + 32,
            // d, s, 32 int8
            Q8_1 => 2 * H + 32,
            // scales[QK_K/16], qs[QK_K/4], d, dmin
            Q2K => QK_K / 16 + QK_K / 4 + 2 * H,
            // hmask[QK_K/8], qs[QK_K/4], scales[12], d
            Q3K => QK_K / 8 + QK_K / 4 + 12 + H,
            // d, dmin, scales[12], qs[QK_K/2]
            Q4K => 2 * H + 12 + QK_K / 2,
            // d, dmin, scales[12], qh[QK_K/8], qs[QK_K/2]
            Q5K => 2 * H + 12 + QK_K / 8 + QK_K / 2,
            // ql[QK_K/2], qh[QK_K/4], scales[QK_K/16], d
            Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + H,
            // float d, qs[QK_K], bsums[QK_K/16] as int16
            Q8K => 4 + QK_K + 2 * (QK_K / 16),
            // d, qs[QK_K/8] as u16
            IQ2XXS => H + 2 * (QK_K / 8),
            // d, qs[QK_K/8] as u16, scales[QK_K/32]
            IQ2XS => H + 2 * (QK_K / 8) + QK_K / 32,
            // d, qs[3*QK_K/8]
            IQ3XXS => H + 3 * QK_K / 8,
            // d, qs[QK_K/8], qh[QK_K/32] as u16
            IQ1S => H + QK_K / 8 + 2 * (QK_K / 32),
            // d, qs[16]
            IQ4NL | IQ4NL_4_4 | IQ4NL_4_8 | IQ4NL_8_8 => H + 16,
            // d, qs[QK_K/4], qh[QK_K/32], signs[QK_K/8], scales[QK_K/64]
            IQ3S => H + QK_K / 4 + QK_K / 32 + QK_K / 8 + QK_K / 64,
            // d, qs[QK_K/4], qh[QK_K/32], scales[QK_K/32]
            IQ2S => H + QK_K / 4 + QK_K / 32 + QK_K / 32,
            // d, scales_h u16, scales_l[QK_K/64], qs[QK_K/2]
            IQ4XS => H + 2 + QK_K / 64 + QK_K / 2,
            // qs[QK_K/8], qh[QK_K/16], scales[QK_K/32] (no d field)
            IQ1M => QK_K / 8 + QK_K / 16 + QK_K / 32,
            // qs[(QK_K - 4*QK_K/64)/5], qh[QK_K/64], d
            TQ1_0 => (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + H,
            // qs[QK_K/4], d
            TQ2_0 => QK_K / 4 + H,
            // e8m0 exponent, 16 bytes of e2m1 nibbles
            MXFP4 => 1 + 16,
        }
    }

    /// Name as llama.cpp / gguf-py print it.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            Q4_0_4_4 => "Q4_0_4_4",
            Q4_0_4_8 => "Q4_0_4_8",
            Q4_0_8_8 => "Q4_0_8_8",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            IQ4NL_4_4 => "IQ4_NL_4_4",
            IQ4NL_4_8 => "IQ4_NL_4_8",
            IQ4NL_8_8 => "IQ4_NL_8_8",
            MXFP4 => "MXFP4",
        }
    }

    /// Effective bits per weight (scales included).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Stored bytes of a tensor with ggml shape `shape` (`shape[0]` = row length), or
    /// `None` when the row length is not a whole number of blocks or the size overflows.
    pub fn tensor_bytes(self, shape: &[u64]) -> Option<u64> {
        let row = *shape.first().unwrap_or(&1);
        if !row.is_multiple_of(self.block_size()) {
            return None;
        }
        let mut n = (row / self.block_size()).checked_mul(self.type_size())?;
        for &d in shape.iter().skip(1) {
            n = n.checked_mul(d)?;
        }
        Some(n)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value's type id in the GGUF format (`gguf_type`).
    pub fn type_id(&self) -> u32 {
        use GgufValue::*;
        match self {
            U8(_) => 0,
            I8(_) => 1,
            U16(_) => 2,
            I16(_) => 3,
            U32(_) => 4,
            I32(_) => 5,
            F32(_) => 6,
            Bool(_) => 7,
            String(_) => 8,
            Array(_) => 9,
            U64(_) => 10,
            I64(_) => 11,
            F64(_) => 12,
        }
    }

    /// Any non-negative integer (or bool) as u64.
    pub fn as_u64(&self) -> Option<u64> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v as u64),
            U16(v) => Some(v as u64),
            U32(v) => Some(v as u64),
            U64(v) => Some(v),
            I8(v) => u64::try_from(v).ok(),
            I16(v) => u64::try_from(v).ok(),
            I32(v) => u64::try_from(v).ok(),
            I64(v) => u64::try_from(v).ok(),
            Bool(b) => Some(b as u64),
            _ => None,
        }
    }

    /// Any integer as i64.
    pub fn as_i64(&self) -> Option<i64> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v as i64),
            U16(v) => Some(v as i64),
            U32(v) => Some(v as i64),
            U64(v) => i64::try_from(v).ok(),
            I8(v) => Some(v as i64),
            I16(v) => Some(v as i64),
            I32(v) => Some(v as i64),
            I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any number as f32 (integers converted).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(v) => Some(v),
            GgufValue::F64(v) => Some(v as f32),
            _ => self.as_i64().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => self.as_u64().map(|v| v != 0),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// GGUF type name, for listings.
    pub fn type_name(&self) -> &'static str {
        use GgufValue::*;
        match self {
            U8(_) => "u8",
            I8(_) => "i8",
            U16(_) => "u16",
            I16(_) => "i16",
            U32(_) => "u32",
            I32(_) => "i32",
            U64(_) => "u64",
            I64(_) => "i64",
            F32(_) => "f32",
            F64(_) => "f64",
            Bool(_) => "bool",
            String(_) => "string",
            Array(_) => "array",
        }
    }
}

/// One tensor of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `shape[0]` is the fastest-varying dimension (row length).
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    /// Stored bytes (blocks and scales).
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensorInfo>,
}

/// Bounds-checked little-endian reader; every error carries the offset.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> CheckpointError {
        CheckpointError::malformed(self.origin, at as u64, msg)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CheckpointError> {
        if n > self.remaining() {
            return Err(self.err(
                self.pos,
                format!(
                    "truncated: {what} needs {n} bytes but only {} remain",
                    self.remaining()
                ),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CheckpointError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_item` bytes long, bounded by what remains.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, CheckpointError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let cap = (self.remaining() / min_item.max(1)) as u64;
        if n > cap {
            return Err(self.err(
                at,
                format!(
                    "{what} is {n}, but the {} remaining bytes can hold at most {cap} (truncated file or corrupt count)",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, CheckpointError> {
        let at = self.pos;
        let len = self.count(&format!("length of {what}"), 1)?;
        let raw = self.take(len, what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.err(
                at + 8 + e.valid_up_to(),
                format!("{what} is not valid UTF-8"),
            )),
        }
    }

    /// Minimum encoded size of a value of GGUF type `t` (used to bound array counts).
    fn min_value_size(t: u32) -> usize {
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8,
            9 => 12,
            _ => 1,
        }
    }

    fn value(&mut self, t: u32, at: usize, depth: u32) -> Result<GgufValue, CheckpointError> {
        use GgufValue as V;
        Ok(match t {
            0 => V::U8(self.array::<1>("u8 value")?[0]),
            1 => V::I8(self.array::<1>("i8 value")?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => V::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => V::U32(u32::from_le_bytes(self.array("u32 value")?)),
            5 => V::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => V::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => {
                let b = self.array::<1>("bool value")?[0];
                if b > 1 {
                    return Err(self.err(self.pos - 1, format!("bool value is {b}, not 0 or 1")));
                }
                V::Bool(b == 1)
            }
            8 => V::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(
                        self.err(at, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"))
                    );
                }
                let et_at = self.pos;
                let et = self.u32("array element type")?;
                if et > 12 {
                    return Err(self.err(et_at, format!("unknown array element type {et}")));
                }
                let n = self.count("array length", Self::min_value_size(et))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let item_at = self.pos;
                    items.push(self.value(et, item_at, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(u64::from_le_bytes(self.array("u64 value")?)),
            11 => V::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => V::F64(f64::from_le_bytes(self.array("f64 value")?)),
            other => return Err(self.err(at, format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Parse the header from `bytes` (the whole file, or at least its header).
    /// `origin` names the file in errors. Tensor ranges are not checked against the
    /// file length here; [`GgufFile::open`] does that via [`GgufFile::check_ranges`].
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, CheckpointError> {
        let mut r = Reader {
            bytes,
            pos: 0,
            origin,
        };
        let magic = r.array::<4>("magic")?;
        if &magic != GGUF_MAGIC {
            return Err(r.err(
                0,
                format!(
                    "bad magic \"{}\": not a GGUF file (expected \"GGUF\")",
                    magic.escape_ascii()
                ),
            ));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(CheckpointError::unsupported(
                    origin,
                    "GGUF version 1 (32-bit counts, 2023) is not supported; re-convert with a current llama.cpp",
                ))
            }
            v if v.swap_bytes() <= 3 && v.swap_bytes() > 0 => {
                return Err(CheckpointError::unsupported(
                    origin,
                    format!("big-endian GGUF (version {}) is not supported", v.swap_bytes()),
                ))
            }
            v => {
                return Err(r.err(4, format!("unknown GGUF version {v} (supported: 2, 3)")))
            }
        }
        // Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
        let tensors_at = r.pos;
        let n_tensors = r.count("tensor count", 24)?;
        // The same cap as every checkpoint format: the tensor table is built in memory,
        // so a file claiming millions of tensors is refused before any is parsed.
        let max = crate::safetensors::MAX_TENSORS;
        if n_tensors > max {
            return Err(r.err(
                tensors_at,
                format!(
                    "tensor count is {n_tensors}; a checkpoint file may list at most {max} tensors"
                ),
            ));
        }
        // Smallest key/value: empty key (8) + type (4) + one byte.
        let n_kv = r.count("metadata key/value count", 13)?;

        let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(n_kv);
        let mut seen = std::collections::HashSet::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key_at = r.pos;
            let key = r.string("metadata key")?;
            if !seen.insert(key.clone()) {
                return Err(r.err(key_at, format!("duplicate metadata key `{key}`")));
            }
            let t_at = r.pos;
            let t = r.u32("metadata value type")?;
            let value = r.value(t, t_at, 0).map_err(|e| match e {
                CheckpointError::Malformed {
                    path,
                    offset,
                    message,
                } => CheckpointError::Malformed {
                    path,
                    offset,
                    message: format!("{message} (in value of `{key}`)"),
                },
                other => other,
            })?;
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(CheckpointError::malformed(
                        origin,
                        0,
                        format!("general.alignment must be a power of two, got {v:?}"),
                    ))
                }
            },
        };

        struct Raw {
            name: String,
            shape: Vec<u64>,
            ggml_type: GgmlType,
            rel: u64,
            at: usize,
        }
        let mut raws: Vec<Raw> = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let at = r.pos;
            let name = r.string("tensor name")?;
            if !names.insert(name.clone()) {
                return Err(r.err(at, format!("duplicate tensor name `{name}`")));
            }
            let nd_at = r.pos;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims > MAX_DIMS {
                return Err(r.err(
                    nd_at,
                    format!("tensor `{name}` (#{i}) has {n_dims} dimensions; ggml allows at most {MAX_DIMS}"),
                ));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d_at = r.pos;
                let d = r.u64("tensor dimension")?;
                if d > i64::MAX as u64 {
                    return Err(r.err(
                        d_at,
                        format!("tensor `{name}` has dimension {d}, which is negative as int64"),
                    ));
                }
                shape.push(d);
            }
            let t_at = r.pos;
            let t = r.u32("tensor type")?;
            let ggml_type = GgmlType::from_u32(t)
                .ok_or_else(|| r.err(t_at, format!("tensor `{name}` has unknown ggml type {t}")))?;
            let rel = r.u64("tensor data offset")?;
            raws.push(Raw {
                name,
                shape,
                ggml_type,
                rel,
                at,
            });
        }

        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raws.len());
        for raw in raws {
            let n_bytes = raw.ggml_type.tensor_bytes(&raw.shape).ok_or_else(|| {
                r.err(
                    raw.at,
                    format!(
                        "tensor `{}` shape {:?} is not a whole number of {} blocks ({} elements) or is too large",
                        raw.name,
                        raw.shape,
                        raw.ggml_type,
                        raw.ggml_type.block_size()
                    ),
                )
            })?;
            if raw.rel % alignment != 0 {
                return Err(r.err(
                    raw.at,
                    format!(
                        "tensor `{}` data offset {} is not a multiple of the alignment {alignment}",
                        raw.name, raw.rel
                    ),
                ));
            }
            let offset = data_offset
                .checked_add(raw.rel)
                .filter(|o| o.checked_add(n_bytes).is_some())
                .ok_or_else(|| {
                    r.err(
                        raw.at,
                        format!("tensor `{}` data offset {} overflows", raw.name, raw.rel),
                    )
                })?;
            tensors.push(GgufTensorInfo {
                name: raw.name,
                shape: raw.shape,
                ggml_type: raw.ggml_type,
                offset,
                n_bytes,
            });
        }
        Ok(GgufFile {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }

    /// Memory-map `path`, parse its header and check every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let map = map_file(path)?;
        let origin = path.display().to_string();
        let file = Self::parse(&map, &origin)?;
        file.check_ranges(map.len() as u64, &origin)?;
        Ok(file)
    }

    /// Check every tensor's bytes end within a file of `file_len` bytes.
    pub fn check_ranges(&self, file_len: u64, origin: &str) -> Result<(), CheckpointError> {
        if !self.tensors.is_empty() && self.data_offset > file_len {
            return Err(CheckpointError::malformed(
                origin,
                self.data_offset,
                format!("tensor data section starts past the end of the {file_len}-byte file"),
            ));
        }
        for t in &self.tensors {
            let end = t.offset.saturating_add(t.n_bytes);
            if end > file_len {
                return Err(CheckpointError::malformed(
                    origin,
                    t.offset,
                    format!(
                        "tensor `{}` ({} bytes) ends at byte {end}, past the end of the {file_len}-byte file",
                        t.name, t.n_bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bytes of tensor `t` inside `file` (the mapped file this header came from).
    pub fn tensor_data<'a>(&self, t: &GgufTensorInfo, file: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(t.offset).ok()?;
        let end = start.checked_add(usize::try_from(t.n_bytes).ok()?)?;
        file.get(start..end)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `{architecture}.{suffix}`, e.g. `arch_key("block_count")`.
    pub fn arch_get(&self, suffix: &str) -> Option<&GgufValue> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Sum of the stored bytes of every tensor.
    pub fn total_tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }
}

/// Builds GGUF files in memory: hand-made test models for the readers, the engine
/// and the fuzz corpus. Tensor data must match the declared type and shape exactly.
#[derive(Debug, Clone)]
pub struct GgufBuilder {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// A v3 file with the default 32-byte alignment.
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// GGUF version written in the header (2 and 3 share the layout).
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Data alignment; also written as `general.alignment` when not the default.
    pub fn alignment(mut self, a: u64) -> Self {
        self.alignment = a;
        self
    }

    pub fn kv(mut self, key: &str, value: GgufValue) -> Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor; `shape` in ggml order (row length first).
    pub fn tensor(mut self, name: &str, shape: &[u64], t: GgmlType, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), shape.to_vec(), t, data));
        self
    }

    /// Add a tensor filled with a repeating byte pattern of the right length.
    pub fn tensor_filled(self, name: &str, shape: &[u64], t: GgmlType) -> Self {
        let n = t.tensor_bytes(shape).unwrap_or(0) as usize;
        let data = (0..n).map(|i| (i % 251) as u8).collect();
        self.tensor(name, shape, t, data)
    }

    /// Serialise. Fails (naming the tensor) when data does not match type and shape,
    /// or an array mixes element types.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut meta = self.metadata.clone();
        if self.alignment != DEFAULT_ALIGNMENT
            && !meta.iter().any(|(k, _)| k == "general.alignment")
        {
            meta.push((
                "general.alignment".into(),
                GgufValue::U32(self.alignment as u32),
            ));
        }
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            // Refuses arrays that mix element types, naming the key.
            put_value(&mut out, k, v).map_err(|e| e.to_string())?;
        }
        let mut rel = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, shape, t, data) in &self.tensors {
            let want = t.tensor_bytes(shape).ok_or_else(|| {
                format!("tensor `{name}`: shape {shape:?} does not fit {t} blocks")
            })?;
            if want != data.len() as u64 {
                return Err(format!(
                    "tensor `{name}`: {} data bytes, {t} {shape:?} needs {want}",
                    data.len()
                ));
            }
            put_str(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for d in shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.id().to_le_bytes());
            out.extend_from_slice(&rel.to_le_bytes());
            offsets.push(rel);
            rel = (rel + want).div_ceil(self.alignment) * self.alignment;
        }
        let data_start = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(data_start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(data);
        }
        Ok(out)
    }
}
