use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Explicit per-layer type, as in HF `layer_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerTypeName {
    /// Attention limited to `sliding_window` past tokens.
    SlidingAttention,
    /// Attention over the whole context.
    FullAttention,
    /// Mamba/SSM mixer: constant-size state, no KV cache.
    Ssm,
}

fn default_one() -> u32 {
    1
}
fn default_two() -> f64 {
    2.0
}
fn default_32() -> u32 {
    32
}
fn default_16() -> f64 {
    16.0
}
fn default_max_ctx() -> u64 {
    128_000
}
fn default_overhead() -> f64 {
    128.0
}
fn default_true() -> bool {
    true
}

/// A model architecture: everything the memory math needs, nothing model-specific
/// hard-coded downstream.
///
/// Zero means "not set / same as the base value" for the optional geometry overrides
/// (`global_head_dim`, `num_global_key_value_heads`, `expert_intermediate_size`, ...),
/// matching the Python tool's YAML conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelArchitecture {
    // ---- identity ----
    /// Registry slug or profile name.
    pub name: String,
    /// Family label (gemma, llama, qwen, ...).
    pub family: String,
    /// Total parameters in billions (all experts, encoders excluded).
    pub param_count_b: f64,
    /// Parameters touched per token in billions (MoE); 0 means equal to `param_count_b`.
    #[serde(default)]
    pub active_param_count_b: f64,

    // ---- layer stack ----
    /// All decoder layers (attention + SSM).
    pub num_hidden_layers: u32,
    /// Layers with an attention mixer (and so a KV cache). The rest are SSM-only.
    /// Defaults to `num_hidden_layers` when absent.
    #[serde(default)]
    pub num_attention_layers: u32,
    pub hidden_size: u64,
    /// Dense FFN width.
    pub intermediate_size: u64,
    /// Per-layer FFN width override; length must equal `num_hidden_layers`.
    #[serde(default)]
    pub intermediate_size_per_layer: Option<Vec<u64>>,
    /// FFN width of the shared-KV tail layers (Gemma 4 E2B doubles it); 0 = `intermediate_size`.
    #[serde(default)]
    pub shared_kv_intermediate_size: u64,
    pub vocab_size: u64,

    // ---- attention geometry ----
    pub num_attention_heads: u32,
    /// KV heads on sliding (local) layers, and on global layers unless overridden.
    pub num_key_value_heads: u32,
    /// head_dim on sliding (local) layers, and on global layers unless overridden.
    pub head_dim: u32,
    /// head_dim on global (full-attention) layers; 0 = `head_dim`.
    #[serde(default)]
    pub global_head_dim: u32,
    /// KV heads on global layers; 0 = `num_key_value_heads`.
    #[serde(default)]
    pub num_global_key_value_heads: u32,
    /// K and V share one tensor on every attention layer (halves the KV cache).
    #[serde(default)]
    pub kv_unified: bool,
    /// K and V share one tensor on global layers only.
    #[serde(default)]
    pub global_kv_unified: bool,
    /// Sliding layers per global layer (4 means 4 sliding : 1 global); 0 = all global.
    #[serde(default)]
    pub local_to_global_ratio: u32,
    /// Sliding-window length in tokens; 0 = no window.
    #[serde(default)]
    pub sliding_window: u64,
    /// With a ratio pattern, force the last attention layer to be global (Gemma does).
    #[serde(default = "default_true")]
    pub last_layer_global: bool,
    /// Explicit per-layer types, overriding the ratio pattern and SSM placement.
    #[serde(default)]
    pub layer_types: Option<Vec<LayerTypeName>>,
    /// The last N layers reuse an earlier layer's KV: no KV bytes, no K/V projections.
    #[serde(default)]
    pub shared_kv_last_n_layers: u32,
    /// LM head shares the token-embedding matrix.
    #[serde(default = "default_true", alias = "tie_word_embeddings")]
    pub embeddings_tied: bool,

    // ---- per-layer embeddings (Gemma 3n / 4) ----
    #[serde(default)]
    pub has_ple: bool,
    /// PLE width per layer.
    #[serde(default)]
    pub ple_hidden_size: u64,
    /// Rows of the PLE table (vocab).
    #[serde(default)]
    pub ple_vocab_size: u64,

    // ---- mixture of experts ----
    #[serde(default)]
    pub is_moe: bool,
    #[serde(default = "default_one")]
    pub num_experts: u32,
    #[serde(default = "default_one")]
    pub num_active_experts: u32,
    /// FFN width of one routed expert; 0 = `intermediate_size`.
    #[serde(default)]
    pub expert_intermediate_size: u64,
    /// Always-on shared experts per MoE layer.
    #[serde(default)]
    pub num_shared_experts: u32,
    /// FFN width of one shared expert; 0 = `expert_intermediate_size`.
    #[serde(default)]
    pub shared_expert_intermediate_size: u64,
    /// Layers whose FFN is MoE; 0 = every layer (when `is_moe`).
    #[serde(default)]
    pub num_moe_layers: u32,

    // ---- Mamba / SSM ----
    #[serde(default)]
    pub has_mamba: bool,
    /// Recurrent state elements per SSM layer.
    #[serde(default)]
    pub mamba_state_dim: u64,
    /// SSM layers; 0 with `has_mamba` = `num_hidden_layers - num_attention_layers`.
    #[serde(default)]
    pub mamba_num_layers: u32,
    /// State precision. SSM state is kept in float32: it is never quantized.
    #[serde(default = "default_32")]
    pub mamba_state_dtype_bits: u32,
    /// Convolution state elements per SSM layer.
    #[serde(default)]
    pub mamba_conv_state_dim: u64,
    /// Mamba inner width as a multiple of `hidden_size` (sizes the mixer's in/out
    /// projections, ≈ 3·expand·hidden² parameters per SSM layer).
    #[serde(default = "default_two")]
    pub mamba_expand: f64,

    // ---- encoders ----
    /// Vision encoder footprint in MiB at its shipped precision (fixed, not re-quantized).
    #[serde(default)]
    pub vision_encoder_mb: f64,
    /// Audio encoder footprint in MiB at its shipped precision.
    #[serde(default)]
    pub audio_encoder_mb: f64,
    /// Vision encoder parameters in billions; when set, it is quantized with the weights
    /// instead of using `vision_encoder_mb`.
    #[serde(default)]
    pub vision_encoder_params_b: f64,
    /// Audio encoder parameters in billions (as above).
    #[serde(default)]
    pub audio_encoder_params_b: f64,
    /// Extra multimodal parameters quantized with the decoder.
    #[serde(default)]
    pub unified_modality_params_b: f64,

    // ---- precision, context, runtime ----
    /// Native (shipped) weight precision in bits.
    #[serde(default = "default_16")]
    pub weight_dtype_bits: f64,
    /// Native KV-cache precision in bits.
    #[serde(default = "default_16")]
    pub kv_dtype_bits: f64,
    #[serde(default = "default_max_ctx")]
    pub max_context_tokens: u64,
    /// Runtime / framework overhead in MiB.
    #[serde(default = "default_overhead")]
    pub runtime_overhead_mb: f64,

    // ---- cross-checks and provenance ----
    /// Published size of the text-decoder file (GB), for cross-checking only.
    #[serde(default)]
    pub published_decoder_gb: f64,
    /// Published size of the embeddings file (GB), for cross-checking only.
    #[serde(default)]
    pub published_embeddings_gb: f64,
    /// Where the constants came from (config.json URL, checkpoint path, ...).
    #[serde(default)]
    pub source: String,
}

/// serde lists all ~55 accepted fields after an unknown one; keep the message readable:
/// "unknown field `head_dimm` (did you mean `head_dim`?) at line 10 column 1".
fn shorten_unknown_field(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, tail)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let Some(list_start) = tail.find("expected") else {
        return msg.to_string();
    };
    let list = &tail[list_start..];
    let location = list.rfind(" at line ").map(|i| &list[i..]).unwrap_or("");
    let candidates: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(field, c), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, c)) if score >= 0.8 => {
            format!("unknown field `{field}` (did you mean `{c}`?){location}")
        }
        _ => format!("unknown field `{field}` (not a model profile field){location}"),
    }
}

/// The YAML defaults for every optional field; the required ones (name, sizes, heads)
/// are empty/zero, so the value does not validate until they are set. Lets code build an
/// architecture with `ModelArchitecture { name: .., ..Default::default() }`.
impl Default for ModelArchitecture {
    fn default() -> Self {
        ModelArchitecture {
            name: String::new(),
            family: String::new(),
            param_count_b: 0.0,
            active_param_count_b: 0.0,
            num_hidden_layers: 0,
            num_attention_layers: 0,
            hidden_size: 0,
            intermediate_size: 0,
            intermediate_size_per_layer: None,
            shared_kv_intermediate_size: 0,
            vocab_size: 0,
            num_attention_heads: 0,
            num_key_value_heads: 0,
            head_dim: 0,
            global_head_dim: 0,
            num_global_key_value_heads: 0,
            kv_unified: false,
            global_kv_unified: false,
            local_to_global_ratio: 0,
            sliding_window: 0,
            last_layer_global: true,
            layer_types: None,
            shared_kv_last_n_layers: 0,
            embeddings_tied: true,
            has_ple: false,
            ple_hidden_size: 0,
            ple_vocab_size: 0,
            is_moe: false,
            num_experts: 1,
            num_active_experts: 1,
            expert_intermediate_size: 0,
            num_shared_experts: 0,
            shared_expert_intermediate_size: 0,
            num_moe_layers: 0,
            has_mamba: false,
            mamba_state_dim: 0,
            mamba_num_layers: 0,
            mamba_state_dtype_bits: 32,
            mamba_conv_state_dim: 0,
            mamba_expand: 2.0,
            vision_encoder_mb: 0.0,
            audio_encoder_mb: 0.0,
            vision_encoder_params_b: 0.0,
            audio_encoder_params_b: 0.0,
            unified_modality_params_b: 0.0,
            weight_dtype_bits: 16.0,
            kv_dtype_bits: 16.0,
            max_context_tokens: 128_000,
            runtime_overhead_mb: 128.0,
            published_decoder_gb: 0.0,
            published_embeddings_gb: 0.0,
            source: String::new(),
        }
    }
}

impl ModelArchitecture {
    /// Parse and validate a YAML profile. `origin` names the file in errors.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        crate::check_yaml_depth(text).map_err(|message| ModelError::Parse {
            origin: origin.to_string(),
            message,
        })?;
        let mut arch: ModelArchitecture =
            serde_yaml_ng::from_str(text).map_err(|e| ModelError::Parse {
                origin: origin.to_string(),
                message: shorten_unknown_field(&e.to_string()),
            })?;
        arch.fill_defaults();
        arch.validate().map_err(|e| ModelError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(arch)
    }

    /// Parse and validate a JSON description (same field names as YAML).
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let mut arch: ModelArchitecture =
            serde_json::from_str(text).map_err(|e| ModelError::Parse {
                origin: origin.to_string(),
                message: shorten_unknown_field(&e.to_string()),
            })?;
        arch.fill_defaults();
        arch.validate().map_err(|e| ModelError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(arch)
    }

    /// Resolve "0 = default" fields that depend on other fields.
    pub fn fill_defaults(&mut self) {
        if self.num_attention_layers == 0 {
            self.num_attention_layers = match &self.layer_types {
                Some(t) => t.iter().filter(|k| **k != LayerTypeName::Ssm).count() as u32,
                None if self.has_mamba && self.mamba_num_layers > 0 => {
                    self.num_hidden_layers.saturating_sub(self.mamba_num_layers)
                }
                None => self.num_hidden_layers,
            };
        }
        if self.has_mamba && self.mamba_num_layers == 0 {
            self.mamba_num_layers =
                self.num_hidden_layers - self.num_attention_layers.min(self.num_hidden_layers);
        }
        if self.active_param_count_b == 0.0 {
            self.active_param_count_b = self.param_count_b;
        }
    }

    /// Check every invariant the math relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let m = self.name.as_str();
        let bad = |field, reason: String| Err(ModelError::invalid(m, field, reason));
        if self.name.trim().is_empty() {
            return Err(ModelError::invalid(
                "<unnamed>",
                "name",
                "must not be empty",
            ));
        }
        macro_rules! positive {
            ($($f:ident),*) => {$(
                if self.$f == 0 { return bad(stringify!($f), "must be greater than zero".into()); }
            )*};
        }
        positive!(
            num_hidden_layers,
            hidden_size,
            intermediate_size,
            vocab_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_context_tokens
        );
        // Upper bounds keep every product in the memory math far from u64 overflow and
        // stop a typo (an extra zero or ten) from allocating per-layer tables of absurd size.
        macro_rules! at_most {
            ($($f:ident <= $max:expr),*) => {$(
                if self.$f as u64 > ($max as u64) {
                    return bad(stringify!($f), format!("({}) is implausibly large (limit {})", self.$f, $max as u64));
                }
            )*};
        }
        at_most!(
            num_hidden_layers <= 4096,
            hidden_size <= 1 << 20,
            intermediate_size <= 1 << 22,
            vocab_size <= 1 << 24,
            num_attention_heads <= 4096,
            num_key_value_heads <= 4096,
            head_dim <= 65536,
            global_head_dim <= 65536,
            num_experts <= 65536,
            expert_intermediate_size <= 1 << 22,
            shared_kv_intermediate_size <= 1 << 22,
            ple_hidden_size <= 1 << 20,
            ple_vocab_size <= 1 << 24,
            sliding_window <= 1u64 << 40,
            max_context_tokens <= 1u64 << 40,
            mamba_state_dim <= 1u64 << 32,
            mamba_conv_state_dim <= 1u64 << 32
        );
        if let Some(v) = &self.intermediate_size_per_layer {
            if let Some(x) = v.iter().find(|x| **x == 0 || **x > 1 << 22) {
                return bad(
                    "intermediate_size_per_layer",
                    format!("has an entry {x} outside 1..=4194304"),
                );
            }
        }
        if !(self.mamba_expand.is_finite() && self.mamba_expand <= 64.0) {
            return bad(
                "mamba_expand",
                format!("must be a number in [0, 64], got {}", self.mamba_expand),
            );
        }
        if self.has_mamba && self.mamba_state_dim == 0 {
            return bad(
                "mamba_state_dim",
                "must be > 0 when has_mamba is true".into(),
            );
        }
        if !(self.param_count_b.is_finite() && self.param_count_b > 0.0) {
            return bad(
                "param_count_b",
                format!("must be a positive number, got {}", self.param_count_b),
            );
        }
        if !(self.active_param_count_b.is_finite() && self.active_param_count_b >= 0.0) {
            return bad(
                "active_param_count_b",
                "must be a non-negative number".into(),
            );
        }
        if self.active_param_count_b > self.param_count_b * (1.0 + 1e-9) {
            return bad(
                "active_param_count_b",
                format!(
                    "({}) exceeds param_count_b ({})",
                    self.active_param_count_b, self.param_count_b
                ),
            );
        }
        if self.num_attention_layers > self.num_hidden_layers {
            return bad(
                "num_attention_layers",
                format!(
                    "({}) exceeds num_hidden_layers ({})",
                    self.num_attention_layers, self.num_hidden_layers
                ),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "({}) must divide num_attention_heads ({})",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if self.num_global_key_value_heads != 0
            && !self
                .num_attention_heads
                .is_multiple_of(self.num_global_key_value_heads)
        {
            return bad(
                "num_global_key_value_heads",
                format!(
                    "({}) must divide num_attention_heads ({})",
                    self.num_global_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if self.local_to_global_ratio > 0 && self.sliding_window == 0 && self.layer_types.is_none()
        {
            return bad(
                "sliding_window",
                "must be set when local_to_global_ratio > 0".into(),
            );
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers as usize {
                return bad(
                    "layer_types",
                    format!(
                        "has {} entries but num_hidden_layers is {}",
                        types.len(),
                        self.num_hidden_layers
                    ),
                );
            }
            let attn = types.iter().filter(|t| **t != LayerTypeName::Ssm).count() as u32;
            if attn != self.num_attention_layers {
                return bad(
                    "num_attention_layers",
                    format!(
                        "({}) disagrees with layer_types ({attn} attention layers)",
                        self.num_attention_layers
                    ),
                );
            }
            if types.contains(&LayerTypeName::SlidingAttention) && self.sliding_window == 0 {
                return bad(
                    "sliding_window",
                    "must be set when layer_types has sliding_attention".into(),
                );
            }
        }
        if let Some(ffn) = &self.intermediate_size_per_layer {
            if ffn.len() != self.num_hidden_layers as usize {
                return bad(
                    "intermediate_size_per_layer",
                    format!(
                        "has {} entries but num_hidden_layers is {}",
                        ffn.len(),
                        self.num_hidden_layers
                    ),
                );
            }
        }
        if self.shared_kv_last_n_layers >= self.num_attention_layers
            && self.shared_kv_last_n_layers > 0
        {
            return bad(
                "shared_kv_last_n_layers",
                format!(
                    "({}) must leave at least one attention layer with its own KV (of {})",
                    self.shared_kv_last_n_layers, self.num_attention_layers
                ),
            );
        }
        if self.has_ple && (self.ple_hidden_size == 0 || self.ple_vocab_size == 0) {
            return bad(
                "ple_hidden_size",
                "and ple_vocab_size must be > 0 when has_ple is true".into(),
            );
        }
        if self.is_moe {
            if self.num_experts < 2 {
                return bad("num_experts", "must be at least 2 for a MoE model".into());
            }
            if self.num_active_experts == 0 || self.num_active_experts > self.num_experts {
                return bad(
                    "num_active_experts",
                    format!("must be between 1 and num_experts ({})", self.num_experts),
                );
            }
            if self.num_moe_layers > self.num_hidden_layers {
                return bad("num_moe_layers", "exceeds num_hidden_layers".into());
            }
        }
        if self.has_mamba {
            if self.mamba_state_dim == 0 {
                return bad(
                    "mamba_state_dim",
                    "must be > 0 when has_mamba is true".into(),
                );
            }
            if self.mamba_num_layers > self.num_hidden_layers {
                return bad("mamba_num_layers", "exceeds num_hidden_layers".into());
            }
            if !matches!(self.mamba_state_dtype_bits, 16 | 32) {
                return bad(
                    "mamba_state_dtype_bits",
                    format!("must be 16 or 32, got {}", self.mamba_state_dtype_bits),
                );
            }
        }
        for (field, v) in [
            ("vision_encoder_mb", self.vision_encoder_mb),
            ("audio_encoder_mb", self.audio_encoder_mb),
            ("vision_encoder_params_b", self.vision_encoder_params_b),
            ("audio_encoder_params_b", self.audio_encoder_params_b),
            ("unified_modality_params_b", self.unified_modality_params_b),
            ("runtime_overhead_mb", self.runtime_overhead_mb),
            ("mamba_expand", self.mamba_expand),
            ("published_decoder_gb", self.published_decoder_gb),
            ("published_embeddings_gb", self.published_embeddings_gb),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("must be a non-negative number, got {v}"));
            }
        }
        for (field, v) in [
            ("weight_dtype_bits", self.weight_dtype_bits),
            ("kv_dtype_bits", self.kv_dtype_bits),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 32.0) {
                return bad(field, format!("must be in (0, 32], got {v}"));
            }
        }
        Ok(())
    }

    /// head_dim of global layers.
    pub fn global_head_dim(&self) -> u32 {
        if self.global_head_dim == 0 {
            self.head_dim
        } else {
            self.global_head_dim
        }
    }

    /// KV heads of global layers.
    pub fn global_kv_heads(&self) -> u32 {
        if self.num_global_key_value_heads == 0 {
            self.num_key_value_heads
        } else {
            self.num_global_key_value_heads
        }
    }

    /// FFN width of one routed expert.
    pub fn expert_ffn(&self) -> u64 {
        if self.expert_intermediate_size == 0 {
            self.intermediate_size
        } else {
            self.expert_intermediate_size
        }
    }

    /// Number of layers whose FFN is a MoE block.
    pub fn moe_layers(&self) -> u32 {
        if !self.is_moe {
            0
        } else if self.num_moe_layers == 0 {
            self.num_hidden_layers
        } else {
            self.num_moe_layers
        }
    }

    /// Number of SSM-only layers.
    pub fn ssm_layers(&self) -> u32 {
        self.num_hidden_layers - self.num_attention_layers
    }
}
