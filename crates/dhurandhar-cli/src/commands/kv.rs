//! `dhurandhar kv ...` (not built yet, except the `capture` hook).

use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Capture real K/V/Q tensors from a GGUF model into a safetensors file.
    Capture(super::kv_capture::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KvCommand::Capture(a) => super::kv_capture::run(a),
    }
}
