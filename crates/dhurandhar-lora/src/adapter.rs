//! Adapter tensors and their names.
//!
//! Inside dhurandhar an adapter is keyed by the GGUF tensor it modifies
//! (`blk.3.attn_q.weight`). A pair holds `A` (`r × in`, row-major) and `B` (`out × r`),
//! exactly PEFT's `lora_A.weight` / `lora_B.weight` shapes, so that the delta added to
//! `W·x` is `scale · B·(A·x)` with `scale = alpha / r`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A projection LoRA can target, by its role (HF name ↔ GGUF name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TargetModule {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl TargetModule {
    pub const ALL: [TargetModule; 7] = [
        TargetModule::Q,
        TargetModule::K,
        TargetModule::V,
        TargetModule::O,
        TargetModule::Gate,
        TargetModule::Up,
        TargetModule::Down,
    ];

    /// The HF / PEFT module name (`q_proj`).
    pub fn hf(self) -> &'static str {
        match self {
            TargetModule::Q => "q_proj",
            TargetModule::K => "k_proj",
            TargetModule::V => "v_proj",
            TargetModule::O => "o_proj",
            TargetModule::Gate => "gate_proj",
            TargetModule::Up => "up_proj",
            TargetModule::Down => "down_proj",
        }
    }

    /// The GGUF tensor stem (`attn_q`), as in `blk.N.attn_q.weight`.
    pub fn gguf(self) -> &'static str {
        match self {
            TargetModule::Q => "attn_q",
            TargetModule::K => "attn_k",
            TargetModule::V => "attn_v",
            TargetModule::O => "attn_output",
            TargetModule::Gate => "ffn_gate",
            TargetModule::Up => "ffn_up",
            TargetModule::Down => "ffn_down",
        }
    }

    /// The PEFT parent module (`self_attn` or `mlp`).
    pub fn hf_parent(self) -> &'static str {
        match self {
            TargetModule::Q | TargetModule::K | TargetModule::V | TargetModule::O => "self_attn",
            _ => "mlp",
        }
    }

    pub fn from_hf(name: &str) -> Option<TargetModule> {
        TargetModule::ALL.into_iter().find(|m| m.hf() == name)
    }

    pub fn from_gguf(stem: &str) -> Option<TargetModule> {
        TargetModule::ALL.into_iter().find(|m| m.gguf() == stem)
    }

    /// Position in [`TargetModule::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn hf_names() -> Vec<&'static str> {
        TargetModule::ALL.iter().map(|m| m.hf()).collect()
    }
}

/// One adapted projection: `A` is `r × in_features`, `B` is `out_features × r`,
/// both row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub r: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// A whole adapter: its hyper-parameters and one pair per adapted GGUF tensor
/// (key: the GGUF tensor name, e.g. `blk.0.attn_q.weight`).
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub r: usize,
    pub alpha: f64,
    pub target_modules: Vec<TargetModule>,
    /// What the adapter was trained on (PEFT's `base_model_name_or_path`).
    pub base_model: String,
    pub pairs: BTreeMap<String, LoraPair>,
}

impl Adapter {
    /// alpha / r: the factor on `B·A·x`.
    pub fn scale(&self) -> f32 {
        (self.alpha / self.r as f64) as f32
    }

    /// Trainable parameters (sum of |A| + |B|).
    pub fn num_parameters(&self) -> usize {
        self.pairs.values().map(|p| p.a.len() + p.b.len()).sum()
    }
}

/// `blk.{layer}.{module}.weight`: the GGUF tensor a target module adapts in a layer.
pub fn gguf_tensor_name(layer: usize, m: TargetModule) -> String {
    format!("blk.{layer}.{}.weight", m.gguf())
}

/// The layer and module of a GGUF tensor name (`blk.3.attn_q.weight`), `None` for
/// tensors LoRA does not target.
pub fn parse_gguf_tensor_name(name: &str) -> Option<(usize, TargetModule)> {
    let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (layer, stem) = rest.split_once('.')?;
    Some((layer.parse().ok()?, TargetModule::from_gguf(stem)?))
}

/// `base_model.model.model.layers.{layer}.{parent}.{module}`: PEFT's key stem
/// (append `.lora_A.weight` / `.lora_B.weight`).
pub fn peft_key_stem(layer: usize, m: TargetModule) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}",
        m.hf_parent(),
        m.hf()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in TargetModule::ALL {
            assert_eq!(TargetModule::from_hf(m.hf()), Some(m));
            assert_eq!(TargetModule::from_gguf(m.gguf()), Some(m));
        }
        assert_eq!(
            gguf_tensor_name(3, TargetModule::O),
            "blk.3.attn_output.weight"
        );
        assert_eq!(
            parse_gguf_tensor_name("blk.12.ffn_down.weight"),
            Some((12, TargetModule::Down))
        );
        for bad in [
            "blk.x.attn_q.weight",
            "blk.1.attn_norm.weight",
            "output.weight",
        ] {
            assert_eq!(parse_gguf_tensor_name(bad), None, "{bad}");
        }
        assert_eq!(
            peft_key_stem(0, TargetModule::Down),
            "base_model.model.model.layers.0.mlp.down_proj"
        );
    }
}
