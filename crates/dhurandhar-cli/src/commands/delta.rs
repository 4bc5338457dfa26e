//! `dhurandhar delta BASE NEW -o D` and `dhurandhar delta apply BASE D -o NEW`: lossless
//! checkpoint deltas (training checkpoints in the space of a few).

use std::path::PathBuf;

use dhurandhar::pack::{ApplyOptions, DeltaOptions};
use dhurandhar::CancelToken;

use crate::commands::pack::{render_pack, render_unpack, with_flags};
use crate::output::{emit, OutputArgs};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Base checkpoint (safetensors file, sharded index, directory, or GGUF).
    #[arg(required = true)]
    pub base: Option<PathBuf>,
    /// New checkpoint, same kinds of input.
    #[arg(required = true)]
    pub new: Option<PathBuf>,
    /// Output delta (.dhp, written atomically).
    #[arg(short, long, required = true)]
    pub output: Option<PathBuf>,
    /// zstd level tried on delta byte planes.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Raw KiB per chunk.
    #[arg(long, default_value_t = 1024)]
    pub chunk_kib: usize,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Rebuild NEW bit-exactly from BASE and a delta.
    Apply(ApplyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The base checkpoint the delta was made against (checked by hash).
    pub base: PathBuf,
    /// The delta made by `dhurandhar delta`.
    pub delta: PathBuf,
    /// Output .safetensors (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Action::Apply(a)) = args.action {
        let opts = ApplyOptions {
            base: a.base,
            delta: a.delta,
            output: a.output,
        };
        let r = dhurandhar::pack::apply_delta(&opts, &a.out.progress(), &CancelToken::new())?;
        return emit(&a.out, &r, render_unpack);
    }
    let (Some(base), Some(new), Some(output)) = (args.base, args.new, args.output) else {
        anyhow::bail!(
            "usage: dhurandhar delta BASE NEW -o DELTA (or `delta apply BASE DELTA -o NEW`)"
        );
    };
    let opts = DeltaOptions {
        base,
        new,
        output,
        zstd_level: args.zstd_level,
        chunk_kib: args.chunk_kib,
    };
    let r = dhurandhar::pack::delta(&opts, &args.out.progress(), &CancelToken::new())
        .map_err(with_flags)?;
    emit(&args.out, &r, render_pack)
}
