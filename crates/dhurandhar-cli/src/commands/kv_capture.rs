//! `dhurandhar kv capture`: flags → [`dhurandhar::kv::capture`] → one summary line or
//! JSON.

use std::path::PathBuf;

use dhurandhar::kv::{CaptureOptions, CaptureReport};
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe or qwen3moe).
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
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = CaptureOptions {
        model: args.model,
        text_file: args.text_file,
        out: args.out,
        max_tokens: args.max_tokens,
        threads: args.threads,
    };
    let report = dhurandhar::kv::capture(&opts, &args.output.progress(), &CancelToken::new())?;
    emit(&args.output, &report, render)
}

fn render(s: &CaptureReport) -> String {
    format!(
        "captured {} tokens × {} layers (q: {} heads, k/k_pre_rope/v: {} KV heads, head_dim {}) -> {} ({}) in {:.1} s\n",
        s.n_tokens,
        s.n_layers,
        s.n_heads,
        s.n_kv_heads,
        s.head_dim,
        s.out,
        dhurandhar::units::human_bytes(s.file_bytes as u64),
        s.seconds
    )
}
