//! `dhurandhar bench-stream`: decode speed under a hard memory cap, this engine's
//! mapped and streamed weights against llama.cpp, each run in a child process inside a
//! memory cgroup. This module only spells the children's command lines; running,
//! reading and comparing them is `dhurandhar::capped`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dhurandhar::capped::{
    capped_bench, CappedBenchOptions, CappedBenchReport, CappedCommand, Runner,
};
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::commands::generate::parse_size;
use crate::output::{emit, OutputArgs};
use crate::render::{bytes_or_na, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Memory cap for the capped runs, e.g. `48MiB` or bytes (default: half the file).
    #[arg(long, value_parser = parse_size)]
    pub cap: Option<u64>,
    /// Tokens to decode in each run.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Prompt tokens prefilled before decoding.
    #[arg(long, default_value_t = 16)]
    pub prompt: usize,
    /// Threads of every run.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// llama.cpp's `llama-bench` binary, to run its default (mmap) path under the cap.
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Skip the uncapped reference rows (resident, stream with room for every layer).
    #[arg(long)]
    pub capped_only: bool,
    /// A `.dhp` pack of the model (`dhurandhar pack MODEL.gguf`): also stream from it
    /// under the cap, to see whether reading fewer bytes beats decoding them.
    #[arg(long, value_name = "DHP")]
    pub pack: Option<PathBuf>,
    #[command(flatten)]
    pub flash: FlashLimitArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `--flash-read-limit`, shared by `bench-stream` and `plan-check`.
#[derive(Debug, clap::Args)]
pub struct FlashLimitArgs {
    /// Hold the disk under the model to this many bytes per second, e.g. `800MB`, for
    /// the file's cold read and every run: a cgroup-v1 blkio limit (needs root). Makes
    /// this machine's disk read like a slower device's flash, and steadily where it
    /// drifts between runs.
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_size)]
    pub flash_read_limit: Option<u64>,
}

/// The shape of a child benchmark run of this binary.
pub(crate) struct BenchShape {
    pub exe: PathBuf,
    pub prompt: usize,
    pub tokens: usize,
    pub threads: usize,
}

impl BenchShape {
    /// `dhurandhar generate --bench --json` of `model` with weights `mode`.
    pub fn command(&self, model: &Path, mode: &str, budget: Option<u64>, repeats: u32) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("generate")
            .arg("--model")
            .arg(model)
            .args(["--bench", "--json", "--weights", mode])
            .args(["--bench-repeats", &repeats.to_string()])
            .args(["--bench-prompt", &self.prompt.to_string()])
            .args(["--bench-threads", &self.threads.to_string()])
            .args(["--max-tokens", &self.tokens.to_string()]);
        if let Some(b) = budget {
            c.args(["--ram-budget", &b.to_string()]);
        }
        c
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let size = std::fs::metadata(&args.model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?
        .len();
    let cap = args.cap.unwrap_or(size / 2);
    let shape = BenchShape {
        exe: std::env::current_exe()?,
        prompt: args.prompt,
        tokens: args.tokens,
        threads: args.threads,
    };
    // Capped runs are slow and read the disk: one pass each. The uncapped reference rows
    // are quick and noisy: the best of three.
    let ours = |mode: &str, budget: Option<u64>, repeats: u32| {
        shape.command(&args.model, mode, budget, repeats)
    };
    let mut runs = vec![
        CappedCommand {
            label: "mmap".into(),
            runner: Runner::Dhurandhar,
            cap: Some(cap),
            command: ours("mmap", None, 1),
        },
        CappedCommand {
            label: "stream".into(),
            runner: Runner::Dhurandhar,
            cap: Some(cap),
            command: ours("stream", Some(cap), 1),
        },
    ];
    if let Some(pack) = &args.pack {
        runs.push(CappedCommand {
            label: "stream from .dhp".into(),
            runner: Runner::Dhurandhar,
            cap: Some(cap),
            command: shape.command(pack, "stream", Some(cap), 1),
        });
    }
    if let Some(bin) = &args.llama_bench {
        let mut c = Command::new(bin);
        c.arg("-m")
            .arg(&args.model)
            .args(["-p", &args.prompt.to_string()])
            .args(["-n", &args.tokens.to_string()])
            .args(["-t", &args.threads.to_string()])
            .args(["-r", "1", "-o", "json"]);
        runs.push(CappedCommand {
            label: "llama.cpp mmap".into(),
            runner: Runner::LlamaCpp,
            cap: Some(cap),
            command: c,
        });
    }
    if !args.capped_only {
        runs.push(CappedCommand {
            label: "resident (uncapped)".into(),
            runner: Runner::Dhurandhar,
            cap: None,
            command: ours("resident", None, 3),
        });
        runs.push(CappedCommand {
            label: "stream, budget ≥ weights (uncapped)".into(),
            runner: Runner::Dhurandhar,
            cap: None,
            command: ours("stream", Some(size.saturating_mul(2).max(256 << 20)), 3),
        });
    }
    let opts = CappedBenchOptions {
        model: args.model.clone(),
        runs,
        read_limit: args.flash.flash_read_limit,
    };
    let report = capped_bench(opts, &args.out.progress(), &CancelToken::new())?;
    emit(&args.out, &report, render)
}

fn render(r: &CappedBenchReport) -> String {
    let f1 = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.1}"));
    let mut t = table(
        "run|cap|decode tok/s|prefill tok/s|read/token|bound tok/s|of bound|I/O wait|cgroup peak|failcnt|OOM kills|note",
        &[],
    );
    for run in &r.runs {
        t.add_row([
            run.label.clone(),
            run.cap_bytes.map_or("none".into(), human_bytes),
            f1(run.decode_tokens_per_s),
            f1(run.prefill_tokens_per_s),
            run.bytes_read_per_token
                .map_or("—".into(), |b| human_bytes(b as u64)),
            f1(run.bound_tokens_per_s),
            run.bound_fraction
                .map_or("—".into(), |f| format!("{:.0}%", 100.0 * f)),
            run.traffic
                .map_or("—".into(), |t| format!("{:.0}%", 100.0 * t.io_wait_share)),
            bytes_or_na(run.cgroup.map(|c| c.max_usage_bytes)),
            run.cgroup.map_or("—".into(), |c| c.failcnt.to_string()),
            run.cgroup.map_or("—".into(), |c| c.oom_kills.to_string()),
            run.error.clone().unwrap_or_default(),
        ]);
    }
    let mut s = format!(
        "{} ({}), cold read {}/s{}{}\n{t}\n",
        r.model,
        human_bytes(r.file_bytes),
        human_bytes(r.cold_read_bytes_per_s as u64),
        if r.cold_read_direct {
            " (O_DIRECT)"
        } else {
            ""
        },
        read_limit(r)
    );
    for (a, b) in [
        ("stream", "mmap"),
        ("stream", "llama.cpp mmap"),
        ("stream from .dhp", "stream"),
    ] {
        if let Some(x) = r.speedup(a, b) {
            s += &format!("{a} / {b} under the cap: {x:.2}×\n");
        }
    }
    if let Some(x) = r.speedup("stream, budget ≥ weights (uncapped)", "resident (uncapped)") {
        s += &format!("stream with room for every layer / resident: {x:.2}×\n");
    }
    s
}

/// `, disk held to 762.9 MiB/s` when the runs had a read limit.
pub(crate) fn read_limit(r: &CappedBenchReport) -> String {
    r.read_limit_bytes_per_s.map_or(String::new(), |l| {
        format!(", disk held to {}/s", human_bytes(l))
    })
}
