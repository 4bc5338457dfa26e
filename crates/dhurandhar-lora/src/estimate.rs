//! What a LoRA job costs before it runs: trainable parameters per target module, adapter
//! bytes, and the training memory (frozen base + LoRA state + activations), from the
//! architecture alone. I/O-free: the caller supplies the base's stored bytes.
//!
//! The memory model is the one an f32 CPU trainer with a hand-written backward needs
//! (stated per term in [`TrainingMemory`]), not a fit to any measurement.

use dhurandhar_model::{AttentionKind, KvSource, LayerSpec, ModelArchitecture};
use serde::Serialize;

use crate::{LoraJob, TargetModule};

/// Bytes per f32 value: LoRA weights, their gradients and activations are f32.
const F32: u64 = 4;

/// Tokens whose logits exist at once: the loss runs through the head in chunks, so the
/// logits (vocabulary-wide per token) never exist for a whole micro-batch.
pub const LOSS_CHUNK_TOKENS: u64 = 128;

/// One target module over the whole model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleCount {
    /// HF / PEFT name (`q_proj`).
    pub module: &'static str,
    /// GGUF tensor stem (`attn_q`).
    pub gguf: &'static str,
    /// Layers that have this projection (shared-KV layers have no K/V, MoE layers no
    /// dense FFN, SSM layers no attention).
    pub layers: usize,
    /// `(in_features, out_features)` on the first layer that has it.
    pub shape: (u64, u64),
    /// Frozen weights of the projection over those layers.
    pub base_params: u64,
    /// LoRA parameters: `r × (in + out)` per layer.
    pub trainable_params: u64,
}

/// Training memory, bytes, for one micro-batch of `batch_size × max_seq_length` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrainingMemory {
    /// The frozen base as stored (given by the caller: exact for a checkpoint, the
    /// planner's estimate at a weight format otherwise).
    pub base_weights: u64,
    /// LoRA A and B in f32.
    pub lora_weights: u64,
    /// Their gradients, f32 (accumulated across micro-batches in place).
    pub lora_gradients: u64,
    /// AdamW's first and second moments, f32.
    pub optimizer_state: u64,
    /// Saved for backward with every layer's activations kept: per token and layer the
    /// layer input and the mid-layer residual, both norm outputs, Q, K, V, the attention
    /// context, gate, up and their product, and `r` values of `A·x` per adapted
    /// projection; and the final norm's output. Attention probabilities are not kept:
    /// the trainer's backward recomputes them from Q and K, one query at a time.
    pub activations_full: u64,
    /// With gradient checkpointing: each layer's input and the final norm's output,
    /// plus one layer's activations recomputed during its backward.
    pub activations_checkpointed: u64,
    /// Whichever of the two the job chose.
    pub activations: u64,
    /// Gradients of one layer's activations while its backward runs.
    pub backward_working_set: u64,
    /// Logits for one loss chunk (`LOSS_CHUNK_TOKENS × vocab`, fewer when the
    /// micro-batch is shorter), f32; their gradient overwrites them.
    pub logits: u64,
    pub total: u64,
}

/// A LoRA job's cost on a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub r: usize,
    pub alpha: f64,
    pub scale: f64,
    pub modules: Vec<ModuleCount>,
    pub trainable_params: u64,
    /// Every parameter of the text model plus the adapter (PEFT's "all params").
    pub total_params: u64,
    /// trainable / total, percent.
    pub trainable_percent: f64,
    /// Adapter tensor bytes in f32 (PEFT's `adapter_model.safetensors` less its header).
    pub adapter_bytes: u64,
    /// Tokens per optimizer step: batch × accumulation × sequence length.
    pub tokens_per_step: u64,
    pub memory: TrainingMemory,
    /// What the estimate leaves out or approximates for this model.
    pub notes: Vec<String>,
}

/// `(in_features, out_features)` of `m` on `layer`, `None` where the layer has no such
/// projection.
pub fn projection_shape(
    a: &ModelArchitecture,
    layer: &LayerSpec,
    m: TargetModule,
) -> Option<(u64, u64)> {
    let h = a.hidden_size;
    let q = a.num_attention_heads as u64 * layer.head_dim as u64;
    let kv = layer.kv_heads as u64 * layer.head_dim as u64;
    let f = layer.ffn_intermediate;
    let attention = layer.attention != AttentionKind::None;
    let fresh = layer.kv == KvSource::Fresh;
    let dense = !layer.moe && f > 0;
    match m {
        TargetModule::Q if attention => Some((h, q)),
        TargetModule::O if attention => Some((q, h)),
        TargetModule::K if attention && fresh => Some((h, kv)),
        // One tensor holds K and V on unified layers: there is no separate v_proj.
        TargetModule::V if attention && fresh && !layer.kv_unified => Some((h, kv)),
        TargetModule::Gate | TargetModule::Up if dense => Some((h, f)),
        TargetModule::Down if dense => Some((f, h)),
        _ => None,
    }
}

/// Estimate `job` on `arch`. `base_weight_bytes`: the frozen base as stored;
/// `total_params`: the text model's parameters (the planner's count).
pub fn estimate(
    arch: &ModelArchitecture,
    job: &LoraJob,
    targets: &[TargetModule],
    base_weight_bytes: u64,
    total_params: u64,
) -> Estimate {
    let r = job.lora.r as u64;
    let layers = arch.layers();
    let mut modules = Vec::new();
    for &m in targets {
        let mut count = ModuleCount {
            module: m.hf(),
            gguf: m.gguf(),
            layers: 0,
            shape: (0, 0),
            base_params: 0,
            trainable_params: 0,
        };
        for l in &layers {
            if let Some((i, o)) = projection_shape(arch, l, m) {
                if count.layers == 0 {
                    count.shape = (i, o);
                }
                count.layers += 1;
                count.base_params = count.base_params.saturating_add(i.saturating_mul(o));
                count.trainable_params = count
                    .trainable_params
                    .saturating_add(r.saturating_mul(i.saturating_add(o)));
            }
        }
        modules.push(count);
    }
    let trainable: u64 = modules.iter().map(|m| m.trainable_params).sum();
    let all = total_params.saturating_add(trainable);
    let t = &job.training;
    let seq = t.max_seq_length as u64;
    let tokens = (t.batch_size as u64).saturating_mul(seq);
    let h = arch.hidden_size;
    let heads = arch.num_attention_heads as u64;

    // Activation elements per token on each layer (see `TrainingMemory`).
    let per_layer: Vec<u64> = layers
        .iter()
        .map(|l| {
            let adapted = targets
                .iter()
                .filter(|&&m| projection_shape(arch, l, m).is_some())
                .count() as u64;
            let mut e = 4 * h + r * adapted;
            if l.attention != AttentionKind::None {
                let q = heads * l.head_dim as u64;
                let kv = l.kv_heads as u64 * l.head_dim as u64;
                e += 2 * q + 2 * kv;
            }
            if !l.moe {
                e += 3 * l.ffn_intermediate;
            }
            e
        })
        .collect();
    let largest = per_layer.iter().copied().max().unwrap_or(0);
    let full = (per_layer.iter().sum::<u64>() + h)
        .saturating_mul(tokens)
        .saturating_mul(F32);
    let checkpointed = (h * (layers.len() as u64 + 1) + largest)
        .saturating_mul(tokens)
        .saturating_mul(F32);
    let activations = if t.gradient_checkpointing {
        checkpointed
    } else {
        full
    };
    let working = largest.saturating_mul(tokens).saturating_mul(F32);
    let logits = tokens
        .min(LOSS_CHUNK_TOKENS)
        .saturating_mul(arch.vocab_size)
        .saturating_mul(F32);
    let lora_weights = trainable.saturating_mul(F32);
    let memory = TrainingMemory {
        base_weights: base_weight_bytes,
        lora_weights,
        lora_gradients: lora_weights,
        optimizer_state: lora_weights.saturating_mul(2),
        activations_full: full,
        activations_checkpointed: checkpointed,
        activations,
        backward_working_set: working,
        logits,
        total: [
            base_weight_bytes,
            lora_weights,
            lora_weights,
            lora_weights.saturating_mul(2),
            activations,
            working,
            logits,
        ]
        .iter()
        .fold(0u64, |s, &x| s.saturating_add(x)),
    };

    let mut notes = Vec::new();
    if layers.iter().any(|l| l.moe) {
        notes.push(
            "MoE layers: routed experts are not adapted (dense projections only), and their \
             activations are left out"
                .to_string(),
        );
    }
    if layers.iter().any(|l| l.attention == AttentionKind::None) {
        notes.push(
            "SSM layers: their mixers are not adapted and their activations are counted as \
             the layer's norms and FFN only"
                .to_string(),
        );
    }
    for m in &modules {
        if m.layers == 0 {
            notes.push(format!(
                "{}: no layer of this model has it; nothing to adapt",
                m.module
            ));
        }
    }
    notes.push("the process's own runtime (code, allocator, thread stacks) is not included".into());

    Estimate {
        r: job.lora.r,
        alpha: job.lora.alpha,
        scale: job.scale(),
        modules,
        trainable_params: trainable,
        total_params: all,
        trainable_percent: if all == 0 {
            0.0
        } else {
            100.0 * trainable as f64 / all as f64
        },
        adapter_bytes: lora_weights,
        tokens_per_step: tokens.saturating_mul(t.gradient_accumulation_steps as u64),
        memory,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_like() -> ModelArchitecture {
        ModelArchitecture::from_yaml_str(
            "name: t\nfamily: llama\nparam_count_b: 0.1\nnum_hidden_layers: 2\n\
             hidden_size: 64\nintermediate_size: 160\nvocab_size: 1000\n\
             num_attention_heads: 4\nnum_key_value_heads: 2\nhead_dim: 16\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn job(r: usize, seq: usize, checkpointing: bool) -> LoraJob {
        let mut j = LoraJob::default();
        j.lora.r = r;
        j.training.max_seq_length = seq;
        j.training.batch_size = 1;
        j.training.gradient_checkpointing = checkpointing;
        j
    }

    /// Worked by hand: h 64, q 4×16 = 64, kv 2×16 = 32, ffn 160, 2 layers, r 8.
    #[test]
    fn trainable_parameters_by_hand() {
        let a = llama_like();
        let e = estimate(&a, &job(8, 16, true), &TargetModule::ALL, 1000, 100_000);
        let by: Vec<(&str, u64)> = e
            .modules
            .iter()
            .map(|m| (m.module, m.trainable_params))
            .collect();
        assert_eq!(
            by,
            [
                ("q_proj", 2 * 8 * (64 + 64)),
                ("k_proj", 2 * 8 * (64 + 32)),
                ("v_proj", 2 * 8 * (64 + 32)),
                ("o_proj", 2 * 8 * (64 + 64)),
                ("gate_proj", 2 * 8 * (64 + 160)),
                ("up_proj", 2 * 8 * (64 + 160)),
                ("down_proj", 2 * 8 * (160 + 64)),
            ]
        );
        assert_eq!(e.trainable_params, 16 * (128 + 96 + 96 + 128 + 3 * 224));
        assert_eq!(e.adapter_bytes, 4 * e.trainable_params);
        assert_eq!(e.memory.optimizer_state, 8 * e.trainable_params);
        assert_eq!(e.total_params, 100_000 + e.trainable_params);
    }

    /// One layer's activations per token, by hand: 4h + 2q + 2kv + 3f + r·7 =
    /// 256 + 128 + 64 + 480 + 56 = 984 values.
    #[test]
    fn activations_by_hand() {
        let a = llama_like();
        let full = estimate(&a, &job(8, 16, false), &TargetModule::ALL, 0, 0);
        assert_eq!(full.memory.activations_full, (2 * 984 + 64) * 16 * 4);
        assert_eq!(full.memory.activations, full.memory.activations_full);
        let ck = estimate(&a, &job(8, 16, true), &TargetModule::ALL, 0, 0);
        assert_eq!(ck.memory.activations, (64 * 3 + 984) * 16 * 4);
        assert_eq!(ck.memory.logits, 16 * 1000 * 4);
        // Past one loss chunk the logits stop growing.
        let long = estimate(&a, &job(8, 4096, true), &TargetModule::ALL, 0, 0);
        assert_eq!(long.memory.logits, LOSS_CHUNK_TOKENS * 1000 * 4);
    }

    #[test]
    fn shared_kv_and_unified_layers_have_no_separate_projections() {
        let mut a = llama_like();
        a.shared_kv_last_n_layers = 1;
        a.kv_unified = true;
        let e = estimate(&a, &job(4, 8, true), &TargetModule::ALL, 0, 0);
        let layers = |name| e.modules.iter().find(|m| m.module == name).unwrap().layers;
        assert_eq!(
            (layers("q_proj"), layers("k_proj"), layers("v_proj")),
            (2, 1, 0)
        );
        assert!(e.notes.iter().any(|n| n.starts_with("v_proj")));
    }

    proptest::proptest! {
        /// Doubling r doubles the adapter; checkpointing never needs more activations.
        #[test]
        fn adapter_is_linear_in_r(r in 1usize..256, seq in 1usize..4096) {
            let a = llama_like();
            let one = estimate(&a, &job(r, seq, true), &TargetModule::ALL, 0, 0);
            let two = estimate(&a, &job(2 * r, seq, true), &TargetModule::ALL, 0, 0);
            proptest::prop_assert_eq!(two.trainable_params, 2 * one.trainable_params);
            proptest::prop_assert!(
                one.memory.activations_checkpointed <= one.memory.activations_full
            );
        }
    }
}
