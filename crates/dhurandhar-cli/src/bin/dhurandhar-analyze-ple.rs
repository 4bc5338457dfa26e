//! `dhurandhar-analyze-ple`: the Python tool's command name and flags, mapped onto
//! `dhurandhar analyze` so existing scripts keep working.
//!
//! Differences by design: `--quant-bits` means plain bits (as it did), the default is
//! 4 plain bits (as it was), and the output is the new report and JSON schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dhurandhar_cli::commands::analyze;

/// PLE / memory footprint analysis and device feasibility (alias of `dhurandhar analyze`).
#[derive(Debug, Parser)]
#[command(name = "dhurandhar-analyze-ple", version)]
struct Cli {
    /// Built-in model name or YAML profile.
    #[arg(long, default_value = analyze::DEFAULT_MODEL)]
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
    /// Write the JSON report here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Print JSON to stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    dhurandhar_cli::run_alias(|c: Cli| {
        let args = analyze::Args {
            model: c.model,
            context_tokens: c.context_tokens,
            weight_format: None,
            quant_bits: Some(c.quant_bits),
            kv_bits: c.kv_bits,
            strip_audio: !c.keep_audio,
            keep_audio: c.keep_audio,
            strip_vision: false,
            device: c.device.into_iter().collect(),
            ram_mb: None,
            flash_gbps: None,
            target_decode_tps: c.target_decode_tps,
            ple_hot_tokens: None,
            ple_layout: analyze::LayoutArg::Row,
            page_kib: 4,
            prefill_chunk: 512,
            runtime_overhead_mb: None,
            json: c.json,
            json_out: c.json_out,
        };
        analyze::run(args)
    })
}
