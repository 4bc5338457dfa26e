//! `dhurandhar plan-check`: the planner's predictions against measurements on this
//! machine — each model run resident, mapped, streamed within a RAM budget, and streamed
//! again inside a memory group capped at that budget, every run
//! in a child process (`generate --bench --json`, which carries the prediction for the
//! probed `host`). This module only spells the grid; running and comparing it is
//! `dhurandhar::capped`.

use std::path::PathBuf;

use dhurandhar::capped::{plan_check, CappedBenchOptions, CappedCommand, PlanCheckReport, Runner};
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::commands::bench_stream::{read_limit, BenchShape, FlashLimitArgs};
use crate::output::{emit, OutputArgs};
use crate::render::{bytes_or_na, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model files (repeat the flag for several).
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    /// The streamed runs' RAM budget (and the capped run's memory cap) as a fraction of
    /// the file size.
    #[arg(long, default_value_t = 0.5)]
    pub cap_fraction: f64,
    /// Tokens to decode in each run.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Prompt tokens prefilled before decoding.
    #[arg(long, default_value_t = 64)]
    pub prompt: usize,
    /// Threads of every run.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[command(flatten)]
    pub flash: FlashLimitArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.cap_fraction > 0.0 && args.cap_fraction <= 1.0) {
        anyhow::bail!(
            "--cap-fraction must be in (0, 1], got {}",
            args.cap_fraction
        );
    }
    let shape = BenchShape {
        exe: std::env::current_exe()?,
        prompt: args.prompt,
        tokens: args.tokens,
        threads: args.threads,
    };
    let mut grids = Vec::new();
    for model in &args.model {
        let size = std::fs::metadata(model)
            .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?
            .len();
        let budget = Some((size as f64 * args.cap_fraction) as u64);
        // `budget` sizes the stream's buffers; `capped` also puts the run in a memory
        // group of that size, where the kernel may evict the binary's clean pages.
        let run = |label: &str, mode: &str, budget: Option<u64>, capped: bool, repeats: u32| {
            CappedCommand {
                label: label.into(),
                runner: Runner::Dhurandhar,
                cap: budget.filter(|_| capped),
                command: shape.command(model, mode, budget, repeats),
            }
        };
        grids.push(CappedBenchOptions {
            model: model.clone(),
            runs: vec![
                run("resident", "resident", None, false, 3),
                run("mmap", "mmap", None, false, 3),
                run("stream", "stream", budget, false, 1),
                run("stream (capped)", "stream", budget, true, 1),
            ],
            read_limit: args.flash.flash_read_limit,
        });
    }
    let report = plan_check(grids, &args.out.progress(), &CancelToken::new())?;
    emit(&args.out, &report, render)
}

fn render(r: &PlanCheckReport) -> String {
    let f1 = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.1}"));
    let pct = |x: Option<f64>| x.map_or("—".to_string(), |e| format!("{e:+.0}%"));
    let mut t = table(
        "model|run|cap|decode tok/s predicted|measured|error|bound|peak RSS predicted|measured|error|reads/token predicted|counted|flash GB/s predicted|read",
        &[],
    );
    for m in &r.models {
        let name = std::path::Path::new(&m.model)
            .file_name()
            .map_or(m.model.clone(), |n| n.to_string_lossy().into_owned())
            + &read_limit(m);
        for run in &m.runs {
            let p = run.predicted.as_ref();
            let note = run.error.clone().or(run.prediction_note.clone());
            t.add_row([
                name.clone(),
                run.label.clone(),
                run.cap_bytes.map_or("none".into(), human_bytes),
                f1(p.and_then(|p| p.decode_tokens_per_s)),
                match (&note, run.decode_tokens_per_s) {
                    (_, Some(d)) => format!("{d:.1}"),
                    (Some(n), None) => n.clone(),
                    (None, None) => "—".into(),
                },
                pct(p.and_then(|p| p.decode_error_pct)),
                p.and_then(|p| p.decode_bound.clone()).unwrap_or("—".into()),
                p.map_or("—".into(), |p| human_bytes(p.peak_rss_bytes)),
                bytes_or_na(p.and_then(|p| p.measured_peak_rss_bytes)),
                pct(p.and_then(|p| p.peak_rss_error_pct)),
                p.filter(|p| p.flash_bytes_per_token > 0)
                    .map_or("—".into(), |p| human_bytes(p.flash_bytes_per_token)),
                p.and_then(|p| p.measured_flash_bytes_per_token)
                    .map_or("—".into(), |b| human_bytes(b.round() as u64)),
                p.filter(|p| p.flash_bytes_per_token > 0)
                    .and_then(|p| p.flash_read_gbps)
                    .map_or("—".into(), |g| format!("{g:.2}")),
                run.traffic
                    .as_ref()
                    .map_or("—".into(), |t| format!("{:.2}", t.read_bytes_per_s / 1e9)),
            ]);
        }
    }
    let mut s = format!(
        "planner on `host` (probed {}, flash {:.2} GB/s) against runs on this machine\n{t}\n\
         flash GB/s: the rate a streamed run was predicted at (its model file read cold just \
         before it), and what the run's reads reached\n",
        r.host_measured_at.as_deref().unwrap_or("?"),
        r.host_flash_read_gbps
    );
    s.push_str(&format!(
        "largest error: decode {}, peak RSS {}\n",
        pct(r.max_abs_decode_error_pct),
        pct(r.max_abs_peak_rss_error_pct)
    ));
    if let Some(n) = &r.host_note {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}
