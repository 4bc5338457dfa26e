//! Adapters in PEFT's layout: a directory with `adapter_config.json` and
//! `adapter_model.safetensors` (`…layers.N.self_attn.q_proj.lora_A.weight`, `r × in`;
//! `lora_B`, `out × r`), read into and written from the GGUF-keyed [`Adapter`].
//!
//! llama.cpp's converter reorders the rows of Q and K for models whose GGUF RoPE rotates
//! adjacent pairs (llama, mistral): within each head, HF's `[first half | second half]`
//! becomes interleaved pairs. An adapter's `B` for `q_proj`/`k_proj` has those rows, so it
//! is reordered the same way when read and back when written.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use dhurandhar_checkpoint::{map_file, DType};
use dhurandhar_engine::{ModelConfig, RopeStyle};
use dhurandhar_lora::{gguf_tensor_name, peft_key_stem, Adapter, LoraPair, TargetModule};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Largest `adapter_config.json` read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What the PEFT ↔ GGUF mapping needs of the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// The GGUF's RoPE rotates adjacent pairs: Q/K rows are reordered from HF's.
    pub interleaved_rope: bool,
}

impl From<&ModelConfig> for Geometry {
    fn from(c: &ModelConfig) -> Self {
        Geometry {
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            interleaved_rope: c.rope_style == RopeStyle::Interleaved,
        }
    }
}

/// `adapter_config.json`: the fields read and written; others are kept out of the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeftConfig {
    #[serde(default = "lora_type")]
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    target_modules: TargetModules,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default = "none")]
    bias: String,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, serde_json::Value>,
}

fn lora_type() -> String {
    "LORA".into()
}
fn none() -> String {
    "none".into()
}

/// PEFT writes a list, or one regex string.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    #[default]
    Unset,
    List(Vec<String>),
    Pattern(String),
}

/// A matrix as read: its shape and values.
type Matrix = (Vec<usize>, Vec<f32>);

/// Row `hf` of a head's `head_dim` rows in HF order → its row in GGUF order.
fn gguf_row(hf: usize, head_dim: usize) -> usize {
    let (head, within) = (hf / head_dim, hf % head_dim);
    let half = head_dim / 2;
    head * head_dim + (within % half) * 2 + within / half
}

/// Reorder `B`'s rows (each `r` values) from HF to GGUF order (`to_gguf`) or back.
fn reorder_rows(b: &[f32], r: usize, head_dim: usize, to_gguf: bool) -> Vec<f32> {
    let mut out = vec![0f32; b.len()];
    for hf in 0..b.len() / r {
        let g = gguf_row(hf, head_dim);
        let (from, to) = if to_gguf { (hf, g) } else { (g, hf) };
        out[to * r..(to + 1) * r].copy_from_slice(&b[from * r..(from + 1) * r]);
    }
    out
}

/// Whether `m`'s `B` rows are reordered between PEFT and GGUF.
fn reordered(g: &Geometry, m: TargetModule) -> bool {
    g.interleaved_rope
        && matches!(m, TargetModule::Q | TargetModule::K)
        && g.head_dim.is_multiple_of(2)
}

/// `(layer, module, is_b)` of a PEFT key, or why it cannot be used.
fn parse_key(key: &str) -> std::result::Result<(usize, TargetModule, bool), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let n = parts.len();
    let is_b = match (n >= 3).then(|| (parts[n - 2], parts[n - 1])) {
        Some(("lora_A", "weight")) => false,
        Some(("lora_B", "weight")) => true,
        _ => return Err("not a lora_A/lora_B weight (embedding adapters, DoRA magnitudes and modules_to_save are not supported)".into()),
    };
    let module = TargetModule::from_hf(parts[n - 3]).ok_or_else(|| {
        format!(
            "module `{}` is not one LoRA can adapt here (known: {})",
            parts[n - 3],
            TargetModule::hf_names().join(", ")
        )
    })?;
    let layer = parts
        .windows(2)
        .find(|w| w[0] == "layers")
        .and_then(|w| w[1].parse().ok())
        .ok_or("no `layers.N` in the key")?;
    Ok((layer, module, is_b))
}

/// Read a PEFT adapter directory for a base of geometry `g`.
pub fn load(dir: &Path, g: &Geometry) -> Result<Adapter> {
    let name = dir.display().to_string();
    let bad = |why: String| Error::invalid("adapter", format!("{name}: {why}"));
    if !dir.is_dir() {
        return Err(bad(format!(
            "not a directory; an adapter is a directory with {CONFIG_FILE} and {WEIGHTS_FILE}"
        )));
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let text =
        dhurandhar_io::read_to_string_bounded(&cfg_path, MAX_CONFIG_BYTES, "an adapter config")?;
    let cfg: PeftConfig =
        serde_json::from_str(&text).map_err(|e| bad(format!("{CONFIG_FILE}: {e}")))?;
    for (unsupported, on) in [
        ("use_dora", cfg.use_dora),
        ("use_rslora", cfg.use_rslora),
        ("fan_in_fan_out", cfg.fan_in_fan_out),
        ("rank_pattern", !cfg.rank_pattern.is_empty()),
        ("alpha_pattern", !cfg.alpha_pattern.is_empty()),
        ("peft_type", cfg.peft_type != "LORA"),
        ("bias", cfg.bias != "none"),
    ] {
        if on {
            return Err(bad(format!(
                "{CONFIG_FILE}: `{unsupported}` is not supported (plain LoRA only)"
            )));
        }
    }
    if cfg.r == 0 || !(cfg.lora_alpha.is_finite() && cfg.lora_alpha > 0.0) {
        return Err(bad(format!(
            "{CONFIG_FILE}: r ({}) and lora_alpha ({}) must be positive",
            cfg.r, cfg.lora_alpha
        )));
    }
    let w_path = dir.join(WEIGHTS_FILE);
    let map = map_file(&w_path)?;
    let wname = w_path.display().to_string();
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| Error::invalid("adapter", format!("{wname}: {e}")))?;
    // (layer, module) → (A, B) as read.
    let mut halves: BTreeMap<(usize, TargetModule), [Option<Matrix>; 2]> = BTreeMap::new();
    for (key, view) in st.tensors() {
        let tbad =
            |why: String| Error::invalid("adapter", format!("{wname}: tensor `{key}`: {why}"));
        let (layer, module, is_b) = parse_key(&key).map_err(tbad)?;
        if layer >= g.n_layers {
            return Err(tbad(format!("layer {layer}, the base has {}", g.n_layers)));
        }
        let shape = view.shape().to_vec();
        if shape.len() != 2 {
            return Err(tbad(format!("shape {shape:?} is not a matrix")));
        }
        let dt = DType::try_from(view.dtype())
            .map_err(|_| tbad(format!("dtype {:?} is not a float type", view.dtype())))?;
        let mut v = Vec::new();
        if !dt.to_f32(view.data(), &mut v) || v.len() != shape[0] * shape[1] {
            return Err(tbad(format!(
                "holds {} bytes, not a {dt} {shape:?} matrix",
                view.data().len()
            )));
        }
        halves.entry((layer, module)).or_default()[is_b as usize] = Some((shape, v));
    }
    let mut pairs = BTreeMap::new();
    let mut modules = Vec::new();
    for ((layer, m), [a, b]) in halves {
        let stem = peft_key_stem(layer, m);
        let (Some((sa, a)), Some((sb, b))) = (a, b) else {
            return Err(bad(format!(
                "{WEIGHTS_FILE}: `{stem}` has lora_A or lora_B but not both"
            )));
        };
        // A: r × in, B: out × r.
        let (r, fin, fout) = (sa[0], sa[1], sb[0]);
        if sb[1] != r || r != cfg.r {
            return Err(bad(format!(
                "{WEIGHTS_FILE}: `{stem}`: A is {sa:?} and B {sb:?}; both must have rank r = {}",
                cfg.r
            )));
        }
        let b = if reordered(g, m) {
            reorder_rows(&b, r, g.head_dim, true)
        } else {
            b
        };
        if !modules.contains(&m) {
            modules.push(m);
        }
        pairs.insert(
            gguf_tensor_name(layer, m),
            LoraPair {
                r,
                in_features: fin,
                out_features: fout,
                a,
                b,
            },
        );
    }
    if pairs.is_empty() {
        return Err(bad(format!("{WEIGHTS_FILE} holds no LoRA pairs")));
    }
    modules.sort();
    Ok(Adapter {
        r: cfg.r,
        alpha: cfg.lora_alpha,
        target_modules: modules,
        base_model: cfg.base_model_name_or_path.unwrap_or_default(),
        pairs,
    })
}

/// Write `adapter` in PEFT's layout into `dir` (created if missing; each file written
/// atomically), for a base of geometry `g`.
pub fn save(adapter: &Adapter, dir: &Path, g: &Geometry) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| dhurandhar_io::IoError::os(dir, e))?;
    // Tensors are viewed in place (only reordered Q/K rows are copied) and streamed to
    // the file, so saving costs no second copy of the adapter.
    let mut owned: Vec<(String, Vec<usize>, Cow<'_, [f32]>)> = Vec::new();
    for (name, p) in &adapter.pairs {
        let (layer, m) = dhurandhar_lora::parse_gguf_tensor_name(name).ok_or_else(|| {
            Error::invalid(
                "adapter",
                format!("tensor `{name}` is not a projection LoRA adapts"),
            )
        })?;
        let stem = peft_key_stem(layer, m);
        let b = if reordered(g, m) {
            Cow::Owned(reorder_rows(&p.b, p.r, g.head_dim, false))
        } else {
            Cow::Borrowed(p.b.as_slice())
        };
        owned.push((
            format!("{stem}.lora_A.weight"),
            vec![p.r, p.in_features],
            Cow::Borrowed(p.a.as_slice()),
        ));
        owned.push((
            format!("{stem}.lora_B.weight"),
            vec![p.out_features, p.r],
            b,
        ));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, shape, data) in &owned {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
            .map_err(|e| Error::invalid("adapter", format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), v));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = dir.join(WEIGHTS_FILE);
    // serialize_to_file writes a sibling temp file and renames it: atomic.
    safetensors::serialize_to_file(views, Some(meta), &weights)
        .map_err(|e| Error::invalid("adapter", format!("{}: {e}", weights.display())))?;
    let cfg = PeftConfig {
        peft_type: lora_type(),
        r: adapter.r,
        lora_alpha: adapter.alpha,
        target_modules: TargetModules::List(
            adapter
                .target_modules
                .iter()
                .map(|m| m.hf().to_string())
                .collect(),
        ),
        base_model_name_or_path: Some(adapter.base_model.clone()),
        lora_dropout: 0.0,
        bias: none(),
        task_type: Some("CAUSAL_LM".into()),
        fan_in_fan_out: false,
        use_rslora: false,
        use_dora: false,
        rank_pattern: HashMap::new(),
        alpha_pattern: HashMap::new(),
    };
    let json = serde_json::to_string_pretty(&cfg).expect("plain data serializes");
    dhurandhar_io::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_reorder_as_llama_cpp_permutes() {
        // One head of 4 rows: HF [x0 x1 | y0 y1] → GGUF [x0 y0 x1 y1].
        assert_eq!(
            (0..4).map(|r| gguf_row(r, 4)).collect::<Vec<_>>(),
            [0, 2, 1, 3]
        );
        assert_eq!(gguf_row(4 + 1, 4), 4 + 2, "second head");
        let b: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let there = reorder_rows(&b, 2, 8, true);
        assert_ne!(there, b);
        assert_eq!(reorder_rows(&there, 2, 8, false), b);
    }

    #[test]
    fn keys_name_layer_module_and_half() {
        assert_eq!(
            parse_key("base_model.model.model.layers.3.self_attn.k_proj.lora_B.weight"),
            Ok((3, TargetModule::K, true))
        );
        assert_eq!(
            parse_key("base_model.model.model.language_model.layers.0.mlp.down_proj.lora_A.weight"),
            Ok((0, TargetModule::Down, false))
        );
        assert!(parse_key("base_model.model.model.embed_tokens.lora_embedding_A").is_err());
        assert!(parse_key("base_model.model.lm_head.lora_A.weight")
            .unwrap_err()
            .contains("lm_head"));
    }
}
