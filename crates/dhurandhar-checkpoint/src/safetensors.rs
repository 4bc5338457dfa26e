//! safetensors header reader (single files and sharded checkpoints). Only the JSON
//! header is read — through a memory map — so planning never touches the weights.
//!
//! The `safetensors` crate (the reference implementation) decides what is a valid file;
//! when it refuses one, `diagnose` says which byte, field or tensor is wrong, because
//! its own errors often name neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::dtype::DType;
use crate::error::CheckpointError;
use crate::mmap::map_file;

/// Largest header the reference implementation accepts; a larger length is an attack
/// or corruption, not a model.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Most tensors one safetensors file (and one `.dhp` pack) may list. The largest real
/// checkpoints have about 140,000 (a 61-layer, 384-expert MoE with FP8 scales, all
/// shards together); a header listing more is refused before it is parsed, so the
/// memory spent on metadata stays bounded whatever the file claims.
pub const MAX_TENSORS: usize = 1 << 18;

/// Most JSON values (objects, arrays, keys, scalars) a metadata document (a safetensors
/// header, a pack index) may hold: 16 per tensor at [`MAX_TENSORS`]. Checked by
/// [`count_json`] before anything is built from the document.
pub const MAX_JSON_NODES: u64 = 16 * MAX_TENSORS as u64;

/// What [`count_json`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonCount {
    /// Every value was counted: `nodes` in all, `root_entries` in the outermost object
    /// or array, `largest_child` in the largest object or array directly inside it.
    Counted {
        nodes: u64,
        root_entries: u64,
        largest_child: u64,
    },
    /// More than the limit of values; counting stopped there.
    OverLimit,
    /// Not valid JSON (the real parser will say where).
    Invalid,
}

/// Count the values of a JSON document without building it (constant memory, stops at
/// `limit`), so a hostile header cannot make the real parse allocate gigabytes.
pub fn count_json(bytes: &[u8], limit: u64) -> JsonCount {
    use serde::de::DeserializeSeed;
    let nodes = std::cell::Cell::new(0u64);
    let over = std::cell::Cell::new(false);
    let largest = std::cell::Cell::new(0u64);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let root = JsonCounter {
        nodes: &nodes,
        over: &over,
        largest: &largest,
        limit,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|n| de.end().map(|_| n));
    match root {
        Ok(root_entries) => JsonCount::Counted {
            nodes: nodes.get(),
            root_entries,
            largest_child: largest.get(),
        },
        Err(_) if over.get() => JsonCount::OverLimit,
        Err(_) => JsonCount::Invalid,
    }
}

/// Visits any JSON value, counting it and everything inside; yields the number of
/// entries of the value when it is an object or array.
#[derive(Clone, Copy)]
struct JsonCounter<'a> {
    nodes: &'a std::cell::Cell<u64>,
    over: &'a std::cell::Cell<bool>,
    largest: &'a std::cell::Cell<u64>,
    limit: u64,
    depth: u32,
}

impl JsonCounter<'_> {
    fn bump<E: serde::de::Error>(&self) -> Result<u64, E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > self.limit {
            self.over.set(true);
            return Err(E::custom("too many values"));
        }
        Ok(0)
    }
    fn child(self) -> Self {
        JsonCounter {
            depth: self.depth + 1,
            ..self
        }
    }
    fn entries(&self, k: u64) -> u64 {
        if self.depth == 1 && k > self.largest.get() {
            self.largest.set(k);
        }
        k
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonCounter<'_> {
    type Value = u64;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonCounter<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<u64, E> {
        self.bump()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<u64, E> {
        self.bump()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<u64, E> {
        self.bump()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<u64, E> {
        self.bump()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<u64, E> {
        self.bump()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<u64, E> {
        self.bump()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        self.bump()?;
        let mut k = 0;
        while seq.next_element_seed(self.child())?.is_some() {
            k += 1;
        }
        Ok(self.entries(k))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        self.bump()?;
        let mut k = 0;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
            k += 1;
        }
        Ok(self.entries(k))
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major (PyTorch) order: the last dimension varies fastest.
    pub shape: Vec<u64>,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A parsed safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsFile {
    /// Absolute offset of the data section (8 + header length).
    pub data_offset: u64,
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

fn jerr(origin: &str, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::json(origin, msg)
}

fn parse_shape(
    origin: &str,
    name: &str,
    v: &serde_json::Value,
) -> Result<Vec<u64>, CheckpointError> {
    let arr = v
        .as_array()
        .ok_or_else(|| jerr(origin, format!("tensor `{name}`: `shape` is not a list")))?;
    arr.iter()
        .map(|d| {
            d.as_u64().ok_or_else(|| {
                jerr(
                    origin,
                    format!("tensor `{name}`: shape entry {d} is not a non-negative integer"),
                )
            })
        })
        .collect()
}

impl SafetensorsFile {
    /// Parse from the file's bytes (at least the 8-byte length and the header; tensor
    /// ranges are checked against `bytes.len()`, so pass the whole mapped file).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, CheckpointError> {
        check_header_size(bytes, origin)?;
        let (header_len, meta) = match ::safetensors::SafeTensors::read_metadata(bytes) {
            Ok(m) => m,
            Err(e) => {
                diagnose(bytes, origin)?;
                return Err(CheckpointError::malformed(
                    origin,
                    0,
                    format!("not a valid safetensors file: {e}"),
                ));
            }
        };
        let data_offset = 8 + header_len as u64;
        let mut tensors = Vec::new();
        for (name, info) in meta.tensors() {
            let dtype = DType::try_from(info.dtype).map_err(|d| {
                CheckpointError::unsupported(
                    origin,
                    format!("tensor `{name}` has unknown dtype `{d:?}`"),
                )
            })?;
            let (begin, end) = info.data_offsets;
            tensors.push(TensorInfo {
                name,
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                offset: data_offset + begin as u64,
                n_bytes: (end - begin) as u64,
            });
        }
        // File order; empty tensors share an offset with their successor, and sort first.
        tensors.sort_by(|a, b| (a.offset, a.n_bytes, &a.name).cmp(&(b.offset, b.n_bytes, &b.name)));
        let metadata = meta
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(SafetensorsFile {
            data_offset,
            tensors,
            metadata,
        })
    }

    /// Memory-map `path` and parse its header.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let map = map_file(path)?;
        Self::parse(&map, &path.display().to_string())
    }

    /// Tensors sorted by file offset.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// `__metadata__` string pairs.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn total_tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }
}

/// Refuse a header that lists more than [`MAX_TENSORS`] tensors or [`MAX_JSON_NODES`]
/// values, counted without building anything. A header too short or malformed to count
/// is left to the full parse, which says what is wrong.
fn check_header_size(bytes: &[u8], origin: &str) -> Result<(), CheckpointError> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Ok(());
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    // Below ~50 bytes per tensor entry no header this small can reach either limit.
    if !(1 << 20..=MAX_HEADER_BYTES).contains(&header_len) {
        return Ok(());
    }
    let Some(header) = bytes.get(8..8 + header_len as usize) else {
        return Ok(());
    };
    let too_many = |what: String| {
        CheckpointError::malformed(
            origin,
            8,
            format!("{what}; refused before parsing (a safetensors file may list at most {MAX_TENSORS} tensors)"),
        )
    };
    match count_json(header, MAX_JSON_NODES) {
        JsonCount::Counted { root_entries, .. } if root_entries > MAX_TENSORS as u64 + 1 => {
            Err(too_many(format!("header lists {root_entries} tensors")))
        }
        JsonCount::OverLimit => Err(too_many(format!(
            "header holds more than {MAX_JSON_NODES} JSON values"
        ))),
        _ => Ok(()),
    }
}

/// Say precisely why the `safetensors` crate refused `bytes`: the byte offset, field
/// and tensor at fault. `Ok(())` when no specific problem is found.
fn diagnose(bytes: &[u8], origin: &str) -> Result<(), CheckpointError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(CheckpointError::malformed(
                origin,
                0,
                format!("truncated: a safetensors file starts with an 8-byte header length, the file has {file_len} bytes"),
            ));
    };
    let mut lb = [0u8; 8];
    lb.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(lb);
    if header_len > MAX_HEADER_BYTES {
        return Err(CheckpointError::malformed(
                origin,
                0,
                format!("header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit (not a safetensors file?)"),
            ));
    }
    if header_len > file_len - 8 {
        return Err(CheckpointError::malformed(
            origin,
            8,
            format!(
                "truncated: header length is {header_len} but only {} bytes follow",
                file_len - 8
            ),
        ));
    }
    let data_offset = 8 + header_len;
    let header = &bytes[8..data_offset as usize];
    let text = std::str::from_utf8(header).map_err(|e| {
        CheckpointError::malformed(
            origin,
            8 + e.valid_up_to() as u64,
            "header is not valid UTF-8",
        )
    })?;
    let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        jerr(
            origin,
            format!("header (bytes 8..{data_offset}) is not valid JSON: {e}"),
        )
    })?;
    let obj = root
        .as_object()
        .ok_or_else(|| jerr(origin, "header is not a JSON object"))?;
    let data_len = file_len - data_offset;
    let mut tensors = Vec::with_capacity(obj.len());
    let mut metadata = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v
                .as_object()
                .ok_or_else(|| jerr(origin, "`__metadata__` is not an object"))?;
            for (k, val) in m {
                let s = val
                    .as_str()
                    .ok_or_else(|| jerr(origin, format!("`__metadata__.{k}` is not a string")))?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        let t = v
            .as_object()
            .ok_or_else(|| jerr(origin, format!("tensor `{name}` is not an object")))?;
        let dtype_s = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| jerr(origin, format!("tensor `{name}` has no string `dtype`")))?;
        let dtype = DType::from_name(dtype_s).ok_or_else(|| {
            CheckpointError::unsupported(
                origin,
                format!("tensor `{name}` has unknown dtype `{dtype_s}`"),
            )
        })?;
        let shape = parse_shape(
            origin,
            name,
            t.get("shape")
                .ok_or_else(|| jerr(origin, format!("tensor `{name}` has no `shape`")))?,
        )?;
        let offs = t
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| {
                jerr(
                    origin,
                    format!("tensor `{name}`: `data_offsets` is not a [begin, end] pair"),
                )
            })?;
        let (Some(begin), Some(end)) = (offs[0].as_u64(), offs[1].as_u64()) else {
            return Err(jerr(
                origin,
                format!("tensor `{name}`: `data_offsets` are not non-negative integers"),
            ));
        };
        if begin > end || end > data_len {
            return Err(CheckpointError::malformed(
                    origin,
                    data_offset.saturating_add(begin),
                    format!(
                        "tensor `{name}` data_offsets [{begin}, {end}] fall outside the {data_len}-byte data section"
                    ),
                ));
        }
        let expected = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bits()))
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8);
        if expected != Some(end - begin) {
            return Err(CheckpointError::malformed(
                    origin,
                    data_offset + begin,
                    format!(
                        "tensor `{name}` ({dtype_s} {shape:?}) should take {} bytes but data_offsets span {}",
                        expected.map_or("an impossible number of".to_string(), |e| e.to_string()),
                        end - begin
                    ),
                ));
        }
        tensors.push(TensorInfo {
            name: name.clone(),
            dtype,
            shape,
            offset: data_offset + begin,
            n_bytes: end - begin,
        });
    }
    tensors.sort_by(|a, b| (a.offset, a.n_bytes, &a.name).cmp(&(b.offset, b.n_bytes, &b.name)));
    // Tensors must tile the data section exactly: no overlap, no gap, nothing after.
    let mut at = data_offset;
    for (i, t) in tensors.iter().enumerate() {
        if t.offset < at {
            return Err(CheckpointError::malformed(
                origin,
                t.offset,
                format!("tensors `{}` and `{}` overlap", tensors[i - 1].name, t.name),
            ));
        }
        if t.offset > at {
            return Err(CheckpointError::malformed(
                origin,
                at,
                format!(
                    "{} unused bytes before tensor `{}` (tensors must be back to back)",
                    t.offset - at,
                    t.name
                ),
            ));
        }
        at = t.offset + t.n_bytes;
    }
    if at != file_len {
        return Err(CheckpointError::malformed(
            origin,
            at,
            format!(
                "{} bytes after the last tensor (the data section must end with it)",
                file_len - at
            ),
        ));
    }
    let _ = metadata;
    Ok(())
}

/// A checkpoint split over several safetensors files by `model.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct ShardedSafetensors {
    /// The index file.
    pub index: PathBuf,
    /// Every shard named by the index, in name order, with its header.
    pub shards: Vec<(PathBuf, SafetensorsFile)>,
    /// The index's `metadata` object (e.g. `total_size`), as JSON.
    pub metadata: serde_json::Value,
}

impl ShardedSafetensors {
    /// Read an index and the headers of all the shards it names. Every tensor of the
    /// weight map must be in the shard it is mapped to.
    pub fn open(index: &Path) -> Result<Self, CheckpointError> {
        let origin = index.display().to_string();
        let text = std::fs::read_to_string(index).map_err(|e| CheckpointError::io(index, e))?;
        let (metadata, weight_map) = parse_index(&text, &origin)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&str> = weight_map.values().map(|s| s.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for f in files {
            if f.contains("..") || Path::new(f).is_absolute() {
                return Err(jerr(
                    &origin,
                    format!("shard name `{f}` points outside the checkpoint directory"),
                ));
            }
            let p = dir.join(f);
            let st = SafetensorsFile::open(&p)?;
            shards.push((p, st));
        }
        for (tensor, file) in &weight_map {
            let shard = shards
                .iter()
                .find(|(p, _)| {
                    p.file_name().and_then(|n| n.to_str())
                        == Path::new(file).file_name().and_then(|n| n.to_str())
                })
                .map(|(_, s)| s);
            if shard.and_then(|s| s.tensor(tensor)).is_none() {
                return Err(jerr(
                    &origin,
                    format!(
                        "weight_map puts `{tensor}` in `{file}`, but that shard has no such tensor"
                    ),
                ));
            }
        }
        Ok(ShardedSafetensors {
            index: index.to_path_buf(),
            shards,
            metadata,
        })
    }

    /// Every tensor with the shard that holds it.
    pub fn tensors(&self) -> impl Iterator<Item = (&Path, &TensorInfo)> {
        self.shards
            .iter()
            .flat_map(|(p, s)| s.tensors().iter().map(move |t| (p.as_path(), t)))
    }

    pub fn total_tensor_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|(_, s)| s.total_tensor_bytes())
            .sum()
    }
}

/// Parse an index file: `(metadata, weight_map)`.
pub fn parse_index(
    text: &str,
    origin: &str,
) -> Result<(serde_json::Value, BTreeMap<String, String>), CheckpointError> {
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| jerr(origin, format!("not valid JSON: {e}")))?;
    let wm = root
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| jerr(origin, "no `weight_map` object"))?;
    let mut out = BTreeMap::new();
    for (k, v) in wm {
        let f = v
            .as_str()
            .ok_or_else(|| jerr(origin, format!("weight_map entry `{k}` is not a file name")))?;
        out.insert(k.clone(), f.to_string());
    }
    let metadata = root
        .get("metadata")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok((metadata, out))
}
