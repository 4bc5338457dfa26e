use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Exact weight bytes by component, read from a real checkpoint's tensor table.
///
/// When present, the planner uses these instead of estimating from the architecture.
/// Bytes are the stored tensor bytes (quantized blocks and their scales included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentBytes {
    /// Token-embedding matrix.
    pub token_embeddings: u64,
    /// Per-layer embedding table plus its projection.
    pub ple: u64,
    /// Attention, dense FFN and norm tensors of every decoder layer (routed experts excluded).
    pub decoder_layers: u64,
    /// Routed and shared MoE expert tensors.
    pub experts: u64,
    /// Untied LM head (0 when tied).
    pub lm_head: u64,
    pub vision_encoder: u64,
    pub audio_encoder: u64,
    /// Final norm, rope tables and anything not classified above.
    pub other: u64,
    /// Where the numbers came from (checkpoint path).
    pub source: String,
    /// The matrices every decoded token multiplies, by stored type (`Q4_K` → weights
    /// and rows): the 2-D tensors of the decoder layers and the untied LM head. A
    /// device's one-token matvec cost is per type, so decode time is a sum over these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matmul_weights: BTreeMap<String, Matrices>,
    /// The token-embedding matrix by stored type (the LM head when tied).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_embedding_weights: BTreeMap<String, Matrices>,
    /// Routed and shared expert matrices by stored type (a token uses the active share).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expert_matmul_weights: BTreeMap<String, Matrices>,
}

/// Matrices of one stored type, counted for the cost of multiplying them by a vector:
/// a matvec pays per weight, a fixed cost per row (its loop, its horizontal sum: narrow
/// rows run slower per weight than wide ones) and a fixed cost per call (handing the
/// rows to the threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrices {
    pub weights: u64,
    pub rows: u64,
    /// How many matrices (one matvec call each).
    #[serde(default)]
    pub matrices: u64,
}

impl Matrices {
    /// Add `other` scaled by `share` (the active fraction of experts).
    pub fn add_share(&mut self, other: Matrices, share: f64) {
        self.weights += (other.weights as f64 * share).round() as u64;
        self.rows += (other.rows as f64 * share).round() as u64;
        self.matrices += (other.matrices as f64 * share).round() as u64;
    }
}

impl ComponentBytes {
    pub fn total(&self) -> u64 {
        self.token_embeddings
            + self.ple
            + self.decoder_layers
            + self.experts
            + self.lm_head
            + self.vision_encoder
            + self.audio_encoder
            + self.other
    }
}
