//! `dhurandhar mmap-profile` (alias `dhurandhar-profile-mmap`): read throughput of a
//! memory-mapped table, cold (page cache dropped and checked) and warm, plus RSS and the
//! memory-budget and tokens/s gates. All measuring lives in `dhurandhar_profile`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use dhurandhar_profile::{
    default_cache_dir, ensure_test_file, evaluate_budget, evaluate_throughput, Advice, Budget,
    BudgetVerdict, FileOutcome, MemoryProbe, MemorySnapshot, Mode, Pattern, PatternResult,
    Profiler, RunOptions, TableGeometry, TableKind, ThroughputVerdict, DEFAULT_FILE_NAME,
    DEFAULT_WARN_MARGIN,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::commands::model_arg::resolve_model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum PatternArg {
    SequentialPrefill,
    RandomDecode,
    RandomScatter,
}

impl From<PatternArg> for Pattern {
    fn from(p: PatternArg) -> Self {
        match p {
            PatternArg::SequentialPrefill => Pattern::SequentialPrefill,
            PatternArg::RandomDecode => Pattern::RandomDecode,
            PatternArg::RandomScatter => Pattern::RandomScatter,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum AdviceArg {
    Auto,
    Normal,
    Random,
    Sequential,
    Willneed,
}

impl From<AdviceArg> for Advice {
    fn from(a: AdviceArg) -> Self {
        match a {
            AdviceArg::Auto => Advice::Auto,
            AdviceArg::Normal => Advice::Normal,
            AdviceArg::Random => Advice::Random,
            AdviceArg::Sequential => Advice::Sequential,
            AdviceArg::Willneed => Advice::WillNeed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Interpretation {
    WeightsOnly,
    FullProcess,
    Both,
}

/// Measure mmap / flash read throughput of a model table and the process's memory.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Model whose per-layer-embedding table is simulated (its token-embedding table if it
    /// has no PLE): built-in name, .yaml profile or checkpoint.
    #[arg(long, default_value = "gemma4-e2b")]
    pub model: String,
    /// Bits per table value of the simulated table.
    #[arg(long, visible_alias = "weight-bits", default_value_t = 4)]
    pub bits: u32,
    /// Size of the synthetic test file as a fraction of the real table (0 < S <= 8).
    #[arg(long, default_value_t = 0.1)]
    pub scale: f64,
    /// Timed decode steps per pattern and mode.
    #[arg(long, default_value_t = 1000)]
    pub num_tokens: u64,
    /// Untimed steps before each timed run.
    #[arg(long, default_value_t = 50)]
    pub warmup_tokens: u64,
    /// Decode tokens/s the table must sustain.
    #[arg(long, default_value_t = 15.0)]
    pub target_tps: f64,
    /// Relative band around the target that gives WARN instead of PASS/FAIL.
    #[arg(long, default_value_t = DEFAULT_WARN_MARGIN)]
    pub warn_margin: f64,
    /// Also run the memory probe: RSS sampled during a decode with the table mapped.
    #[arg(long)]
    pub measure_memory: bool,
    /// Anonymous MiB held resident during the memory probe, standing in for the rest of
    /// the model (decoder weights, KV cache); also added to the weights-only gate.
    #[arg(long, default_value_t = 0)]
    pub resident_mb: u64,
    /// Memory budget(s): int2_extreme, int4_aggressive, int8_deployment, bf16_development
    /// or a size in MB (comma-separated). Default: the preset for --bits.
    #[arg(long, value_delimiter = ',')]
    pub budget: Vec<String>,
    /// Which budget verdicts the table shows (JSON always has both).
    #[arg(long, value_enum, default_value_t = Interpretation::Both)]
    pub budget_interpretation: Interpretation,
    /// Profile a real checkpoint instead of a synthetic file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Tensor of --file to profile (.gguf or .safetensors).
    #[arg(long, requires = "file", conflicts_with_all = ["offset", "length"])]
    pub tensor: Option<String>,
    /// Raw byte region of --file: start offset...
    #[arg(long, requires_all = ["file", "length"])]
    pub offset: Option<u64>,
    /// ...and length.
    #[arg(long, requires_all = ["file", "offset"])]
    pub length: Option<u64>,
    /// Bytes of one token row in --file (default: from the tensor's shape; 4096 for a raw
    /// region).
    #[arg(long, requires = "file")]
    pub row_bytes: Option<u64>,
    /// Pieces a --file row is split into for random_scatter, which reads them from that many
    /// random places (must divide the row size; default: the largest divisor up to 16 that
    /// keeps pieces >= 16 bytes).
    #[arg(long, requires = "file")]
    pub slices: Option<u32>,
    /// Access patterns to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [PatternArg::SequentialPrefill, PatternArg::RandomDecode, PatternArg::RandomScatter])]
    pub patterns: Vec<PatternArg>,
    /// madvise hint(s) to compare (comma-separated); auto = SEQUENTIAL for the sequential
    /// pattern, RANDOM for the random ones.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [AdviceArg::Auto])]
    pub advice: Vec<AdviceArg>,
    /// Map with MAP_POPULATE (prefault everything at mmap time; Linux/Android).
    #[arg(long)]
    pub populate: bool,
    /// Skip the cold runs entirely (no eviction, no cold pass).
    #[arg(long, conflicts_with = "cold_only")]
    pub warm_only: bool,
    /// Skip the warm runs.
    #[arg(long)]
    pub cold_only: bool,
    /// Directory for the synthetic test file [default: $DHURANDHAR_CACHE,
    /// $XDG_CACHE_HOME/dhurandhar or ~/.cache/dhurandhar].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Seed of the token streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// What was profiled.
#[derive(Debug, Serialize)]
pub struct Source {
    /// `synthetic` or `checkpoint`.
    pub kind: &'static str,
    pub model: Option<String>,
    pub table: TableKind,
    pub path: PathBuf,
    pub tensor: Option<String>,
    pub offset: u64,
    pub length: u64,
    pub bits: Option<u32>,
    pub scale: Option<f64>,
    pub full_table_bytes: u64,
    pub rows: u64,
    pub slices: u32,
    pub slice_bytes: u64,
    pub bytes_per_token: u64,
    pub file: Option<FileOutcome>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub os: &'static str,
    pub arch: &'static str,
    pub page_size: u64,
    /// Whether mincore can see this file's page-cache state.
    pub residency_verifiable: bool,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// `decode_probe` (with --measure-memory) or `whole_run`.
    pub measured_during: &'static str,
    #[serde(flatten)]
    pub now: MemorySnapshot,
    pub unreclaimable_bytes: Option<u64>,
    pub budgets: Vec<BudgetVerdict>,
    pub probe: Option<MemoryProbe>,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub source: Source,
    pub host: Host,
    pub num_tokens: u64,
    pub warmup_tokens: u64,
    pub results: Vec<PatternResult>,
    pub memory: Memory,
    pub verdict: ThroughputVerdict,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    let show = !args.json && std::io::stderr().is_terminal();
    let (geometry, mut source) = prepare_source(&args, show)?;
    let profiler = Profiler::open(&source.path, source.offset, geometry.clone())?;

    let mut modes = Vec::new();
    if !args.warm_only {
        modes.push(Mode::Cold);
    }
    if !args.cold_only {
        modes.push(Mode::Warm);
    }
    let advices: Vec<Advice> = dedup(args.advice.iter().map(|&a| a.into()).collect());
    let patterns: Vec<Pattern> = dedup(args.patterns.iter().map(|&p| p.into()).collect());
    let mut results = Vec::new();
    for &pattern in &patterns {
        for &advice in &advices {
            for &mode in &modes {
                let opts = RunOptions {
                    num_tokens: args.num_tokens,
                    warmup_tokens: args.warmup_tokens,
                    seed: args.seed,
                    advice,
                    populate: args.populate,
                    ..Default::default()
                };
                let bar = bar(show, args.num_tokens, "tokens");
                bar.set_message(format!("{} {}", pattern.name(), mode.name()));
                let r = profiler
                    .run(pattern, mode, &opts, &mut |d, _| bar.set_position(d))
                    .with_context(|| format!("{} {} run failed", pattern.name(), mode.name()))?;
                bar.finish_and_clear();
                results.push(r);
            }
        }
    }

    let probe = if args.measure_memory {
        let placeholder = args
            .resident_mb
            .checked_mul(1 << 20)
            .context("--resident-mb is too large")?;
        Some(profiler.memory_probe(args.num_tokens, 25, placeholder, args.seed, !args.warm_only)?)
    } else {
        None
    };
    // Budgets are judged on the decode probe's reading (taken while its placeholder and
    // mapping are alive, with the peak reset just before it) when there is one.
    let (now, measured_during) = match &probe {
        Some(p) if p.peak_reset => (p.end.clone(), "decode_probe"),
        _ => (MemorySnapshot::current(), "whole_run"),
    };
    let budgets = budgets(&args)?;
    let weights = source
        .full_table_bytes
        .saturating_add(args.resident_mb.saturating_mul(1 << 20));
    let memory = Memory {
        measured_during,
        unreclaimable_bytes: now.unreclaimable_bytes(),
        budgets: budgets
            .iter()
            .map(|b| evaluate_budget(b, weights, &now))
            .collect(),
        now,
        probe,
    };
    let verdict = evaluate_throughput(&results, args.target_tps, args.warn_margin)?;
    if source.note.is_none() && !profiler.residency_verifiable() {
        source.note = Some("page-cache residency cannot be verified for this file".into());
    }
    let report = Report {
        host: Host {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            page_size: dhurandhar_profile::sys::page_size(),
            residency_verifiable: profiler.residency_verifiable(),
        },
        source,
        num_tokens: args.num_tokens,
        warmup_tokens: args.warmup_tokens,
        results,
        memory,
        verdict,
    };
    if let Some(p) = &args.json_out {
        crate::output::write_json_file(p, &report)?;
    }
    if args.json {
        crate::output::print_json(&report)
    } else {
        print_report(&report, args.budget_interpretation);
        Ok(())
    }
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if !args.target_tps.is_finite() || args.target_tps <= 0.0 {
        bail!(
            "--target-tps must be a positive number, got {}",
            args.target_tps
        );
    }
    if !args.warn_margin.is_finite() || !(0.0..1.0).contains(&args.warn_margin) {
        bail!("--warn-margin must be in [0, 1), got {}", args.warn_margin);
    }
    if args.num_tokens == 0 {
        bail!("--num-tokens must be at least 1");
    }
    // A step takes at least a microsecond or so; beyond this a run would take hours.
    if args.num_tokens > 100_000_000 || args.warmup_tokens > 100_000_000 {
        bail!("--num-tokens / --warmup-tokens above 100,000,000 would run for hours");
    }
    if args.patterns.is_empty() {
        bail!("--patterns is empty");
    }
    Ok(())
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn budgets(args: &Args) -> anyhow::Result<Vec<Budget>> {
    if args.budget.is_empty() {
        return Ok(vec![Budget::for_bits(args.bits)]);
    }
    let mut out = Vec::new();
    for b in &args.budget {
        out.push(Budget::parse(b)?);
    }
    Ok(out)
}

fn bar(show: bool, len: u64, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let tmpl = if unit == "bytes" {
        "{msg:28} [{bar:30}] {bytes}/{total_bytes} ({eta})".to_string()
    } else {
        format!("{{msg:28}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})")
    };
    if let Ok(style) = ProgressStyle::with_template(&tmpl) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

/// Build (or reuse) the synthetic file, or locate the checkpoint region.
fn prepare_source(args: &Args, show: bool) -> anyhow::Result<(TableGeometry, Source)> {
    if let Some(file) = &args.file {
        return checkpoint_source(args, file);
    }
    if args.row_bytes.is_some() {
        bail!("--row-bytes only applies to --file");
    }
    let model = resolve_model(&args.model)?;
    let a = &model.arch;
    let (full, note) = if a.has_ple && a.ple_hidden_size > 0 && a.ple_vocab_size > 0 {
        let g = TableGeometry::per_layer_embedding(
            a.ple_vocab_size,
            a.num_hidden_layers,
            a.ple_hidden_size,
            args.bits,
        )?;
        (g, None)
    } else {
        let g = TableGeometry::token_embedding(a.vocab_size, a.hidden_size, args.bits)?;
        (
            g,
            Some(format!(
                "{} has no per-layer embedding table; its token-embedding table (vocab x hidden) \
                 is profiled instead",
                a.name
            )),
        )
    };
    let g = full.scaled(args.scale)?;
    let dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let path = dir.join(DEFAULT_FILE_NAME);
    let len = g.total_bytes();
    let b = bar(show, len, "bytes");
    b.set_message("writing test file");
    let outcome = ensure_test_file(&path, len, &mut |d, _| b.set_position(d))?;
    b.finish_and_clear();
    let source = Source {
        kind: "synthetic",
        model: Some(a.name.clone()),
        table: g.kind,
        path,
        tensor: None,
        offset: 0,
        length: len,
        bits: Some(args.bits),
        scale: Some(args.scale),
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

/// The byte range and row size of a real tensor (or a raw `--offset/--length` region).
pub struct Region {
    pub offset: u64,
    pub length: u64,
    /// Rows of the tensor, when its shape is known.
    pub rows: Option<u64>,
}

/// Find `tensor` in a .gguf / .safetensors file via the checkpoint reader.
pub fn locate_region(file: &Path, tensor: &str) -> anyhow::Result<Region> {
    let (offset, length) = dhurandhar_checkpoint::locate_tensor(file, tensor)
        .with_context(|| format!("cannot locate tensor `{tensor}`"))?;
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

fn checkpoint_source(args: &Args, file: &Path) -> anyhow::Result<(TableGeometry, Source)> {
    let file_len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let region = match (&args.tensor, args.offset, args.length) {
        (Some(t), _, _) => locate_region(file, t)?,
        (None, Some(offset), Some(length)) => Region {
            offset,
            length,
            rows: None,
        },
        _ => bail!("--file needs --tensor NAME or --offset BYTES --length BYTES"),
    };
    if region.length == 0 {
        bail!("{}: the region to profile is empty", file.display());
    }
    if region
        .offset
        .checked_add(region.length)
        .is_none_or(|end| end > file_len)
    {
        bail!(
            "{}: region {}..{} lies beyond the end of the file ({file_len} bytes)",
            file.display(),
            region.offset,
            region.offset.saturating_add(region.length)
        );
    }
    let row_bytes = match (args.row_bytes, region.rows) {
        (Some(0), _) => bail!("--row-bytes must be > 0"),
        (Some(r), _) => r,
        (None, Some(rows)) if region.length % rows == 0 => region.length / rows,
        _ => 4096,
    };
    if row_bytes > region.length {
        bail!(
            "--row-bytes {row_bytes} is larger than the {}-byte region",
            region.length
        );
    }
    let rows = region.length / row_bytes;
    let slices = match args.slices {
        Some(0) => bail!("--slices must be > 0"),
        Some(k) if row_bytes % k as u64 != 0 => {
            bail!("--slices {k} does not divide the row size ({row_bytes} bytes)")
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
    let source = Source {
        kind: "checkpoint",
        model: None,
        table: TableKind::FileRegion,
        path: file.to_path_buf(),
        tensor: args.tensor.clone(),
        offset: region.offset,
        length: g.total_bytes(),
        bits: None,
        scale: None,
        full_table_bytes: region.length,
        rows,
        slices,
        slice_bytes: g.slice_bytes,
        bytes_per_token: row_bytes,
        file: None,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    Ok((g, source))
}

/// Largest k <= 16 dividing `row_bytes` with pieces of at least 16 bytes (1 if none).
fn default_slices(row_bytes: u64) -> u32 {
    (1..=16u32)
        .rev()
        .find(|&k| row_bytes.is_multiple_of(k as u64) && row_bytes / k as u64 >= 16)
        .unwrap_or(1)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) => with_commas(x, digits),
        None => "-".to_string(),
    }
}

/// 1234567.8 -> "1,234,567.8".
fn with_commas(x: f64, digits: usize) -> String {
    let s = format!("{:.*}", digits, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn print_report(r: &Report, interp: Interpretation) {
    let s = &r.source;
    match s.kind {
        "synthetic" => println!(
            "{} {} table at {} bits, scale {}: {} rows x {} B = {} ({}, {})",
            s.model.as_deref().unwrap_or("?"),
            match s.table {
                TableKind::PerLayerEmbedding => "per-layer-embedding",
                _ => "token-embedding",
            },
            s.bits.unwrap_or(0),
            s.scale.unwrap_or(0.0),
            s.rows,
            s.bytes_per_token,
            mib(s.length),
            s.path.display(),
            match s.file {
                Some(FileOutcome::Reused) => "reused",
                _ => "written",
            }
        ),
        _ => println!(
            "{}{}: {} rows x {} B at offset {} ({})",
            s.path.display(),
            s.tensor
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default(),
            s.rows,
            s.bytes_per_token,
            s.offset,
            mib(s.length)
        ),
    }
    if let Some(n) = &s.note {
        println!("note: {n}");
    }
    println!(
        "host: {}/{} page {} B; {} timed + {} warm-up tokens per run",
        r.host.os, r.host.arch, r.host.page_size, r.num_tokens, r.warmup_tokens
    );
    println!();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    // An Advice column only when several hints were compared for the same pattern and mode.
    let multi_advice = r.results.iter().enumerate().any(|(i, x)| {
        r.results[..i]
            .iter()
            .any(|y| y.pattern == x.pattern && y.mode == x.mode)
    });
    let mut header = vec!["Pattern", "Mode"];
    if multi_advice {
        header.push("Advice");
    }
    header.extend([
        "tok/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "cached before",
        "major faults",
    ]);
    t.set_header(header);
    for x in &r.results {
        let mut row = vec![Cell::new(x.pattern.name()), Cell::new(x.mode.name())];
        if multi_advice {
            row.push(Cell::new(x.advice.name()));
        }
        let num = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        row.extend([
            num(fmt_opt(x.tokens_per_s, 0)),
            num(fmt_opt(x.mb_per_s, 1)),
            num(fmt_opt(x.p50_us, 1)),
            num(fmt_opt(x.p99_us, 1)),
            num(fmt_opt(x.p999_us, 1)),
            num(x
                .resident_fraction_before
                .map(|f| format!("{:.1}%", f * 100.0))
                .unwrap_or_else(|| "?".into())),
            num(if x.tokens_per_s.is_some() {
                x.major_faults.to_string()
            } else {
                "-".into()
            }),
        ]);
        t.add_row(row);
    }
    println!("{t}");
    for x in r.results.iter().filter(|x| x.note.is_some()) {
        println!(
            "{} {}: {}",
            x.pattern.name(),
            x.mode.name(),
            x.note.as_deref().unwrap_or("")
        );
    }
    println!();
    let m = &r.memory;
    let o = |v: Option<u64>| v.map(mib).unwrap_or_else(|| "n/a".into());
    let peak_of = match m.measured_during {
        "decode_probe" => "during the decode probe",
        _ => "of the whole profiling run",
    };
    println!(
        "Memory: peak RSS {} ({peak_of}); RSS {} = anonymous {} + file-backed {}",
        o(m.now.peak_rss_bytes),
        o(m.now.rss_bytes),
        o(m.now.rss_anon_bytes),
        o(m.now.rss_file_bytes)
    );
    if let Some(p) = &m.probe {
        println!(
            "Memory probe ({} random tokens from a {} table, {} resident placeholder): peak sampled RSS {}, steady {}, table pages cached {}",
            p.tokens,
            if p.started_cold { "cold" } else { "cached" },
            mib(p.placeholder_bytes),
            o(p.peak_sampled_rss_bytes),
            o(p.steady_rss_bytes),
            o(p.table_resident_bytes)
        );
    }
    for b in &m.budgets {
        if interp != Interpretation::FullProcess {
            println!(
                "Budget {} ({}), weights only ({}): {}",
                b.budget.name,
                mib(b.budget.bytes),
                mib(b.weights_bytes),
                b.weights_only.as_str()
            );
        }
        if interp != Interpretation::WeightsOnly {
            println!(
                "Budget {} ({}), whole process: {} — {}",
                b.budget.name,
                mib(b.budget.bytes),
                b.whole_process.as_str(),
                b.reason
            );
        }
    }
    println!();
    println!(
        "Mmap gate (target {} tok/s, WARN within ±{:.0}%): {}",
        r.verdict.target_tps,
        r.verdict.warn_margin * 100.0,
        r.verdict.verdict.as_str()
    );
    println!("{}", r.verdict.reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_slices_divide_the_row() {
        assert_eq!(default_slices(612), 12);
        assert_eq!(default_slices(4096), 16);
        assert_eq!(default_slices(360), 15);
        assert_eq!(default_slices(17), 1);
        assert_eq!(default_slices(8), 1);
    }

    #[test]
    fn commas() {
        assert_eq!(with_commas(1234567.891, 1), "1,234,567.9");
        assert_eq!(with_commas(999.0, 0), "999");
        assert_eq!(with_commas(-1000.0, 0), "-1,000");
        assert_eq!(with_commas(0.25, 2), "0.25");
    }
}
