//! Which part of a model a tensor belongs to, from its name alone. Covers the GGUF
//! (llama.cpp) naming scheme and the Hugging Face one, so a planner gets exact bytes
//! per component from any real checkpoint.

use serde::Serialize;

/// A model component, matching the fields of [`dhurandhar_model::ComponentBytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    TokenEmbeddings,
    Ple,
    DecoderLayers,
    Experts,
    LmHead,
    VisionEncoder,
    AudioEncoder,
    Other,
}

impl Component {
    /// Every component in display order.
    pub const ALL: [Component; 8] = [
        Component::TokenEmbeddings,
        Component::Ple,
        Component::DecoderLayers,
        Component::Experts,
        Component::LmHead,
        Component::VisionEncoder,
        Component::AudioEncoder,
        Component::Other,
    ];

    /// The `ComponentBytes` field name.
    pub fn name(self) -> &'static str {
        match self {
            Component::TokenEmbeddings => "token_embeddings",
            Component::Ple => "ple",
            Component::DecoderLayers => "decoder_layers",
            Component::Experts => "experts",
            Component::LmHead => "lm_head",
            Component::VisionEncoder => "vision_encoder",
            Component::AudioEncoder => "audio_encoder",
            Component::Other => "other",
        }
    }

    /// Parts of the language model proper (parameter counts exclude encoders).
    pub fn is_text(self) -> bool {
        !matches!(self, Component::VisionEncoder | Component::AudioEncoder)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The index of the decoder layer a tensor belongs to, if it is inside one
/// (`blk.N.`, `layers.N.`, `encoder.layer.N.`, `h.N.`).
pub fn layer_index(name: &str) -> Option<usize> {
    for marker in ["blk.", "layers.", "layer.", "h."] {
        let mut search = name;
        let mut base = 0;
        while let Some(pos) = search.find(marker) {
            let abs = base + pos;
            let at_boundary = abs == 0 || name.as_bytes()[abs - 1] == b'.';
            let rest = &name[abs + marker.len()..];
            let digits: &str = &rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())];
            if at_boundary && !digits.is_empty() && rest[digits.len()..].starts_with('.') {
                return digits.parse().ok();
            }
            base = abs + marker.len();
            search = &name[base..];
        }
    }
    None
}

fn any(name: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| name.contains(n))
}

/// Old llama.cpp Mixtral files store one tensor per expert: `blk.N.ffn_gate.E.weight`.
fn is_split_expert(name: &str) -> bool {
    ["ffn_gate.", "ffn_up.", "ffn_down."].iter().any(|p| {
        name.find(p).is_some_and(|i| {
            let rest = &name[i + p.len()..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with('.')
        })
    })
}

/// Routed or shared MoE expert weights (the router itself is a decoder tensor).
pub fn is_expert(name: &str) -> bool {
    is_split_expert(name)
        || any(
            name,
            &[
                "_exps.",
                "_shexp.",
                "_chexps.",
                ".experts.",
                ".shared_expert.",
                ".shared_experts.",
                ".shared_mlp.",
            ],
        )
}

/// A shared (always-on) expert rather than a routed one.
pub fn is_shared_expert(name: &str) -> bool {
    any(
        name,
        &[
            "_shexp.",
            ".shared_expert.",
            ".shared_experts.",
            ".shared_mlp.",
        ],
    )
}

/// Classify tensor `name`.
pub fn classify(name: &str) -> Component {
    let vision = name.starts_with("v.")
        || name.starts_with("mm.")
        || name.starts_with("visual.")
        || any(
            name,
            &[
                "vision_tower",
                "vision_model",
                "vision_encoder",
                "multi_modal_projector",
                "embed_vision",
                "mm_projector",
                ".visual.",
            ],
        );
    if vision {
        return Component::VisionEncoder;
    }
    let audio = name.starts_with("a.")
        || any(
            name,
            &["audio_tower", "audio_model", "audio_encoder", "embed_audio"],
        );
    if audio {
        return Component::AudioEncoder;
    }
    if layer_index(name).is_some() {
        return if is_expert(name) {
            Component::Experts
        } else {
            Component::DecoderLayers
        };
    }
    // Per-layer embeddings (Gemma 3n/4): the big table and its projection live
    // outside the layer blocks and are named per_layer_*.
    if name.contains("per_layer") {
        return Component::Ple;
    }
    let base = name.rsplit('.').nth(1).unwrap_or(name);
    let token_embd = name == "token_embd.weight"
        || matches!(
            base,
            "embed_tokens"
                | "word_embeddings"
                | "wte"
                | "tok_embeddings"
                | "embeddings"
                | "embedding"
        ) && !name.contains("position");
    if token_embd {
        return Component::TokenEmbeddings;
    }
    if matches!(
        name,
        "output.weight" | "lm_head.weight" | "embed_out.weight"
    ) || name.ends_with(".lm_head.weight")
    {
        return Component::LmHead;
    }
    Component::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names() {
        assert_eq!(classify("token_embd.weight"), Component::TokenEmbeddings);
        assert_eq!(classify("output.weight"), Component::LmHead);
        assert_eq!(classify("output_norm.weight"), Component::Other);
        assert_eq!(classify("rope_freqs.weight"), Component::Other);
        assert_eq!(classify("blk.0.attn_q.weight"), Component::DecoderLayers);
        assert_eq!(classify("blk.12.ffn_gate_exps.weight"), Component::Experts);
        assert_eq!(classify("blk.12.ffn_up_shexp.weight"), Component::Experts);
        assert_eq!(
            classify("blk.12.ffn_gate_inp.weight"),
            Component::DecoderLayers
        );
        assert_eq!(classify("per_layer_token_embd.weight"), Component::Ple);
        assert_eq!(classify("per_layer_model_proj.weight"), Component::Ple);
        assert_eq!(classify("v.blk.0.attn_q.weight"), Component::VisionEncoder);
        assert_eq!(
            classify("mm.input_projection.weight"),
            Component::VisionEncoder
        );
        assert_eq!(classify("a.blk.3.ffn_up.weight"), Component::AudioEncoder);
    }

    #[test]
    fn hf_names() {
        assert_eq!(
            classify("model.embed_tokens.weight"),
            Component::TokenEmbeddings
        );
        assert_eq!(
            classify("model.language_model.embed_tokens.weight"),
            Component::TokenEmbeddings
        );
        assert_eq!(
            classify("model.language_model.embed_tokens_per_layer.weight"),
            Component::Ple
        );
        assert_eq!(
            classify("model.language_model.per_layer_model_projection.weight"),
            Component::Ple
        );
        assert_eq!(classify("lm_head.weight"), Component::LmHead);
        assert_eq!(classify("model.norm.weight"), Component::Other);
        assert_eq!(
            classify("model.layers.3.self_attn.q_proj.weight"),
            Component::DecoderLayers
        );
        assert_eq!(
            classify("model.layers.3.block_sparse_moe.experts.7.w1.weight"),
            Component::Experts
        );
        assert_eq!(
            classify("model.layers.3.mlp.experts.gate_up_proj"),
            Component::Experts
        );
        assert_eq!(
            classify("model.layers.3.mlp.gate.weight"),
            Component::DecoderLayers
        );
        assert_eq!(
            classify("model.vision_tower.encoder.layers.0.mlp.fc1.weight"),
            Component::VisionEncoder
        );
        assert_eq!(
            classify("model.audio_tower.conformer.0.attention.weight"),
            Component::AudioEncoder
        );
        assert_eq!(
            classify("embeddings.word_embeddings.weight"),
            Component::TokenEmbeddings
        );
        assert_eq!(
            classify("embeddings.position_embeddings.weight"),
            Component::Other
        );
        assert_eq!(
            classify("encoder.layer.5.attention.self.query.weight"),
            Component::DecoderLayers
        );
        assert_eq!(
            classify("backbone.embeddings.weight"),
            Component::TokenEmbeddings
        );
        assert_eq!(
            classify("transformer.h.3.attn.c_attn.weight"),
            Component::DecoderLayers
        );
    }

    #[test]
    fn layer_indices() {
        assert_eq!(layer_index("blk.17.attn_k.weight"), Some(17));
        assert_eq!(layer_index("model.layers.0.mlp.up_proj.weight"), Some(0));
        assert_eq!(layer_index("encoder.layer.5.output.dense.bias"), Some(5));
        assert_eq!(layer_index("token_embd.weight"), None);
        assert_eq!(layer_index("xblk.1.a"), None);
        assert_eq!(layer_index("blk.x.1.a"), None);
    }
}
