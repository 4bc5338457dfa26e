//! `dhurandhar kv capture`: run a GGUF model over a text and save every layer's queries,
//! keys (before and after RoPE) and values as f32 safetensors, readable by
//! `dhurandhar kv compare --data`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use dhurandhar_engine::{Capture, Logits, Model};
use serde::Serialize;

use crate::output::print_json;
use dhurandhar::dhurandhar_io::write_atomic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama / qwen2 family).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text to run through the model.
    #[arg(long)]
    pub text_file: PathBuf,
    /// Output safetensors file (written atomically).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Capture at most this many tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    model: String,
    out: String,
    n_tokens: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rope_base: f32,
    tensors: Vec<TensorShape>,
    file_bytes: usize,
}

#[derive(Debug, Serialize)]
struct TensorShape {
    name: String,
    shape: Vec<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let text = std::fs::read_to_string(&args.text_file)
        .with_context(|| format!("cannot read {}", args.text_file.display()))?;
    let mut tokens = model.tokenizer.encode(&text);
    tokens.truncate(args.max_tokens.min(model.config.context_length));
    if tokens.is_empty() {
        anyhow::bail!("{} holds no tokens", args.text_file.display());
    }
    let c = &model.config;
    let threads = args
        .threads
        .unwrap_or_else(super::generate::default_threads)
        .max(1);
    let t0 = Instant::now();
    let mut cap = Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = model.session(threads, None)?;
    // Exact f32 activations: the captured tensors are the reference codecs are judged on.
    s.set_f32_activations(true);
    for piece in tokens.chunks(128) {
        s.forward(piece, Logits::None, Some(&mut cap))?;
    }
    let model_name = if c.name.is_empty() {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        c.name.clone()
    };
    let bytes = cap.to_safetensors(&[
        ("model", model_name),
        ("architecture", c.architecture.clone()),
        ("rope_base", c.rope_base.to_string()),
        ("rope_style", format!("{:?}", c.rope_style).to_lowercase()),
        (
            "source_text",
            args.text_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    ])?;
    write_atomic(&args.out, &bytes)?;
    let kv = vec![cap.n_tokens, c.n_kv_heads, c.head_dim];
    let mut tensors = Vec::new();
    for i in 0..c.n_layers {
        for (n, shape) in [
            ("k", kv.clone()),
            ("k_pre_rope", kv.clone()),
            ("v", kv.clone()),
            ("q", vec![cap.n_tokens, c.n_heads, c.head_dim]),
        ] {
            tensors.push(TensorShape {
                name: format!("layers.{i}.{n}"),
                shape,
            });
        }
    }
    let summary = Summary {
        model: args.model.display().to_string(),
        out: args.out.display().to_string(),
        n_tokens: cap.n_tokens,
        n_layers: c.n_layers,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        rope_base: c.rope_base,
        tensors,
        file_bytes: bytes.len(),
    };
    if args.json {
        return print_json(&summary);
    }
    writeln!(std::io::stdout().lock(),
        "captured {} tokens × {} layers (q: {} heads, k/k_pre_rope/v: {} KV heads, head_dim {}) -> {} ({:.1} MiB) in {:.1} s",
        summary.n_tokens,
        summary.n_layers,
        summary.n_heads,
        summary.n_kv_heads,
        summary.head_dim,
        summary.out,
        summary.file_bytes as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    )?;
    Ok(())
}
