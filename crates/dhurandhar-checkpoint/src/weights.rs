//! Tensor data, not only headers: a checkpoint memory-mapped with every tensor's bytes
//! reachable by name, and the [`TensorSource`] trait every tensor container implements
//! (this one, and the `.dhp` pack reader in `dhurandhar-pack`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::CheckpointError;
use crate::gguf::GgufFile;
use crate::mmap::map_file;
use crate::safetensors::{SafetensorsFile, ShardedSafetensors};

/// A tensor as any source lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: DType,
    /// Row-major: the last dimension varies fastest (GGUF's order is reversed to this).
    pub shape: Vec<u64>,
    /// Bytes of the tensor's data as [`TensorSource::read_tensor_into`] gives it.
    pub n_bytes: u64,
}

/// Anything holding named tensors whose bytes can be read: a checkpoint ([`Weights`]),
/// a `.dhp` pack. Readers of weights (packers, engines, tools) take this, not a format.
pub trait TensorSource {
    /// The source's error; it names the file and the tensor.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The file or directory the tensors come from.
    fn source_path(&self) -> &Path;

    /// Every tensor, in storage order.
    fn list_tensors(&self) -> Vec<TensorMeta>;

    /// Read tensor `name`'s little-endian bytes into `out`, which must be exactly
    /// [`TensorMeta::n_bytes`] long.
    fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<(), Self::Error>;
}

/// One tensor of [`Weights`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightTensor {
    pub name: String,
    pub dtype: DType,
    /// Row-major: the last dimension varies fastest.
    pub shape: Vec<u64>,
    file: usize,
    offset: usize,
    len: usize,
}

impl WeightTensor {
    /// Stored bytes.
    pub fn n_bytes(&self) -> u64 {
        self.len as u64
    }
}

/// A checkpoint with its tensor data memory-mapped: a `.safetensors` file, a sharded
/// `*.safetensors.index.json`, a directory holding either, or a `.gguf` (its tensors
/// with an element type; block-quantized ones are listed in [`skipped`](Self::skipped)).
pub struct Weights {
    path: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: Vec<WeightTensor>,
    by_name: HashMap<String, usize>,
    /// safetensors `__metadata__` (merged across shards).
    pub metadata: BTreeMap<String, String>,
    /// Tensors present but without an element type (e.g. Q4_K blocks): (name, why).
    pub skipped: Vec<(String, String)>,
    gguf: bool,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Weights {
    /// Open and map a checkpoint. A directory must hold `model.safetensors.index.json`
    /// or `model.safetensors`; a file is GGUF by its magic bytes, a sharded index by its
    /// `.index.json` name, safetensors otherwise.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let origin = path.display().to_string();
        let mut w = Weights {
            path: path.to_path_buf(),
            files: Vec::new(),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            metadata: BTreeMap::new(),
            skipped: Vec::new(),
            gguf: false,
        };
        if path.is_dir() {
            let idx = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            if idx.is_file() {
                w.add_sharded(&idx)?;
            } else if single.is_file() {
                w.add_safetensors(&single)?;
            } else {
                return Err(CheckpointError::unsupported(
                    &origin,
                    "directory holds neither model.safetensors nor model.safetensors.index.json",
                ));
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".index.json"))
        {
            w.add_sharded(path)?;
        } else {
            let map = map_file(path)?;
            if map.starts_with(b"GGUF") {
                w.add_gguf(path, map)?;
            } else {
                w.add_safetensors_map(path, map)?;
            }
        }
        for (i, t) in w.tensors.iter().enumerate() {
            if w.by_name.insert(t.name.clone(), i).is_some() {
                return Err(CheckpointError::unsupported(
                    &origin,
                    format!("tensor `{}` appears twice", t.name),
                ));
            }
        }
        Ok(w)
    }

    /// Whether the checkpoint is a GGUF file.
    pub fn is_gguf(&self) -> bool {
        self.gguf
    }

    /// What the user pointed at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file whose bytes are read (the shards, or the one file), plus the path the
    /// user gave: what an output must never replace.
    pub fn input_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.files.iter().map(|(p, _)| p.as_path()).collect();
        v.push(&self.path);
        v
    }

    /// Tensors in file order (shard order, then data offset).
    pub fn tensors(&self) -> &[WeightTensor] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&WeightTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's raw little-endian bytes, straight from the map.
    pub fn data(&self, t: &WeightTensor) -> &[u8] {
        &self.files[t.file].1[t.offset..t.offset + t.len]
    }

    /// The file holding tensor `t` (a shard, for sharded checkpoints).
    pub fn file_of(&self, t: &WeightTensor) -> &Path {
        &self.files[t.file].0
    }

    /// Sum of all tensor bytes.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len as u64).sum()
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<(), CheckpointError> {
        let map = map_file(path)?;
        self.add_safetensors_map(path, map)
    }

    fn add_safetensors_map(&mut self, path: &Path, map: Mmap) -> Result<(), CheckpointError> {
        let st = SafetensorsFile::parse(&map, &path.display().to_string())?;
        self.add_parsed(path, map, &st)
    }

    fn add_parsed(
        &mut self,
        path: &Path,
        map: Mmap,
        st: &SafetensorsFile,
    ) -> Result<(), CheckpointError> {
        if st.data_offset + st.total_tensor_bytes() != map.len() as u64 {
            return Err(CheckpointError::unsupported(
                &path.display().to_string(),
                "the file changed while it was being opened",
            ));
        }
        let file = self.files.len();
        for t in st.tensors() {
            self.tensors.push(WeightTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                file,
                offset: t.offset as usize,
                len: t.n_bytes as usize,
            });
        }
        self.metadata
            .extend(st.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
        self.files.push((path.to_path_buf(), map));
        Ok(())
    }

    fn add_sharded(&mut self, index: &Path) -> Result<(), CheckpointError> {
        // Headers and weight-map consistency are checked by the header reader.
        let sharded = ShardedSafetensors::open(index)?;
        for (p, st) in &sharded.shards {
            self.add_parsed(p, map_file(p)?, st)?;
        }
        Ok(())
    }

    fn add_gguf(&mut self, path: &Path, map: Mmap) -> Result<(), CheckpointError> {
        let origin = path.display().to_string();
        let g = GgufFile::parse(&map, &origin)?;
        g.check_ranges(map.len() as u64, &origin)?;
        crate::gguf_hparams::check_kv_heads(&g, &origin)?;
        self.gguf = true;
        let file = self.files.len();
        let mut found = Vec::new();
        for t in g.tensors {
            match DType::try_from(t.ggml_type) {
                Ok(dtype) => found.push(WeightTensor {
                    name: t.name,
                    dtype,
                    // GGUF lists the innermost dimension first.
                    shape: t.shape.iter().rev().copied().collect(),
                    file,
                    offset: t.offset as usize,
                    len: t.n_bytes as usize,
                }),
                Err(g) => self.skipped.push((
                    t.name,
                    format!(
                        "GGUF type {} is block-quantized, not one value per element",
                        g.name()
                    ),
                )),
            }
        }
        found.sort_by(|a, b| (a.offset, a.len, &a.name).cmp(&(b.offset, b.len, &b.name)));
        self.tensors.extend(found);
        self.files.push((path.to_path_buf(), map));
        Ok(())
    }
}

impl TensorSource for Weights {
    type Error = CheckpointError;

    fn source_path(&self) -> &Path {
        &self.path
    }

    fn list_tensors(&self) -> Vec<TensorMeta> {
        self.tensors
            .iter()
            .map(|t| TensorMeta {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                n_bytes: t.n_bytes(),
            })
            .collect()
    }

    fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<(), CheckpointError> {
        let t = self
            .get(name)
            .ok_or_else(|| CheckpointError::NoSuchTensor {
                path: self.path.display().to_string(),
                name: name.to_string(),
            })?;
        if out.len() != t.len {
            return Err(CheckpointError::BufferSize {
                path: self.file_of(t).display().to_string(),
                name: name.to_string(),
                expected: t.len as u64,
                got: out.len() as u64,
            });
        }
        out.copy_from_slice(self.data(t));
        Ok(())
    }
}
