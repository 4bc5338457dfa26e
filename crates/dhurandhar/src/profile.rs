//! Profile flash / mmap reads: how fast a memory-mapped model table can be read cold (page
//! cache dropped and checked) and warm, how much memory the process holds, and whether
//! that passes a tokens/s target and memory budgets.
//!
//! This module decides *what* to measure (which table of which model, its row and slice
//! sizes, which patterns, hints and modes); [`dhurandhar_profile`] does the measuring.
//!
//! ```no_run
//! use dhurandhar::profile::{run, ProfileOptions};
//! use dhurandhar::{CancelToken, NoProgress};
//! let report = run(&ProfileOptions::default(), &NoProgress, &CancelToken::new())?;
//! println!("{:?}", report.verdict.verdict);
//! # Ok::<(), dhurandhar::Error>(())
//! ```

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use dhurandhar_model::ModelArchitecture;
use dhurandhar_profile::{
    default_cache_dir, default_slices, ensure_test_file, evaluate_budget, evaluate_throughput,
    Advice, Budget, BudgetVerdict, FileOutcome, Histogram, MemoryProbe, MemorySnapshot, Mode,
    Pattern, PatternResult, ProfileError, Profiler, RunOptions, TableGeometry, TableKind,
    ThroughputVerdict, DEFAULT_FILE_NAME, DEFAULT_WARN_MARGIN,
};
use serde::Serialize;

use crate::model::resolve_model;
use crate::{CancelToken, Error, Progress, Result, Unit};

/// Version of the [`ProfileReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest accepted run: a step takes at least a microsecond or so, so beyond this a run
/// would take hours.
pub const MAX_TOKENS: u64 = 100_000_000;

/// RSS samples per memory-probe token stride.
const PROBE_SAMPLE_EVERY: u64 = 25;

const MIB: u64 = 1 << 20;

/// What to profile.
#[derive(Debug, Clone, PartialEq)]
pub enum TableSource {
    /// A synthetic file of random bytes shaped like `model`'s per-layer-embedding table
    /// (its token-embedding table when it has none), at [`ProfileOptions::bits`] bits per
    /// value.
    Synthetic {
        /// Built-in name, `.yaml` profile or checkpoint (see [`resolve_model`]).
        model: String,
        /// Size of the file as a fraction of the real table (0 < scale <= 8); never
        /// smaller than a few MiB.
        scale: f64,
        /// Where the file is kept and reused; `None`: `$DHURANDHAR_CACHE`,
        /// `$XDG_CACHE_HOME/dhurandhar` or `~/.cache/dhurandhar`.
        cache_dir: Option<PathBuf>,
    },
    /// A region of a real file (a checkpoint tensor or a raw byte range).
    File {
        path: PathBuf,
        region: FileRegion,
        /// Bytes of one token row; `None`: from the tensor's shape, else 4096.
        row_bytes: Option<u64>,
        /// Pieces a row is split into for `random_scatter` (must divide the row);
        /// `None`: [`default_slices`].
        slices: Option<u32>,
    },
}

/// Which bytes of a real file are the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRegion {
    /// A named tensor of a `.gguf` or `.safetensors` file.
    Tensor(String),
    /// A raw byte range.
    Bytes { offset: u64, length: u64 },
}

/// Options of an mmap profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    pub table: TableSource,
    /// Bits per value of the synthetic table; also picks the default budget preset.
    pub bits: u32,
    /// Timed decode steps per pattern, hint and mode.
    pub num_tokens: u64,
    /// Untimed steps before each timed run.
    pub warmup_tokens: u64,
    /// Decode tokens/s the table must sustain.
    pub target_tps: f64,
    /// Relative band around the target that gives WARN instead of PASS/FAIL, in [0, 1).
    pub warn_margin: f64,
    /// Access patterns to run, in this order (duplicates are run once).
    pub patterns: Vec<Pattern>,
    /// madvise hints to compare.
    pub advice: Vec<Advice>,
    /// Cold (page cache dropped) and/or warm runs.
    pub modes: Vec<Mode>,
    /// Map with MAP_POPULATE.
    pub populate: bool,
    /// Also sample RSS during a decode with the table mapped.
    pub measure_memory: bool,
    /// Anonymous MiB held resident during the memory probe, standing in for the rest of
    /// the model; also added to the weights-only budget gate.
    pub resident_mb: u64,
    /// Memory budgets to judge; empty: the preset for `bits`.
    pub budgets: Vec<Budget>,
    /// Seed of the token streams.
    pub seed: u64,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            table: TableSource::Synthetic {
                model: "gemma4-e2b".to_string(),
                scale: 0.1,
                cache_dir: None,
            },
            bits: 4,
            num_tokens: 1000,
            warmup_tokens: 50,
            target_tps: 15.0,
            warn_margin: DEFAULT_WARN_MARGIN,
            patterns: Pattern::ALL.to_vec(),
            advice: vec![Advice::Auto],
            modes: vec![Mode::Cold, Mode::Warm],
            populate: false,
            measure_memory: false,
            resident_mb: 0,
            budgets: Vec::new(),
            seed: 0,
        }
    }
}

/// `synthetic` or `checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Synthetic,
    Checkpoint,
}

/// What was profiled.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    pub model: Option<String>,
    pub table: TableKind,
    pub path: PathBuf,
    pub tensor: Option<String>,
    pub offset: u64,
    /// Bytes read (whole rows).
    pub length: u64,
    pub bits: Option<u32>,
    pub scale: Option<f64>,
    /// Bytes of the real table (synthetic) or of the whole region (checkpoint).
    pub full_table_bytes: u64,
    pub rows: u64,
    pub slices: u32,
    pub slice_bytes: u64,
    pub bytes_per_token: u64,
    /// Whether the synthetic file was written or reused.
    pub file: Option<FileOutcome>,
    pub note: Option<String>,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
    pub page_size: u64,
    /// Whether mincore can see this file's page-cache state.
    pub residency_verifiable: bool,
}

/// When the memory reading the budgets are judged on was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasuredDuring {
    /// During the memory probe, with the peak mark reset just before it.
    DecodeProbe,
    /// At the end; the peak covers the whole profiling run.
    WholeRun,
}

/// Memory readings and budget verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub measured_during: MeasuredDuring,
    #[serde(flatten)]
    pub now: MemorySnapshot,
    pub unreclaimable_bytes: Option<u64>,
    pub budgets: Vec<BudgetVerdict>,
    pub probe: Option<MemoryProbe>,
}

/// The result of an mmap profile; the JSON document every front end prints.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub schema_version: u32,
    pub source: Source,
    pub host: Host,
    pub num_tokens: u64,
    pub warmup_tokens: u64,
    pub results: Vec<PatternResult>,
    /// Per-token latency distribution of each measured run (same order as `results`;
    /// runs with no number, e.g. a cold run that could not evict, have none). Added in
    /// schema 1 without a bump: an extra field readers of schema 1 can ignore.
    pub histograms: Vec<LatencyHistogram>,
    pub memory: MemoryReport,
    pub verdict: ThroughputVerdict,
}

/// Smallest latency bucket edge, ns; faster steps share the first bucket.
const HIST_MIN_NS: f64 = 64.0;
/// Bucket edges per doubling of latency.
const HIST_PER_OCTAVE: u32 = 4;
/// Doublings covered above [`HIST_MIN_NS`] (64 ns · 2^28 ≈ 17 s); slower steps share
/// the last bucket.
const HIST_OCTAVES: u32 = 28;

/// The fixed, log-spaced bucket edges (ns) of every [`LatencyHistogram`]: the same
/// for all runs and hosts, so histograms compare bucket by bucket.
pub fn latency_bucket_edges_ns() -> Vec<u64> {
    (0..=HIST_PER_OCTAVE * HIST_OCTAVES)
        .map(|k| {
            (HIST_MIN_NS * 2f64.powf(f64::from(k) / f64::from(HIST_PER_OCTAVE))).round() as u64
        })
        .collect()
}

/// One run's per-token latency distribution over [`latency_bucket_edges_ns`], empty
/// buckets before the first and after the last sample left out (at most
/// 4 · 28 + 2 buckets). Counts are read from the profiler's log-linear histogram, so an
/// edge that is not a power of two is placed within 1/64 of its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyHistogram {
    pub pattern: Pattern,
    pub mode: Mode,
    pub advice: Advice,
    /// Timed tokens (the sum of the counts).
    pub samples: u64,
    pub buckets: Vec<LatencyBucket>,
}

/// Steps that took `lo_us <= t < hi_us` microseconds (`hi_us` `None`: no upper edge).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyBucket {
    pub lo_us: f64,
    pub hi_us: Option<f64>,
    pub count: u64,
}

impl LatencyHistogram {
    fn new(r: &PatternResult, h: &Histogram) -> Self {
        let edges = latency_bucket_edges_ns();
        let counts = h.counts_by_edges(&edges);
        let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
        let last = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        let us = |ns: u64| ns as f64 / 1e3;
        let buckets = (first..=last)
            .map(|i| LatencyBucket {
                lo_us: if i == 0 { 0.0 } else { us(edges[i - 1]) },
                hi_us: edges.get(i).map(|&e| us(e)),
                count: counts[i],
            })
            .collect();
        LatencyHistogram {
            pattern: r.pattern,
            mode: r.mode,
            advice: r.advice,
            samples: h.count(),
            buckets,
        }
    }
}

impl ProfileReport {
    /// Whether several madvise hints were compared for the same pattern and mode (a
    /// table then needs an advice column to tell the rows apart).
    pub fn compares_advice(&self) -> bool {
        let key = |x: &PatternResult| (x.pattern, x.mode);
        let r = &self.results;
        (1..r.len()).any(|i| r[..i].iter().any(|y| key(y) == key(&r[i])))
    }
}

/// Profile the table `opts` describe. Cancelling `cancel` stops between reads; a test
/// file being written is then removed.
pub fn run(
    opts: &ProfileOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<ProfileReport> {
    validate(opts)?;
    cancel.check()?;
    let (geometry, mut source) = prepare_source(opts, progress, cancel)?;
    let profiler = Profiler::open(&source.path, source.offset, geometry)?;

    let mut results = Vec::new();
    let mut histograms = Vec::new();
    for &pattern in &dedup(&opts.patterns) {
        for &advice in &dedup(&opts.advice) {
            for &mode in &dedup(&opts.modes) {
                let run_opts = RunOptions {
                    num_tokens: opts.num_tokens,
                    warmup_tokens: opts.warmup_tokens,
                    seed: opts.seed,
                    advice,
                    populate: opts.populate,
                    ..Default::default()
                };
                let what = format!("{} {}", pattern.name(), mode.name());
                let phase = Phase::start(progress, &what, opts.num_tokens, Unit::Items("tokens"));
                let (r, hist) = profiler
                    .run_with_histogram(pattern, mode, &run_opts, &mut phase.callback(cancel))
                    .map_err(|e| lift(e, || format!("{what} run failed")))?;
                if let Some(h) = hist.filter(|h| h.count() > 0) {
                    histograms.push(LatencyHistogram::new(&r, &h));
                }
                results.push(r);
            }
        }
    }

    let probe = if opts.measure_memory {
        let phase = Phase::start(
            progress,
            "memory probe",
            opts.num_tokens,
            Unit::Items("tokens"),
        );
        let p = profiler
            .memory_probe(
                opts.num_tokens,
                PROBE_SAMPLE_EVERY,
                opts.resident_mb * MIB, // checked by `validate`
                opts.seed,
                opts.modes.contains(&Mode::Cold),
                &mut phase.callback(cancel),
            )
            .map_err(|e| lift(e, || "memory probe failed".to_string()))?;
        Some(p)
    } else {
        None
    };
    // Budgets are judged on the decode probe's reading (taken while its placeholder and
    // mapping are alive, with the peak reset just before it) when there is one.
    let (now, measured_during) = match &probe {
        Some(p) if p.peak_reset => (p.end.clone(), MeasuredDuring::DecodeProbe),
        _ => (MemorySnapshot::current(), MeasuredDuring::WholeRun),
    };
    let budgets = if opts.budgets.is_empty() {
        vec![Budget::for_bits(opts.bits)]
    } else {
        opts.budgets.clone()
    };
    let weights = source
        .full_table_bytes
        .saturating_add(opts.resident_mb.saturating_mul(MIB));
    let memory = MemoryReport {
        measured_during,
        unreclaimable_bytes: now.unreclaimable_bytes(),
        budgets: budgets
            .iter()
            .map(|b| evaluate_budget(b, weights, &now))
            .collect(),
        now,
        probe,
    };
    let verdict = evaluate_throughput(&results, opts.target_tps, opts.warn_margin)?;
    if source.note.is_none() && !profiler.residency_verifiable() {
        source.note = Some("page-cache residency cannot be verified for this file".into());
    }
    Ok(ProfileReport {
        schema_version: SCHEMA_VERSION,
        host: Host {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            page_size: dhurandhar_profile::sys::page_size(),
            residency_verifiable: profiler.residency_verifiable(),
        },
        source,
        num_tokens: opts.num_tokens,
        warmup_tokens: opts.warmup_tokens,
        results,
        histograms,
        memory,
        verdict,
    })
}

/// Reject options that cannot give a meaningful run, naming the field.
pub fn validate(opts: &ProfileOptions) -> Result<()> {
    if !opts.target_tps.is_finite() || opts.target_tps <= 0.0 {
        return Err(Error::invalid(
            "target_tps",
            format!("must be a positive number, got {}", opts.target_tps),
        ));
    }
    if !opts.warn_margin.is_finite() || !(0.0..1.0).contains(&opts.warn_margin) {
        return Err(Error::invalid(
            "warn_margin",
            format!("must be in [0, 1), got {}", opts.warn_margin),
        ));
    }
    if opts.num_tokens == 0 {
        return Err(Error::invalid("num_tokens", "must be at least 1"));
    }
    for (field, n) in [
        ("num_tokens", opts.num_tokens),
        ("warmup_tokens", opts.warmup_tokens),
    ] {
        if n > MAX_TOKENS {
            return Err(Error::invalid(
                field,
                format!("{n} is above 100,000,000 and would run for hours"),
            ));
        }
    }
    for (field, empty) in [
        ("patterns", opts.patterns.is_empty()),
        ("advice", opts.advice.is_empty()),
        ("modes", opts.modes.is_empty()),
    ] {
        if empty {
            return Err(Error::invalid(field, "is empty"));
        }
    }
    if opts.resident_mb.checked_mul(MIB).is_none() {
        return Err(Error::invalid(
            "resident_mb",
            format!("{} MiB is too large", opts.resident_mb),
        ));
    }
    Ok(())
}

/// The full-size table of `arch` at `bits` bits per value: its per-layer-embedding table,
/// else its token-embedding table with a note saying so.
pub fn model_table(arch: &ModelArchitecture, bits: u32) -> Result<(TableGeometry, Option<String>)> {
    if arch.has_ple && arch.ple_hidden_size > 0 && arch.ple_vocab_size > 0 {
        let g = TableGeometry::per_layer_embedding(
            arch.ple_vocab_size,
            arch.num_hidden_layers,
            arch.ple_hidden_size,
            bits,
        )?;
        return Ok((g, None));
    }
    let g = TableGeometry::token_embedding(arch.vocab_size, arch.hidden_size, bits)?;
    let note = format!(
        "{} has no per-layer embedding table; its token-embedding table (vocab x hidden) \
         is profiled instead",
        arch.name
    );
    Ok((g, Some(note)))
}

/// The byte range of a tensor and, when its shape is known, its row count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
    pub rows: Option<u64>,
}

/// Find `tensor` in a `.gguf` / `.safetensors` file.
pub fn locate_tensor(file: &Path, tensor: &str) -> Result<Region> {
    let (offset, length) = dhurandhar_checkpoint::locate_tensor(file, tensor)
        .map_err(|e| Error::from(e).context(format!("cannot locate tensor `{tensor}`")))?;
    // The shape gives the row count: GGUF stores the row length first (ggml order),
    // safetensors is row-major.
    let rows = dhurandhar_checkpoint::open_checkpoint(file)
        .ok()
        .and_then(|c| {
            let t = c.tensors.into_iter().find(|t| t.name == tensor)?;
            let rows: u64 = if c.format == dhurandhar_checkpoint::CheckpointFormat::Gguf {
                t.shape.iter().skip(1).product()
            } else {
                *t.shape.first()?
            };
            (rows > 0 && t.shape.len() >= 2).then_some(rows)
        });
    Ok(Region {
        offset,
        length,
        rows,
    })
}

/// Build (or reuse) the synthetic file, or locate the region of a real file.
fn prepare_source(
    opts: &ProfileOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<(TableGeometry, Source)> {
    let (model, scale, cache_dir) = match &opts.table {
        TableSource::File {
            path,
            region,
            row_bytes,
            slices,
        } => return file_source(path, region, *row_bytes, *slices),
        TableSource::Synthetic {
            model,
            scale,
            cache_dir,
        } => (model, *scale, cache_dir),
    };
    let model = resolve_model(model)?;
    let (full, note) = model_table(&model.arch, opts.bits)?;
    let g = full.scaled(scale)?;
    let dir = cache_dir.clone().unwrap_or_else(default_cache_dir);
    let path = dir.join(DEFAULT_FILE_NAME);
    let len = g.total_bytes();
    let outcome = {
        let phase = Phase::start(progress, "writing test file", len, Unit::Bytes);
        let written = ensure_test_file(&path, len, &mut phase.callback(cancel));
        written.map_err(|e| lift(e, String::new))?
    };
    let source = Source {
        kind: SourceKind::Synthetic,
        model: Some(model.arch.name.clone()),
        table: g.kind,
        path,
        tensor: None,
        offset: 0,
        length: len,
        bits: Some(opts.bits),
        scale: Some(scale),
        full_table_bytes: full.total_bytes(),
        rows: g.rows,
        slices: g.slices,
        slice_bytes: g.slice_bytes,
        bytes_per_token: g.row_bytes(),
        file: Some(outcome),
        note,
    };
    Ok((g, source))
}

fn file_source(
    file: &Path,
    region: &FileRegion,
    row_bytes: Option<u64>,
    slices: Option<u32>,
) -> Result<(TableGeometry, Source)> {
    let file_len = dhurandhar_io::check_regular(file)?.len();
    let (region, tensor) = match region {
        FileRegion::Tensor(t) => (locate_tensor(file, t)?, Some(t.clone())),
        FileRegion::Bytes { offset, length } => (
            Region {
                offset: *offset,
                length: *length,
                rows: None,
            },
            None,
        ),
    };
    if region.length == 0 {
        return Err(ProfileError::Invalid(format!(
            "{}: the region to profile is empty",
            file.display()
        ))
        .into());
    }
    if region
        .offset
        .checked_add(region.length)
        .is_none_or(|end| end > file_len)
    {
        return Err(ProfileError::RegionOutOfFile {
            path: file.to_path_buf(),
            offset: region.offset,
            length: region.length,
            file_len,
        }
        .into());
    }
    let (g, notes) = region_geometry(region, row_bytes, slices)?;
    let source = Source {
        kind: SourceKind::Checkpoint,
        model: None,
        table: TableKind::FileRegion,
        path: file.to_path_buf(),
        tensor,
        offset: region.offset,
        length: g.total_bytes(),
        bits: None,
        scale: None,
        full_table_bytes: region.length,
        rows: g.rows,
        slices: g.slices,
        slice_bytes: g.slice_bytes,
        bytes_per_token: g.row_bytes(),
        file: None,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    Ok((g, source))
}

/// Rows and slices of a file region, with notes on what will not be measured.
fn region_geometry(
    region: Region,
    row_bytes: Option<u64>,
    slices: Option<u32>,
) -> Result<(TableGeometry, Vec<String>)> {
    let row_bytes = match (row_bytes, region.rows) {
        (Some(0), _) => return Err(Error::invalid("row_bytes", "must be > 0")),
        (Some(r), _) => r,
        (None, Some(rows)) if region.length.is_multiple_of(rows) => region.length / rows,
        _ => 4096,
    };
    if row_bytes > region.length {
        return Err(Error::invalid(
            "row_bytes",
            format!(
                "{row_bytes} is larger than the {}-byte region",
                region.length
            ),
        ));
    }
    let rows = region.length / row_bytes;
    let slices = match slices {
        Some(0) => return Err(Error::invalid("slices", "must be > 0")),
        Some(k) if !row_bytes.is_multiple_of(k as u64) => {
            return Err(Error::invalid(
                "slices",
                format!("{k} does not divide the row size ({row_bytes} bytes)"),
            ))
        }
        Some(k) => k,
        None => default_slices(row_bytes),
    };
    let g = TableGeometry::new(
        TableKind::FileRegion,
        rows,
        slices,
        row_bytes / slices as u64,
    )?;
    let tail = region.length - rows * row_bytes;
    let mut notes = Vec::new();
    if tail > 0 {
        notes.push(format!(
            "the last {tail} bytes (less than one row) are not read"
        ));
    }
    if slices == 1 {
        notes.push(
            "rows cannot be split, so random_scatter reads the same way as random_decode"
                .to_string(),
        );
    }
    Ok((g, notes))
}

/// A progress phase that finishes when dropped, also on an error path.
pub(crate) struct Phase<'a>(&'a dyn Progress);

impl<'a> Phase<'a> {
    pub(crate) fn start(progress: &'a dyn Progress, label: &str, total: u64, unit: Unit) -> Self {
        progress.start(label, Some(total), unit);
        Phase(progress)
    }

    /// The profile crate's `(done, total)` callback: forwards progress, stops when
    /// cancelled.
    pub(crate) fn callback<'b>(
        &'b self,
        cancel: &'b CancelToken,
    ) -> impl FnMut(u64, u64) -> ControlFlow<()> + 'b {
        let mut last = 0u64;
        move |done, _total| {
            self.0.advance(done.saturating_sub(last));
            last = last.max(done);
            if cancel.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A profile error as a facade error: a cancellation stays [`Error::Cancelled`], anything
/// else gets `context` (when not empty).
pub(crate) fn lift(e: ProfileError, context: impl FnOnce() -> String) -> Error {
    match e {
        ProfileError::Cancelled => Error::Cancelled,
        e => {
            let c = context();
            if c.is_empty() {
                e.into()
            } else {
                Error::from(e).context(c)
            }
        }
    }
}

fn dedup<T: PartialEq + Copy>(v: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for &x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn small(dir: &Path) -> ProfileOptions {
        ProfileOptions {
            table: TableSource::Synthetic {
                model: "gemma4-e2b".into(),
                scale: 0.001,
                cache_dir: Some(dir.to_path_buf()),
            },
            num_tokens: 20,
            warmup_tokens: 2,
            patterns: vec![Pattern::RandomDecode],
            modes: vec![Mode::Warm],
            ..Default::default()
        }
    }

    #[test]
    fn ple_table_or_token_embedding_with_a_note() {
        let e2b = resolve_model("gemma4-e2b").unwrap().arch;
        let (g, note) = model_table(&e2b, 4).unwrap();
        assert_eq!(g.kind, TableKind::PerLayerEmbedding);
        assert_eq!(g.slice_bytes, 128);
        assert_eq!(g.slices, e2b.num_hidden_layers);
        assert!(note.is_none());
        let qwen = resolve_model("qwen2.5-0.5b").unwrap().arch;
        let (g, note) = model_table(&qwen, 8).unwrap();
        assert_eq!(
            (g.kind, g.slices, g.slice_bytes),
            (TableKind::TokenEmbedding, 1, 896)
        );
        assert!(note.unwrap().contains("token-embedding"));
    }

    #[test]
    fn bad_options_name_the_field_not_a_flag() {
        type Change = fn(&mut ProfileOptions);
        let cases: [(Change, &str); 6] = [
            (|o| o.target_tps = 0.0, "target_tps"),
            (|o| o.warn_margin = 1.0, "warn_margin"),
            (|o| o.num_tokens = 0, "num_tokens"),
            (|o| o.warmup_tokens = MAX_TOKENS + 1, "warmup_tokens"),
            (|o| o.modes.clear(), "modes"),
            (|o| o.resident_mb = u64::MAX, "resident_mb"),
        ];
        for (change, field) in cases {
            let mut o = ProfileOptions::default();
            change(&mut o);
            match validate(&o).unwrap_err() {
                Error::InvalidOption { option, reason } => {
                    assert_eq!(option, field);
                    assert!(!reason.contains("--"), "{reason}");
                }
                e => panic!("{field}: {e}"),
            }
        }
        assert!(validate(&ProfileOptions::default()).is_ok());
    }

    #[test]
    fn region_rows_slices_and_notes() {
        let r = |length, rows| Region {
            offset: 0,
            length,
            rows,
        };
        let (g, notes) = region_geometry(r(500_000, None), Some(1000), None).unwrap();
        assert_eq!((g.rows, g.slices, g.slice_bytes), (500, 10, 100));
        assert!(notes.is_empty());
        // Row size from the tensor's shape; 17-byte rows cannot be split.
        let (g, notes) = region_geometry(r(17 * 10 + 5, None), Some(17), None).unwrap();
        assert_eq!((g.rows, g.slices), (10, 1));
        assert_eq!(notes.len(), 2, "{notes:?}");
        let (g, _) = region_geometry(r(49_152 * 612, Some(49_152)), None, None).unwrap();
        assert_eq!((g.row_bytes(), g.slices), (612, 12));
        for (row_bytes, slices, field) in [
            (Some(0), None, "row_bytes"),
            (Some(10_000), None, "row_bytes"),
            (Some(1000), Some(7), "slices"),
            (Some(1000), Some(0), "slices"),
        ] {
            let e = region_geometry(r(5000, None), row_bytes, slices).unwrap_err();
            assert!(
                matches!(e, Error::InvalidOption { option, .. } if option == field),
                "{e}"
            );
        }
    }

    #[test]
    fn small_run_reports_the_schema() {
        let dir = tmp();
        let r = run(&small(dir.path()), &NoProgress, &CancelToken::new()).unwrap();
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(r.results.len(), 1);
        assert_eq!(r.source.kind, SourceKind::Synthetic);
        assert_eq!(r.source.file, Some(FileOutcome::Created));
        assert_eq!(r.memory.measured_during, MeasuredDuring::WholeRun);
        assert_eq!(r.memory.budgets[0].budget.name, "int4_aggressive");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["source"]["kind"], "synthetic");
        assert_eq!(v["memory"]["measured_during"], "whole_run");
        assert!(v["memory"]["peak_rss_bytes"].is_u64());
        assert!(!r.compares_advice());
        // One histogram per measured run, holding every timed token in ascending,
        // contiguous buckets on the fixed edges.
        assert_eq!(r.histograms.len(), 1);
        let h = &r.histograms[0];
        assert_eq!(
            (h.pattern, h.mode),
            (r.results[0].pattern, r.results[0].mode)
        );
        assert_eq!(h.samples, r.num_tokens);
        assert_eq!(h.buckets.iter().map(|b| b.count).sum::<u64>(), r.num_tokens);
        assert!(h.buckets.first().unwrap().count > 0 && h.buckets.last().unwrap().count > 0);
        assert!(h.buckets.windows(2).all(|w| Some(w[1].lo_us) == w[0].hi_us));
        let p50 = r.results[0].p50_us.unwrap();
        assert!(h
            .buckets
            .iter()
            .any(|b| b.lo_us * 0.98 <= p50 && b.hi_us.is_none_or(|hi| p50 < hi * 1.02)));
        assert!(v["histograms"][0]["buckets"][0]["count"].is_u64());
        let mut two = r.clone();
        two.results.push(two.results[0].clone());
        assert!(two.compares_advice());
    }

    #[test]
    fn bucket_edges_are_log_spaced_and_doubling_every_octave() {
        let e = latency_bucket_edges_ns();
        assert_eq!(e.len() as u32, HIST_PER_OCTAVE * HIST_OCTAVES + 1);
        assert!(e.windows(2).all(|w| w[0] < w[1]));
        for k in 0..=HIST_OCTAVES as usize {
            assert_eq!(e[k * HIST_PER_OCTAVE as usize], 64u64 << k);
        }
    }

    /// Cancels its token as soon as a phase of `unit` makes progress.
    struct CancelOn(CancelToken, Unit, std::sync::Mutex<Option<Unit>>);

    impl Progress for CancelOn {
        fn start(&self, _label: &str, _total: Option<u64>, unit: Unit) {
            *self.2.lock().unwrap() = Some(unit);
        }
        fn advance(&self, n: u64) {
            if n > 0 && *self.2.lock().unwrap() == Some(self.1) {
                self.0.cancel();
            }
        }
    }

    #[test]
    fn cancel_while_writing_leaves_no_test_file() {
        let dir = tmp();
        let token = CancelToken::new();
        let p = CancelOn(token.clone(), Unit::Bytes, Default::default());
        let e = run(&small(dir.path()), &p, &token).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn cancel_during_a_run_stops_it() {
        let dir = tmp();
        let token = CancelToken::new();
        let p = CancelOn(token.clone(), Unit::Items("tokens"), Default::default());
        let mut o = small(dir.path());
        o.num_tokens = 100_000;
        let e = run(&o, &p, &token).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        // The completed test file stays for the next run to reuse.
        assert!(dir.path().join(DEFAULT_FILE_NAME).is_file());
    }

    #[test]
    fn tensor_rows_come_from_the_ggml_shape() {
        let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
            return;
        };
        let r = locate_tensor(&gguf, "token_embd.weight").unwrap();
        assert_eq!(r.rows, Some(49_152));
        assert_eq!(r.length, 49_152 * 612);
        let e = locate_tensor(&gguf, "no.such.tensor").unwrap_err();
        assert!(e.to_string().contains("no.such.tensor"), "{e}");
    }
}
