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

use dhurandhar_profile::cgroup::{CapUsage, MemoryCap};
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
    /// The cold read bandwidth ÷ bytes read per token, and the fraction of it reached.
    pub bound_tokens_per_s: Option<f64>,
    pub bound_fraction: Option<f64>,
    /// The memory group's peak charge, failures and OOM kills (capped runs).
    pub cgroup: Option<CapUsage>,
    pub wall_seconds: f64,
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
    /// page cache: the disk's bandwidth for this file, measured in this run.
    pub cold_read_bytes_per_s: f64,
    /// Whether that read used `O_DIRECT` (as the streamed runs do where the file system
    /// allows), or the page cache.
    pub cold_read_direct: bool,
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
    let (cold_read_bytes_per_s, cold_read_direct) =
        dhurandhar_profile::sys::cold_sequential_read(&file, &opts.model)
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
                let bound = cold_read_bytes_per_s / per;
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
        runs,
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
}
