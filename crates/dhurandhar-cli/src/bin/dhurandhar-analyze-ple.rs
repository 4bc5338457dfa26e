//! `dhurandhar-analyze-ple`: the Python tool's command name and flags, mapped onto
//! `dhurandhar analyze` so existing scripts keep working.
//!
//! Differences by design: `--quant-bits` means plain bits (as it did), the default is
//! 4 plain bits (as it was), and the output is the new report and JSON schema.

use std::process::ExitCode;

use clap::Parser;
use dhurandhar::plan::{AnalyzeOptions, WeightChoice, DEFAULT_MODEL};
use dhurandhar_cli::commands::analyze;
use dhurandhar_cli::output::OutputArgs;

/// PLE / memory footprint analysis and device feasibility (alias of `dhurandhar analyze`).
#[derive(Debug, Parser)]
#[command(name = "dhurandhar-analyze-ple", version)]
struct Cli {
    /// Built-in model name or YAML profile.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value_t = 32768)]
    context_tokens: u64,
    /// Bits per weight (plain, no scale overhead).
    #[arg(long, default_value_t = 4.0)]
    quant_bits: f64,
    #[arg(long, default_value_t = 4.0)]
    kv_bits: f64,
    /// Strip the audio encoder (default).
    #[arg(long, overrides_with = "keep_audio")]
    strip_audio: bool,
    /// Keep the audio encoder.
    #[arg(long, overrides_with = "strip_audio")]
    keep_audio: bool,
    /// One device (built-in slug or YAML path); default all built-ins.
    #[arg(long)]
    device: Option<String>,
    #[arg(long, default_value_t = 15.0)]
    target_decode_tps: f64,
    #[command(flatten)]
    out: OutputArgs,
}

fn main() -> ExitCode {
    dhurandhar_cli::run_alias(|c: Cli| {
        let opts = AnalyzeOptions {
            model: c.model,
            context_tokens: c.context_tokens,
            weights: WeightChoice::PlainBits(c.quant_bits),
            kv_bits: Some(c.kv_bits),
            strip_audio: !c.keep_audio,
            devices: c.device.into_iter().collect(),
            target_decode_tps: c.target_decode_tps,
            ..AnalyzeOptions::default()
        };
        analyze::run_options(&opts, &c.out)
    })
}
