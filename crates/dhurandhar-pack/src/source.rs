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
        found.sort_by_key(|t| t.offset);
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
        let map = map_file(path)?;
        let g =
            gguf::parse(&map).map_err(|d| PackError::input(path, format!("invalid GGUF: {d}")))?;
        let file = self.files.len();
        for t in g.tensors {
            match t.dtype {
                Some(dtype) => self.tensors.push(SourceTensor {
                    name: t.name,
                    dtype,
                    shape: t.shape,
                    file,
                    offset: t.offset,
                    len: t.len,
                }),
                None => self.skipped.push((
                    t.name,
                    format!("GGUF type {} is not a float type", t.ggml_type),
                )),
            }
        }
        self.tensors.sort_by_key(|t| t.offset);
        self.files.push((path.to_path_buf(), map));
        Ok(())
    }
}

/// Minimal GGUF (v2/v3) reader: enough to locate F32/F16/BF16 tensors.
mod gguf {
    use crate::dtype::DType;

    pub struct Tensor {
        pub name: String,
        pub shape: Vec<u64>,
        pub ggml_type: u32,
        pub dtype: Option<DType>,
        pub offset: usize,
        pub len: usize,
    }

    pub struct Gguf {
        pub tensors: Vec<Tensor>,
    }

    struct Cur<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl Cur<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self
                .at
                .checked_add(n)
                .filter(|&e| e <= self.b.len())
                .ok_or("unexpected end of file")?;
            let s = &self.b[self.at..end];
            self.at = end;
            Ok(s)
        }
        fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
        }
        fn u64(&mut self) -> Result<u64, String> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
        }
        fn string(&mut self) -> Result<String, String> {
            let n = self.u64()?;
            let n = usize::try_from(n).map_err(|_| "string length overflows")?;
            Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
        }
        /// Skip a value of metadata type `ty`, returning it when it is a u32 (alignment).
        fn skip_value(&mut self, ty: u32, depth: u32) -> Result<Option<u64>, String> {
            let fixed = match ty {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                10..=12 => 8,
                _ => 0,
            };
            if fixed > 0 {
                let b = self.take(fixed)?;
                return Ok(match ty {
                    4 => Some(u32::from_le_bytes(b.try_into().expect("4")) as u64),
                    10 => Some(u64::from_le_bytes(b.try_into().expect("8"))),
                    _ => None,
                });
            }
            match ty {
                8 => {
                    self.string()?;
                }
                9 => {
                    if depth > 4 {
                        return Err("nested arrays too deep".into());
                    }
                    let et = self.u32()?;
                    let n = self.u64()?;
                    if n > self.b.len() as u64 {
                        return Err("array length exceeds the file".into());
                    }
                    for _ in 0..n {
                        self.skip_value(et, depth + 1)?;
                    }
                }
                t => return Err(format!("unknown metadata value type {t}")),
            }
            Ok(None)
        }
    }

    pub fn parse(b: &[u8]) -> Result<Gguf, String> {
        let mut c = Cur { b, at: 0 };
        if c.take(4)? != b"GGUF" {
            return Err("bad magic".into());
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version}"));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        if n_tensors > b.len() as u64 || n_kv > b.len() as u64 {
            return Err("counts exceed the file size".into());
        }
        let mut alignment = 32u64;
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.skip_value(ty, 0)?;
            if key == "general.alignment" {
                alignment = v
                    .filter(|&a| a > 0 && a.is_power_of_two())
                    .ok_or("bad general.alignment")?;
            }
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let nd = c.u32()?;
            if nd > 8 {
                return Err(format!("tensor `{name}` has {nd} dimensions"));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64()?);
            }
            let ty = c.u32()?;
            let off = c.u64()?;
            infos.push((name, dims, ty, off));
        }
        let data_start = (c.at as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, off) in infos {
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or("shape overflows")?;
            let dtype = match ty {
                0 => Some(DType::F32),
                1 => Some(DType::F16),
                30 => Some(DType::BF16),
                _ => None,
            };
            let len = dtype
                .map(|d| numel.checked_mul(d.size() as u64))
                .unwrap_or(Some(0))
                .ok_or("size overflows")?;
            let start = data_start.checked_add(off).ok_or("offset overflows")?;
            if dtype.is_some() && start.checked_add(len).is_none_or(|e| e > b.len() as u64) {
                return Err(format!("tensor `{name}` runs past the end of the file"));
            }
            // GGUF lists the innermost dimension first; safetensors outermost first.
            let shape = dims.into_iter().rev().collect();
            tensors.push(Tensor {
                name,
                shape,
                ggml_type: ty,
                dtype,
                offset: start as usize,
                len: len as usize,
            });
        }
        Ok(Gguf { tensors })
    }
}

/// Receives a tensor's bytes in order, piece by piece.
pub type TensorSink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;
/// Produces tensor `i` by feeding its bytes to the sink.
pub type FillTensor<'a> = dyn FnMut(usize, &mut TensorSink<'_>) -> Result<()> + 'a;

/// Write tensors as a safetensors file atomically (temp file + rename), streaming each
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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".safetensors-partial-")
        .tempfile_in(dir)
        .map_err(|e| PackError::io(path, e))?;
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
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path)
        .map_err(|e| PackError::io(path, e.error))?;
    Ok(())
}
