//! Architecture from GGUF metadata: `general.architecture` plus the `{arch}.*` keys
//! llama.cpp writes, including per-layer arrays (`head_count_kv`,
//! `feed_forward_length`) and the sliding-window / shared-KV / PLE / MoE / SSM keys.

use serde_json::{Map, Value};

use crate::error::CheckpointError;
use crate::gguf::{GgufFile, GgufValue};
use crate::gguf_hparams::{missing, GgufHyperParams, GgufTokenizer, Keys};

/// Architectures whose KV cache is plain per-layer K and V of `head_count_kv x key_length`.
/// Others (MLA, chunked attention, ...) would be mis-counted, so they are refused.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "qwen2",
    "qwen2moe",
    "qwen3",
    "qwen3moe",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3n",
    "phi3",
    "granite",
    "granitemoe",
    "granitehybrid",
    "mamba",
    "mamba2",
    "jamba",
    "falcon-h1",
    "nemotron_h",
    "olmo",
    "olmo2",
    "starcoder2",
    "stablelm",
    "internlm2",
    "smollm3",
];

/// Hybrid layouts where every layer has both an attention and an SSM mixer in parallel.
const PARALLEL_HYBRID: &[&str] = &["falcon-h1"];

/// Build a model profile (JSON object with `ModelArchitecture` field names) from GGUF metadata.
pub(crate) fn profile_from_gguf(
    g: &GgufFile,
    origin: &str,
) -> Result<Map<String, Value>, CheckpointError> {
    let arch = g.architecture().ok_or_else(|| {
        CheckpointError::unsupported(origin, "no `general.architecture` metadata")
    })?;
    if !SUPPORTED.contains(&arch) {
        return Err(CheckpointError::unsupported(
            origin,
            format!(
                "unsupported architecture: {arch} (supported: {})",
                SUPPORTED.join(", ")
            ),
        ));
    }
    let hp = GgufHyperParams::read(g, origin)?;
    let l = hp.block_count;
    let hidden = hp.embedding_length;
    let k = Keys {
        g,
        arch,
        origin,
        layers: l as usize,
    };
    let has_ssm = k.get("ssm.state_size").is_some();

    let heads_pl = hp.head_count;
    let kv_pl = hp.head_count_kv;
    let heads = heads_pl
        .as_ref()
        .and_then(|v| v.iter().copied().max())
        .unwrap_or(0);
    let kv_pl = kv_pl.or_else(|| heads_pl.clone());
    let kv = kv_pl
        .as_ref()
        .and_then(|v| v.iter().copied().filter(|&x| x > 0).max())
        .unwrap_or(0);
    // Layers with no KV heads are SSM layers in sequential hybrids (jamba, granitehybrid,
    // nemotron_h); parallel hybrids (falcon-h1) have both mixers on every layer.
    let parallel = PARALLEL_HYBRID.contains(&arch);
    let ssm_layer: Vec<bool> = (0..k.layers)
        .map(|i| {
            if !has_ssm || parallel {
                false
            } else if heads == 0 {
                true
            } else {
                kv_pl.as_ref().is_some_and(|v| v[i] == 0)
            }
        })
        .collect();
    let pure_ssm = ssm_layer.iter().all(|&s| s);

    let mut p = Map::new();
    p.insert("family".into(), Value::from(arch));
    p.insert("num_hidden_layers".into(), Value::from(l));
    p.insert("hidden_size".into(), Value::from(hidden));

    if pure_ssm {
        // No layer attends: the attention geometry is never used (KV bytes are zero),
        // but the contract needs positive values.
        p.insert("num_attention_heads".into(), Value::from(1));
        p.insert("num_key_value_heads".into(), Value::from(1));
        p.insert("head_dim".into(), Value::from(1));
    } else {
        if heads == 0 {
            return Err(missing(origin, arch, "attention.head_count"));
        }
        let head_dim = match hp.key_length {
            Some(d) if d > 0 => d,
            _ => hidden / heads,
        };
        p.insert("num_attention_heads".into(), Value::from(heads));
        p.insert(
            "num_key_value_heads".into(),
            Value::from(if kv == 0 { heads } else { kv }),
        );
        p.insert("head_dim".into(), Value::from(head_dim));
    }

    // FFN width, possibly per layer.
    let ffn_pl = hp.feed_forward_length;
    let expert_ffn = k.u64("expert_feed_forward_length")?.unwrap_or(0);
    let ffn_max = ffn_pl
        .as_ref()
        .and_then(|v| v.iter().copied().max())
        .unwrap_or(0);
    let ffn = if ffn_max > 0 {
        ffn_max
    } else if expert_ffn > 0 {
        expert_ffn
    } else if has_ssm {
        // Pure Mamba blocks have no FFN; the contract needs a positive width, and the
        // SSM inner size is the block's widest projection. Weight bytes come from the
        // tensors, so this never feeds a size estimate.
        k.u64("ssm.inner_size")?.unwrap_or(hidden).max(1)
    } else {
        return Err(missing(origin, arch, "feed_forward_length"));
    };
    p.insert("intermediate_size".into(), Value::from(ffn));
    if let Some(v) = &ffn_pl {
        if v.iter().any(|&x| x != v[0]) {
            p.insert("intermediate_size_per_layer".into(), Value::from(v.clone()));
        }
    }

    // Vocabulary: explicit key, tokenizer list, or the embedding's row count.
    let vocab = match k.u64("vocab_size")? {
        Some(v) if v > 0 => v,
        _ => match GgufTokenizer::count_tokens(g) {
            Some(n) if n > 0 => n as u64,
            _ => g
                .tensor("token_embd.weight")
                .and_then(|t| t.shape.get(1).copied())
                .ok_or_else(|| missing(origin, arch, "vocab_size"))?,
        },
    };
    p.insert("vocab_size".into(), Value::from(vocab));
    if let Some(c) = hp.context_length {
        if c > 0 {
            p.insert("max_context_tokens".into(), Value::from(c));
        }
    }
    p.insert(
        "embeddings_tied".into(),
        Value::from(g.tensor("output.weight").is_none()),
    );

    // Sliding-window attention: which layers, from an explicit per-layer pattern, a
    // period, or the architecture's fixed period as llama.cpp applies it.
    let window = k.u64("attention.sliding_window")?.unwrap_or(0);
    let sliding: Option<Vec<bool>> = if window == 0 {
        None
    } else {
        match k.get("attention.sliding_window_pattern") {
            Some(GgufValue::Array(a)) => {
                if a.len() != k.layers {
                    return Err(CheckpointError::unsupported(
                        origin,
                        format!("`{arch}.attention.sliding_window_pattern` has {} entries for {l} layers", a.len()),
                    ));
                }
                Some(a.iter().map(|x| x.as_bool().unwrap_or(false)).collect())
            }
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| {
                    k.bad(
                        "attention.sliding_window_pattern",
                        "an integer or bool array",
                        v,
                    )
                })?;
                Some(period_pattern(k.layers, n))
            }
            None => match arch {
                "gemma2" => Some(period_pattern(k.layers, 2)),
                "gemma3" => Some(period_pattern(k.layers, 6)),
                _ => None,
            },
        }
    };
    if let Some(s) = &sliding {
        if s.iter().any(|&x| x) {
            p.insert("sliding_window".into(), Value::from(window));
        }
    }
    if sliding.as_ref().is_some_and(|s| s.iter().any(|&x| x)) || ssm_layer.iter().any(|&s| s) {
        let types: Vec<&str> = (0..k.layers)
            .map(|i| {
                if ssm_layer[i] {
                    "ssm"
                } else if sliding.as_ref().is_some_and(|s| s[i]) {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        p.insert("layer_types".into(), Value::from(types));
    }

    // Gemma 3n: KV shared by the tail layers, per-layer embeddings.
    if let Some(n) = k.u64("attention.shared_kv_layers")? {
        if n > 0 {
            p.insert("shared_kv_last_n_layers".into(), Value::from(n));
        }
    }
    if let Some(ple) = k.u64("embedding_length_per_layer_input")? {
        if ple > 0 {
            let ple_vocab = g
                .tensor("per_layer_token_embd.weight")
                .and_then(|t| t.shape.get(1).copied())
                .unwrap_or(vocab);
            p.insert("has_ple".into(), Value::from(true));
            p.insert("ple_hidden_size".into(), Value::from(ple));
            p.insert("ple_vocab_size".into(), Value::from(ple_vocab));
        }
    }

    // Mixture of experts.
    let experts = k.u64("expert_count")?.unwrap_or(0);
    if experts > 1 {
        let used = k.u64("expert_used_count")?.unwrap_or(1).max(1);
        p.insert("is_moe".into(), Value::from(true));
        p.insert("num_experts".into(), Value::from(experts));
        p.insert("num_active_experts".into(), Value::from(used));
        if expert_ffn > 0 {
            p.insert("expert_intermediate_size".into(), Value::from(expert_ffn));
        }
        let shared = k.u64("expert_shared_count")?.unwrap_or(0);
        let shared_ffn = k.u64("expert_shared_feed_forward_length")?.unwrap_or(0);
        let has_shexp = g.tensors.iter().any(|t| t.name.contains("_shexp."));
        let shared = if shared == 0 && has_shexp { 1 } else { shared };
        if shared > 0 {
            p.insert("num_shared_experts".into(), Value::from(shared));
            if shared_ffn > 0 {
                p.insert(
                    "shared_expert_intermediate_size".into(),
                    Value::from(shared_ffn),
                );
            }
        }
        let moe_layers = (0..l)
            .filter(|i| {
                let pre = format!("blk.{i}.");
                g.tensors.iter().any(|t| {
                    t.name.starts_with(&pre)
                        && crate::components::is_expert(&t.name)
                        && !crate::components::is_shared_expert(&t.name)
                })
            })
            .count() as u64;
        if moe_layers > 0 && moe_layers < l {
            p.insert("num_moe_layers".into(), Value::from(moe_layers));
        }
    }

    // SSM state: Mamba-1 keeps d_inner x d_state, Mamba-2 the same (heads x head_dim x
    // d_state); the conv state is (d_conv - 1) x (d_inner + 2 x groups x d_state).
    if has_ssm {
        let d_state = k.u64("ssm.state_size")?.unwrap_or(0);
        let d_inner = k.u64("ssm.inner_size")?.unwrap_or(0);
        let d_conv = k.u64("ssm.conv_kernel")?.unwrap_or(0);
        let groups = k.u64("ssm.group_count")?.unwrap_or(0);
        let state = d_inner.saturating_mul(d_state);
        if state == 0 {
            return Err(missing(origin, arch, "ssm.inner_size / ssm.state_size"));
        }
        let n_ssm = if parallel {
            l
        } else {
            ssm_layer.iter().filter(|&&s| s).count() as u64
        };
        p.insert("has_mamba".into(), Value::from(true));
        p.insert("mamba_state_dim".into(), Value::from(state));
        p.insert("mamba_num_layers".into(), Value::from(n_ssm));
        p.insert(
            "mamba_conv_state_dim".into(),
            Value::from(conv_state(d_conv, d_inner, groups, d_state)),
        );
        if parallel {
            p.insert("num_attention_layers".into(), Value::from(l));
        }
    }
    Ok(p)
}

/// Gemma-style period `n`: layer `i` is sliding unless `(i + 1) % n == 0`
/// (`n = 0` = every layer sliding, `n = 1` = none), as llama.cpp's `set_swa_pattern`.
fn period_pattern(layers: usize, n: u64) -> Vec<bool> {
    (0..layers as u64)
        .map(|i| n == 0 || (i % n) < n - 1)
        .collect()
}

/// Conv state elements: (d_conv - 1) x (d_inner + 2 x groups x d_state), saturating on
/// absurd inputs instead of overflowing.
pub(crate) fn conv_state(d_conv: u64, d_inner: u64, groups: u64, d_state: u64) -> u64 {
    d_conv
        .saturating_sub(1)
        .saturating_mul(d_inner.saturating_add(groups.saturating_mul(d_state).saturating_mul(2)))
}

/// Architecture from a GGUF header alone: geometry from the metadata, parameter count,
/// native bits and tied embeddings from its tensor table. `origin` names the file in
/// errors and becomes `source`.
pub fn arch_from_gguf(
    g: &GgufFile,
    origin: &str,
) -> Result<dhurandhar_model::ModelArchitecture, CheckpointError> {
    let path = std::path::Path::new(origin);
    let ck = crate::checkpoint::Checkpoint {
        path: path.to_path_buf(),
        format: crate::checkpoint::CheckpointFormat::Gguf,
        tensors: crate::checkpoint::gguf_entries(path, g),
        gguf: Some(g.clone()),
        config: None,
    };
    ck.architecture()
}
