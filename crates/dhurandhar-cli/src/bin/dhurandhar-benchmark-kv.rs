//! `dhurandhar-benchmark-kv`: the Python tool's command name and flags, mapped onto
//! `dhurandhar kv bench --codec turbo` (its "TurboQuant" was the sign + residual codec).
//!
//! Differences by design: the footprint follows the residual bits actually stored
//! (the Python tool printed the same footprint for every value), sliding layers are
//! capped at their window and shared-KV layers cost nothing; the heavy-tail
//! distribution has outlier channels, not per-element outliers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dhurandhar::kv::{BenchOptions, Codec, DEFAULT_MODEL};
use dhurandhar_cli::commands::kv;
use dhurandhar_cli::output::OutputArgs;

/// KV-cache quality and footprint for a model (alias of `dhurandhar kv bench --codec turbo`).
#[derive(Debug, Parser)]
#[command(name = "dhurandhar-benchmark-kv", version)]
struct Cli {
    /// Built-in model name, YAML profile, or checkpoint.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value_t = 32768)]
    seq_len: u64,
    /// Residual bits of the sign + residual TurboQuant (2..8).
    #[arg(long, default_value_t = 4)]
    residual_bits: u32,
    /// gaussian, gaussian_heavy_tail (= outlier-channels), low-rank, imbalanced-norms.
    #[arg(long, default_value = "gaussian_heavy_tail")]
    distribution: String,
    /// Tokens per KV head in the quality block.
    #[arg(long, default_value_t = 2048)]
    samples: usize,
    /// Print JSON instead of the tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    dhurandhar_cli::run_alias(|c: Cli| {
        let opts = BenchOptions {
            model: c.model,
            seq_len: c.seq_len,
            codec: Codec::Turbo,
            bits: c.residual_bits,
            distribution: c.distribution.parse()?,
            samples: c.samples,
            ..BenchOptions::default()
        };
        kv::bench(&opts, &OutputArgs::new(c.json, c.json_out))
    })
}
