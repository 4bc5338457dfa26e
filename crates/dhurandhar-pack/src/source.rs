//! Input checkpoints: safetensors (single file or sharded with
//! `model.safetensors.index.json`) and the float tensors of GGUF files, memory-mapped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{PackError, Result};

/// One tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    file: usize,
    offset: usize,
    len: usize,
}

/// A memory-mapped checkpoint.
pub struct Checkpoint {
    path: PathBuf,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    tensors: Vec<SourceTensor>,
    by_name: std::collections::HashMap<String, usize>,
    /// safetensors `__metadata__` (merged across shards).
    pub metadata: BTreeMap<String, String>,
    /// Tensors present in the file but not packable (e.g. quantized GGUF blocks): (name, why).
    pub skipped: Vec<(String, String)>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(|e| PackError::io(path, e))?;
    let len = f.metadata().map_err(|e| PackError::io(path, e))?.len();
    if len < 8 {
        return Err(PackError::input(path, "file too short to be a checkpoint"));
    }
    // SAFETY: read-only map; concurrent modification of the input is not defended against.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| PackError::io(path, e))
}

impl Checkpoint {
    /// Open a `.safetensors` file, a `*.safetensors.index.json`, a directory holding either,
    /// or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut cp = Checkpoint {
            path: path.to_path_buf(),
            files: Vec::new(),
            tensors: Vec::new(),
            by_name: Default::default(),
            metadata: BTreeMap::new(),
            skipped: Vec::new(),
        };
        if path.is_dir() {
            let idx = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            if idx.is_file() {
                cp.add_sharded(&idx)?;
            } else if single.is_file() {
                cp.add_safetensors(&single)?;
            } else {
                return Err(PackError::input(
                    path,
                    "directory holds neither model.safetensors nor model.safetensors.index.json",
                ));
            }
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".index.json") {
                cp.add_sharded(path)?;
            } else {
                let head = {
                    use std::io::Read;
                    let mut f = std::fs::File::open(path).map_err(|e| PackError::io(path, e))?;
                    let mut b = [0u8; 4];
                    f.read_exact(&mut b).map_err(|e| PackError::io(path, e))?;
                    b
                };
                if &head == b"GGUF" {
                    cp.add_gguf(path)?;
                } else {
                    cp.add_safetensors(path)?;
                }
            }
        }
        for (i, t) in cp.tensors.iter().enumerate() {
            if cp.by_name.insert(t.name.clone(), i).is_some() {
                return Err(PackError::input(
                    path,
                    format!("tensor `{}` appears twice", t.name),
                ));
            }
        }
        Ok(cp)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in file order (shard order, then data offset).
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's raw little-endian bytes.
    pub fn data(&self, t: &SourceTensor) -> &[u8] {
        &self.files[t.file].1[t.offset..t.offset + t.len]
    }

    /// Every file the tensors are read from (shards, or the one file), plus the path
    /// the user gave (an index file): what an output must never replace.
    pub fn input_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.files.iter().map(|(p, _)| p.as_path()).collect();
        v.push(&self.path);
        v
    }

    /// Sum of all tensor bytes.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len as u64).sum()
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let map = map_file(path)?;
        let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| PackError::input(path, format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + n;
        let file = self.files.len();
        let mut found = Vec::new();
        for (name, info) in meta.tensors() {
            let dt = info.dtype.to_string();
            let dtype = DType::parse(&dt).ok_or_else(|| {
                PackError::input(
                    path,
                    format!("tensor `{name}`: dtype {dt} is not supported"),
                )
            })?;
            let (s, e) = info.data_offsets;
            let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if e < s
                || data_start + e > map.len()
                || numel.and_then(|n| n.checked_mul(dtype.size())) != Some(e - s)
            {
                return Err(PackError::input(
                    path,
                    format!("tensor `{name}`: data offsets do not match its shape or the file"),
                ));
            }
            found.push(SourceTensor {
                name,
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                file,
                offset: data_start + s,
                len: e - s,
            });
        }
        // File order, so `unpack` reproduces the layout byte for byte. Only empty tensors
        // can share an offset; (offset, len, name) puts them where they were and makes the
        // order independent of the header map's iteration order.
        found.sort_by(|a, b| (a.offset, a.len, &a.name).cmp(&(b.offset, b.len, &b.name)));
        if let Some(m) = meta.metadata() {
            self.metadata
                .extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.tensors.extend(found);
        self.files.push((path.to_path_buf(), map));
        Ok(())
    }

    fn add_sharded(&mut self, index: &Path) -> Result<()> {
        let text = std::fs::read_to_string(index).map_err(|e| PackError::io(index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| PackError::input(index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| PackError::input(index, "no `weight_map` object"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for f in map.values() {
            let f = f
                .as_str()
                .ok_or_else(|| PackError::input(index, "weight_map values must be file names"))?;
            if f.contains('/') || f.contains('\\') || f == ".." {
                return Err(PackError::input(
                    index,
                    format!("shard `{f}` is not a plain file name"),
                ));
            }
            if !shards.iter().any(|s| s == f) {
                shards.push(f.to_string());
            }
        }
        shards.sort();
        for s in &shards {
            self.add_safetensors(&dir.join(s))?;
        }
        for name in map.keys() {
            if !self.tensors.iter().any(|t| &t.name == name) {
                return Err(PackError::input(
                    index,
                    format!("tensor `{name}` listed in weight_map but missing from its shard"),
                ));
            }
        }
        Ok(())
    }

    fn add_gguf(&mut self, path: &Path) -> Result<()> {
        use dhurandhar_checkpoint::gguf::{GgmlType, GgufFile};
        let map = map_file(path)?;
        let origin = path.display().to_string();
        let invalid =
            |e: dhurandhar_checkpoint::CheckpointError| PackError::input(path, e.to_string());
        let g = GgufFile::parse(&map, &origin).map_err(invalid)?;
        g.check_ranges(map.len() as u64, &origin).map_err(invalid)?;
        let file = self.files.len();
        for t in g.tensors {
            let dtype = match t.ggml_type {
                GgmlType::F32 => DType::F32,
                GgmlType::F16 => DType::F16,
                GgmlType::BF16 => DType::BF16,
                other => {
                    self.skipped.push((
                        t.name,
                        format!("GGUF type {} is not a float type", other.name()),
                    ));
                    continue;
                }
            };
            self.tensors.push(SourceTensor {
                name: t.name,
                dtype,
                // GGUF lists the innermost dimension first; safetensors outermost first.
                shape: t.shape.iter().rev().copied().collect(),
                file,
                offset: t.offset as usize,
                len: t.n_bytes as usize,
            });
        }
        self.tensors
            .sort_by(|a, b| (a.offset, a.len, &a.name).cmp(&(b.offset, b.len, &b.name)));
        self.files.push((path.to_path_buf(), map));
        Ok(())
    }
}

/// Receives a tensor's bytes in order, piece by piece.
pub type TensorSink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;
/// Produces tensor `i` by feeding its bytes to the sink.
pub type FillTensor<'a> = dyn FnMut(usize, &mut TensorSink<'_>) -> Result<()> + 'a;

/// Write tensors as a safetensors file atomically ([`dhurandhar_io::AtomicFile`]), streaming each
/// tensor's bytes from `fill` so nothing but one window of chunks is in memory.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, DType, Vec<u64>, u64)],
    metadata: &BTreeMap<String, String>,
    fill: &mut FillTensor<'_>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut at = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    let mut json = serde_json::to_vec(&header).expect("JSON of strings and numbers");
    while json.len() & 7 != 0 {
        json.push(b' ');
    }
    let tmp = dhurandhar_io::AtomicFile::create(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let io = |e| PackError::io(path, e);
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        let mut written = 0u64;
        fill(i, &mut |b: &[u8]| {
            written += b.len() as u64;
            w.write_all(b).map_err(|e| PackError::io(path, e))
        })?;
        if written != t.3 {
            return Err(PackError::input(
                path,
                format!(
                    "tensor `{}`: {written} bytes restored, {} expected",
                    t.0, t.3
                ),
            ));
        }
    }
    let tmp = w
        .into_inner()
        .map_err(|e| PackError::io(path, e.into_error()))?;
    tmp.commit()?;
    Ok(())
}
