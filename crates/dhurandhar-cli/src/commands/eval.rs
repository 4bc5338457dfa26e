//! `dhurandhar eval`: perplexity of a GGUF model on a text with the exact f32 KV cache
//! and with KV codecs applied to the cache (prefill included), plus KL divergence and
//! top-1 agreement against the exact cache.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use dhurandhar_engine::{evaluate, CacheCodec, Capture, EvalReport, Logits, Model};
use dhurandhar_kv::{build_codec, build_codec_roles, Codec, CodecSpec, KvCodec};
use serde::Serialize;

use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama / qwen2 family).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text to score.
    #[arg(long)]
    pub text_file: PathBuf,
    /// KV codec applied to the cache (`all` sweeps every codec); omit for exact only.
    #[arg(long)]
    pub kv_codec: Option<String>,
    /// Codec bit budget. With `all`, codecs that lack this width use their nearest one.
    #[arg(long, default_value_t = 4)]
    pub kv_bits: u32,
    /// Score at most this many tokens of the text (one context window).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Tokens per forward pass (bounds the logits held in memory).
    #[arg(long, default_value_t = 128)]
    pub chunk: usize,
    /// Tokens at the start of the text whose exact K/V calibrate `spectral`.
    #[arg(long, default_value_t = 64)]
    pub calibration_tokens: usize,
    /// Codec rotation seed.
    #[arg(long, default_value_t = dhurandhar_kv::DEFAULT_SEED)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize activations to 8 bits inside the matmuls (llama.cpp's fast scheme, as
    /// `generate` does). Faster, but its rounding amplifies any tiny change into a noise
    /// floor of KL ≈ 3e-3, so by default eval multiplies in f32.
    #[arg(long)]
    pub q8_activations: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Output {
    model: String,
    text_file: String,
    #[serde(flatten)]
    report: EvalReport,
    /// How `spectral` was calibrated, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration: Option<String>,
    /// `f32` (default) or `q8` (8-bit activations inside the matmuls).
    activations: &'static str,
    seconds: f64,
}

/// Per-layer key and value calibration vectors (`tokens·kv_heads × head_dim`) from an
/// exact pass over the first `n` tokens.
fn calibration(
    model: &Model,
    tokens: &[u32],
    threads: usize,
    f32_acts: bool,
) -> anyhow::Result<Capture> {
    let c = &model.config;
    let mut cap = Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = model.session(threads, None)?;
    s.set_f32_activations(f32_acts);
    s.forward(tokens, Logits::None, Some(&mut cap))?;
    Ok(cap)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let text = std::fs::read_to_string(&args.text_file)
        .with_context(|| format!("cannot read {}", args.text_file.display()))?;
    let threads = args
        .threads
        .unwrap_or_else(super::generate::default_threads)
        .max(1);
    let mut tokens = model.tokenizer.encode(&text);
    let limit = args.max_tokens.min(model.config.context_length);
    tokens.truncate(limit);
    if tokens.len() < 2 {
        anyhow::bail!("{} holds fewer than 2 tokens", args.text_file.display());
    }
    let c = &model.config;
    let names: Vec<Codec> = match args.kv_codec.as_deref() {
        None => Vec::new(),
        Some("all") => Codec::ALL.to_vec(),
        Some(n) => vec![n.parse().map_err(|_| {
            anyhow::anyhow!(
                "unknown KV codec `{n}` (known: {}, all)",
                Codec::known_names()
            )
        })?],
    };
    let mut codecs = Vec::new();
    let mut calib_note = None;
    for &name in &names {
        let bits = if names.len() == 1 {
            // An explicit single codec must support the requested width.
            args.kv_bits
        } else {
            name.nearest_bits(args.kv_bits)
        };
        let spec = CodecSpec {
            codec: name,
            bits,
            head_dim: c.head_dim,
            seed: args.seed,
        };
        let label = format!("{name}@{bits}");
        if name.needs_calibration() {
            let n = args.calibration_tokens.clamp(2, tokens.len());
            let cap = calibration(&model, &tokens[..n], threads, !args.q8_activations)?;
            let mut per_layer: Vec<Arc<dyn KvCodec>> = Vec::with_capacity(c.n_layers);
            for (i, l) in cap.layers.iter().enumerate() {
                let codec = build_codec_roles(&spec, Some(&l.k), Some(&l.v))
                    .with_context(|| format!("calibrating spectral on layer {i}"))?;
                per_layer.push(Arc::from(codec));
            }
            calib_note = Some(format!(
                "spectral calibrated per layer on the exact keys/values of the first {n} tokens of the text (which are also scored)"
            ));
            codecs.push(CacheCodec::per_layer(&label, per_layer));
        } else {
            let codec =
                build_codec(&spec, None).with_context(|| format!("building KV codec `{name}`"))?;
            codecs.push(CacheCodec::shared(&label, Arc::from(codec), c.n_layers));
        }
    }
    let t0 = Instant::now();
    let report = evaluate(
        &model,
        &tokens,
        codecs,
        threads,
        args.chunk,
        !args.q8_activations,
    )?;
    let out = Output {
        model: args.model.display().to_string(),
        text_file: args.text_file.display().to_string(),
        report,
        calibration: calib_note,
        activations: if args.q8_activations { "q8" } else { "f32" },
        seconds: t0.elapsed().as_secs_f64(),
    };
    if args.json {
        return print_json(&out);
    }
    let r = &out.report;
    writeln!(
        std::io::stdout().lock(),
        "{} tokens of {} ({} predictions), {} activations, {} threads, {:.1} s",
        r.tokens,
        out.text_file,
        r.predictions,
        out.activations,
        threads,
        out.seconds
    )?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "KV cache",
        "bits/value",
        "perplexity",
        "Δ ppl",
        "KL (nats)",
        "top-1 agree",
    ]);
    table.add_row([
        "exact f32".to_string(),
        "32".to_string(),
        format!("{:.3}", r.exact.perplexity),
        "-".to_string(),
        "-".to_string(),
        "-".to_string(),
    ]);
    for cr in &r.codecs {
        table.add_row([
            cr.codec.clone(),
            cr.bits_per_value
                .map(|b| format!("{b:.2}"))
                .unwrap_or_else(|| "-".into()),
            format!("{:.3}", cr.metrics.perplexity),
            format!("{:+.3}", cr.metrics.perplexity - r.exact.perplexity),
            format!("{:.5}", cr.kl_divergence),
            format!("{:.1}%", cr.top1_agreement * 100.0),
        ]);
    }
    writeln!(std::io::stdout().lock(), "{table}")?;
    if let Some(n) = &out.calibration {
        writeln!(std::io::stdout().lock(), "note: {n}")?;
    }
    Ok(())
}
