//! One view over every checkpoint layout: a tensor table (name, dtype, shape, offset,
//! bytes, component) plus whatever describes the architecture (GGUF metadata or a
//! config.json).

use std::path::{Path, PathBuf};

use dhurandhar_model::{ComponentBytes, ModelArchitecture};
use serde_json::{Map, Value};

use crate::components::{classify, is_expert, is_shared_expert, Component};
use crate::error::CheckpointError;
use crate::gguf::GgufFile;
use crate::safetensors::{SafetensorsFile, ShardedSafetensors};

/// How the checkpoint is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    Gguf,
    Safetensors,
    /// `model.safetensors.index.json` plus its shards.
    ShardedSafetensors,
    /// A lone config.json: geometry only, no tensors.
    ConfigJson,
}

impl CheckpointFormat {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFormat::Gguf => "gguf",
            CheckpointFormat::Safetensors => "safetensors",
            CheckpointFormat::ShardedSafetensors => "sharded safetensors",
            CheckpointFormat::ConfigJson => "config.json",
        }
    }
}

/// One tensor of any checkpoint format.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorEntry {
    pub name: String,
    /// `F32`, `Q4_K`, `BF16`, ... (GGUF type name or safetensors dtype).
    pub dtype: String,
    /// As stored: ggml order (row length first) for GGUF, row-major for safetensors.
    pub shape: Vec<u64>,
    /// Absolute offset in `file`.
    pub offset: u64,
    /// Stored bytes.
    #[serde(rename = "bytes")]
    pub n_bytes: u64,
    pub component: Component,
    /// The file holding the bytes (differs per shard).
    #[serde(skip)]
    pub file: PathBuf,
    /// Element count.
    #[serde(skip)]
    pub n_elements: u64,
    /// Integer/bool tensors (position ids, masks) are buffers, not parameters.
    #[serde(skip)]
    pub is_parameter: bool,
}

/// An opened checkpoint: its tensor table and its architecture description.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// What the user pointed at.
    pub path: PathBuf,
    pub format: CheckpointFormat,
    pub tensors: Vec<TensorEntry>,
    /// The GGUF header (GGUF only).
    pub gguf: Option<GgufFile>,
    /// The config.json used, and its text (safetensors / directories / config.json).
    pub config: Option<(PathBuf, String)>,
}

/// Decide the format of `path` from its magic bytes and name.
pub(crate) fn sniff(path: &Path) -> Result<CheckpointFormat, CheckpointError> {
    use std::io::Read;
    let origin = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| CheckpointError::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        return Ok(CheckpointFormat::Gguf);
    }
    if name.ends_with(".gguf") {
        // Let the GGUF parser produce the precise "bad magic" error.
        return Ok(CheckpointFormat::Gguf);
    }
    if name.ends_with(".safetensors") || (head.len() == 9 && head[8] == b'{') {
        return Ok(CheckpointFormat::Safetensors);
    }
    if name.ends_with(".json") {
        return Ok(if name.contains("index") {
            CheckpointFormat::ShardedSafetensors
        } else {
            CheckpointFormat::ConfigJson
        });
    }
    Err(CheckpointError::unsupported(
        &origin,
        "not a recognised checkpoint (expected .gguf, .safetensors, config.json, model.safetensors.index.json or a directory)",
    ))
}

pub(crate) fn gguf_entries(path: &Path, g: &GgufFile) -> Vec<TensorEntry> {
    g.tensors
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            dtype: t.ggml_type.name().to_string(),
            shape: t.shape.clone(),
            offset: t.offset,
            n_bytes: t.n_bytes,
            component: classify(&t.name),
            file: path.to_path_buf(),
            n_elements: t.n_elements(),
            is_parameter: !matches!(
                t.ggml_type,
                crate::gguf::GgmlType::I8
                    | crate::gguf::GgmlType::I16
                    | crate::gguf::GgmlType::I32
                    | crate::gguf::GgmlType::I64
            ),
        })
        .collect()
}

fn st_entries(path: &Path, f: &SafetensorsFile) -> Vec<TensorEntry> {
    use crate::dtype::DType as Dtype;
    f.tensors()
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
            offset: t.offset,
            n_bytes: t.n_bytes,
            component: classify(&t.name),
            file: path.to_path_buf(),
            n_elements: t.n_elements(),
            is_parameter: !matches!(
                t.dtype,
                Dtype::BOOL
                    | Dtype::I8
                    | Dtype::U8
                    | Dtype::I16
                    | Dtype::U16
                    | Dtype::I32
                    | Dtype::U32
                    | Dtype::I64
                    | Dtype::U64
            ),
        })
        .collect()
}

fn read_config(path: &Path) -> Result<(PathBuf, String), CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    Ok((path.to_path_buf(), text))
}

/// Open any supported checkpoint layout. Only headers are read.
pub fn open_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let origin = path.display().to_string();
    if path.is_dir() {
        return open_dir(path);
    }
    let format = sniff(path)?;
    let sibling_config = || -> Result<Option<(PathBuf, String)>, CheckpointError> {
        let c = path.parent().unwrap_or(Path::new(".")).join("config.json");
        if c.is_file() {
            read_config(&c).map(Some)
        } else {
            Ok(None)
        }
    };
    match format {
        CheckpointFormat::Gguf => {
            let g = GgufFile::open(path)?;
            crate::gguf_hparams::check_kv_heads(&g, &origin)?;
            let mut tensors = gguf_entries(path, &g);
            for split in gguf_splits(path, &g)? {
                let s = GgufFile::open(&split)?;
                tensors.extend(gguf_entries(&split, &s));
            }
            Ok(Checkpoint {
                path: path.to_path_buf(),
                format,
                tensors,
                gguf: Some(g),
                config: None,
            })
        }
        CheckpointFormat::Safetensors => {
            let f = SafetensorsFile::open(path)?;
            Ok(Checkpoint {
                path: path.to_path_buf(),
                format,
                tensors: st_entries(path, &f),
                gguf: None,
                config: sibling_config()?,
            })
        }
        CheckpointFormat::ShardedSafetensors => {
            let s = ShardedSafetensors::open(path)?;
            let tensors = s
                .shards
                .iter()
                .flat_map(|(p, f)| st_entries(p, f))
                .collect();
            Ok(Checkpoint {
                path: path.to_path_buf(),
                format,
                tensors,
                gguf: None,
                config: sibling_config()?,
            })
        }
        CheckpointFormat::ConfigJson => {
            let (p, text) = read_config(path)?;
            // A config.json beside safetensors weights is the whole model.
            let dir = path.parent().unwrap_or(Path::new("."));
            if path.file_name().and_then(|n| n.to_str()) == Some("config.json")
                && has_safetensors(dir)
            {
                return open_dir(dir);
            }
            let _ = origin;
            Ok(Checkpoint {
                path: path.to_path_buf(),
                format,
                tensors: Vec::new(),
                gguf: None,
                config: Some((p, text)),
            })
        }
    }
}

/// The other files of a split GGUF (`name-00001-of-00003.gguf`, metadata `split.count`).
/// Only the first split carries the model metadata, so the model must be opened there.
fn gguf_splits(path: &Path, g: &GgufFile) -> Result<Vec<PathBuf>, CheckpointError> {
    let origin = path.display().to_string();
    let count = g.get_u64("split.count").unwrap_or(1);
    if count <= 1 {
        return Ok(Vec::new());
    }
    let idx = g.get_u64("split.no").unwrap_or(0);
    if idx != 0 {
        return Err(CheckpointError::unsupported(
            &origin,
            format!(
                "this is split {} of {count}; open the first split (…-00001-of-{count:05}.gguf)",
                idx + 1
            ),
        ));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let suffix = format!("-00001-of-{count:05}.gguf");
    let Some(prefix) = name.strip_suffix(&suffix) else {
        return Err(CheckpointError::unsupported(
            &origin,
            format!("split GGUF ({count} parts) whose name does not end in `{suffix}`"),
        ));
    };
    if count > 10_000 {
        return Err(CheckpointError::unsupported(
            &origin,
            format!("split.count {count} is absurd"),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    (2..=count)
        .map(|i| {
            let p = dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf"));
            if p.is_file() {
                Ok(p)
            } else {
                Err(CheckpointError::unsupported(
                    &origin,
                    format!("split {} is missing: {}", i, p.display()),
                ))
            }
        })
        .collect()
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CheckpointError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn has_safetensors(dir: &Path) -> bool {
    list_dir(dir)
        .map(|v| {
            v.iter()
                .any(|p| p.extension().is_some_and(|e| e == "safetensors"))
        })
        .unwrap_or(false)
}

/// A directory is one model: config.json + its safetensors (sharded via the index when
/// present), or a single .gguf.
fn open_dir(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let origin = dir.display().to_string();
    let files = list_dir(dir)?;
    let config_path = dir.join("config.json");
    let index = dir.join("model.safetensors.index.json");
    let st: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    if !config_path.is_file() {
        let ggufs: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        if ggufs.len() == 1 && st.is_empty() {
            return open_checkpoint(ggufs[0]);
        }
        return Err(CheckpointError::unsupported(
            &origin,
            "directory has no config.json (a model directory needs config.json + safetensors, or exactly one .gguf)",
        ));
    }
    let config = Some(read_config(&config_path)?);
    let tensors = if index.is_file() {
        let s = ShardedSafetensors::open(&index)?;
        s.shards
            .iter()
            .flat_map(|(p, f)| st_entries(p, f))
            .collect()
    } else {
        let mut all = Vec::new();
        for p in st {
            let f = SafetensorsFile::open(p)?;
            all.extend(st_entries(p, &f));
        }
        all
    };
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        format: if index.is_file() {
            CheckpointFormat::ShardedSafetensors
        } else if tensors.is_empty() {
            CheckpointFormat::ConfigJson
        } else {
            CheckpointFormat::Safetensors
        },
        tensors,
        gguf: None,
        config,
    })
}

/// Guess a family from tensor names, for error messages when there is no config.
fn guess_family(tensors: &[TensorEntry]) -> Option<&'static str> {
    let has = |s: &str| tensors.iter().any(|t| t.name.contains(s));
    if has("encoder.layer.") && has("attention.self.query") {
        Some("bert")
    } else if has("self_attn.q_proj") {
        Some("llama-like decoder")
    } else if has("mixer.") {
        Some("mamba")
    } else {
        None
    }
}

impl Checkpoint {
    /// Sum of stored tensor bytes.
    pub fn total_tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// Exact stored bytes per component.
    pub fn component_bytes(&self) -> ComponentBytes {
        let mut c = ComponentBytes {
            source: if self.tensors.is_empty() {
                format!("{} (config only: no tensors)", self.path.display())
            } else {
                self.path.display().to_string()
            },
            ..Default::default()
        };
        for t in &self.tensors {
            let slot = match t.component {
                Component::TokenEmbeddings => &mut c.token_embeddings,
                Component::Ple => &mut c.ple,
                Component::DecoderLayers => &mut c.decoder_layers,
                Component::Experts => &mut c.experts,
                Component::LmHead => &mut c.lm_head,
                Component::VisionEncoder => &mut c.vision_encoder,
                Component::AudioEncoder => &mut c.audio_encoder,
                Component::Other => &mut c.other,
            };
            *slot += t.n_bytes;
            if t.is_parameter && t.shape.len() >= 2 {
                let by_type = match t.component {
                    Component::DecoderLayers | Component::LmHead => &mut c.matmul_weights,
                    Component::TokenEmbeddings => &mut c.token_embedding_weights,
                    Component::Experts => &mut c.expert_matmul_weights,
                    _ => continue,
                };
                // GGUF stores the row length first, safetensors last.
                let row_len = if self.format == CheckpointFormat::Gguf {
                    t.shape[0]
                } else {
                    t.shape[t.shape.len() - 1]
                };
                let m = by_type.entry(t.dtype.clone()).or_default();
                m.weights += t.n_elements;
                m.rows += t.n_elements.checked_div(row_len).unwrap_or(0);
                m.matrices += 1;
            }
        }
        c
    }

    /// Bytes per component as `(component, bytes, tensor count)`, non-empty ones only.
    pub fn component_summary(&self) -> Vec<(Component, u64, usize)> {
        Component::ALL
            .iter()
            .filter_map(|&c| {
                let ts: Vec<&TensorEntry> =
                    self.tensors.iter().filter(|t| t.component == c).collect();
                (!ts.is_empty()).then(|| (c, ts.iter().map(|t| t.n_bytes).sum(), ts.len()))
            })
            .collect()
    }

    /// A short model name: the file stem (what the user typed, unique per quantization),
    /// or the directory name for a model directory / lone config.json.
    fn model_name(&self) -> String {
        let p = if self.format == CheckpointFormat::ConfigJson || self.path.is_dir() {
            if self.path.is_dir() {
                self.path.as_path()
            } else {
                self.path.parent().unwrap_or(&self.path)
            }
        } else {
            &self.path
        };
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("model");
        stem.to_string()
    }

    /// Infer the architecture (validated). Parameter counts and native precision come
    /// from the tensors when there are any.
    pub fn architecture(&self) -> Result<ModelArchitecture, CheckpointError> {
        let origin = self.path.display().to_string();
        let mut profile = if let Some(g) = &self.gguf {
            crate::arch_gguf::profile_from_gguf(g, &origin)?
        } else if let Some((cpath, text)) = &self.config {
            let corigin = cpath.display().to_string();
            let root = crate::arch_hf::parse_config(text, &corigin)?;
            crate::arch_hf::profile_from_config(&root, &corigin)?
        } else {
            let why = match guess_family(&self.tensors) {
                Some("bert") => "unsupported architecture: bert (an encoder-only model; the planner models decoder LLMs)".to_string(),
                Some(f) => format!("no config.json beside the file; tensor names look like {f}, but the geometry (heads, head_dim) needs config.json"),
                None => "no config.json beside the file, and the architecture cannot be inferred from tensor names".to_string(),
            };
            return Err(CheckpointError::unsupported(&origin, why));
        };
        profile.insert("name".into(), Value::from(self.model_name()));
        profile.insert("source".into(), Value::from(origin.clone()));
        if !self.tensors.is_empty() {
            self.apply_tensor_facts(&mut profile);
        } else if !profile.contains_key("param_count_b") {
            let p = estimate_params(&profile);
            profile.insert("param_count_b".into(), Value::from(p / 1e9));
        }
        finish(profile, &origin)
    }

    /// Overwrite estimates with what the tensors say: parameter counts, active
    /// parameters of MoE models, native bits per weight, tied embeddings, encoders.
    fn apply_tensor_facts(&self, profile: &mut Map<String, Value>) {
        let params: Vec<&TensorEntry> = self.tensors.iter().filter(|t| t.is_parameter).collect();
        let text: Vec<&&TensorEntry> = params.iter().filter(|t| t.component.is_text()).collect();
        let n = saturating_sum(text.iter().map(|t| t.n_elements));
        let bytes = saturating_sum(text.iter().map(|t| t.n_bytes));
        if n > 0 {
            profile.insert("param_count_b".into(), Value::from(n as f64 / 1e9));
            let bits = (bytes as f64 * 8.0 / n as f64).min(32.0);
            profile.insert("weight_dtype_bits".into(), Value::from(bits));
        } else {
            let p = estimate_params(profile);
            profile.insert("param_count_b".into(), Value::from(p / 1e9));
        }
        let has_lm_head = self
            .tensors
            .iter()
            .any(|t| t.component == Component::LmHead);
        profile.insert("embeddings_tied".into(), Value::from(!has_lm_head));
        if profile.get("is_moe").and_then(|v| v.as_bool()) == Some(true) && n > 0 {
            let routed = saturating_sum(
                text.iter()
                    .filter(|t| is_expert(&t.name) && !is_shared_expert(&t.name))
                    .map(|t| t.n_elements),
            );
            let e = profile
                .get("num_experts")
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0);
            let k = profile
                .get("num_active_experts")
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0);
            if e > 0.0 && routed > 0 {
                let active = n as f64 - routed as f64 * (1.0 - (k / e).min(1.0));
                profile.insert("active_param_count_b".into(), Value::from(active / 1e9));
            }
        }
        for (c, field) in [
            (Component::VisionEncoder, "vision_encoder_mb"),
            (Component::AudioEncoder, "audio_encoder_mb"),
        ] {
            let b = saturating_sum(
                self.tensors
                    .iter()
                    .filter(|t| t.component == c)
                    .map(|t| t.n_bytes),
            );
            if b > 0 {
                profile.insert(field.into(), Value::from(b as f64 / (1024.0 * 1024.0)));
            }
        }
    }
}

/// Sum of header-claimed sizes: a hostile header's counts may add past `u64` (found by
/// the `gguf_header` fuzzer), and these sums only feed f64 estimates.
fn saturating_sum(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0, u64::saturating_add)
}

fn num(p: &Map<String, Value>, k: &str) -> f64 {
    p.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

/// Parameters implied by the geometry alone (used only when there are no tensors):
/// embeddings, Q/K/V/O, a gated FFN (or the experts), untied head and PLE.
pub(crate) fn estimate_params(p: &Map<String, Value>) -> f64 {
    let l = num(p, "num_hidden_layers");
    let h = num(p, "hidden_size");
    let v = num(p, "vocab_size");
    let heads = num(p, "num_attention_heads");
    let kv = num(p, "num_key_value_heads");
    let hd = num(p, "head_dim");
    let ffn = num(p, "intermediate_size");
    let attn_layers = match p.get("num_attention_layers").and_then(|x| x.as_f64()) {
        Some(a) if a > 0.0 => a,
        _ => l,
    };
    let attn = h * heads * hd * 2.0 + 2.0 * h * kv * hd;
    let mut total = v * h + attn_layers * attn;
    let moe = p.get("is_moe").and_then(|x| x.as_bool()) == Some(true);
    if moe {
        let e = num(p, "num_experts");
        let eff = match num(p, "expert_intermediate_size") {
            x if x > 0.0 => x,
            _ => ffn,
        };
        let moe_layers = match num(p, "num_moe_layers") {
            x if x > 0.0 => x,
            _ => l,
        };
        let shared = num(p, "num_shared_experts")
            * 3.0
            * h
            * match num(p, "shared_expert_intermediate_size") {
                x if x > 0.0 => x,
                _ => eff,
            };
        total +=
            moe_layers * (e * 3.0 * h * eff + shared + h * e) + (l - moe_layers) * 3.0 * h * ffn;
    } else if let Some(per) = p
        .get("intermediate_size_per_layer")
        .and_then(|x| x.as_array())
    {
        total += per
            .iter()
            .filter_map(|x| x.as_f64())
            .map(|f| 3.0 * h * f)
            .sum::<f64>();
    } else {
        total += l * 3.0 * h * ffn;
    }
    if p.get("embeddings_tied").and_then(|x| x.as_bool()) == Some(false) {
        total += v * h;
    }
    if p.get("has_ple").and_then(|x| x.as_bool()) == Some(true) {
        let ph = num(p, "ple_hidden_size");
        total += num(p, "ple_vocab_size") * l * ph + h * l * ph;
    }
    total
}

/// Validate the assembled profile through the model contract.
pub(crate) fn finish(
    profile: Map<String, Value>,
    origin: &str,
) -> Result<ModelArchitecture, CheckpointError> {
    let text = Value::Object(profile).to_string();
    ModelArchitecture::from_json_str(&text, origin).map_err(|e| CheckpointError::Model {
        path: origin.to_string(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    /// The gguf_header fuzzer's input claimed tensors whose element counts add past
    /// u64: the sum stops at the maximum instead of wrapping to a small count.
    #[test]
    fn claimed_sizes_saturate_instead_of_wrapping() {
        assert_eq!(
            super::saturating_sum([u64::MAX - 1, 2, 5].into_iter()),
            u64::MAX
        );
        assert_eq!(super::saturating_sum([3, 4].into_iter()), 7);
    }
}
