//! The memory plan: every component of the peak footprint at a context length.

use dhurandhar_model::{ComponentBytes, Matrices, ModelArchitecture};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::error::PlanError;
use crate::format::{fmt_bits, WeightFormat};
use crate::kvcost::KvCodecCost;
use crate::params::{count_params, ParamCounts};

const MIB: f64 = 1024.0 * 1024.0;

/// How the PLE table is laid out on flash, which decides how many pages one token's
/// lookup touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PleLayout {
    /// One `[vocab, layers × ple_dim]` tensor (HF, GGUF, LiteRT): a token's inputs for
    /// every layer are one contiguous row.
    Row,
    /// One table per layer: every layer's slice is a separate read of at least one page.
    PerLayer,
}

/// Everything the planner needs besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Tokens in the context (prompt + generated).
    pub context_tokens: u64,
    /// Storage format of all quantized weights (decoder, experts, embeddings, PLE, encoders
    /// given as parameter counts).
    pub weight_format: WeightFormat,
    /// Bits per KV value: the bit width of `kv_codec`, or without a codec a flat charge
    /// (fractional allowed) that no codec stores exactly: a what-if.
    pub kv_bits: f64,
    /// The codec whose encoded bytes the KV cache is charged at.
    pub kv_codec: Option<KvCodecCost>,
    /// Leave the audio encoder out.
    pub strip_audio: bool,
    /// Leave the vision encoder out.
    pub strip_vision: bool,
    /// Page size of the flash reads behind mmap (4 KiB on Android/Linux).
    pub page_bytes: u64,
    /// PLE rows kept in the page cache in mmap mode; `None` = every token of the
    /// context (min(context, ple_vocab)), so no row of the current context is re-read.
    pub ple_hot_tokens: Option<u64>,
    pub ple_layout: PleLayout,
    /// Prefill runs in chunks of this many tokens; sizes the activation peak.
    pub prefill_chunk_tokens: u64,
    /// Bytes per activation element (4 = float32, as CPU runtimes compute).
    pub activation_bytes: u64,
    /// Override the profile's runtime overhead (MiB).
    pub runtime_overhead_mb: Option<f64>,
    /// The shortest context a mitigation may propose: below it a model is of little use.
    pub min_context_tokens: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            context_tokens: 32768,
            weight_format: WeightFormat::parse("int4").expect("built-in format"),
            kv_bits: 4.0,
            kv_codec: None,
            strip_audio: true,
            strip_vision: false,
            page_bytes: 4096,
            ple_hot_tokens: None,
            ple_layout: PleLayout::Row,
            prefill_chunk_tokens: 512,
            activation_bytes: 4,
            runtime_overhead_mb: None,
            min_context_tokens: 1024,
        }
    }
}

impl PlanOptions {
    /// Range checks with messages that name the option.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.context_tokens == 0 {
            return Err(PlanError::option("context tokens", "must be at least 1"));
        }
        if self.context_tokens > 1 << 32 {
            return Err(PlanError::option(
                "context tokens",
                format!(
                    "({}) is implausibly large (limit 4294967296)",
                    self.context_tokens
                ),
            ));
        }
        if !(self.kv_bits.is_finite() && self.kv_bits > 0.0 && self.kv_bits <= 32.0) {
            return Err(PlanError::option(
                "kv bits",
                format!("must be in (0, 32], got {}", self.kv_bits),
            ));
        }
        if let Some(c) = &self.kv_codec {
            if c.width(self.kv_bits).is_none() {
                return Err(PlanError::option(
                    "kv bits",
                    format!("codec `{}` is not costed at {} bits", c.name, self.kv_bits),
                ));
            }
        }
        if !self.page_bytes.is_power_of_two() || !(512..=1 << 24).contains(&self.page_bytes) {
            return Err(PlanError::option(
                "page size",
                format!(
                    "must be a power of two between 512 B and 16 MiB, got {}",
                    self.page_bytes
                ),
            ));
        }
        if self.prefill_chunk_tokens == 0 || self.prefill_chunk_tokens > 1 << 20 {
            return Err(PlanError::option(
                "prefill chunk",
                "must be in 1..=1048576 tokens",
            ));
        }
        if !(1..=8).contains(&self.activation_bytes) {
            return Err(PlanError::option("activation bytes", "must be in 1..=8"));
        }
        if self.min_context_tokens == 0 {
            return Err(PlanError::option(
                "minimum context tokens",
                "must be at least 1",
            ));
        }
        if let Some(r) = self.runtime_overhead_mb {
            if !(r.is_finite() && r >= 0.0) {
                return Err(PlanError::option("runtime overhead", "must be >= 0 MiB"));
            }
        }
        Ok(())
    }
}

/// One line of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// Stable snake_case name (`decoder_weights`, `ple`, `kv_cache`, ...).
    pub name: &'static str,
    pub bytes: u64,
    /// True when the bytes come from a real checkpoint's tensor table.
    pub exact: bool,
    /// How the number was obtained.
    pub note: String,
}

/// Sums over the components.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Everything in RAM.
    pub resident_bytes: u64,
    /// PLE table served from flash through mmap; only its working set counts.
    pub ple_mmap_bytes: u64,
    /// Page-cache working set charged for the PLE in mmap mode.
    pub ple_working_set_bytes: u64,
    /// PLE table bytes / decoder weight bytes (0 without PLE).
    pub ple_to_decoder_ratio: f64,
    /// Weights that could be streamed from flash (decoder + experts + untied LM head).
    pub streamable_weight_bytes: u64,
}

/// What one token costs: flash traffic (PLE), RAM traffic and arithmetic, for decode at
/// the planned context and for a prefill of the whole context. The device turns these
/// into tokens/s bounds ([`crate::assess`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerToken {
    /// Raw PLE bytes one token needs (layers × ple_dim × bits / 8).
    pub ple_row_bytes: f64,
    /// Expected pages one token's PLE lookup touches (random alignment).
    pub ple_pages: f64,
    /// Bytes actually read from flash for one cold PLE lookup (pages × page size).
    pub ple_flash_bytes: u64,
    /// Weight bytes one decode step reads (decoder + active experts + LM head, or the
    /// tied embedding matrix acting as LM head).
    pub weight_bytes: u64,
    /// Page size the flash reads are counted in.
    pub page_bytes: u64,
    /// One row of the token-embedding table (the input lookup).
    pub embedding_row_bytes: u64,
    /// The whole KV cache at the planned context: the last token attends over all of it.
    pub kv_read_bytes: u64,
    /// SSM state read and written back (2 × its size).
    pub ssm_state_bytes: u64,
    /// Bytes one decode step reads from RAM: `weight_bytes + kv_read_bytes +
    /// ple_row_bytes + embedding_row_bytes + ssm_state_bytes`.
    pub ram_bytes: u64,
    /// Matmul FLOPs per decoded token: 2 × the weights one token uses (a multiply-add
    /// per weight; tied embeddings count as the LM head).
    pub matmul_flops: u64,
    /// Attention FLOPs per decoded token at the planned context: 4 × heads × head_dim ×
    /// attended tokens per attention layer (QKᵀ and AV, window-capped).
    pub attention_flops: u64,
    /// The same FLOPs by the KV heads of the layers they run on: the engine splits a
    /// token's attention over threads by KV head ([`crate::split_efficiency`]).
    pub attention_flops_by_kv_heads: BTreeMap<u32, u64>,
    /// The matrices one decoded token multiplies, by stored type (`Q4_K` → weights and
    /// rows), when a checkpoint gives them (empty for estimated plans): a device's
    /// one-token matvec costs are per type ([`crate::MatvecRates`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub matmul_weights_by_type: BTreeMap<String, Matrices>,
    /// True when matmuls run on int8 dot products (every matrix of a checkpoint
    /// block-quantized, or an estimate at ≤ 8.5 bits per weight; activations quantized
    /// to int8); false when f16/bf16/f32 matrices are among them (f32 math).
    pub matmul_int8: bool,
    /// Prefill: attention FLOPs per prompt token, averaged over a prompt of the planned
    /// context (token t attends min(t, window) tokens).
    pub prefill_attention_flops: u64,
    /// Prefill: RAM bytes per prompt token: the weights once per chunk plus, per chunk,
    /// the KV cache read at the mean position: `(weight_bytes + kv_read_bytes / 2) / chunk`.
    pub prefill_ram_bytes: u64,
    /// Prompt tokens per chunk (the weights are read once per chunk).
    pub prefill_chunk_tokens: u64,
    /// Width elements of a decode step's vector work: the hidden size once per layer
    /// and once more for the output norm ([`crate::VectorCost`]).
    pub vector_width_elements: u64,
    /// FFN elements of a decode step's vector work: each layer's FFN width (the active
    /// experts' and shared experts' widths on a MoE layer).
    pub vector_ffn_elements: u64,
}

/// A published file size next to our estimate of the same thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedCheck {
    /// What was compared.
    pub item: &'static str,
    pub published_bytes: u64,
    pub estimated_bytes: u64,
    /// estimated / published.
    pub ratio: f64,
}

/// The full plan for one model at one context length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub model: String,
    pub context_tokens: u64,
    pub weight_format: String,
    /// Bits per weight including scales, at this model's hidden size.
    pub weight_bits_per_weight: f64,
    pub kv_bits: f64,
    /// The codec the KV cache is charged at (`None`: flat `kv_bits`, a what-if).
    pub kv_codec: Option<String>,
    /// KV bytes × 8 / cached K and V values at this context.
    pub kv_bits_per_value: f64,
    pub strip_audio: bool,
    pub strip_vision: bool,
    /// `checkpoint` when weight bytes are exact, `estimated` when computed from the
    /// architecture and the weight format.
    pub weights_source: &'static str,
    pub components: Vec<Component>,
    pub totals: Totals,
    pub per_token: PerToken,
    pub params: ParamCounts,
    /// PLE rows assumed hot in the page cache (mmap mode).
    pub ple_hot_tokens: u64,
    pub has_ple: bool,
    /// Fraction of expert bytes one token reads (1 for dense models).
    pub expert_active_fraction: f64,
    pub published: Vec<PublishedCheck>,
    /// Non-fatal problems (context beyond the model's maximum, ...).
    pub warnings: Vec<String>,
}

impl MemoryPlan {
    /// Bytes of the named component (0 when absent).
    pub fn component(&self, name: &str) -> u64 {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.bytes)
    }
}

/// Build the memory plan.
///
/// With `weights` (exact per-component bytes from a checkpoint), weight components use
/// those bytes and the weight format does not apply to them; KV, activations, state and
/// overhead are always computed.
pub fn plan(
    arch: &ModelArchitecture,
    weights: Option<&ComponentBytes>,
    opts: &PlanOptions,
) -> Result<MemoryPlan, PlanError> {
    opts.validate()?;
    let p = count_params(arch);
    let fmt = &opts.weight_format;
    let row = arch.hidden_size;
    let bpw = fmt.bits_per_weight(row);
    let wb = |params: u64| fmt.bytes(params, row);
    let est = |params: u64, what: &str| -> String {
        format!(
            "{} params at {} ({} bits/weight); {what}",
            format_params(params),
            fmt.name,
            fmt_bits(bpw)
        )
    };
    let ctx = opts.context_tokens;
    let mut warnings = Vec::new();
    if ctx > arch.max_context_tokens {
        warnings.push(format!(
            "context {ctx} exceeds {}'s maximum of {} tokens; computing anyway",
            arch.name, arch.max_context_tokens
        ));
    }
    let mut comps: Vec<Component> = Vec::new();
    let exact = weights.is_some();
    let ckpt = |what: &str| format!("exact: {what} tensor bytes from the checkpoint");

    // --- weights ---
    let (dec, ple, tok, lm, experts) = match weights {
        Some(w) => (
            w.decoder_layers + w.other,
            w.ple,
            w.token_embeddings,
            w.lm_head,
            w.experts,
        ),
        None => (
            wb(p.decoder),
            wb(p.ple_table),
            wb(p.token_embeddings),
            wb(p.lm_head),
            wb(p.experts),
        ),
    };
    comps.push(Component {
        name: "decoder_weights",
        bytes: dec,
        exact,
        note: if exact {
            ckpt("decoder-layer and other")
        } else {
            est(p.decoder, &decoder_parts(&p))
        },
    });
    comps.push(Component {
        name: "ple",
        bytes: ple,
        exact,
        note: if !arch.has_ple && ple == 0 {
            "no per-layer embeddings".into()
        } else if exact {
            ckpt("per-layer embedding")
        } else {
            est(p.ple_table, "per-layer embedding table, mmap-able")
        },
    });
    comps.push(Component {
        name: "token_embeddings",
        bytes: tok,
        exact,
        note: if exact {
            ckpt("token-embedding")
        } else if arch.embeddings_tied {
            est(
                p.token_embeddings,
                "tied: also the LM head, read every token",
            )
        } else {
            est(p.token_embeddings, "input embeddings")
        },
    });
    if !arch.embeddings_tied || lm > 0 {
        comps.push(Component {
            name: "lm_head",
            bytes: lm,
            exact,
            note: if exact {
                ckpt("LM-head")
            } else {
                est(p.lm_head, "untied output projection")
            },
        });
    }
    if arch.is_moe || experts > 0 {
        comps.push(Component {
            name: "experts",
            bytes: experts,
            exact,
            note: if exact {
                ckpt("expert")
            } else {
                est(
                    p.experts,
                    &format!(
                        "{} experts x {} MoE layers, all resident; {} active per token",
                        arch.num_experts,
                        arch.moe_layers(),
                        arch.num_active_experts
                    ),
                )
            },
        });
    }

    // --- KV cache and state ---
    let layers = arch.layers();
    let kv_values: u64 = layers
        .iter()
        .map(|l| l.kv_tokens(ctx) * l.kv_elements_per_token())
        .sum();
    let (kv, kv_bpv, kv_charge) = match &opts.kv_codec {
        None => (
            arch.kv_cache_bytes(ctx, opts.kv_bits),
            opts.kv_bits,
            format!("at {} bits/element", fmt_bits(opts.kv_bits)),
        ),
        Some(c) => {
            let w = c
                .width(opts.kv_bits)
                .ok_or_else(|| PlanError::option("kv bits", "not costed for the codec"))?;
            let bytes = w.cache_bytes(arch, ctx)?;
            let bpv = if kv_values > 0 {
                bytes as f64 * 8.0 / kv_values as f64
            } else {
                0.0
            };
            let rates: Vec<String> = w
                .heads
                .iter()
                .map(|h| format!("head_dim {}: {}", h.head_dim, fmt_bits(h.bits_per_value())))
                .collect();
            let mut note = format!(
                "as {} {}-bit, {} bits/value from its encoded bytes ({})",
                c.name,
                w.bits,
                fmt_bits(bpv),
                rates.join(", ")
            );
            if let Some(s) = &c.side_note {
                note.push_str(&format!(", {s}"));
            }
            (bytes, bpv, note)
        }
    };
    let fresh = layers
        .iter()
        .filter(|l| l.kv == dhurandhar_model::KvSource::Fresh)
        .count();
    let windowed = layers
        .iter()
        .filter(|l| l.kv == dhurandhar_model::KvSource::Fresh && l.window.is_some())
        .count();
    let shared = layers
        .iter()
        .filter(|l| matches!(l.kv, dhurandhar_model::KvSource::SharedFrom(_)))
        .count();
    let mut kv_note = format!("{fresh} layers own KV {kv_charge}");
    if windowed > 0 {
        kv_note.push_str(&format!(
            "; {windowed} sliding capped at {} tokens",
            arch.sliding_window
        ));
    }
    if shared > 0 {
        kv_note.push_str(&format!("; {shared} share KV (0 B)"));
    }
    if arch.ssm_layers() > 0 {
        kv_note.push_str(&format!("; {} SSM layers (0 B)", arch.ssm_layers()));
    }
    comps.push(Component {
        name: "kv_cache",
        bytes: kv,
        exact: false,
        note: kv_note,
    });
    if arch.has_mamba {
        let per_layer = (arch.mamba_state_dim + arch.mamba_conv_state_dim) as u128
            * arch.mamba_state_dtype_bits as u128;
        let bytes = (per_layer * arch.mamba_num_layers as u128).div_ceil(8);
        comps.push(Component {
            name: "ssm_state",
            bytes: bytes.min(u64::MAX as u128) as u64,
            exact: false,
            note: format!(
                "{} SSM layers x {} state elements at {} bits (never quantized); constant in context",
                arch.mamba_num_layers,
                arch.mamba_state_dim + arch.mamba_conv_state_dim,
                arch.mamba_state_dtype_bits
            ),
        });
    }

    // --- encoders ---
    let encoder = |name: &'static str,
                   params: u64,
                   mb: f64,
                   ckpt_bytes: Option<u64>,
                   stripped: bool|
     -> Component {
        if stripped {
            return Component {
                name,
                bytes: 0,
                exact,
                note: "stripped".into(),
            };
        }
        if let Some(b) = ckpt_bytes {
            return Component {
                name,
                bytes: b,
                exact: true,
                note: if b == 0 {
                    "exact: none in the checkpoint".into()
                } else {
                    ckpt("encoder")
                },
            };
        }
        if params > 0 {
            Component {
                name,
                bytes: wb(params),
                exact: false,
                note: est(params, "encoder quantized with the weights"),
            }
        } else if mb > 0.0 {
            Component {
                name,
                bytes: (mb * MIB).round() as u64,
                exact: false,
                note: format!("{mb} MiB from the profile, at its shipped precision"),
            }
        } else {
            Component {
                name,
                bytes: 0,
                exact: false,
                note: "none".into(),
            }
        }
    };
    comps.push(encoder(
        "vision_encoder",
        p.vision_encoder,
        arch.vision_encoder_mb,
        weights.map(|w| w.vision_encoder),
        opts.strip_vision,
    ));
    comps.push(encoder(
        "audio_encoder",
        p.audio_encoder,
        arch.audio_encoder_mb,
        weights.map(|w| w.audio_encoder),
        opts.strip_audio,
    ));
    if p.unified_modality > 0 {
        comps.push(Component {
            name: "unified_modality",
            bytes: wb(p.unified_modality),
            exact: false,
            note: est(p.unified_modality, "extra multimodal parameters"),
        });
    }

    // --- activations ---
    let chunk = opts.prefill_chunk_tokens.min(ctx);
    let act_elems = activation_elements_per_token(arch);
    let act = (chunk as u128 * act_elems as u128 + arch.vocab_size as u128)
        * opts.activation_bytes as u128;
    comps.push(Component {
        name: "activations",
        bytes: act.min(u64::MAX as u128) as u64,
        exact: false,
        note: format!(
            "prefill chunk of {chunk} tokens x {act_elems} live values + one logits row, {} B each; tiled attention assumed",
            opts.activation_bytes
        ),
    });
    let overhead_mb = opts.runtime_overhead_mb.unwrap_or(arch.runtime_overhead_mb);
    comps.push(Component {
        name: "runtime_overhead",
        bytes: (overhead_mb * MIB).round() as u64,
        exact: false,
        note: format!("{overhead_mb} MiB runtime/framework overhead from the profile"),
    });

    // --- totals ---
    let resident: u64 = comps
        .iter()
        .map(|c| c.bytes)
        .fold(0u64, u64::saturating_add);
    let ple_vocab = if arch.has_ple { arch.ple_vocab_size } else { 0 };
    let ple_row_bytes = if arch.has_ple {
        if exact && ple_vocab > 0 {
            ple as f64 / ple_vocab as f64
        } else {
            (arch.num_hidden_layers as u64 * arch.ple_hidden_size) as f64 * bpw / 8.0
        }
    } else {
        0.0
    };
    let page = opts.page_bytes as f64;
    let expected_pages = |span: f64| {
        if span <= 0.0 {
            0.0
        } else {
            1.0 + (span - 1.0).max(0.0) / page
        }
    };
    let ple_pages = match opts.ple_layout {
        _ if !arch.has_ple => 0.0,
        PleLayout::Row => expected_pages(ple_row_bytes),
        PleLayout::PerLayer => {
            arch.num_hidden_layers as f64
                * expected_pages(ple_row_bytes / arch.num_hidden_layers as f64)
        }
    };
    let ple_flash_bytes = (ple_pages * page).ceil() as u64;
    let hot = if arch.has_ple {
        opts.ple_hot_tokens.unwrap_or(ctx).min(ple_vocab)
    } else {
        0
    };
    let ple_ws = if arch.has_ple {
        ((hot as f64 * ple_pages * page).ceil() as u64).min(ple)
    } else {
        0
    };
    let ple_mmap = if arch.has_ple {
        resident - ple + ple_ws
    } else {
        resident
    };
    let ratio = if arch.has_ple && dec > 0 {
        ple as f64 / dec as f64
    } else {
        0.0
    };
    let expert_frac = if arch.is_moe && p.experts > 0 {
        p.experts_active as f64 / p.experts as f64
    } else {
        1.0
    };
    // Tied embeddings are the LM head: the whole matrix is read each token.
    let lm_read = if arch.embeddings_tied { tok } else { lm };
    let per_token_weights = dec as f64 + experts as f64 * expert_frac + lm_read as f64;
    let weight_bytes = per_token_weights.round() as u64;
    let embedding_row_bytes = if arch.vocab_size > 0 {
        tok.div_ceil(arch.vocab_size)
    } else {
        0
    };
    let ssm_state_bytes = 2 * comps
        .iter()
        .find(|c| c.name == "ssm_state")
        .map_or(0, |c| c.bytes);
    let ram_bytes = weight_bytes
        .saturating_add(kv)
        .saturating_add(ple_row_bytes.ceil() as u64)
        .saturating_add(embedding_row_bytes)
        .saturating_add(ssm_state_bytes);
    let lm_params = if arch.embeddings_tied {
        p.token_embeddings
    } else {
        p.lm_head
    };
    let matmul_flops = 2 * (p.decoder as u128 + p.experts_active as u128 + lm_params as u128);
    let mut matmul_by_type: BTreeMap<String, Matrices> = BTreeMap::new();
    if let Some(w) = weights {
        let mut add = |m: &BTreeMap<String, Matrices>, share: f64| {
            for (k, &n) in m {
                matmul_by_type
                    .entry(k.clone())
                    .or_default()
                    .add_share(n, share);
            }
        };
        add(&w.matmul_weights, 1.0);
        add(&w.expert_matmul_weights, expert_frac);
        if arch.embeddings_tied {
            add(&w.token_embedding_weights, 1.0);
        }
    }
    let nh = arch.num_attention_heads as u128;
    let (mut attn_flops, mut prefill_attn) = (0u128, 0f64);
    let mut attn_by_kv_heads = BTreeMap::new();
    for l in layers
        .iter()
        .filter(|l| l.attention != dhurandhar_model::AttentionKind::None)
    {
        let per_token = 4 * nh * l.head_dim as u128;
        let attended = l.window.map_or(ctx, |w| ctx.min(w));
        attn_flops += per_token * attended as u128;
        *attn_by_kv_heads.entry(l.kv_heads).or_insert(0u128) += per_token * attended as u128;
        prefill_attn += per_token as f64 * mean_attended(ctx, l.window);
    }
    // A MoE layer's token runs its active experts (and any shared ones) through the
    // gated activation.
    let shared_ffn = match arch.shared_expert_intermediate_size {
        0 => arch.expert_ffn(),
        w => w,
    };
    let moe_ffn = arch.num_active_experts as u64 * arch.expert_ffn()
        + arch.num_shared_experts as u64 * shared_ffn;
    let vector_ffn_elements = layers
        .iter()
        .map(|l| if l.moe { moe_ffn } else { l.ffn_intermediate })
        .sum();
    let vector_width_elements = (layers.len() as u64 + 1) * arch.hidden_size;
    let chunk_tokens = opts.prefill_chunk_tokens.min(ctx).max(1);
    let prefill_ram = (weight_bytes as f64 + kv as f64 / 2.0) / chunk_tokens as f64;
    let sat = |x: u128| x.min(u64::MAX as u128) as u64;

    let mut published = Vec::new();
    if arch.published_decoder_gb > 0.0 {
        let pb = (arch.published_decoder_gb * 1e9).round() as u64;
        published.push(PublishedCheck {
            item: "decoder_weights",
            published_bytes: pb,
            estimated_bytes: dec,
            ratio: dec as f64 / pb as f64,
        });
    }
    if arch.published_embeddings_gb > 0.0 {
        let pb = (arch.published_embeddings_gb * 1e9).round() as u64;
        published.push(PublishedCheck {
            item: "ple",
            published_bytes: pb,
            estimated_bytes: ple,
            ratio: ple as f64 / pb as f64,
        });
    }

    // A checkpoint says which matrices are block-quantized (the engine multiplies those
    // with int8 dots): the mean bits per weight would count its f32 norms too, and a
    // Q8_0 file's mean is then just above 8.5.
    let matmul_int8 = if matmul_by_type.is_empty() {
        bpw_of_weights(exact, bpw, dec + experts + tok + lm, &p) <= 8.5
    } else {
        matmul_by_type
            .keys()
            .all(|t| !matches!(t.as_str(), "F32" | "F16" | "BF16"))
    };
    Ok(MemoryPlan {
        model: arch.name.clone(),
        context_tokens: ctx,
        weight_format: if exact {
            "checkpoint".to_string()
        } else {
            fmt.name.clone()
        },
        weight_bits_per_weight: bpw,
        kv_bits: opts.kv_bits,
        kv_codec: opts.kv_codec.as_ref().map(|c| c.name.clone()),
        kv_bits_per_value: kv_bpv,
        strip_audio: opts.strip_audio,
        strip_vision: opts.strip_vision,
        weights_source: if exact { "checkpoint" } else { "estimated" },
        totals: Totals {
            resident_bytes: resident,
            ple_mmap_bytes: ple_mmap,
            ple_working_set_bytes: ple_ws,
            ple_to_decoder_ratio: ratio,
            streamable_weight_bytes: dec + experts + lm,
        },
        per_token: PerToken {
            ple_row_bytes,
            ple_pages,
            ple_flash_bytes,
            weight_bytes,
            page_bytes: opts.page_bytes,
            embedding_row_bytes,
            kv_read_bytes: kv,
            ssm_state_bytes,
            ram_bytes,
            matmul_flops: sat(matmul_flops),
            attention_flops: sat(attn_flops),
            attention_flops_by_kv_heads: attn_by_kv_heads
                .into_iter()
                .map(|(h, f)| (h, sat(f)))
                .collect(),
            matmul_weights_by_type: matmul_by_type,
            matmul_int8,
            prefill_attention_flops: prefill_attn.round() as u64,
            prefill_ram_bytes: prefill_ram.ceil() as u64,
            prefill_chunk_tokens: chunk_tokens,
            vector_width_elements,
            vector_ffn_elements,
        },
        components: comps,
        params: p,
        ple_hot_tokens: hot,
        has_ple: arch.has_ple,
        expert_active_fraction: expert_frac,
        published,
        warnings,
    })
}

/// Mean tokens attended over a prompt of `ctx` tokens where token t (1-based) attends
/// min(t, window): (ctx + 1) / 2 without a window.
fn mean_attended(ctx: u64, window: Option<u64>) -> f64 {
    let n = ctx as f64;
    match window {
        Some(w) if w < ctx => {
            let w = w as f64;
            (w * (w + 1.0) / 2.0 + (n - w) * w) / n
        }
        _ => (n + 1.0) / 2.0,
    }
}

/// Bits per stored weight: the format's, or for a checkpoint its weight bytes over the
/// text parameters (what decides int8 vs f32 matmuls).
fn bpw_of_weights(exact: bool, bpw: f64, weight_bytes: u64, p: &ParamCounts) -> f64 {
    let params = p.decoder + p.experts + p.token_embeddings + p.lm_head;
    if exact && params > 0 {
        weight_bytes as f64 * 8.0 / params as f64
    } else {
        bpw
    }
}

/// Live values per token while one layer runs a prefill chunk: the residual stream and
/// its normed copy, Q, K, V and the attention output at the widest geometry, the gated
/// FFN's gate and up projections at the widest FFN (or all active experts), and the
/// per-layer embedding inputs.
pub fn activation_elements_per_token(a: &ModelArchitecture) -> u64 {
    let h = a.hidden_size;
    let hd = a.head_dim.max(a.global_head_dim()) as u64;
    let kvh = a.num_key_value_heads.max(a.global_kv_heads()) as u64;
    let q = a.num_attention_heads as u64 * hd;
    let widest_ffn = a
        .layers()
        .iter()
        .map(|l| {
            if l.moe {
                a.expert_ffn() * a.num_active_experts as u64
            } else {
                l.ffn_intermediate
            }
        })
        .max()
        .unwrap_or(a.intermediate_size);
    let ple = if a.has_ple {
        a.num_hidden_layers as u64 * a.ple_hidden_size
    } else {
        0
    };
    2 * h + 2 * q + 2 * kvh * hd + 2 * widest_ffn + ple
}

/// What the decoder_weights component is made of, for its note.
fn decoder_parts(p: &ParamCounts) -> String {
    let mut parts = vec!["attention"];
    if p.dense_ffn > 0 {
        parts.push("dense FFN");
    }
    if p.ssm_mixers > 0 {
        parts.push("SSM mixers");
    }
    if p.ple_projections > 0 {
        parts.push("PLE projections");
    }
    parts.push("norms");
    parts.join(", ")
}

/// `1.84 B`, `494.0 M`.
pub fn format_params(p: u64) -> String {
    if p >= 1_000_000_000 {
        format!("{:.2} B", p as f64 / 1e9)
    } else {
        format!("{:.1} M", p as f64 / 1e6)
    }
}
