//! Parameter counts by component, from the architecture alone.
//!
//! Gated (SwiGLU/GeGLU) FFNs, no biases, two norms per layer. What is left out (biases,
//! rotary tables, Gemma's AltUp/LAuReL blocks, Mamba's B/C/dt projections) is well under
//! 1% of any built-in model.

use dhurandhar_model::{AttentionKind, KvSource, ModelArchitecture};
use serde::Serialize;

/// Parameters per component. Every count saturates instead of overflowing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Q/K/V/O projections (K/V only on layers that own their KV).
    pub attention: u64,
    /// Dense FFNs (layers that are not MoE).
    pub dense_ffn: u64,
    /// Mamba/SSM mixers (≈ 3·expand·hidden² each).
    pub ssm_mixers: u64,
    /// Per-layer-embedding gates and projections (Gemma 3n/4), computed every token.
    pub ple_projections: u64,
    /// Norm weights.
    pub norms: u64,
    /// Everything in the decoder stack except routed experts and embeddings.
    pub decoder: u64,
    /// MoE routed experts, shared experts and routers: all resident.
    pub experts: u64,
    /// Expert parameters one token touches (top-k routed + shared + router).
    pub experts_active: u64,
    pub token_embeddings: u64,
    /// Untied LM head (0 when tied to the token embeddings).
    pub lm_head: u64,
    /// The per-layer embedding table (ple_vocab × layers × ple_hidden).
    pub ple_table: u64,
    /// Vision encoder parameters when given as a count.
    pub vision_encoder: u64,
    pub audio_encoder: u64,
    pub unified_modality: u64,
    /// Largest single layer, with only its active experts: sizes a streaming buffer.
    pub largest_layer: u64,
    /// Text model total (decoder + experts + embeddings + LM head + PLE table).
    pub text_total: u64,
    /// Text model parameters used per token (PLE table and embeddings: one row each, not counted).
    pub text_active: u64,
}

fn sat(x: u128) -> u64 {
    x.min(u64::MAX as u128) as u64
}

/// Count parameters per component.
pub fn count_params(a: &ModelArchitecture) -> ParamCounts {
    let h = a.hidden_size as u128;
    let nh = a.num_attention_heads as u128;
    let l = a.num_hidden_layers as u128;
    let p = if a.has_ple {
        a.ple_hidden_size as u128
    } else {
        0
    };
    let e = a.num_experts as u128;
    let k = a.num_active_experts as u128;
    let fe = a.expert_ffn() as u128;
    let shared = a.num_shared_experts as u128;
    let fs = if a.shared_expert_intermediate_size == 0 {
        fe
    } else {
        a.shared_expert_intermediate_size as u128
    };

    let (mut attn, mut dense, mut ssm, mut norms, mut experts, mut experts_active) =
        (0u128, 0u128, 0u128, 0u128, 0u128, 0u128);
    let mut largest = 0u128;
    for layer in a.layers() {
        let mut this = 0u128;
        if layer.attention == AttentionKind::None {
            let mixer = (3.0 * a.mamba_expand * (h * h) as f64) as u128;
            ssm += mixer;
            this += mixer;
        } else {
            let hd = layer.head_dim as u128;
            let kvh = layer.kv_heads as u128;
            let mut x = 2 * h * nh * hd; // Q and O
            if layer.kv == KvSource::Fresh {
                let tensors = if layer.kv_unified { 1 } else { 2 };
                x += tensors * h * kvh * hd;
            }
            attn += x;
            this += x;
        }
        norms += 2 * h;
        if layer.moe {
            let routed = e * 3 * h * fe;
            let sh = shared * 3 * h * fs;
            let router = h * e;
            experts += routed + sh + router;
            let act = k * 3 * h * fe + sh + router;
            experts_active += act;
            this += act;
        } else {
            let x = 3 * h * layer.ffn_intermediate as u128;
            dense += x;
            this += x;
        }
        largest = largest.max(this);
    }
    norms += h; // final norm
                // Gemma 3n/4: per layer a gate (H→P) and a projection (P→H) plus a norm, and one
                // model-level projection H → L·P with its norm.
    let ple_proj = if a.has_ple {
        l * (2 * h * p + h) + h * l * p + p
    } else {
        0
    };
    let decoder = attn + dense + ssm + norms + ple_proj;
    let tok = a.vocab_size as u128 * h;
    let lm_head = if a.embeddings_tied { 0 } else { tok };
    let ple_table = if a.has_ple {
        a.ple_vocab_size as u128 * l * p
    } else {
        0
    };
    let b = |x: f64| (x * 1e9).round() as u128;
    ParamCounts {
        attention: sat(attn),
        dense_ffn: sat(dense),
        ssm_mixers: sat(ssm),
        ple_projections: sat(ple_proj),
        norms: sat(norms),
        decoder: sat(decoder),
        experts: sat(experts),
        experts_active: sat(experts_active),
        token_embeddings: sat(tok),
        lm_head: sat(lm_head),
        ple_table: sat(ple_table),
        vision_encoder: sat(b(a.vision_encoder_params_b)),
        audio_encoder: sat(b(a.audio_encoder_params_b)),
        unified_modality: sat(b(a.unified_modality_params_b)),
        largest_layer: sat(largest),
        text_total: sat(decoder + experts + tok + lm_head + ple_table),
        text_active: sat(decoder
            + experts_active
            + lm_head
            + if a.embeddings_tied { tok } else { 0 }),
    }
}
