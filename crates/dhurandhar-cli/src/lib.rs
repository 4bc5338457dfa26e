//! The `dhurandhar` command-line adapter. Every command parses its flags, calls a
//! library crate and renders a table or JSON; no analysis logic lives here.

pub mod commands;
pub mod output;
pub mod render;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Put large language models on devices where they have no right to fit.
#[derive(Debug, Parser)]
#[command(name = "dhurandhar", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan: peak memory breakdown at a context length and per-device feasibility.
    Analyze(commands::analyze::Args),
    /// List the built-in models.
    Models(commands::models::Args),
    /// List the built-in device profiles and memory budget presets.
    Devices(commands::devices::Args),
    /// KV-cache compression: benchmark, compare codecs, measure speed, capture real KV.
    Kv(commands::kv::Args),
    /// Measure mmap / flash read throughput and peak RSS (cold means page cache dropped).
    MmapProfile(commands::mmap_profile::Args),
    /// Compress a checkpoint into a .dhp pack (lossless or quantized base + sparse residual).
    Pack(commands::pack::PackArgs),
    /// Restore a .dhp pack to safetensors.
    Unpack(commands::pack::UnpackArgs),
    /// Check every checksum of a .dhp pack.
    Verify(commands::pack::VerifyArgs),
    /// Per-tensor statistics of a .dhp pack.
    PackStats(commands::pack::StatsArgs),
    /// Lossless delta between two checkpoints (`delta BASE NEW -o D`, `delta apply BASE D -o NEW`).
    Delta(commands::delta::Args),
    /// List the tensors of a checkpoint grouped by component.
    Inspect(commands::inspect::Args),
    /// Generate text from a GGUF model on the CPU.
    Generate(commands::generate::Args),
    /// Decode speed under a hard memory cap: mmap vs stream vs llama.cpp (root, cgroup v1).
    ///
    /// Runs `generate --bench` in child processes, each inside a Linux cgroup-v1 memory
    /// group capped at `--cap` (RSS and page cache charged together, as a phone's RAM), from
    /// a cold page cache: the weights memory-mapped, the weights streamed with the cap as
    /// `--ram-budget`, and (with `--llama-bench`) llama.cpp's default mmap under the same
    /// cap. Two uncapped rows follow for reference: resident weights, and streamed weights
    /// with a budget that holds them all. The model file's cold read bandwidth is measured
    /// first, and each streamed run is set against the bound it allows (read bandwidth ÷
    /// bytes read per token). Needs root and `/sys/fs/cgroup/memory`.
    BenchStream(commands::bench_stream::Args),
    /// Check the planner against this machine: each model run resident, mapped and
    /// streamed under a memory cap (half the file by default), the prediction for the
    /// probed `host` beside every measurement. Needs `devices --probe` first, and root
    /// with `/sys/fs/cgroup/memory` for the capped run.
    PlanCheck(commands::plan_check::Args),
    /// Perplexity of a GGUF model on a text, with an exact and a compressed KV cache.
    Eval(commands::eval::Args),
    /// Quantize a GGUF model with a llama.cpp preset (q4_k_m, q8_0, ...).
    Quantize(commands::quantize::Args),
    /// LoRA / QLoRA: write a job file, estimate its cost on any model, merge adapters.
    Lora(commands::lora::Args),
    /// Serve the local web dashboard (plan, devices, KV codecs, measure, weights, run, compare).
    Serve(commands::serve::Args),
}

/// Run a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    use commands::*;
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Models(a) => models::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Kv(a) => kv::run(a),
        Command::MmapProfile(a) => mmap_profile::run(a),
        Command::Pack(a) => pack::run_pack(a),
        Command::Unpack(a) => pack::run_unpack(a),
        Command::Verify(a) => pack::run_verify(a),
        Command::PackStats(a) => pack::run_stats(a),
        Command::Delta(a) => delta::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Generate(a) => generate::run(a),
        Command::BenchStream(a) => bench_stream::run(a),
        Command::PlanCheck(a) => plan_check::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Lora(a) => lora::run(a),
        Command::Serve(a) => serve::run(a),
    }
}

/// Parse `args` and run, turning errors into a message on stderr and exit code 1.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => finish(output::check_json_out(&args).and_then(|()| run(cli))),
        Err(e) => clap_exit(e),
    }
}

/// Entry point of an alias binary (the Python tool's command names): parse the process
/// arguments as `P` and hand them to `run`, with the same error and exit-code handling.
pub fn run_alias<P: Parser>(run: impl FnOnce(P) -> anyhow::Result<()>) -> ExitCode {
    match P::try_parse() {
        Ok(args) => {
            let raw: Vec<OsString> = std::env::args_os().collect();
            finish(output::check_json_out(&raw).and_then(|()| run(args)))
        }
        Err(e) => clap_exit(e),
    }
}

/// Print a clap outcome: `--help`/`--version` exit 0, usage errors exit 2.
fn clap_exit(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Report an error (with its cause chain) and pick the exit code.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. `| head`) is not a failure worth a message.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
