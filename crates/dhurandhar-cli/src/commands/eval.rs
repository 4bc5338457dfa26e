//! `dhurandhar eval`: flags → [`dhurandhar::eval`] → a perplexity table or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use dhurandhar::eval::{EvalOptions, EvalReport};
use dhurandhar::kv::{Codec, CodecChoice};
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};
use crate::render::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe or qwen3moe).
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
    #[arg(long, default_value_t = dhurandhar::kv::DEFAULT_SEED)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize activations to 8 bits inside the matmuls (llama.cpp's fast scheme, as
    /// `generate` does). Faster, but its rounding amplifies any tiny change into a noise
    /// floor of KL ≈ 3e-3, so by default eval multiplies in f32.
    #[arg(long)]
    pub q8_activations: bool,
    #[command(flatten)]
    pub weights: super::generate::WeightArgs,
    /// A LoRA adapter applied in every pass: a PEFT directory; `DIR@WEIGHT` scales its
    /// update. Repeat for several.
    #[arg(long = "adapter", value_name = "DIR[@WEIGHT]", value_parser = super::lora::parse_adapter)]
    pub adapters: Vec<dhurandhar::lora::AdapterSpec>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `--kv-codec`: none, one codec, or `all` (a sweep).
fn codecs(arg: Option<&str>) -> anyhow::Result<Vec<Codec>> {
    let Some(name) = arg else {
        return Ok(Vec::new());
    };
    let choice: CodecChoice = name.parse().map_err(|_| {
        let known = Codec::known_names();
        anyhow::anyhow!("unknown KV codec `{name}` (known: {known}, all)")
    })?;
    Ok(CodecChoice::expand(&[choice]))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = EvalOptions {
        model: args.model,
        text_file: args.text_file,
        codecs: codecs(args.kv_codec.as_deref())?,
        bits: args.kv_bits,
        max_tokens: args.max_tokens,
        chunk: args.chunk,
        calibration_tokens: args.calibration_tokens,
        seed: args.seed,
        threads: args.threads,
        q8_activations: args.q8_activations,
        weights: args.weights.mode,
        ram_budget: args.weights.ram_budget,
        experts: args.weights.experts(),
        adapters: args.adapters,
    };
    let report = dhurandhar::eval::eval(&opts, &args.out.progress(), &CancelToken::new())?;
    emit(&args.out, &report, render)
}

fn render(out: &EvalReport) -> String {
    let r = &out.result;
    let mut s = format!(
        "{} tokens of {} ({} predictions), {} activations, {} threads, {:.1} s{}\n",
        r.tokens,
        out.text_file,
        r.predictions,
        out.activations,
        out.threads,
        out.seconds,
        super::generate::render_weights(&out.weights)
    );
    let header = "KV cache|bits/value|perplexity|Δ ppl|KL (nats)|top-1 agree";
    let mut table = table(header, &[]);
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
    let _ = writeln!(s, "{table}");
    if let Some(n) = &out.calibration {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
