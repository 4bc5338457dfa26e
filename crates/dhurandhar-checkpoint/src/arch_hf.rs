//! Architecture from a Hugging Face `config.json`: the common decoder families,
//! multimodal wrappers (`text_config`), sliding-window patterns and `layer_types`,
//! shared-KV tails, per-layer embeddings, MoE and Mamba hybrids.

use dhurandhar_model::ModelArchitecture;
use serde_json::{Map, Value};

use crate::error::CheckpointError;

/// `model_type`s this reader maps (the text model's type for multimodal wrappers).
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "gemma3n",
    "gemma3n_text",
    "gemma4",
    "gemma4_text",
    "phi3",
    "granite",
    "granitemoe",
    "granitemoehybrid",
    "falcon_h1",
    "zamba2",
    "jamba",
    "smollm3",
    "olmo2",
    "starcoder2",
];

/// Largest integer a config.json count or size field may hold.
const MAX_CONFIG_INT: u64 = u32::MAX as u64;

/// Parse config.json text into a JSON object.
pub(crate) fn parse_config(
    text: &str,
    origin: &str,
) -> Result<Map<String, Value>, CheckpointError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CheckpointError::json(
            origin,
            "config.json is not a JSON object",
        )),
        Err(e) => Err(CheckpointError::json(
            origin,
            format!("not valid JSON: {e}"),
        )),
    }
}

/// Architecture from config.json text alone (no tensors): parameter count is estimated
/// from the geometry. `origin` names the file in errors and becomes `source`.
pub fn arch_from_config_json(
    text: &str,
    origin: &str,
) -> Result<ModelArchitecture, CheckpointError> {
    let root = parse_config(text, origin)?;
    let mut p = profile_from_config(&root, origin)?;
    let name = root
        .get("_name_or_path")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
        .unwrap_or_else(|| {
            p.get("family")
                .and_then(|v| v.as_str())
                .unwrap_or("model")
                .to_string()
        });
    p.insert("name".into(), Value::from(name));
    p.insert("source".into(), Value::from(origin));
    let est = crate::checkpoint::estimate_params(&p);
    p.insert("param_count_b".into(), Value::from(est / 1e9));
    crate::checkpoint::finish(p, origin)
}

struct Cfg<'a> {
    /// Text-model fields first (multimodal `text_config`), then the top level.
    layers: Vec<&'a Map<String, Value>>,
    origin: &'a str,
}

impl<'a> Cfg<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.layers
            .iter()
            .find_map(|m| m.get(k))
            .filter(|v| !v.is_null())
    }
    /// A count or size field. Every such field of a config.json (dimensions, layers,
    /// heads, vocabulary, context) fits in 32 bits; a larger value (`1e20`, which a
    /// float-to-integer cast would turn into u64::MAX) is refused with the field named.
    fn u64(&self, k: &str) -> Result<Option<u64>, CheckpointError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let n = v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_CONFIG_INT as f64)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if n <= MAX_CONFIG_INT => Ok(Some(n)),
            Some(_) => Err(self.too_large(k, v)),
            None if v.as_f64().is_some_and(|f| f.fract() == 0.0 && f > 0.0) => {
                Err(self.too_large(k, v))
            }
            None => Err(CheckpointError::json(
                self.origin,
                format!("`{k}` should be a non-negative integer, found {v}"),
            )),
        }
    }
    fn too_large(&self, k: &str, v: &Value) -> CheckpointError {
        CheckpointError::json(
            self.origin,
            format!("`{k}` = {v} is out of range (at most {MAX_CONFIG_INT})"),
        )
    }
    fn first_u64(&self, keys: &[&str]) -> Result<Option<u64>, CheckpointError> {
        for k in keys {
            if let Some(v) = self.u64(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
    fn need(&self, keys: &[&str]) -> Result<u64, CheckpointError> {
        self.first_u64(keys)?
            .ok_or_else(|| CheckpointError::json(self.origin, format!("missing `{}`", keys[0])))
    }
    fn bool(&self, k: &str) -> Option<bool> {
        self.get(k).and_then(|v| v.as_bool())
    }
    fn u64_list(&self, k: &str) -> Result<Option<Vec<u64>>, CheckpointError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x.as_u64() {
                    Some(n) if n <= MAX_CONFIG_INT => Ok(n),
                    Some(_) => Err(self.too_large(k, x)),
                    None => Err(CheckpointError::json(
                        self.origin,
                        format!("`{k}` should list integers, found {x}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(CheckpointError::json(
                self.origin,
                format!("`{k}` should be a list, found {v}"),
            )),
        }
    }
}

/// Build a model profile (JSON object with `ModelArchitecture` field names).
pub(crate) fn profile_from_config(
    root: &Map<String, Value>,
    origin: &str,
) -> Result<Map<String, Value>, CheckpointError> {
    let text = root.get("text_config").and_then(|v| v.as_object());
    let mut layers = Vec::with_capacity(2);
    if let Some(t) = text {
        layers.push(t);
    }
    layers.push(root);
    let c = Cfg { layers, origin };
    let top_type = root
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let mt = text
        .and_then(|t| t.get("model_type"))
        .and_then(|v| v.as_str())
        .unwrap_or(top_type);
    if mt.is_empty() {
        return Err(CheckpointError::json(origin, "no `model_type`"));
    }
    if !SUPPORTED.contains(&mt) {
        return Err(CheckpointError::unsupported(
            origin,
            format!(
                "unsupported architecture: {mt} (supported: {})",
                SUPPORTED.join(", ")
            ),
        ));
    }
    let family = mt.trim_end_matches("_text").to_string();
    let l = c.need(&["num_hidden_layers", "n_layer", "num_layers"])?;
    if l == 0 || l > 100_000 {
        return Err(CheckpointError::json(
            origin,
            format!("`num_hidden_layers` is {l}"),
        ));
    }
    let n = l as usize;
    let hidden = c.need(&["hidden_size", "d_model", "n_embd"])?;
    let heads = c.need(&["num_attention_heads", "n_head"])?;
    let kv = c.u64("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match c.first_u64(&["head_dim", "attention_head_dim"])? {
        Some(d) if d > 0 => d,
        _ if heads > 0 => hidden / heads,
        _ => 0,
    };
    let vocab = c.need(&["vocab_size"])?;

    let mut p = Map::new();
    p.insert("family".into(), Value::from(family.clone()));
    p.insert("num_hidden_layers".into(), Value::from(l));
    p.insert("hidden_size".into(), Value::from(hidden));
    p.insert("num_attention_heads".into(), Value::from(heads));
    p.insert("num_key_value_heads".into(), Value::from(kv));
    p.insert("head_dim".into(), Value::from(head_dim));
    p.insert("vocab_size".into(), Value::from(vocab));
    if let Some(m) = c.u64("max_position_embeddings")? {
        if m > 0 {
            p.insert("max_context_tokens".into(), Value::from(m));
        }
    }
    // transformers' per-class default when the key is absent.
    let tied_default = family.starts_with("gemma") || family == "zamba2";
    p.insert(
        "embeddings_tied".into(),
        Value::from(c.bool("tie_word_embeddings").unwrap_or(tied_default)),
    );

    // FFN: a list (per layer) or a scalar.
    let ffn = match c.get("intermediate_size") {
        Some(Value::Array(a)) => {
            let v: Vec<u64> = a.iter().filter_map(|x| x.as_u64()).collect();
            if v.len() != n {
                return Err(CheckpointError::json(
                    origin,
                    format!(
                        "`intermediate_size` lists {} widths for {l} layers",
                        a.len()
                    ),
                ));
            }
            if v.iter().any(|&x| x != v[0]) {
                p.insert("intermediate_size_per_layer".into(), Value::from(v.clone()));
            }
            v.iter().copied().max().unwrap_or(0)
        }
        _ => c
            .first_u64(&["intermediate_size", "n_inner", "ffn_dim"])?
            .unwrap_or(0),
    };

    // Layer kinds: explicit `layer_types`, or the family's pattern.
    let window = c.u64("sliding_window")?.unwrap_or(0);
    let mut types: Option<Vec<&'static str>> = None;
    let mut ssm_everywhere = false;
    if let Some(Value::Array(a)) = c.get("layer_types").or_else(|| c.get("layers_block_type")) {
        if a.len() != n {
            return Err(CheckpointError::json(
                origin,
                format!("`layer_types` has {} entries for {l} layers", a.len()),
            ));
        }
        let mut v = Vec::with_capacity(n);
        for x in a {
            let s = x.as_str().unwrap_or("");
            v.push(match s {
                "sliding_attention" => "sliding_attention",
                "full_attention" | "attention" => "full_attention",
                // zamba2: a mamba layer followed by the shared attention block.
                "hybrid" => {
                    ssm_everywhere = true;
                    "full_attention"
                }
                "mamba" | "mamba2" | "ssm" => "ssm",
                other => {
                    return Err(CheckpointError::unsupported(
                        origin,
                        format!("unsupported layer type `{other}` in layer_types"),
                    ))
                }
            });
        }
        if family == "zamba2" {
            ssm_everywhere = true;
        }
        types = Some(v);
    } else if window > 0 {
        types = match family.as_str() {
            // Even layers slide, odd layers are global.
            "gemma2" => Some(
                (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        }
                    })
                    .collect(),
            ),
            "gemma3" | "gemma3n" | "gemma4" => {
                let period = c.u64("sliding_window_pattern")?.unwrap_or(6).max(1) as usize;
                Some(
                    (0..n)
                        .map(|i| {
                            if (i + 1) % period != 0 {
                                "sliding_attention"
                            } else {
                                "full_attention"
                            }
                        })
                        .collect(),
                )
            }
            // Qwen: sliding only when enabled, and only from `max_window_layers` on.
            "qwen2" | "qwen2_moe" | "qwen3" | "qwen3_moe" => {
                if c.bool("use_sliding_window") == Some(true) {
                    let from = c.u64("max_window_layers")?.unwrap_or(0) as usize;
                    Some(
                        (0..n)
                            .map(|i| {
                                if i >= from {
                                    "sliding_attention"
                                } else {
                                    "full_attention"
                                }
                            })
                            .collect(),
                    )
                } else {
                    None
                }
            }
            // Mistral-style: every layer attends within the window.
            "mistral" | "mixtral" | "phi3" | "starcoder2" => Some(vec!["sliding_attention"; n]),
            _ => None,
        };
    }
    if family == "jamba" {
        let period = c.u64("attn_layer_period")?.unwrap_or(8).max(1) as usize;
        let offset = c.u64("attn_layer_offset")?.unwrap_or(4) as usize;
        types = Some(
            (0..n)
                .map(|i| {
                    if i % period == offset {
                        "full_attention"
                    } else {
                        "ssm"
                    }
                })
                .collect(),
        );
    }
    if let Some(t) = &types {
        if t.contains(&"sliding_attention") {
            if window == 0 {
                return Err(CheckpointError::json(
                    origin,
                    "layer_types has sliding_attention but `sliding_window` is not set",
                ));
            }
            p.insert("sliding_window".into(), Value::from(window));
        }
        if t.iter().any(|&x| x != "full_attention") {
            p.insert("layer_types".into(), Value::from(t.clone()));
        }
    }

    // Gemma 3n / 4: shared-KV tail, per-layer embeddings, global-layer geometry.
    if let Some(s) = c.u64("num_kv_shared_layers")? {
        if s > 0 {
            p.insert("shared_kv_last_n_layers".into(), Value::from(s));
        }
    }
    if let Some(ple) = c.u64("hidden_size_per_layer_input")? {
        if ple > 0 {
            p.insert("has_ple".into(), Value::from(true));
            p.insert("ple_hidden_size".into(), Value::from(ple));
            let pv = c.u64("vocab_size_per_layer_input")?.unwrap_or(vocab);
            p.insert("ple_vocab_size".into(), Value::from(pv));
        }
    }
    if let Some(g) = c.u64("global_head_dim")? {
        if g > 0 && g != head_dim {
            p.insert("global_head_dim".into(), Value::from(g));
        }
    }
    if let Some(g) = c.u64("num_global_key_value_heads")? {
        if g > 0 && g != kv {
            p.insert("num_global_key_value_heads".into(), Value::from(g));
        }
    }
    if c.bool("attention_k_eq_v") == Some(true) {
        p.insert("global_kv_unified".into(), Value::from(true));
    }

    // Mixture of experts.
    let experts = c
        .first_u64(&["num_local_experts", "num_experts", "n_routed_experts"])?
        .unwrap_or(0);
    let mut ffn_dense = ffn;
    if experts > 1 {
        let k = c
            .first_u64(&["num_experts_per_tok", "num_experts_per_token", "top_k"])?
            .unwrap_or(1)
            .max(1);
        p.insert("is_moe".into(), Value::from(true));
        p.insert("num_experts".into(), Value::from(experts));
        p.insert("num_active_experts".into(), Value::from(k));
        let eff = c.u64("moe_intermediate_size")?.unwrap_or(ffn);
        if eff > 0 {
            p.insert("expert_intermediate_size".into(), Value::from(eff));
        }
        if ffn_dense == 0 {
            ffn_dense = eff;
        }
        let shared_ffn = c
            .first_u64(&[
                "shared_expert_intermediate_size",
                "shared_intermediate_size",
            ])?
            .unwrap_or(0);
        let shared = c
            .first_u64(&["n_shared_experts", "num_shared_experts"])?
            .unwrap_or(if shared_ffn > 0 { 1 } else { 0 });
        if shared > 0 {
            p.insert("num_shared_experts".into(), Value::from(shared));
            if shared_ffn > 0 {
                p.insert(
                    "shared_expert_intermediate_size".into(),
                    Value::from(shared_ffn),
                );
            }
        }
        // Which layers are MoE: qwen's decoder_sparse_step / mlp_only_layers, jamba's
        // expert period and offset.
        let moe_layers = if family == "jamba" {
            let period = c.u64("expert_layer_period")?.unwrap_or(2).max(1);
            let offset = c.u64("expert_layer_offset")?.unwrap_or(1);
            (0..l).filter(|i| i % period == offset).count() as u64
        } else {
            let step = c.u64("decoder_sparse_step")?.unwrap_or(1).max(1);
            let dense = c.u64_list("mlp_only_layers")?.unwrap_or_default();
            (0..l)
                .filter(|i| !dense.contains(i) && (i + 1) % step == 0)
                .count() as u64
        };
        if moe_layers < l {
            p.insert("num_moe_layers".into(), Value::from(moe_layers));
        }
    }
    if ffn_dense == 0 {
        return Err(CheckpointError::json(origin, "missing `intermediate_size`"));
    }
    p.insert("intermediate_size".into(), Value::from(ffn_dense));

    // Mamba hybrids.
    let d_state = c
        .first_u64(&["mamba_d_state", "ssm_state_size", "state_size"])?
        .unwrap_or(0);
    if matches!(
        family.as_str(),
        "jamba" | "falcon_h1" | "zamba2" | "granitemoehybrid"
    ) {
        if d_state == 0 {
            return Err(CheckpointError::json(origin, "missing `mamba_d_state`"));
        }
        let expand = c.u64("mamba_expand")?.unwrap_or(2);
        let d_inner = match c.first_u64(&["mamba_d_ssm", "mamba_intermediate_size"])? {
            Some(d) if d > 0 => d,
            _ => match (c.u64("mamba_n_heads")?, c.u64("mamba_d_head")?) {
                (Some(h), Some(d)) if h.saturating_mul(d) > 0 => h.saturating_mul(d),
                _ => expand.saturating_mul(hidden),
            },
        };
        let groups = c
            .first_u64(&["mamba_n_groups", "mamba_ngroups"])?
            .unwrap_or(0);
        let d_conv = c.u64("mamba_d_conv")?.unwrap_or(4);
        let n_ssm = if family == "falcon_h1" || ssm_everywhere {
            l
        } else {
            types
                .as_ref()
                .map_or(0, |t| t.iter().filter(|&&x| x == "ssm").count() as u64)
        };
        p.insert("has_mamba".into(), Value::from(true));
        p.insert(
            "mamba_state_dim".into(),
            Value::from(d_inner.saturating_mul(d_state)),
        );
        p.insert(
            "mamba_conv_state_dim".into(),
            Value::from(crate::arch_gguf::conv_state(
                d_conv, d_inner, groups, d_state,
            )),
        );
        p.insert("mamba_num_layers".into(), Value::from(n_ssm));
        if family == "falcon_h1" {
            p.insert("num_attention_layers".into(), Value::from(l));
        }
    }
    Ok(p)
}
