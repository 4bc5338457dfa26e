//! The GGUF metadata keys every reader needs, read in one place: the core `{arch}.*`
//! hyper-parameters llama.cpp writes and the `tokenizer.ggml.*` vocabulary.
//!
//! [`arch_from_gguf`](crate::arch_from_gguf) builds the planner's architecture from
//! these, and the inference engine its model configuration, so a key is spelled (and
//! validated) once.

use crate::error::CheckpointError;
use crate::gguf::{GgufFile, GgufValue};

/// Largest `block_count` accepted (bounds per-layer allocations on hostile input).
pub const MAX_BLOCKS: u64 = 100_000;

/// Core hyper-parameters of a GGUF. Per-layer keys are expanded to one value per
/// layer whether the file stores a scalar or an array.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHyperParams {
    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `{arch}.block_count`: transformer layers, in `1..=MAX_BLOCKS`.
    pub block_count: u64,
    /// `{arch}.embedding_length`: the hidden size.
    pub embedding_length: u64,
    /// `{arch}.attention.head_count`, per layer.
    pub head_count: Option<Vec<u64>>,
    /// `{arch}.attention.head_count_kv`, per layer (absent = same as `head_count`).
    pub head_count_kv: Option<Vec<u64>>,
    /// `{arch}.attention.key_length`: the head dimension when it is not
    /// `embedding_length / head_count`.
    pub key_length: Option<u64>,
    /// `{arch}.feed_forward_length`, per layer.
    pub feed_forward_length: Option<Vec<u64>>,
    /// `{arch}.context_length`: the trained context.
    pub context_length: Option<u64>,
    /// `{arch}.rope.dimension_count`: dimensions of each head that RoPE rotates.
    pub rope_dimension_count: Option<u64>,
    /// `{arch}.rope.freq_base`.
    pub rope_freq_base: Option<f32>,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub rms_epsilon: Option<f32>,
    /// `{arch}.attention.value_length`: the value head dimension, when stated.
    pub value_length: Option<u64>,
    /// `{arch}.rope.freq_base_swa`: RoPE base of sliding-window layers, when they have
    /// their own.
    pub rope_freq_base_swa: Option<f32>,
    /// `{arch}.rope.scaling.type` (`none`, `linear`, `yarn`, ...).
    pub rope_scaling_type: Option<String>,
    /// `{arch}.rope.scaling.factor`: the context stretch of the scaling.
    pub rope_scaling_factor: Option<f32>,
    /// `{arch}.attention.sliding_window`: tokens a sliding-window layer attends to.
    pub sliding_window: Option<u64>,
    /// `{arch}.final_logit_softcapping`: logits become `c·tanh(logit / c)`.
    pub final_logit_softcapping: Option<f32>,
    /// `{arch}.expert_count`: experts per mixture-of-experts layer.
    pub expert_count: Option<u64>,
    /// `{arch}.expert_used_count`: experts each token is routed to.
    pub expert_used_count: Option<u64>,
    /// `{arch}.expert_weights_scale`: a multiplier of the routing weights (0 or 1: none).
    pub expert_weights_scale: Option<f32>,
    /// `{arch}.expert_gating_func`: llama.cpp's gating function id (1 softmax,
    /// 2 sigmoid, …; absent: the architecture's default).
    pub expert_gating_func: Option<u64>,
}

/// Typed reads of `{arch}.*` keys with errors that name the key and the file.
pub(crate) struct Keys<'a> {
    pub g: &'a GgufFile,
    pub arch: &'a str,
    pub origin: &'a str,
    pub layers: usize,
}

impl Keys<'_> {
    pub fn get(&self, k: &str) -> Option<&GgufValue> {
        self.g.get(&format!("{}.{k}", self.arch))
    }
    pub fn u64(&self, k: &str) -> Result<Option<u64>, CheckpointError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(k, "a non-negative integer", v)),
        }
    }
    /// A float key, leniently: a value of another type counts as absent.
    pub fn f32(&self, k: &str) -> Option<f32> {
        self.get(k).and_then(|v| v.as_f32())
    }
    pub fn bad(&self, k: &str, want: &str, v: &GgufValue) -> CheckpointError {
        CheckpointError::unsupported(
            self.origin,
            format!(
                "metadata `{}.{k}` should be {want}, found a {} value",
                self.arch,
                v.type_name()
            ),
        )
    }
    /// A scalar repeated per layer, or a per-layer array of exactly `layers` entries.
    pub fn per_layer(&self, k: &str) -> Result<Option<Vec<u64>>, CheckpointError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        match v {
            GgufValue::Array(a) => {
                if a.len() != self.layers {
                    return Err(CheckpointError::unsupported(
                        self.origin,
                        format!(
                            "metadata `{}.{k}` has {} per-layer entries but block_count is {}",
                            self.arch,
                            a.len(),
                            self.layers
                        ),
                    ));
                }
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .ok_or_else(|| self.bad(k, "an array of integers", x))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            s => s
                .as_u64()
                .map(|x| Some(vec![x; self.layers]))
                .ok_or_else(|| self.bad(k, "an integer or per-layer array", s)),
        }
    }
}

pub(crate) fn missing(origin: &str, arch: &str, k: &str) -> CheckpointError {
    CheckpointError::unsupported(origin, format!("required metadata `{arch}.{k}` is missing"))
}

/// One rule for every reader of a GGUF (inspect, plan, pack, engine): a layer without KV
/// heads is only meaningful as an SSM layer of a hybrid (which states `ssm.state_size`);
/// anywhere else `head_count_kv = 0` is a broken file, not a hint to fall back to the
/// query head count.
pub fn check_kv_heads(g: &GgufFile, origin: &str) -> Result<(), CheckpointError> {
    let Some(arch) = g.architecture() else {
        return Ok(());
    };
    let key = format!("{arch}.attention.head_count_kv");
    let layer = match g.get(&key) {
        Some(GgufValue::Array(a)) => a.iter().position(|x| x.as_u64() == Some(0)),
        Some(v) => (v.as_u64() == Some(0)).then_some(0),
        None => None,
    };
    match layer {
        Some(layer) if g.get(&format!("{arch}.ssm.state_size")).is_none() => {
            Err(CheckpointError::unsupported(
                origin,
                format!(
                    "`{key}` is 0 (layer {layer}); only SSM layers of a hybrid model \
                     (with `{arch}.ssm.state_size`) may have no KV heads"
                ),
            ))
        }
        _ => Ok(()),
    }
}

impl GgufHyperParams {
    /// Read the core hyper-parameters of `g`; `origin` names the file in errors.
    /// Only `general.architecture`, `block_count` and `embedding_length` are required;
    /// whether the rest suffice is the caller's judgement.
    pub fn read(g: &GgufFile, origin: &str) -> Result<Self, CheckpointError> {
        let arch = g.architecture().ok_or_else(|| {
            CheckpointError::unsupported(origin, "no `general.architecture` metadata")
        })?;
        let mut k = Keys {
            g,
            arch,
            origin,
            layers: 0,
        };
        let block_count = k
            .u64("block_count")?
            .ok_or_else(|| missing(origin, arch, "block_count"))?;
        if block_count == 0 || block_count > MAX_BLOCKS {
            return Err(CheckpointError::unsupported(
                origin,
                format!("`{arch}.block_count` is {block_count}"),
            ));
        }
        k.layers = block_count as usize;
        let embedding_length = k
            .u64("embedding_length")?
            .ok_or_else(|| missing(origin, arch, "embedding_length"))?;
        check_kv_heads(g, origin)?;
        let head_count_kv = k.per_layer("attention.head_count_kv")?;
        Ok(GgufHyperParams {
            architecture: arch.to_string(),
            name: g.get_str("general.name").map(str::to_string),
            block_count,
            embedding_length,
            head_count: k.per_layer("attention.head_count")?,
            head_count_kv,
            key_length: k.u64("attention.key_length")?,
            feed_forward_length: k.per_layer("feed_forward_length")?,
            context_length: k.u64("context_length")?,
            rope_dimension_count: k.u64("rope.dimension_count")?,
            rope_freq_base: k.f32("rope.freq_base"),
            rms_epsilon: k.f32("attention.layer_norm_rms_epsilon"),
            value_length: k.u64("attention.value_length")?,
            rope_freq_base_swa: k.f32("rope.freq_base_swa"),
            rope_scaling_type: k
                .get("rope.scaling.type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            rope_scaling_factor: k.f32("rope.scaling.factor"),
            sliding_window: k.u64("attention.sliding_window")?,
            final_logit_softcapping: k.f32("final_logit_softcapping"),
            expert_count: k.u64("expert_count")?,
            expert_used_count: k.u64("expert_used_count")?,
            expert_weights_scale: k.f32("expert_weights_scale"),
            expert_gating_func: k.u64("expert_gating_func")?,
        })
    }
}

/// The tokenizer a GGUF carries (`tokenizer.ggml.*`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model`: `gpt2` for byte-level BPE, `llama` for SentencePiece.
    pub model: Option<String>,
    /// `tokenizer.ggml.pre`: the pre-tokenizer's name.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, by id (`None` when absent or not all strings).
    pub tokens: Option<Vec<String>>,
    /// `tokenizer.ggml.merges`, in rank order.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.token_type`, by id (entries that are not integers read as 1,
    /// a normal token).
    pub token_types: Option<Vec<i64>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.scores`, by id: SentencePiece piece scores (merge priority).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.add_space_prefix`: SentencePiece's leading `▁` before text.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_token_id: Option<u32>,
    /// `tokenizer.chat_template`: the Jinja template that turns chat messages into a
    /// prompt.
    pub chat_template: Option<String>,
}

fn strings(v: Option<&GgufValue>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

impl GgufTokenizer {
    /// Read the tokenizer keys of `g` (absent keys are `None`).
    pub fn read(g: &GgufFile) -> Self {
        let id = |k: &str| g.get_u64(k).and_then(|v| u32::try_from(v).ok());
        GgufTokenizer {
            model: g.get_str("tokenizer.ggml.model").map(str::to_string),
            pre: g.get_str("tokenizer.ggml.pre").map(str::to_string),
            tokens: strings(g.get("tokenizer.ggml.tokens")),
            merges: strings(g.get("tokenizer.ggml.merges")),
            token_types: g
                .get("tokenizer.ggml.token_type")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().map(|x| x.as_i64().unwrap_or(1)).collect()),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            add_bos_token: g.get_bool("tokenizer.ggml.add_bos_token"),
            scores: g
                .get("tokenizer.ggml.scores")
                .and_then(|v| v.as_array())
                .and_then(|a| a.iter().map(|x| x.as_f32()).collect()),
            add_space_prefix: g.get_bool("tokenizer.ggml.add_space_prefix"),
            add_eos_token: g.get_bool("tokenizer.ggml.add_eos_token"),
            unk_token_id: id("tokenizer.ggml.unknown_token_id"),
            chat_template: g.get_str("tokenizer.chat_template").map(str::to_string),
        }
    }

    /// Number of tokens listed, without copying them (the vocabulary size when the
    /// architecture does not state it).
    pub fn count_tokens(g: &GgufFile) -> Option<usize> {
        g.get("tokenizer.ggml.tokens")
            .and_then(|t| t.as_array())
            .map(|t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufBuilder;

    fn parse(b: GgufBuilder) -> GgufFile {
        GgufFile::parse(&b.to_bytes().unwrap(), "t.gguf").unwrap()
    }

    fn base() -> GgufBuilder {
        GgufBuilder::new()
            .kv("general.architecture", GgufValue::String("llama".into()))
            .kv("llama.block_count", GgufValue::U32(2))
            .kv("llama.embedding_length", GgufValue::U32(64))
    }

    #[test]
    fn per_layer_keys_expand_and_floats_are_lenient() {
        let g = parse(
            base()
                .kv("llama.attention.head_count", GgufValue::U32(4))
                .kv(
                    "llama.attention.head_count_kv",
                    GgufValue::Array(vec![GgufValue::U32(2), GgufValue::U32(1)]),
                )
                .kv("llama.rope.freq_base", GgufValue::F32(1e6))
                .kv("llama.attention.sliding_window", GgufValue::U32(512))
                .kv("llama.rope.freq_base_swa", GgufValue::F32(1e4))
                .kv(
                    "llama.rope.scaling.type",
                    GgufValue::String("linear".into()),
                )
                .kv("llama.rope.scaling.factor", GgufValue::F32(8.0))
                .kv(
                    "llama.attention.layer_norm_rms_epsilon",
                    GgufValue::String("x".into()),
                ),
        );
        let h = GgufHyperParams::read(&g, "t.gguf").unwrap();
        assert_eq!(h.architecture, "llama");
        assert_eq!(h.head_count, Some(vec![4, 4]));
        assert_eq!(h.head_count_kv, Some(vec![2, 1]));
        assert_eq!(h.rope_freq_base, Some(1e6));
        assert_eq!(h.rms_epsilon, None);
        assert_eq!(h.feed_forward_length, None);
        assert_eq!(
            (h.sliding_window, h.rope_freq_base_swa),
            (Some(512), Some(1e4))
        );
        assert_eq!(h.rope_scaling_type.as_deref(), Some("linear"));
        assert_eq!(h.rope_scaling_factor, Some(8.0));
        assert_eq!(GgufTokenizer::read(&g), GgufTokenizer::default());
    }

    #[test]
    fn zero_kv_heads_are_refused_unless_the_layer_is_ssm() {
        let zero = || {
            base()
                .kv("llama.attention.head_count", GgufValue::U32(4))
                .kv("llama.attention.head_count_kv", GgufValue::U32(0))
        };
        let e = GgufHyperParams::read(&parse(zero()), "t.gguf")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.gguf: `llama.attention.head_count_kv` is 0 (layer 0)"),
            "{e}"
        );
        let hybrid = zero().kv("llama.ssm.state_size", GgufValue::U32(16));
        let h = GgufHyperParams::read(&parse(hybrid), "t.gguf").unwrap();
        assert_eq!(h.head_count_kv, Some(vec![0, 0]));
    }

    #[test]
    fn bad_keys_name_the_key_and_file() {
        let g = parse(base().kv(
            "llama.feed_forward_length",
            GgufValue::Array(vec![GgufValue::U32(8)]),
        ));
        let e = GgufHyperParams::read(&g, "t.gguf").unwrap_err().to_string();
        assert!(
            e.contains("t.gguf")
                && e.contains("`llama.feed_forward_length` has 1 per-layer entries"),
            "{e}"
        );
        let g =
            parse(GgufBuilder::new().kv("general.architecture", GgufValue::String("llama".into())));
        let e = GgufHyperParams::read(&g, "t.gguf").unwrap_err().to_string();
        assert!(e.contains("`llama.block_count` is missing"), "{e}");
    }
}
