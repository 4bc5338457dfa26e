//! Decode speed under a hard memory cap, side by side: the same model run by this
//! engine with its weights mapped and streamed, and by llama.cpp, each in its own child
//! process inside a cgroup-v1 memory group that charges RSS and page cache together
//! (`dhurandhar_profile::cgroup`). The page cache of the model is dropped before every
//! run, the file's cold read bandwidth is measured in the same run, and each streamed
//! run is set against the bound that bandwidth allows: tokens/s ≤ read bandwidth ÷ bytes
//! read per token.
//!
//! The front end builds each child's command line (it knows its own flags and
//! llama.cpp's); this module runs them, reads their JSON and compares.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dhurandhar_profile::cgroup::{CapUsage, MemoryCap, ReadThrottle};
use serde::{Deserialize, Serialize};

use crate::generate::Traffic;
use crate::{CancelToken, Error, Progress, Result, Unit};

/// Whose output a child prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// `dhurandhar generate --bench --json`.
    Dhurandhar,
    /// `llama-bench -o json`.
    LlamaCpp,
}

/// One child run to make.
#[derive(Debug)]
pub struct CappedCommand {
    /// Row label, e.g. `stream` or `llama.cpp mmap`.
    pub label: String,
    pub runner: Runner,
    /// Memory cap in bytes; `None` runs uncapped (a reference row).
    pub cap: Option<u64>,
    pub command: Command,
}

/// The runs of one comparison.
#[derive(Debug)]
pub struct CappedBenchOptions {
    /// The model every child reads (its page cache is dropped before each run).
    pub model: PathBuf,
    pub runs: Vec<CappedCommand>,
    /// Hold the disk under the model to this many bytes/s for the file's cold read and
    /// every run (a blkio group, [`ReadThrottle`]): a slower device's flash, and a
    /// steady one where the host's disk drifts.
    pub read_limit: Option<u64>,
}

/// One child's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CappedRun {
    pub label: String,
    pub runner: Runner,
    pub cap_bytes: Option<u64>,
    /// Exit status; `None` when killed by a signal (the OOM killer sends SIGKILL).
    pub exit_code: Option<i32>,
    /// Why the run gave no figures (its last line of stderr, or a parse failure).
    pub error: Option<String>,
    pub decode_tokens_per_s: Option<f64>,
    pub prefill_tokens_per_s: Option<f64>,
    /// Weight bytes read per decoded token, as the engine counted them (streamed runs).
    pub bytes_read_per_token: Option<f64>,
    /// The engine's own reading of its reads (streamed runs).
    pub traffic: Option<Traffic>,
    /// The cold read bandwidth ÷ bytes read per token (from a `.dhp` pack: plus the
    /// decode seconds per token), and the fraction of it reached.
    pub bound_tokens_per_s: Option<f64>,
    pub bound_fraction: Option<f64>,
    /// The memory group's peak charge, failures and OOM kills (capped runs).
    pub cgroup: Option<CapUsage>,
    /// What the planner predicted for this run on the probed host, beside what the run
    /// measured (this engine's runs, once the host was probed).
    pub predicted: Option<Predicted>,
    /// Why there is no prediction (the host was never probed, …).
    pub prediction_note: Option<String>,
    pub wall_seconds: f64,
}

/// The planner's figures for one run (the child's `predicted` object, at the thread
/// count the run measured), each with the measurement and the error in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    pub decode_tokens_per_s: Option<f64>,
    /// The resource that sets the predicted ceiling (`compute`, `flash`, …).
    pub decode_bound: Option<String>,
    pub decode_error_pct: Option<f64>,
    pub prefill_tokens_per_s: Option<f64>,
    pub prefill_error_pct: Option<f64>,
    pub peak_rss_bytes: u64,
    pub measured_peak_rss_bytes: Option<u64>,
    pub peak_rss_error_pct: Option<f64>,
    /// Weight bytes a decoded token reads from the file, planned and counted (streamed).
    pub flash_bytes_per_token: u64,
    pub measured_flash_bytes_per_token: Option<f64>,
    /// The flash read rate the prediction used, GB/s (streamed: the model file's own,
    /// read cold just before the run).
    pub flash_read_gbps: Option<f64>,
}

impl CappedRun {
    /// A run with no figures yet.
    fn new(label: String, runner: Runner, cap_bytes: Option<u64>) -> CappedRun {
        CappedRun {
            label,
            runner,
            cap_bytes,
            exit_code: None,
            error: None,
            decode_tokens_per_s: None,
            prefill_tokens_per_s: None,
            bytes_read_per_token: None,
            traffic: None,
            bound_tokens_per_s: None,
            bound_fraction: None,
            cgroup: None,
            predicted: None,
            prediction_note: None,
            wall_seconds: 0.0,
        }
    }
}

/// The `bench-stream --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct CappedBenchReport {
    pub schema_version: u32,
    pub model: String,
    pub file_bytes: u64,
    /// Sequential `pread` of the whole model file in 4 MiB blocks after dropping its
    /// page cache, repeated for at least a second: the disk's bandwidth for this file,
    /// measured in this run.
    pub cold_read_bytes_per_s: f64,
    /// Whether that read used `O_DIRECT` (as the streamed runs do where the file system
    /// allows), or the page cache.
    pub cold_read_direct: bool,
    /// The read limit on the model's disk, bytes/s, that the cold read and every run
    /// were held to (`None`: the disk at its own speed).
    pub read_limit_bytes_per_s: Option<u64>,
    pub runs: Vec<CappedRun>,
}

impl CappedBenchReport {
    /// Decode tokens/s of the run labelled `a` ÷ that of `b`.
    pub fn speedup(&self, a: &str, b: &str) -> Option<f64> {
        let rate = |l: &str| {
            self.runs
                .iter()
                .find(|r| r.label == l)
                .and_then(|r| r.decode_tokens_per_s)
        };
        Some(rate(a)? / rate(b)?).filter(|r| r.is_finite())
    }
}

/// Run every child in turn, each from a cold page cache, under its cap.
pub fn capped_bench(
    opts: CappedBenchOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<CappedBenchReport> {
    if opts.runs.iter().any(|r| r.cap.is_some()) {
        MemoryCap::available()?;
    }
    let file = dhurandhar_io::open_regular(&opts.model)?;
    let file_bytes = file.metadata().map_err(|e| io_error(&opts.model, e))?.len();
    let throttle = opts
        .read_limit
        .map(|l| ReadThrottle::create("read", &opts.model, l))
        .transpose()?;
    let cold_read = || dhurandhar_profile::sys::cold_read(&file, &opts.model, None, 1.0);
    let (cold_read_bytes_per_s, cold_read_direct) = match &throttle {
        Some(t) => t.run_here(cold_read)?,
        None => cold_read(),
    }
    .map_err(|e| io_error(&opts.model, e))?;
    progress.message(&format!(
        "cold read of {}: {:.0} MiB/s",
        opts.model.display(),
        cold_read_bytes_per_s / (1 << 20) as f64
    ));
    let n = opts.runs.len() as u64;
    progress.start("runs", Some(n), Unit::Items("runs"));
    let mut runs = Vec::new();
    for mut spec in opts.runs {
        cancel.check()?;
        evict(&file, file_bytes, &opts.model)?;
        let cap = spec
            .cap
            .map(|c| MemoryCap::create(&format!("bench-{}", runs.len()), c))
            .transpose()?;
        if let Some(cap) = &cap {
            cap.confine(&mut spec.command);
        }
        if let Some(t) = &throttle {
            t.confine(&mut spec.command);
        }
        let t0 = Instant::now();
        let out = spec.command.output().map_err(|e| {
            Error::invalid(
                "runs",
                format!("{}: cannot start {:?}: {e}", spec.label, spec.command),
            )
        })?;
        let wall_seconds = t0.elapsed().as_secs_f64();
        let cgroup = cap.as_ref().map(|c| c.usage()).transpose()?;
        let mut run = CappedRun {
            exit_code: out.status.code(),
            cgroup,
            wall_seconds,
            ..CappedRun::new(spec.label, spec.runner, spec.cap)
        };
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Err(e) = read_figures(&mut run, &text) {
                run.error = Some(e);
            }
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty());
            run.error = Some(match (out.status.code(), last) {
                (None, _) => "killed by a signal (the OOM killer, under a cap)".into(),
                (Some(c), Some(l)) => format!("exit {c}: {}", l.trim()),
                (Some(c), None) => format!("exit {c}"),
            });
        }
        // Only runs that stream layers have a read bound (embedding rows alone do not).
        if let (Some(rate), Some(per), Some(_)) = (
            run.decode_tokens_per_s,
            run.bytes_read_per_token,
            run.traffic,
        ) {
            if per > 0.0 {
                // From a pack the reading thread also decodes what it read.
                let decode = run.traffic.map_or(0.0, |t| t.decode_seconds_per_token);
                let bound = 1.0 / (per / cold_read_bytes_per_s + decode);
                run.bound_tokens_per_s = Some(bound);
                run.bound_fraction = Some(rate / bound);
            }
        }
        progress.message(&format!(
            "{}: {}",
            run.label,
            match run.decode_tokens_per_s {
                Some(r) => format!("decode {r:.1} tok/s"),
                None => run.error.clone().unwrap_or_default(),
            }
        ));
        progress.advance(1);
        runs.push(run);
    }
    progress.finish();
    Ok(CappedBenchReport {
        schema_version: crate::generate::SCHEMA_VERSION,
        model: opts.model.display().to_string(),
        file_bytes,
        cold_read_bytes_per_s,
        cold_read_direct,
        read_limit_bytes_per_s: opts.read_limit,
        runs,
    })
}

/// The `plan-check --json` document: predicted against measured for every run of every
/// model, and the largest errors.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCheckReport {
    pub schema_version: u32,
    /// When the host device the predictions use was probed.
    pub host_measured_at: Option<String>,
    /// The host profile's flash read rate, GB/s, which the streamed predictions use: set
    /// it beside each streamed run's own read rate (`traffic.read_bytes_per_s`) to see
    /// how far the disk moved since the probe.
    pub host_flash_read_gbps: f64,
    /// Set when the host profile lacks a figure the predictions need (an old probe).
    pub host_note: Option<String>,
    pub models: Vec<CappedBenchReport>,
    /// The largest |error| in percent over every run with a prediction.
    pub max_abs_decode_error_pct: Option<f64>,
    pub max_abs_peak_rss_error_pct: Option<f64>,
}

/// Run each model's grid ([`capped_bench`]) and set every prediction against its
/// measurement. Refuses to start when the host was never probed: without it there is
/// nothing to check.
pub fn plan_check(
    grids: Vec<CappedBenchOptions>,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<PlanCheckReport> {
    let host = crate::probe::load_host()?;
    let host_note = host.matvec.is_none().then(|| {
        "the host profile has no one-token matvec rates (probed by an older version): decode is \
         predicted from the batched matmul rate; probe again"
            .to_string()
    });
    let mut models = Vec::new();
    for g in grids {
        models.push(capped_bench(g, progress, cancel)?);
    }
    let max_abs = |f: &dyn Fn(&Predicted) -> Option<f64>| {
        models
            .iter()
            .flat_map(|m| &m.runs)
            .filter_map(|r| r.predicted.as_ref().and_then(f))
            .map(f64::abs)
            .max_by(f64::total_cmp)
    };
    Ok(PlanCheckReport {
        schema_version: crate::generate::SCHEMA_VERSION,
        host_measured_at: host.measured_at.clone(),
        host_flash_read_gbps: host.flash_read_gbps,
        host_note,
        max_abs_decode_error_pct: max_abs(&|p| p.decode_error_pct),
        max_abs_peak_rss_error_pct: max_abs(&|p| p.peak_rss_error_pct),
        models,
    })
}

/// The figures of a child's JSON document.
fn read_figures(run: &mut CappedRun, text: &str) -> std::result::Result<(), String> {
    match run.runner {
        Runner::Dhurandhar => {
            #[derive(Deserialize)]
            struct Doc {
                results: Vec<Rates>,
                weights: Weights,
                predicted: Option<Prediction>,
                prediction_note: Option<String>,
            }
            #[derive(Deserialize)]
            struct Prediction {
                peak_rss_bytes: u64,
                measured_peak_rss_bytes: Option<u64>,
                peak_rss_error_pct: Option<f64>,
                flash_bytes_per_token: u64,
                measured_flash_bytes_per_token: Option<f64>,
                flash_read_gbps: Option<f64>,
                threads: Vec<ThreadFigures>,
            }
            #[derive(Deserialize)]
            struct ThreadFigures {
                decode_tps: Option<f64>,
                decode_bound: Option<String>,
                decode_error_pct: Option<f64>,
                prefill_tps: Option<f64>,
                prefill_error_pct: Option<f64>,
            }
            #[derive(Deserialize)]
            struct Rates {
                decode_tokens_per_s: f64,
                prefill_tokens_per_s: f64,
            }
            #[derive(Deserialize)]
            struct Weights {
                mode: String,
                bytes_read_per_token: f64,
                traffic: Option<Traffic>,
            }
            let d: Doc = serde_json::from_str(text)
                .map_err(|e| format!("unreadable benchmark JSON: {e}"))?;
            let r = d
                .results
                .last()
                .ok_or("the benchmark JSON has no results")?;
            run.decode_tokens_per_s = Some(r.decode_tokens_per_s);
            run.prefill_tokens_per_s = Some(r.prefill_tokens_per_s);
            if d.weights.mode == "stream" {
                run.bytes_read_per_token = Some(d.weights.bytes_read_per_token);
            }
            run.traffic = d.weights.traffic;
            run.prediction_note = d.prediction_note;
            run.predicted = d.predicted.and_then(|p| {
                let t = p.threads.last()?;
                Some(Predicted {
                    decode_tokens_per_s: t.decode_tps,
                    decode_bound: t.decode_bound.clone(),
                    decode_error_pct: t.decode_error_pct,
                    prefill_tokens_per_s: t.prefill_tps,
                    prefill_error_pct: t.prefill_error_pct,
                    peak_rss_bytes: p.peak_rss_bytes,
                    measured_peak_rss_bytes: p.measured_peak_rss_bytes,
                    peak_rss_error_pct: p.peak_rss_error_pct,
                    flash_bytes_per_token: p.flash_bytes_per_token,
                    measured_flash_bytes_per_token: p.measured_flash_bytes_per_token,
                    flash_read_gbps: p.flash_read_gbps,
                })
            });
        }
        Runner::LlamaCpp => {
            // One object per test: `n_prompt` > 0 for prefill, `n_gen` > 0 for decode.
            #[derive(Deserialize)]
            struct Test {
                n_prompt: u64,
                n_gen: u64,
                avg_ts: f64,
            }
            let tests: Vec<Test> = serde_json::from_str(text)
                .map_err(|e| format!("unreadable llama-bench JSON: {e}"))?;
            run.decode_tokens_per_s = tests.iter().find(|t| t.n_gen > 0).map(|t| t.avg_ts);
            run.prefill_tokens_per_s = tests
                .iter()
                .find(|t| t.n_prompt > 0 && t.n_gen == 0)
                .map(|t| t.avg_ts);
            if run.decode_tokens_per_s.is_none() {
                return Err("the llama-bench JSON has no decode test".into());
            }
        }
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Profile(dhurandhar_profile::ProfileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Drop the file's pages from the page cache, so the next reader starts cold.
fn evict(file: &File, len: u64, path: &Path) -> Result<()> {
    dhurandhar_profile::sys::evict(file, 0, len).map_err(|e| io_error(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(runner: Runner) -> CappedRun {
        CappedRun::new("x".into(), runner, None)
    }

    #[test]
    fn llama_bench_json_gives_prefill_and_decode() {
        let mut r = run(Runner::LlamaCpp);
        let doc = r#"[{"n_prompt": 16, "n_gen": 0, "avg_ts": 300.5},
                      {"n_prompt": 0, "n_gen": 64, "avg_ts": 41.25}]"#;
        read_figures(&mut r, doc).unwrap();
        assert_eq!(r.decode_tokens_per_s, Some(41.25));
        assert_eq!(r.prefill_tokens_per_s, Some(300.5));
        assert!(read_figures(&mut run(Runner::LlamaCpp), "[]").is_err());
        assert!(read_figures(&mut run(Runner::LlamaCpp), "not json").is_err());
    }

    #[test]
    fn engine_json_counts_reads_only_when_streamed() {
        let doc = |mode: &str| {
            format!(
                r#"{{"results": [{{"decode_tokens_per_s": 7.5, "prefill_tokens_per_s": 20.0}}],
                    "weights": {{"mode": "{mode}", "bytes_read_per_token": 1048576.0, "traffic": null}}}}"#
            )
        };
        let mut r = run(Runner::Dhurandhar);
        read_figures(&mut r, &doc("stream")).unwrap();
        assert_eq!(r.bytes_read_per_token, Some(1048576.0));
        let mut r = run(Runner::Dhurandhar);
        read_figures(&mut r, &doc("mmap")).unwrap();
        assert_eq!(
            (r.decode_tokens_per_s, r.bytes_read_per_token),
            (Some(7.5), None)
        );
    }

    #[test]
    fn engine_json_carries_the_prediction_of_the_last_thread_count() {
        let doc = r#"{"results": [{"decode_tokens_per_s": 7.5, "prefill_tokens_per_s": 20.0}],
            "weights": {"mode": "stream", "bytes_read_per_token": 100.0, "traffic": null},
            "predicted": {"peak_rss_bytes": 1000, "measured_peak_rss_bytes": 980,
                "peak_rss_error_pct": 2.04, "flash_bytes_per_token": 100,
                "measured_flash_bytes_per_token": 100.0, "flash_read_gbps": 0.8,
                "threads": [{"decode_tps": 9.0, "decode_bound": "compute", "decode_error_pct": 20.0,
                             "prefill_tps": 30.0, "prefill_error_pct": 50.0},
                            {"decode_tps": 8.0, "decode_bound": "flash", "decode_error_pct": 6.7,
                             "prefill_tps": 25.0, "prefill_error_pct": 25.0}]},
            "prediction_note": null}"#;
        let mut r = run(Runner::Dhurandhar);
        read_figures(&mut r, doc).unwrap();
        let p = r.predicted.unwrap();
        assert_eq!(p.decode_tokens_per_s, Some(8.0));
        assert_eq!(p.decode_bound.as_deref(), Some("flash"));
        assert_eq!(
            (p.peak_rss_bytes, p.measured_peak_rss_bytes),
            (1000, Some(980))
        );
        assert_eq!(p.flash_bytes_per_token, 100);
        assert_eq!(p.flash_read_gbps, Some(0.8));
        let unprobed = r#"{"results": [{"decode_tokens_per_s": 1.0, "prefill_tokens_per_s": 2.0}],
            "weights": {"mode": "mmap", "bytes_read_per_token": 0.0, "traffic": null},
            "predicted": null, "prediction_note": "the host was never probed"}"#;
        let mut r = run(Runner::Dhurandhar);
        read_figures(&mut r, unprobed).unwrap();
        assert!(r.predicted.is_none());
        assert_eq!(
            r.prediction_note.as_deref(),
            Some("the host was never probed")
        );
    }
}
