//! What each supported architecture computes differently, as data.
//!
//! The forward pass in [`crate::model`] is one layer loop for every architecture. It
//! reads an [`ArchSpec`] (one row of [`ARCHITECTURES`], chosen by the GGUF's
//! `general.architecture`) and a per-layer plan built from the GGUF (window, RoPE
//! base, which optional tensors exist). Adding an architecture is a row here, plus a
//! step in the loop only when it brings a kind of computation none of the rows has.
//! [`ARCHITECTURES`] is the one list of what the engine runs: refusals list it.
//!
//! Gemma 3n / Gemma 4 are one step away from this loop:
//! - *KV shared across the last layers*: which layers are sliding, global or shared
//!   already comes from the planner's classification (`ModelArchitecture::layers`,
//!   the same call the memory plan charges), and the model keeps, per layer, the cache
//!   layer it reads. A `SharedFrom(j)` layer would skip its K/V projections and the
//!   append, and attend over cache layer `j` (which holds nothing extra, as the planner
//!   charges); today such layers are refused at load.
//! - *per-layer embeddings*: one more gathered table like `token_embd`
//!   (`per_layer_token_embd`, a slice per layer) and one more residual step at the end
//!   of each layer (project, gate, add), switched on by a spec flag the way
//!   `sandwich_norms` switches the post-norms on.

use serde::Serialize;

/// How RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama-arch GGUFs (Q/K rows are permuted at
    /// conversion); llama.cpp's `LLAMA_ROPE_TYPE_NORM`.
    Interleaved,
    /// Split halves `(i, i + d/2)`: llama.cpp's `LLAMA_ROPE_TYPE_NEOX` (qwen2, qwen3,
    /// gemma3, phi3).
    SplitHalf,
}

/// The gated feed-forward's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU: `gelu_tanh(gate) · up`.
    GeluTanh,
}

/// How the attention scores are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionScale {
    /// `1/sqrt(head_dim)`.
    HeadDim,
    /// Gemma 3: `1/sqrt(head_dim)`, except the 62-layer (27B) model, which was trained
    /// with `1/sqrt(hidden / heads)` (llama.cpp applies the same rule).
    Gemma3,
}

/// Which layers attend through a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingLayers {
    /// Every layer attends to the whole context.
    None,
    /// When `{arch}.attention.sliding_window` is present: the layers the planner
    /// classifies as sliding (an explicit `sliding_window_pattern`, or the
    /// architecture's period), with their own RoPE base (`rope.freq_base_swa`, else
    /// `local_rope_base`) and no RoPE scaling.
    Interleaved { local_rope_base: f32 },
}

/// How a mixture-of-experts layer (`ffn_gate_inp` + stacked `ffn_*_exps`) weighs the
/// experts it routes a token to. Every variant softmaxes the router's logits over all
/// experts and keeps the `expert_used_count` largest (llama.cpp's
/// `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertRouting {
    /// The architecture has no expert layers: a router tensor is refused.
    None,
    /// The kept probabilities are the weights (Qwen1.5/2-MoE).
    TopK,
    /// The kept probabilities are divided by their sum (Mixtral, Qwen3-MoE).
    TopKRenormalized,
}

/// What one architecture computes differently from the llama baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArchSpec {
    /// `general.architecture`.
    pub name: &'static str,
    pub rope_style: RopeStyle,
    /// Per-head RMSNorm on q and k before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMSNorm on the attention and FFN outputs before each residual add
    /// (`post_attention_norm`, `post_ffw_norm`), besides the usual pre-norms.
    pub sandwich_norms: bool,
    /// Token embeddings are multiplied by `sqrt(hidden)`.
    pub scale_embeddings: bool,
    pub activation: Activation,
    pub attention_scale: AttentionScale,
    pub sliding: SlidingLayers,
    /// Q/K/V may come fused in one `attn_qkv` tensor and gate/up in one `ffn_up` of
    /// twice the FFN width (gate first).
    pub fused_projections: bool,
    /// Per-pair RoPE frequency divisors may come in `rope_freqs.weight` (Llama 3.x).
    pub rope_freq_factors: bool,
    /// `{arch}.final_logit_softcapping` is honoured (logits become `c·tanh(logit / c)`).
    pub final_logit_softcap: bool,
    /// Mixture-of-experts layers, when the file has them (a shared expert,
    /// `ffn_*_shexp` behind a sigmoid gate `ffn_gate_inp_shexp`, is used when present).
    pub experts: ExpertRouting,
}

const LLAMA: ArchSpec = ArchSpec {
    name: "llama",
    rope_style: RopeStyle::Interleaved,
    qk_norm: false,
    sandwich_norms: false,
    scale_embeddings: false,
    activation: Activation::Silu,
    attention_scale: AttentionScale::HeadDim,
    sliding: SlidingLayers::None,
    fused_projections: false,
    rope_freq_factors: true,
    final_logit_softcap: false,
    // Mixtral is `llama` with experts.
    experts: ExpertRouting::TopKRenormalized,
};

/// Every architecture the engine runs.
pub const ARCHITECTURES: &[ArchSpec] = &[
    LLAMA,
    ArchSpec {
        name: "mistral",
        ..LLAMA
    },
    ArchSpec {
        name: "qwen2",
        rope_style: RopeStyle::SplitHalf,
        rope_freq_factors: false,
        experts: ExpertRouting::None,
        ..LLAMA
    },
    ArchSpec {
        name: "qwen3",
        rope_style: RopeStyle::SplitHalf,
        qk_norm: true,
        rope_freq_factors: false,
        experts: ExpertRouting::None,
        ..LLAMA
    },
    ArchSpec {
        name: "gemma3",
        rope_style: RopeStyle::SplitHalf,
        qk_norm: true,
        sandwich_norms: true,
        scale_embeddings: true,
        activation: Activation::GeluTanh,
        attention_scale: AttentionScale::Gemma3,
        // llama.cpp's default base for Gemma 3's local layers.
        sliding: SlidingLayers::Interleaved {
            local_rope_base: 10_000.0,
        },
        fused_projections: false,
        rope_freq_factors: false,
        final_logit_softcap: true,
        experts: ExpertRouting::None,
    },
    ArchSpec {
        name: "phi3",
        rope_style: RopeStyle::SplitHalf,
        fused_projections: true,
        rope_freq_factors: false,
        experts: ExpertRouting::None,
        ..LLAMA
    },
    ArchSpec {
        name: "qwen2moe",
        rope_style: RopeStyle::SplitHalf,
        rope_freq_factors: false,
        experts: ExpertRouting::TopK,
        ..LLAMA
    },
    ArchSpec {
        name: "qwen3moe",
        rope_style: RopeStyle::SplitHalf,
        qk_norm: true,
        rope_freq_factors: false,
        experts: ExpertRouting::TopKRenormalized,
        ..LLAMA
    },
];

/// Names of [`ARCHITECTURES`], comma-separated, for messages.
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spec of `name`, or a message saying it is not supported and listing what is.
pub fn lookup(name: &str) -> Result<&'static ArchSpec, String> {
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            format!(
                "architecture `{name}` is not supported by the engine (supported: {})",
                supported_names()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_unknown_ones_list_the_supported() {
        for (i, a) in ARCHITECTURES.iter().enumerate() {
            assert!(ARCHITECTURES[..i].iter().all(|b| b.name != a.name));
            assert_eq!(lookup(a.name).unwrap().name, a.name);
        }
        let e = lookup("gemma3n").unwrap_err();
        assert_eq!(
            e,
            "architecture `gemma3n` is not supported by the engine \
             (supported: llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe, qwen3moe)"
        );
    }
}
