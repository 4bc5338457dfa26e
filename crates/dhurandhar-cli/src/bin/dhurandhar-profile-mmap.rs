//! `dhurandhar-profile-mmap`: the Python tool's command name for `dhurandhar mmap-profile`
//! (same flags: --scale --num-tokens --target-tps --measure-memory --warm-only ...).

use std::process::ExitCode;

use clap::Parser;

/// Measure mmap / flash read throughput and peak RSS (alias of `dhurandhar mmap-profile`).
#[derive(Debug, Parser)]
#[command(name = "dhurandhar-profile-mmap", version)]
struct Alias {
    #[command(flatten)]
    args: dhurandhar_cli::commands::mmap_profile::Args,
}

fn main() -> ExitCode {
    dhurandhar_cli::run_alias(|alias: Alias| {
        dhurandhar_cli::commands::mmap_profile::run(alias.args)
    })
}
