//! `dhurandhar-compare-codecs`: the Python tool's command name and flags, mapped onto
//! `dhurandhar kv compare` with every codec.
//!
//! Differences by design: all ten codecs (not three), keys *and* values, bits per value
//! measured from the encoded bytes, SpectralQuant calibrated on held-out samples.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dhurandhar::kv::CompareOptions;
use dhurandhar_cli::commands::kv;
use dhurandhar_cli::output::OutputArgs;

/// Side-by-side KV codec sweep (alias of `dhurandhar kv compare`).
#[derive(Debug, Parser)]
#[command(name = "dhurandhar-compare-codecs", version)]
struct Cli {
    #[arg(long, default_value_t = 256)]
    head_dim: usize,
    #[arg(long, default_value_t = 4)]
    num_kv_heads: usize,
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    /// Bit budgets, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,6,8")]
    bits: Vec<u32>,
    /// gaussian, gaussian_heavy_tail (= outlier-channels), low-rank, imbalanced-norms.
    #[arg(long, default_value = "gaussian_heavy_tail")]
    distribution: String,
    /// Write the JSON report here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Print JSON instead of the tables.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    dhurandhar_cli::run_alias(|c: Cli| {
        let opts = CompareOptions {
            head_dim: c.head_dim,
            kv_heads: c.num_kv_heads,
            seq_len: c.seq_len,
            bits: c.bits,
            distribution: c.distribution.parse()?,
            ..CompareOptions::default()
        };
        kv::compare(&opts, &OutputArgs::new(c.json, c.json_out))
    })
}
