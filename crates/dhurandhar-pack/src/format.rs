//! The `.dhp` container: header, chunk data, JSON index, footer. See docs/PACK_FORMAT.md.
//!
//! ```text
//! [0..8)    magic  89 'D' 'H' 'P' 0D 0A 1A 0A
//! [8..12)   format version, u32 LE (1)
//! [12..16)  flags, u32 LE (0; any other value is refused)
//! [16..64)  reserved, zero
//! [64..X)   chunk blobs, back to back
//! [X..Y)    index: UTF-8 JSON ([`Index`])
//! [Y..Y+32) footer: index offset u64, index length u64, xxh3-64 of the index u64,
//!           footer magic "DHPINDEX"
//! ```
//!
//! The footer is written last, so a killed writer leaves no file that opens.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::dtype::{DType, PackDType};
use crate::error::{PackError, Result};
use crate::quant::{QuantConfig, QuantStats};

/// First eight bytes of every pack.
pub const MAGIC: [u8; 8] = [0x89, b'D', b'H', b'P', 0x0d, 0x0a, 0x1a, 0x0a];
/// Last eight bytes of every complete pack.
pub const FOOTER_MAGIC: [u8; 8] = *b"DHPINDEX";
/// The newest format version this build reads and writes. Version 2 added GGUF packs
/// (the index's `gguf` and `ggml` fields, blob tag 5); packs of other checkpoints are
/// still written as version 1, which every earlier reader opens.
pub const VERSION: u32 = 2;
/// The version of packs that hold no GGUF.
pub const VERSION_1: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const FOOTER_LEN: usize = 32;
/// Default raw bytes per chunk: large enough to amortise per-chunk headers, small enough
/// for parallel decode and fine-grained streaming.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
/// Most JSON values an index may hold (64 per tensor at the tensor limit: room for
/// quantization records and many chunks each), counted before the index is parsed.
pub const MAX_INDEX_NODES: u64 = 64 * dhurandhar_checkpoint::safetensors::MAX_TENSORS as u64;
/// Largest chunk size accepted (bounds every per-chunk allocation on read).
pub const MAX_CHUNK_SIZE: u64 = 1 << 28;
/// Most zero padding a GGUF pack holds before, between or after the GGUF's tensors
/// (GGUF aligns tensors to `general.alignment`, 32 bytes by default): with it, the GGUF
/// length a reader allocates for is bounded by the tensors the pack stores.
pub const MAX_GGUF_GAP: u64 = 1 << 20;
/// Most a GGUF header blob may expand (its bytes are metadata and vocabulary text, which
/// zstd shrinks a few times, not hundreds).
const MAX_HEADER_EXPANSION: u64 = 256;

/// A full pack or a delta against a base checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackKind {
    Pack,
    Delta,
}

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Byte planes, entropy coded; bit-exact.
    Lossless,
    /// Quantized base + sparse residual; lossy.
    QuantResidual,
    /// XOR / difference against the base tensor (per chunk); bit-exact given the base.
    Delta,
    /// Identical to the base tensor; no chunks.
    Unchanged,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lossless => "lossless",
            Mode::QuantResidual => "quant-residual",
            Mode::Delta => "delta",
            Mode::Unchanged => "unchanged",
        }
    }
}

/// Position of one chunk blob: `[offset, length, xxh3-64 of the blob]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub u64, pub u64, pub u64);

impl ChunkRef {
    pub fn offset(&self) -> u64 {
        self.0
    }
    pub fn len(&self) -> u64 {
        self.1
    }
    pub fn is_empty(&self) -> bool {
        self.1 == 0
    }
    pub fn hash(&self) -> u64 {
        self.2
    }
}

/// Quantization parameters and measured error of a quant-residual tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantInfo {
    #[serde(flatten)]
    pub config: QuantConfig,
    pub rows: u64,
    pub cols: u64,
    pub rows_per_chunk: u64,
    pub stats: QuantStats,
}

/// Why a delta stores a tensor whole, or how its chunks were coded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaInfo {
    /// "added", "reshaped", "dtype-changed" for tensors stored whole; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_whole: Option<String>,
    /// Chunks coded as XOR of bit patterns.
    pub xor_chunks: u64,
    /// Chunks coded as zig-zag integer difference.
    pub sub_chunks: u64,
    /// Total bytes had every chunk used XOR / difference (the per-dtype measurement).
    pub xor_bytes: u64,
    pub sub_bytes: u64,
}

/// One tensor of the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub mode: Mode,
    /// Bytes of the original tensor.
    pub raw_bytes: u64,
    /// xxh3-64 of the original tensor bytes (restores are checked against it).
    pub xxh3: u64,
    /// Delta only: xxh3-64 of the base tensor this delta applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_xxh3: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<QuantInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaInfo>,
    /// GGUF packs: what the tensor is in the GGUF. The entry itself is a byte tensor
    /// (`u8`, shape `[raw_bytes]`) whose chunks hold whole blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ggml: Option<GgmlTensor>,
    pub chunks: Vec<ChunkRef>,
}

/// A GGUF tensor held by a GGUF pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GgmlTensor {
    /// ggml type name as llama.cpp prints it (`Q4_K`, `F32`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// ggml order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Offset of the tensor's first byte in the GGUF file.
    pub offset: u64,
}

impl GgmlTensor {
    /// The ggml type (checked known when the index is validated).
    pub fn ggml_type(&self) -> Option<dhurandhar_checkpoint::gguf::GgmlType> {
        dhurandhar_checkpoint::gguf::GgmlType::from_name(&self.type_name)
    }
}

/// What a GGUF pack needs to give the GGUF file back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GgufLayout {
    /// The GGUF's bytes before its tensor data (header, metadata with the tokenizer,
    /// tensor infos, padding), as one zstd-coded blob.
    pub header: ChunkRef,
    /// Length of that prefix: where the tensor data section starts.
    pub data_offset: u64,
    /// Length of the GGUF file.
    pub file_bytes: u64,
    /// xxh3-64 of the whole GGUF file (restores are checked against it).
    pub file_xxh3: u64,
}

impl TensorEntry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Stored bytes (sum of chunk blobs).
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }

    /// Stored bits per weight, counted from bytes.
    pub fn bits_per_weight(&self) -> f64 {
        let n = self.weights();
        if n == 0 {
            0.0
        } else {
            self.stored_bytes() as f64 * 8.0 / n as f64
        }
    }

    /// Elements covered by each chunk (the last may be shorter).
    pub fn chunk_elems(&self, chunk_size: u64) -> u64 {
        match (&self.quant, &self.ggml) {
            (Some(q), _) => q.rows_per_chunk * q.cols,
            (None, Some(g)) => match g.ggml_type() {
                Some(t) => crate::blocks::chunk_bytes(t, &g.dims, chunk_size),
                None => chunk_size,
            },
            (None, None) => (chunk_size / self.dtype.size() as u64).max(1),
        }
    }

    /// Weights the tensor holds (a GGUF tensor's elements, not its bytes).
    pub fn weights(&self) -> u64 {
        match &self.ggml {
            Some(g) => g.dims.iter().product(),
            None => self.numel(),
        }
    }

    /// Number of chunks this tensor must have.
    pub fn expected_chunks(&self, chunk_size: u64) -> u64 {
        match self.mode {
            Mode::Unchanged => 0,
            _ => {
                let per = self.chunk_elems(chunk_size).max(1);
                self.numel().div_ceil(per)
            }
        }
    }

    /// Element range of chunk `c`.
    pub fn chunk_range(&self, chunk_size: u64, c: usize) -> std::ops::Range<u64> {
        let per = self.chunk_elems(chunk_size);
        let s = (c as u64 * per).min(self.numel());
        s..(s + per).min(self.numel())
    }
}

/// The index stored before the footer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub kind: PackKind,
    pub chunk_size: u64,
    /// File name of the packed checkpoint (informational).
    #[serde(default)]
    pub source: String,
    /// Delta only: file name of the base checkpoint (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_source: Option<String>,
    /// safetensors `__metadata__`, restored on unpack.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub tensors: Vec<TensorEntry>,
    /// Delta only: tensors of the base that the new checkpoint no longer has.
    #[serde(default)]
    pub removed: Vec<String>,
    /// GGUF packs: the rest of the GGUF file (absent for safetensors packs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufLayout>,
}

/// Streaming writer: header, then chunks as they are produced, then index + footer, all
/// into a [`dhurandhar_io::AtomicFile`] beside the destination that is renamed into place
/// on [`finish`]. A writer dropped (or killed) before `finish` leaves no output.
///
/// [`finish`]: PackWriter::finish
pub struct PackWriter {
    path: PathBuf,
    out: BufWriter<dhurandhar_io::AtomicFile>,
    pos: u64,
}

impl PackWriter {
    /// Start writing `path`. Callers that know their inputs should first refuse an output
    /// that is one of them with [`dhurandhar_io::check_output`].
    pub fn create(path: &Path) -> Result<Self> {
        Self::create_version(path, VERSION_1)
    }

    /// [`PackWriter::create`] for a pack of format `version` (2 for a GGUF pack).
    pub(crate) fn create_version(path: &Path, version: u32) -> Result<Self> {
        let tmp = dhurandhar_io::AtomicFile::create(path)?;
        let mut w = PackWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, tmp),
            pos: 0,
        };
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&version.to_le_bytes());
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| PackError::io(&self.path, e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Append a chunk blob whose xxh3-64 the caller computed (in parallel).
    pub fn write_chunk(&mut self, blob: &[u8], hash: u64) -> Result<ChunkRef> {
        let at = self.pos;
        self.write(blob)?;
        Ok(ChunkRef(at, blob.len() as u64, hash))
    }

    /// Write index and footer, fsync, and atomically rename over the destination.
    pub fn finish(mut self, index: &Index) -> Result<u64> {
        let json =
            serde_json::to_vec(index).map_err(|e| PackError::input(&self.path, e.to_string()))?;
        let at = self.pos;
        self.write(&json)?;
        let mut footer = [0u8; FOOTER_LEN];
        footer[..8].copy_from_slice(&at.to_le_bytes());
        footer[8..16].copy_from_slice(&(json.len() as u64).to_le_bytes());
        footer[16..24].copy_from_slice(&xxh3_64(&json).to_le_bytes());
        footer[24..].copy_from_slice(&FOOTER_MAGIC);
        self.write(&footer)?;
        let path = self.path.clone();
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| PackError::io(&path, e.into_error()))?;
        tmp.commit()?;
        Ok(self.pos)
    }
}

/// A pack opened for random access. The file is memory-mapped; reading a tensor touches
/// only its chunks' pages.
pub struct PackReader {
    path: PathBuf,
    map: memmap2::Mmap,
    index: Index,
    by_name: std::collections::HashMap<String, usize>,
}

impl std::fmt::Debug for PackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackReader")
            .field("path", &self.path)
            .field("tensors", &self.index.tensors.len())
            .finish()
    }
}

/// Parse and fully validate a pack held in memory (also the fuzz entry point).
pub fn parse_index(bytes: &[u8], path: &Path) -> Result<Index> {
    let version = check_header(
        &bytes[..bytes.len().min(HEADER_LEN)],
        bytes.len() as u64,
        path,
    )?;
    let (off, len, hash) =
        parse_footer(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64, path)?;
    parse_json(
        &bytes[off as usize..(off + len) as usize],
        hash,
        off,
        version,
        path,
    )
}

/// Check the first [`HEADER_LEN`] bytes (fewer when the file is shorter) of a pack of
/// `file_len` bytes: magic, version, flags, and room for a footer. Returns the version.
pub(crate) fn check_header(head: &[u8], file_len: u64, path: &Path) -> Result<u32> {
    let trunc = |d: &str| PackError::Truncated {
        path: path.to_path_buf(),
        detail: d.to_string(),
    };
    if head.len() < 8 || head[..8] != MAGIC {
        if head.len() < 8 && MAGIC.starts_with(head) {
            return Err(trunc("shorter than the header"));
        }
        return Err(PackError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if head.len() < HEADER_LEN {
        return Err(trunc("shorter than the header"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4"));
    if !(VERSION_1..=VERSION).contains(&version) {
        return Err(PackError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    if head[12..HEADER_LEN].iter().any(|&b| b != 0) {
        return Err(PackError::BadIndex {
            path: path.to_path_buf(),
            detail: "unknown header flags or non-zero reserved bytes".into(),
        });
    }
    if file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(trunc("no footer"));
    }
    Ok(version)
}

/// The index's `(offset, length, xxh3)` from the footer of a pack of `file_len` bytes
/// (whose header passed [`check_header`]).
pub(crate) fn parse_footer(foot: &[u8], file_len: u64, path: &Path) -> Result<(u64, u64, u64)> {
    let trunc = |d: &str| PackError::Truncated {
        path: path.to_path_buf(),
        detail: d.to_string(),
    };
    if foot[24..] != FOOTER_MAGIC {
        return Err(trunc("footer missing (was the write interrupted?)"));
    }
    let off = u64::from_le_bytes(foot[..8].try_into().expect("8"));
    let len = u64::from_le_bytes(foot[8..16].try_into().expect("8"));
    let hash = u64::from_le_bytes(foot[16..24].try_into().expect("8"));
    let index_end = file_len - FOOTER_LEN as u64;
    if off < HEADER_LEN as u64 || off.checked_add(len) != Some(index_end) {
        return Err(trunc("index position does not match the file length"));
    }
    Ok((off, len, hash))
}

/// Check, parse and validate the index JSON found at `off` (where the chunk data ends)
/// of a pack of format `version`.
pub(crate) fn parse_json(
    json: &[u8],
    hash: u64,
    off: u64,
    version: u32,
    path: &Path,
) -> Result<Index> {
    let bad = |d: String| PackError::BadIndex {
        path: path.to_path_buf(),
        detail: d,
    };
    if xxh3_64(json) != hash {
        return Err(PackError::IndexChecksum {
            path: path.to_path_buf(),
        });
    }
    // Count before building: a hostile index of millions of tiny entries would take
    // gigabytes as structs (and more in reports) while its text is only megabytes.
    use dhurandhar_checkpoint::safetensors::{count_json, JsonCount, MAX_TENSORS};
    match count_json(json, MAX_INDEX_NODES) {
        JsonCount::OverLimit => {
            return Err(bad(format!(
                "index holds more than {MAX_INDEX_NODES} JSON values; refused before parsing"
            )))
        }
        JsonCount::Counted { largest_child, .. } if largest_child > MAX_TENSORS as u64 => {
            return Err(bad(format!(
                "index lists {largest_child} entries; a pack may hold at most {MAX_TENSORS} tensors"
            )))
        }
        _ => {}
    }
    let index: Index = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    if version < 2 && index.gguf.is_some() {
        return Err(bad("a GGUF pack must be format version 2".into()));
    }
    validate(&index, off).map_err(bad)?;
    Ok(index)
}

fn validate(index: &Index, data_end: u64) -> std::result::Result<(), String> {
    if index.chunk_size == 0 || index.chunk_size > MAX_CHUNK_SIZE {
        return Err(format!("chunk size {} out of range", index.chunk_size));
    }
    let mut names = std::collections::HashSet::new();
    for t in &index.tensors {
        if !names.insert(t.name.as_str()) {
            return Err(format!("tensor `{}` listed twice", t.name));
        }
        if !t.dtype.is_whole_bytes() {
            return Err(format!(
                "tensor `{}`: dtype {} is not a whole number of bytes per element",
                t.name, t.dtype
            ));
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{}`: shape overflows", t.name))?;
        if numel.checked_mul(t.dtype.size() as u64) != Some(t.raw_bytes) {
            return Err(format!(
                "tensor `{}`: raw_bytes does not match shape and dtype",
                t.name
            ));
        }
        match (t.mode, &t.quant) {
            (Mode::QuantResidual, Some(q)) => {
                q.config
                    .validate()
                    .map_err(|e| format!("tensor `{}`: {e}", t.name))?;
                if !t.dtype.is_quantizable()
                    || q.rows.checked_mul(q.cols) != Some(numel)
                    || q.rows_per_chunk == 0
                    || q.rows_per_chunk
                        .checked_mul(q.cols)
                        .is_none_or(|e| e > index.chunk_size)
                {
                    return Err(format!(
                        "tensor `{}`: inconsistent quantization layout",
                        t.name
                    ));
                }
            }
            (Mode::QuantResidual, None) => {
                return Err(format!(
                    "tensor `{}`: quant-residual without parameters",
                    t.name
                ))
            }
            (_, Some(_)) => {
                return Err(format!(
                    "tensor `{}`: quantization parameters on a lossless tensor",
                    t.name
                ))
            }
            _ => {}
        }
        if matches!(t.mode, Mode::Delta | Mode::Unchanged)
            && (index.kind != PackKind::Delta || t.base_xxh3.is_none())
        {
            return Err(format!(
                "tensor `{}`: delta mode outside a delta pack",
                t.name
            ));
        }
        if t.chunks.len() as u64 != t.expected_chunks(index.chunk_size) {
            return Err(format!(
                "tensor `{}`: {} chunks listed, {} expected",
                t.name,
                t.chunks.len(),
                t.expected_chunks(index.chunk_size)
            ));
        }
        for c in &t.chunks {
            if !in_data(c, data_end) {
                return Err(format!(
                    "tensor `{}`: chunk outside the data region",
                    t.name
                ));
            }
        }
    }
    validate_gguf(index, data_end)
}

fn in_data(c: &ChunkRef, data_end: u64) -> bool {
    c.0 >= HEADER_LEN as u64 && c.0.checked_add(c.1).is_some_and(|e| e <= data_end)
}

/// A GGUF pack's tensors must be whole-block byte tensors that sit, without overlap,
/// inside the GGUF they restore; other packs hold no GGUF tensors.
fn validate_gguf(index: &Index, data_end: u64) -> std::result::Result<(), String> {
    let Some(g) = &index.gguf else {
        return match index.tensors.iter().find(|t| t.ggml.is_some()) {
            Some(t) => Err(format!(
                "tensor `{}`: a GGUF tensor in a non-GGUF pack",
                t.name
            )),
            None => Ok(()),
        };
    };
    if index.kind != PackKind::Pack {
        return Err("a delta cannot hold a GGUF".into());
    }
    if !in_data(&g.header, data_end) || g.data_offset > g.file_bytes {
        return Err("GGUF header blob or data offset out of range".into());
    }
    // Readers allocate what these claim: bound them by what the pack holds.
    if g.data_offset > MAX_HEADER_EXPANSION * g.header.len() + (1 << 20) {
        return Err(format!(
            "a GGUF header of {} bytes cannot come from a {}-byte blob",
            g.data_offset,
            g.header.len()
        ));
    }
    let mut spans = Vec::with_capacity(index.tensors.len());
    for t in &index.tensors {
        let bad = |d: &str| Err(format!("tensor `{}`: {d}", t.name));
        let Some(gt) = &t.ggml else {
            return bad("a GGUF pack tensor without its ggml type");
        };
        let Some(ty) = gt.ggml_type() else {
            return bad(&format!("unknown ggml type {}", gt.type_name));
        };
        if t.mode != Mode::Lossless || t.dtype != DType::U8 || t.shape != [t.raw_bytes] {
            return bad("a GGUF tensor must be stored lossless as bytes");
        }
        if gt.dims.is_empty() || gt.dims.len() > 4 || ty.tensor_bytes(&gt.dims) != Some(t.raw_bytes)
        {
            return bad("dims, type and byte count disagree");
        }
        match gt.offset.checked_add(t.raw_bytes) {
            Some(end) if gt.offset >= g.data_offset && end <= g.file_bytes => {
                spans.push((gt.offset, end))
            }
            _ => return bad("lies outside the GGUF's data section"),
        }
    }
    spans.sort_unstable();
    let mut at = g.data_offset;
    for (start, end) in spans.into_iter().chain([(g.file_bytes, g.file_bytes)]) {
        if start < at {
            return Err("two GGUF tensors overlap".into());
        }
        if start - at > MAX_GGUF_GAP {
            return Err(format!(
                "{} bytes of padding at GGUF offset {at}; at most {MAX_GGUF_GAP} between tensors",
                start - at
            ));
        }
        at = end;
    }
    Ok(())
}

impl PackReader {
    /// Open and validate a pack (header, footer, index checksum, index consistency).
    /// Chunk checksums are checked when a chunk is read, or all at once by [`verify`].
    ///
    /// [`verify`]: PackReader::verify
    pub fn open(path: &Path) -> Result<Self> {
        // Not File::open: a FIFO would block it, and a directory fails late and vaguely.
        let file = dhurandhar_io::open_regular(path)?;
        let len = file.metadata().map_err(|e| PackError::io(path, e))?.len();
        if len == 0 {
            return Err(PackError::Truncated {
                path: path.to_path_buf(),
                detail: "empty file".into(),
            });
        }
        // SAFETY: the map is read-only; a concurrent truncation by another process is
        // outside what any mmap reader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| PackError::io(path, e))?;
        let index = parse_index(&map, path)?;
        let by_name = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(PackReader {
            path: path.to_path_buf(),
            map,
            index,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn tensors(&self) -> &[TensorEntry] {
        &self.index.tensors
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorEntry> {
        self.by_name
            .get(name)
            .map(|&i| &self.index.tensors[i])
            .ok_or_else(|| PackError::NoTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The blob at `r` if its checksum matches.
    pub(crate) fn blob(&self, r: &ChunkRef) -> Option<&[u8]> {
        let blob = self
            .map
            .get(r.0 as usize..(r.0 as usize).checked_add(r.1 as usize)?)?;
        (xxh3_64(blob) == r.2).then_some(blob)
    }

    /// The checksum-verified blob of chunk `c` of `t`.
    pub(crate) fn chunk_blob(&self, t: &TensorEntry, c: usize) -> Result<&[u8]> {
        let r = t.chunks.get(c).ok_or_else(|| PackError::ChunkDecode {
            path: self.path.clone(),
            tensor: t.name.clone(),
            chunk: c,
            detail: "no such chunk".into(),
        })?;
        let blob = &self.map[r.0 as usize..(r.0 + r.1) as usize];
        if xxh3_64(blob) != r.2 {
            return Err(PackError::ChunkChecksum {
                path: self.path.clone(),
                tensor: t.name.clone(),
                chunk: c,
            });
        }
        Ok(blob)
    }

    pub(crate) fn decode_err(&self, t: &TensorEntry, c: usize, detail: String) -> PackError {
        PackError::ChunkDecode {
            path: self.path.clone(),
            tensor: t.name.clone(),
            chunk: c,
            detail,
        }
    }
}
