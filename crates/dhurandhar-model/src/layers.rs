//! Per-layer classification: the one place that decides which layers are sliding,
//! global, SSM-only or share another layer's KV. Everything downstream iterates
//! [`ModelArchitecture::layers`] instead of re-deriving the pattern.

use serde::Serialize;

use crate::arch::{LayerTypeName, ModelArchitecture};

/// Attention flavour of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Attends to at most `sliding_window` past tokens.
    Sliding,
    /// Attends to the whole context.
    Global,
    /// No attention (Mamba/SSM mixer).
    None,
}

/// Where a layer's KV cache lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "layer")]
pub enum KvSource {
    /// The layer computes and stores its own K/V.
    Fresh,
    /// The layer reads the KV of an earlier layer (index given): zero bytes of its own.
    SharedFrom(usize),
    /// The layer has no KV (SSM-only).
    None,
}

/// One decoder layer as the memory math and codecs see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    pub index: usize,
    pub attention: AttentionKind,
    pub kv: KvSource,
    /// KV heads (0 for SSM layers).
    pub kv_heads: u32,
    /// head_dim (0 for SSM layers).
    pub head_dim: u32,
    /// K and V are one tensor on this layer.
    pub kv_unified: bool,
    /// Tokens of KV kept at most (`Some(window)` on sliding layers).
    pub window: Option<u64>,
    /// Dense FFN width on this layer.
    pub ffn_intermediate: u64,
    /// This layer's FFN is a MoE block.
    pub moe: bool,
}

impl LayerSpec {
    /// Tokens of KV this layer holds at context `ctx`.
    pub fn kv_tokens(&self, ctx: u64) -> u64 {
        match (self.kv, self.window) {
            (KvSource::Fresh, Some(w)) => ctx.min(w),
            (KvSource::Fresh, None) => ctx,
            _ => 0,
        }
    }

    /// K+V elements stored per cached token (0 for shared and SSM layers).
    pub fn kv_elements_per_token(&self) -> u64 {
        if self.kv != KvSource::Fresh {
            return 0;
        }
        let tensors = if self.kv_unified { 1 } else { 2 };
        tensors * self.kv_heads as u64 * self.head_dim as u64
    }

    /// Bytes of KV cache at context `ctx` and `kv_bits` bits per element.
    pub fn kv_bytes(&self, ctx: u64, kv_bits: f64) -> u64 {
        let bits = self.kv_tokens(ctx) as f64 * self.kv_elements_per_token() as f64 * kv_bits;
        (bits / 8.0).ceil() as u64
    }
}

impl ModelArchitecture {
    /// The attention/SSM type of every layer, before KV sharing is applied.
    fn layer_type_list(&self) -> Vec<LayerTypeName> {
        if let Some(t) = &self.layer_types {
            return t.clone();
        }
        let l = self.num_hidden_layers as u64;
        let a = self.num_attention_layers as u64;
        // Attention layers spread evenly through the stack when SSM layers are present
        // and no explicit list is given: layer i is attention when floor((i+1)a/l) steps.
        let is_attn = |i: u64| (i + 1) * a / l > i * a / l;
        let attn_idx: Vec<u64> = (0..l).filter(|&i| is_attn(i)).collect();
        let r = self.local_to_global_ratio as u64;
        let mut out = vec![LayerTypeName::Ssm; l as usize];
        for (j, &i) in attn_idx.iter().enumerate() {
            let j = j as u64;
            let global = r == 0
                || self.sliding_window == 0
                || (j + 1).is_multiple_of(r + 1)
                || (self.last_layer_global && j + 1 == attn_idx.len() as u64);
            out[i as usize] = if global {
                LayerTypeName::FullAttention
            } else {
                LayerTypeName::SlidingAttention
            };
        }
        out
    }

    /// Every layer, classified. Shared-KV layers (the last `shared_kv_last_n_layers`
    /// attention layers) point at the last fresh layer of the same attention kind, as
    /// Gemma 3n/4 do.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let types = self.layer_type_list();
        let attn_positions: Vec<usize> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != LayerTypeName::Ssm)
            .map(|(i, _)| i)
            .collect();
        let n_shared = self.shared_kv_last_n_layers as usize;
        let first_shared = attn_positions
            .len()
            .checked_sub(n_shared)
            .and_then(|k| attn_positions.get(k).copied())
            .unwrap_or(usize::MAX);
        let moe_layers = self.moe_layers() as usize;
        let l = types.len();
        let mut out: Vec<LayerSpec> = Vec::with_capacity(l);
        for (i, t) in types.iter().enumerate() {
            let shared_tail = i >= first_shared;
            let ffn = match &self.intermediate_size_per_layer {
                Some(v) => v[i],
                None if shared_tail && self.shared_kv_intermediate_size > 0 => {
                    self.shared_kv_intermediate_size
                }
                None => self.intermediate_size,
            };
            // MoE layers are the last `moe_layers` layers when not all layers are MoE
            // (leading dense layers, as in DeepSeek/Qwen3-style configs).
            let moe = self.is_moe && i >= l - moe_layers.min(l);
            let (attention, kv_heads, head_dim, unified, window) = match t {
                LayerTypeName::Ssm => (AttentionKind::None, 0, 0, false, None),
                LayerTypeName::SlidingAttention => (
                    AttentionKind::Sliding,
                    self.num_key_value_heads,
                    self.head_dim,
                    self.kv_unified,
                    Some(self.sliding_window),
                ),
                LayerTypeName::FullAttention => (
                    AttentionKind::Global,
                    self.global_kv_heads(),
                    self.global_head_dim(),
                    self.kv_unified || self.global_kv_unified,
                    None,
                ),
            };
            let kv = if attention == AttentionKind::None {
                KvSource::None
            } else if shared_tail {
                let src = out
                    .iter()
                    .rev()
                    .find(|s| s.kv == KvSource::Fresh && s.attention == attention)
                    .or_else(|| out.iter().rev().find(|s| s.kv == KvSource::Fresh))
                    .map(|s| s.index);
                match src {
                    Some(s) => KvSource::SharedFrom(s),
                    None => KvSource::Fresh,
                }
            } else {
                KvSource::Fresh
            };
            out.push(LayerSpec {
                index: i,
                attention,
                kv,
                kv_heads,
                head_dim,
                kv_unified: unified,
                window,
                ffn_intermediate: ffn,
                moe,
            });
        }
        out
    }

    /// Total KV-cache bytes at context `ctx` and `kv_bits` per element.
    pub fn kv_cache_bytes(&self, ctx: u64, kv_bits: f64) -> u64 {
        self.layers().iter().map(|l| l.kv_bytes(ctx, kv_bits)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2b_like() -> ModelArchitecture {
        let yaml = r#"
name: t
family: gemma
param_count_b: 5.1
num_hidden_layers: 35
hidden_size: 1536
intermediate_size: 6144
shared_kv_intermediate_size: 12288
vocab_size: 262144
num_attention_heads: 8
num_key_value_heads: 1
head_dim: 256
global_head_dim: 512
local_to_global_ratio: 4
sliding_window: 512
shared_kv_last_n_layers: 20
"#;
        ModelArchitecture::from_yaml_str(yaml, "t.yaml").unwrap()
    }

    #[test]
    fn gemma_pattern_and_sharing() {
        let m = e2b_like();
        let layers = m.layers();
        let globals: Vec<usize> = layers
            .iter()
            .filter(|l| l.attention == AttentionKind::Global)
            .map(|l| l.index)
            .collect();
        assert_eq!(globals, vec![4, 9, 14, 19, 24, 29, 34]);
        let fresh = layers.iter().filter(|l| l.kv == KvSource::Fresh).count();
        assert_eq!(fresh, 15);
        // Shared sliding layers read layer 13 (last fresh sliding), shared globals layer 14.
        assert_eq!(layers[15].kv, KvSource::SharedFrom(13));
        assert_eq!(layers[19].kv, KvSource::SharedFrom(14));
        assert_eq!(layers[20].ffn_intermediate, 12288);
        assert_eq!(layers[3].ffn_intermediate, 6144);
    }

    #[test]
    fn kv_bytes_worked_example() {
        // 12 fresh sliding layers: 512 tokens x (2*1*256) x 2 B = 524288 B each.
        // 3 fresh global layers: 1000 tokens x (2*1*512) x 2 B = 2048000 B each.
        let m = e2b_like();
        assert_eq!(m.kv_cache_bytes(1000, 16.0), 12 * 524_288 + 3 * 2_048_000);
    }

    #[test]
    fn ssm_layers_have_no_kv() {
        let yaml = r#"
name: hybrid
family: x
param_count_b: 1.0
num_hidden_layers: 8
num_attention_layers: 2
hidden_size: 64
intermediate_size: 128
vocab_size: 100
num_attention_heads: 4
num_key_value_heads: 2
head_dim: 16
has_mamba: true
mamba_state_dim: 1024
"#;
        let m = ModelArchitecture::from_yaml_str(yaml, "h.yaml").unwrap();
        assert_eq!(m.mamba_num_layers, 6);
        let l = m.layers();
        assert_eq!(l.iter().filter(|s| s.kv == KvSource::Fresh).count(), 2);
        assert_eq!(m.kv_cache_bytes(10, 16.0), 2 * 10 * 2 * 2 * 16 * 2);
    }

    #[test]
    fn unknown_field_is_named_with_location() {
        let err = ModelArchitecture::from_yaml_str("name: a\nfamilly: b\n", "m.yaml").unwrap_err();
        let s = err.to_string();
        assert!(
            s.contains("m.yaml") && s.contains("familly") && s.contains("line"),
            "{s}"
        );
    }

    #[test]
    fn kv_heads_must_divide_heads() {
        let yaml = "name: a\nfamily: b\nparam_count_b: 1\nnum_hidden_layers: 2\nhidden_size: 8\nintermediate_size: 8\nvocab_size: 8\nnum_attention_heads: 6\nnum_key_value_heads: 4\nhead_dim: 2\n";
        let err = ModelArchitecture::from_yaml_str(yaml, "m.yaml").unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn default_plus_required_fields_validates() {
        let mut m = ModelArchitecture {
            name: "x".into(),
            family: "f".into(),
            param_count_b: 1.0,
            num_hidden_layers: 2,
            hidden_size: 8,
            intermediate_size: 16,
            vocab_size: 10,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            ..Default::default()
        };
        m.fill_defaults();
        m.validate().unwrap();
        assert_eq!(m.num_attention_layers, 2);
        assert!(ModelArchitecture::default().validate().is_err());
    }

    #[test]
    fn typo_suggests_the_field_and_keeps_the_location() {
        let e = ModelArchitecture::from_yaml_str("name: a\nhead_dimm: 3\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml") && e.contains("did you mean `head_dim`") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn implausible_sizes_are_refused_with_the_file() {
        let yaml = "name: a\nfamily: b\nparam_count_b: 1\nnum_hidden_layers: 2\nhidden_size: 1000000000000\nintermediate_size: 8\nvocab_size: 8\nnum_attention_heads: 2\nnum_key_value_heads: 1\nhead_dim: 2\n";
        let e = ModelArchitecture::from_yaml_str(yaml, "big.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.yaml") && e.contains("hidden_size") && e.contains("implausibly"),
            "{e}"
        );
    }
}
