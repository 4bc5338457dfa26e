//! Perplexity of a GGUF model on a text with the exact f32 KV cache and with KV codecs
//! applied to the cache (prefill included), plus KL divergence and top-1 agreement
//! against the exact cache. The engine's [`dhurandhar_engine::evaluate`]
//! does the passes; this module picks the codecs, their widths and SpectralQuant's
//! calibration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dhurandhar_engine::{evaluate_with, CacheCodec, Capture, Logits, LoraStack, Model, WeightMode};

use crate::generate::WeightsReport;
use dhurandhar_kv::{build_codec, build_codec_roles, Codec, CodecSpec, KvCodec};
use serde::Serialize;

use crate::kv::{check_range, resolve_threads, MAX_TEXT_BYTES};
use crate::lora::AdapterSpec;
use crate::{CancelToken, Error, Progress, Result, Unit};

/// Version of the `eval` JSON document. (The document has no `schema_version` field
/// yet: it is kept byte-identical to earlier releases.)
pub const SCHEMA_VERSION: u32 = 1;

/// Most tokens per forward pass (each pass holds `chunk × vocabulary` logits).
pub const MAX_CHUNK: usize = 4096;

/// What [`eval`] scores.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// GGUF model file (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe or qwen3moe).
    pub model: PathBuf,
    /// UTF-8 text to score (at most [`MAX_TEXT_BYTES`]).
    pub text_file: PathBuf,
    /// Codecs applied to the cache, one pass each; empty = the exact cache only.
    pub codecs: Vec<Codec>,
    /// Bit budget. A single codec must support it; with several codecs, each runs at
    /// its supported width nearest to it.
    pub bits: u32,
    /// Score at most this many tokens of the text (also capped at the context length).
    pub max_tokens: usize,
    /// Tokens per forward pass (bounds the logits held in memory).
    pub chunk: usize,
    /// Tokens at the start of the text whose exact K/V calibrate `spectral`.
    pub calibration_tokens: usize,
    /// Codec rotation seed.
    pub seed: u64,
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Quantize activations to 8 bits inside the matmuls (faster; its rounding adds a
    /// noise floor of KL ≈ 3e-3, so f32 is the default).
    pub q8_activations: bool,
    /// How the weights are held.
    pub weights: WeightMode,
    /// RAM budget in bytes for streamed weights.
    pub ram_budget: Option<u64>,
    /// A streamed MoE model's expert cache.
    pub experts: crate::generate::ExpertOptions,
    /// LoRA adapters applied in every pass (PEFT directories with weights).
    pub adapters: Vec<AdapterSpec>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            model: PathBuf::new(),
            text_file: PathBuf::new(),
            codecs: Vec::new(),
            bits: 4,
            max_tokens: 512,
            chunk: 128,
            calibration_tokens: 64,
            seed: dhurandhar_kv::DEFAULT_SEED,
            threads: None,
            q8_activations: false,
            weights: WeightMode::Mmap,
            ram_budget: None,
            experts: Default::default(),
            adapters: Vec::new(),
        }
    }
}

/// The `eval` document.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub schema_version: u32,
    pub model: String,
    pub text_file: String,
    #[serde(flatten)]
    pub result: dhurandhar_engine::EvalReport,
    /// How `spectral` was calibrated, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// `f32` (default) or `q8` (8-bit activations inside the matmuls).
    pub activations: &'static str,
    /// Seconds of the evaluation passes (calibration excluded).
    pub seconds: f64,
    /// How the weights were held; bytes read per token of the text over all passes.
    pub weights: WeightsReport,
    /// Worker threads used (not part of the JSON document).
    #[serde(skip)]
    pub threads: usize,
    /// LoRA adapters applied (directories), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<String>,
}

/// The width `codec` runs at: `bits` for a single codec (checked when it is built),
/// the nearest supported width in a sweep.
fn bits_for(codec: Codec, bits: u32, sweep: bool) -> u32 {
    if sweep {
        codec.nearest_bits(bits)
    } else {
        bits
    }
}

/// Per-layer SpectralQuant codecs calibrated on the exact keys/values of `tokens`.
fn spectral_per_layer(
    model: &Model,
    spec: &CodecSpec,
    tokens: &[u32],
    threads: usize,
    f32_acts: bool,
    adapters: &Option<Arc<LoraStack>>,
) -> Result<Vec<Arc<dyn KvCodec>>> {
    let c = &model.config;
    let mut cap = Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = model.session(threads, None)?;
    s.set_f32_activations(f32_acts);
    s.set_adapters(adapters.clone())?;
    s.forward(tokens, Logits::None, Some(&mut cap))?;
    cap.layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            build_codec_roles(spec, Some(&l.k), Some(&l.v))
                .map(Arc::from)
                .map_err(|e| Error::from(e).context(format!("calibrating spectral on layer {i}")))
        })
        .collect()
}

/// Score the text with the exact cache and with each codec.
pub fn eval(
    opts: &EvalOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<EvalReport> {
    check_range("max_tokens", opts.max_tokens, 2, usize::MAX)?;
    check_range("chunk", opts.chunk, 1, MAX_CHUNK)?;
    let threads = resolve_threads(opts.threads)?;
    let model = Model::open_with(&opts.model, opts.weights)?;
    let text = dhurandhar_io::read_to_string_bounded(&opts.text_file, MAX_TEXT_BYTES, "a text")?;
    let mut tokens = model.tokenizer.encode(&text);
    tokens.truncate(opts.max_tokens.min(model.config.context_length));
    if tokens.len() < 2 {
        return Err(Error::invalid(
            "text_file",
            format!("{} holds fewer than 2 tokens", opts.text_file.display()),
        ));
    }
    crate::generate::start_weights(
        &model,
        opts.ram_budget,
        opts.experts,
        tokens.len(),
        opts.chunk,
        opts.chunk,
        threads,
    )?;
    let stack = crate::lora::load_stack(&model, &opts.adapters)?;
    let c = &model.config;
    let f32_acts = !opts.q8_activations;
    let sweep = opts.codecs.len() > 1;
    let mut codecs = Vec::with_capacity(opts.codecs.len());
    let mut calibration = None;
    progress.start(
        "building KV codecs",
        Some(opts.codecs.len() as u64),
        Unit::Items("codecs"),
    );
    for &codec in &opts.codecs {
        cancel.check()?;
        let bits = bits_for(codec, opts.bits, sweep);
        let spec = CodecSpec {
            codec,
            bits,
            head_dim: c.head_dim,
            seed: opts.seed,
        };
        let label = format!("{codec}@{bits}");
        if codec.needs_calibration() {
            let n = opts.calibration_tokens.clamp(2, tokens.len());
            let per_layer =
                spectral_per_layer(&model, &spec, &tokens[..n], threads, f32_acts, &stack)?;
            calibration = Some(format!(
                "spectral calibrated per layer on the exact keys/values of the first {n} tokens of the text (which are also scored)"
            ));
            codecs.push(CacheCodec::per_layer(&label, per_layer));
        } else {
            let built = build_codec(&spec, None)
                .map_err(|e| Error::from(e).context(format!("building KV codec `{codec}`")))?;
            codecs.push(CacheCodec::shared(&label, Arc::from(built), c.n_layers));
        }
        progress.advance(1);
    }
    progress.finish();
    cancel.check()?;
    progress.start(
        "evaluating",
        Some(tokens.len() as u64),
        Unit::Items("tokens"),
    );
    let t0 = Instant::now();
    let result = evaluate_with(
        &model, &tokens, codecs, threads, opts.chunk, f32_acts, stack,
    )?;
    progress.advance(tokens.len() as u64);
    progress.finish();
    Ok(EvalReport {
        schema_version: SCHEMA_VERSION,
        model: opts.model.display().to_string(),
        text_file: opts.text_file.display().to_string(),
        result,
        calibration,
        activations: if opts.q8_activations { "q8" } else { "f32" },
        seconds: t0.elapsed().as_secs_f64(),
        threads,
        weights: WeightsReport::new(
            &model,
            opts.ram_budget,
            &model.stream_stats(),
            t0.elapsed().as_secs_f64(),
            tokens.len(),
        ),
        adapters: opts
            .adapters
            .iter()
            .map(|a| a.path.display().to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    fn fixture() -> Option<PathBuf> {
        dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)
    }

    #[test]
    fn sweep_widths_are_the_nearest_supported_single_is_as_asked() {
        assert_eq!(bits_for(Codec::Q8_0, 2, true), 8);
        assert_eq!(bits_for(Codec::Turbo, 1, true), 2);
        assert_eq!(bits_for(Codec::Q8_0, 2, false), 2);
    }

    #[test]
    fn bad_sizes_are_named_before_the_model_is_opened() {
        let t = CancelToken::new();
        let o = EvalOptions {
            chunk: 0,
            ..EvalOptions::default()
        };
        let e = eval(&o, &NoProgress, &t).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidOption {
                    option: "chunk",
                    ..
                }
            ),
            "{e}"
        );
        let o = EvalOptions {
            threads: Some(1 << 40),
            ..EvalOptions::default()
        };
        let e = eval(&o, &NoProgress, &t).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidOption {
                    option: "threads",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn single_codec_at_an_unsupported_width_is_an_error() {
        let Some(model) = fixture() else { return };
        let text = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/eval/pride-and-prejudice-ch1.txt");
        let o = EvalOptions {
            model,
            text_file: text,
            codecs: vec![Codec::Q8_0],
            bits: 4,
            max_tokens: 8,
            threads: Some(1),
            ..EvalOptions::default()
        };
        let e = eval(&o, &NoProgress, &CancelToken::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("building KV codec `q8_0`") && e.contains("does not support 4 bits"),
            "{e}"
        );
    }
}
