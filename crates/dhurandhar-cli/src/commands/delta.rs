//! `dhurandhar delta BASE NEW -o D` and `dhurandhar delta apply BASE D -o NEW`: lossless
//! checkpoint deltas (training checkpoints in the space of a few).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use dhurandhar_pack::{Checkpoint, PackOptions, PackReader};

use crate::commands::pack::{print_summary, progress_bar, restore, PackJson};
use crate::output::print_json;

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
    #[arg(long)]
    pub json: bool,
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
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Action::Apply(a)) = args.action {
        return run_apply(a);
    }
    let (Some(base_p), Some(new_p), Some(out)) = (args.base, args.new, args.output) else {
        anyhow::bail!(
            "usage: dhurandhar delta BASE NEW -o DELTA (or `delta apply BASE DELTA -o NEW`)"
        );
    };
    let base = Checkpoint::open(&base_p)?;
    let new = Checkpoint::open(&new_p)?;
    let opts = PackOptions {
        chunk_size: args.chunk_kib.saturating_mul(1024),
        zstd_level: args.zstd_level,
        ..Default::default()
    };
    let pb = progress_bar(new.total_bytes(), args.json, "delta");
    let t0 = Instant::now();
    let report = dhurandhar_pack::delta(&base, &new, &out, &opts, &|n| pb.inc(n))?;
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if args.json {
        print_json(&PackJson {
            input: new_p.display().to_string(),
            base: Some(base_p.display().to_string()),
            output: out.display().to_string(),
            mode: "delta".into(),
            seconds: secs,
            gb_per_s: report.input_bytes as f64 / secs.max(1e-9) / 1e9,
            report: &report,
        })
    } else {
        print_summary(&report, &out, secs)?;
        let (x, s): (u64, u64) = report
            .tensors
            .iter()
            .filter_map(|t| t.delta.as_ref())
            .fold((0, 0), |a, d| (a.0 + d.xor_chunks, a.1 + d.sub_chunks));
        if x + s > 0 {
            writeln!(std::io::stdout().lock(), "  changed chunks: {x} coded as XOR, {s} as difference (smaller of the two per chunk)")?;
        }
        Ok(())
    }
}

fn run_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let base = Checkpoint::open(&a.base)?;
    let reader = PackReader::open(&a.delta)?;
    restore(&reader, &a.delta, &a.output, a.json, "apply", |pb| {
        Ok(dhurandhar_pack::apply_delta(
            &base,
            &reader,
            &a.output,
            &|n| pb.inc(n),
        )?)
    })
}
