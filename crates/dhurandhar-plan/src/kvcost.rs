//! What a KV codec stores, as data: the planner charges a codec's encoded bytes without
//! knowing codecs (the caller measures them once per head_dim and bit width).

use dhurandhar_model::{KvSource, ModelArchitecture};
use serde::Serialize;

use crate::error::PlanError;

/// Encoded size of one role (keys or values) of one KV head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvRoleCost {
    /// Tokens encoded together; a trailing partial group is kept as bf16.
    pub token_group: u64,
    /// Bytes of one encoded group.
    pub group_bytes: u64,
    /// Bytes stored once per head (a calibration), charged when the head holds a token.
    pub side_bytes: u64,
}

impl KvRoleCost {
    /// Stored bytes of one head holding `tokens` tokens of `head_dim` values.
    pub fn stored_bytes(&self, head_dim: u64, tokens: u64) -> u64 {
        let g = self.token_group.max(1);
        let groups = tokens / g;
        let tail = tokens - groups * g;
        let side = if tokens > 0 { self.side_bytes } else { 0 };
        groups * self.group_bytes + tail * head_dim * 2 + side
    }
}

/// A codec's cost for heads of one head_dim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvHeadCost {
    pub head_dim: u32,
    pub key: KvRoleCost,
    pub value: KvRoleCost,
}

impl KvHeadCost {
    /// Bits per value of a full group without side bytes (the codec's steady rate).
    pub fn bits_per_value(&self) -> f64 {
        let d = self.head_dim as f64;
        let rate = |r: &KvRoleCost| r.group_bytes as f64 * 8.0 / (r.token_group.max(1) as f64 * d);
        (rate(&self.key) + rate(&self.value)) / 2.0
    }
}

/// One codec at one bit width, costed for every head_dim of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvCodecWidth {
    pub bits: u32,
    pub heads: Vec<KvHeadCost>,
}

/// A named KV codec as the planner charges it: its cost at the planned bit width and at
/// the lower widths mitigations may try.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvCodecCost {
    pub name: String,
    pub widths: Vec<KvCodecWidth>,
    /// Where per-head side bytes come from and how they are charged, when there are any.
    pub side_note: Option<String>,
}

impl KvCodecCost {
    /// The width costed at `bits`, if any.
    pub fn width(&self, bits: f64) -> Option<&KvCodecWidth> {
        self.widths.iter().find(|w| w.bits as f64 == bits)
    }
}

impl KvCodecWidth {
    fn head(&self, head_dim: u32) -> Option<&KvHeadCost> {
        self.heads.iter().find(|h| h.head_dim == head_dim)
    }

    /// Bytes of the whole KV cache at `ctx` tokens: every layer that owns its KV, every
    /// KV head, window-capped on sliding layers; K and V unless the layer unifies them.
    pub fn cache_bytes(&self, arch: &ModelArchitecture, ctx: u64) -> Result<u64, PlanError> {
        let mut total = 0u64;
        for l in arch.layers().iter().filter(|l| l.kv == KvSource::Fresh) {
            let h = self.head(l.head_dim).ok_or_else(|| {
                PlanError::option(
                    "kv codec",
                    format!("no encoded size for head_dim {}", l.head_dim),
                )
            })?;
            let tokens = l.kv_tokens(ctx);
            let d = l.head_dim as u64;
            let mut per_head = h.key.stored_bytes(d, tokens);
            if !l.kv_unified {
                per_head += h.value.stored_bytes(d, tokens);
            }
            total = total.saturating_add(per_head.saturating_mul(l.kv_heads as u64));
        }
        Ok(total)
    }
}
