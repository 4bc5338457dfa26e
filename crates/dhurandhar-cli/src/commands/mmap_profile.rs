//! `dhurandhar mmap-profile` (alias `dhurandhar-profile-mmap`): flags → [`ProfileOptions`]
//! → [`dhurandhar::profile::run`] → table or JSON. All deciding and measuring is in the
//! library.

use std::fmt::{self, Write};
use std::path::PathBuf;

use anyhow::anyhow;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use dhurandhar::dhurandhar_profile::{
    Advice, Budget, FileOutcome, Mode, Pattern, ProfileError, TableKind, DEFAULT_WARN_MARGIN,
};
use dhurandhar::profile::{
    FileRegion, MeasuredDuring, ProfileOptions, ProfileReport, SourceKind, TableSource,
};
use dhurandhar::units::human_bytes;
use dhurandhar::{CancelToken, Error};

use crate::output::{emit, OutputArgs};
use crate::render::{bytes_or_na, num, table};

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
    #[arg(long, value_delimiter = ',',
          value_parser = PossibleValuesParser::new(Pattern::ALL.map(Pattern::name))
              .map(|s| Pattern::parse(&s).unwrap_or(Pattern::RandomDecode)),
          default_values = ["sequential_prefill", "random_decode", "random_scatter"])]
    pub patterns: Vec<Pattern>,
    /// madvise hint(s) to compare (comma-separated); auto = SEQUENTIAL for the sequential
    /// pattern, RANDOM for the random ones.
    #[arg(long, value_delimiter = ',', default_values = ["auto"],
          value_parser = PossibleValuesParser::new(Advice::ALL.map(Advice::name))
              .map(|s| Advice::parse(&s).unwrap_or(Advice::Auto)))]
    pub advice: Vec<Advice>,
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
    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = options(&args)?;
    let report = dhurandhar::profile::run(&opts, &args.out.progress(), &CancelToken::new())
        .map_err(with_flags)?;
    emit(&args.out, &report, |r| {
        render(r, args.budget_interpretation)
    })
}

fn options(a: &Args) -> anyhow::Result<ProfileOptions> {
    let table = match (&a.file, &a.tensor, a.offset, a.length) {
        (None, ..) => TableSource::Synthetic {
            model: a.model.clone(),
            scale: a.scale,
            cache_dir: a.cache_dir.clone(),
        },
        (Some(f), t, offset, length) => TableSource::File {
            path: f.clone(),
            region: match (t, offset, length) {
                (Some(t), ..) => FileRegion::Tensor(t.clone()),
                (None, Some(offset), Some(length)) => FileRegion::Bytes { offset, length },
                _ => anyhow::bail!("--file needs --tensor NAME or --offset BYTES --length BYTES"),
            },
            row_bytes: a.row_bytes,
            slices: a.slices,
        },
    };
    let modes = [(Mode::Cold, !a.warm_only), (Mode::Warm, !a.cold_only)];
    Ok(ProfileOptions {
        table,
        bits: a.bits,
        num_tokens: a.num_tokens,
        warmup_tokens: a.warmup_tokens,
        target_tps: a.target_tps,
        warn_margin: a.warn_margin,
        patterns: a.patterns.clone(),
        advice: a.advice.clone(),
        modes: modes.into_iter().filter(|m| m.1).map(|m| m.0).collect(),
        populate: a.populate,
        measure_memory: a.measure_memory,
        resident_mb: a.resident_mb,
        budgets: a
            .budget
            .iter()
            .map(|b| Budget::parse(b))
            .collect::<Result<_, _>>()?,
        seed: a.seed,
    })
}

/// The library names option fields; say them as the flags a user typed.
fn with_flags(e: Error) -> anyhow::Error {
    match e {
        Error::InvalidOption { option, reason } => {
            anyhow!("--{}: {reason}", option.replace('_', "-"))
        }
        e @ Error::Profile(ProfileError::NoSpace { .. }) => anyhow!("{e} (--scale, --cache-dir)"),
        e => e.into(),
    }
}

fn render(r: &ProfileReport, interp: Interpretation) -> String {
    let mut s = String::new();
    let _ = write_report(&mut s, r, interp);
    s
}

fn write_report(w: &mut String, r: &ProfileReport, interp: Interpretation) -> fmt::Result {
    let s = &r.source;
    let (rows, bpt, path) = (s.rows, s.bytes_per_token, s.path.display());
    let size = human_bytes(s.length);
    if s.kind == SourceKind::Synthetic {
        let model = s.model.as_deref().unwrap_or("?");
        let table = match s.table {
            TableKind::PerLayerEmbedding => "per-layer-embedding",
            _ => "token-embedding",
        };
        let (bits, scale) = (s.bits.unwrap_or(0), s.scale.unwrap_or(0.0));
        let reused = s.file == Some(FileOutcome::Reused);
        let how = if reused { "reused" } else { "written" };
        let line = format!("{model} {table} table at {bits} bits, scale {scale}: {rows} rows");
        writeln!(w, "{line} x {bpt} B = {size} ({path}, {how})")?;
    } else {
        let (tensor, offset) = (s.tensor.as_deref().unwrap_or_default(), s.offset);
        let tensor = if tensor.is_empty() {
            String::new()
        } else {
            format!(" [{tensor}]")
        };
        writeln!(
            w,
            "{path}{tensor}: {rows} rows x {bpt} B at offset {offset} ({size})"
        )?;
    }
    if let Some(n) = &s.note {
        writeln!(w, "note: {n}")?;
    }
    let h = &r.host;
    let (os, arch, page, n, warm) = (&h.os, &h.arch, h.page_size, r.num_tokens, r.warmup_tokens);
    writeln!(
        w,
        "host: {os}/{arch} page {page} B; {n} timed + {warm} warm-up tokens per run\n"
    )?;
    // An Advice column only when several hints were compared for the same pattern and mode.
    let multi = r.compares_advice();
    let advice = if multi { "Advice|" } else { "" };
    let header = format!(
        "Pattern|Mode|{advice}tok/s|MB/s|p50 µs|p99 µs|p99.9 µs|cached before|major faults"
    );
    let first = if multi { 3 } else { 2 };
    let mut t = table(&header, &Vec::from_iter(first..first + 7));
    for x in &r.results {
        let mut row = vec![x.pattern.name().to_string(), x.mode.name().to_string()];
        row.extend(multi.then(|| x.advice.name().to_string()));
        let cached = x
            .resident_fraction_before
            .map(|f| format!("{:.1}%", 100.0 * f));
        let faults = x.tokens_per_s.map(|_| x.major_faults.to_string());
        row.extend([
            num(x.tokens_per_s, 0),
            num(x.mb_per_s, 1),
            num(x.p50_us, 1),
            num(x.p99_us, 1),
            num(x.p999_us, 1),
            cached.unwrap_or_else(|| "?".into()),
            faults.unwrap_or_else(|| "-".into()),
        ]);
        t.add_row(row);
    }
    writeln!(w, "{t}")?;
    for x in &r.results {
        if let Some(n) = &x.note {
            writeln!(w, "{} {}: {n}", x.pattern.name(), x.mode.name())?;
        }
    }
    let m = &r.memory;
    let o = bytes_or_na;
    let peak_of = match m.measured_during {
        MeasuredDuring::DecodeProbe => "during the decode probe",
        MeasuredDuring::WholeRun => "of the whole profiling run",
    };
    let (peak, rss) = (o(m.now.peak_rss_bytes), o(m.now.rss_bytes));
    let (anon, file) = (o(m.now.rss_anon_bytes), o(m.now.rss_file_bytes));
    writeln!(
        w,
        "\nMemory: peak RSS {peak} ({peak_of}); RSS {rss} = anonymous {anon} + file-backed {file}"
    )?;
    if let Some(p) = &m.probe {
        let from = if p.started_cold { "cold" } else { "cached" };
        let (n, held) = (p.tokens, human_bytes(p.placeholder_bytes));
        let (peak, steady) = (o(p.peak_sampled_rss_bytes), o(p.steady_rss_bytes));
        let cached = o(p.table_resident_bytes);
        write!(w, "Memory probe ({n} random tokens from a {from} table, ")?;
        write!(w, "{held} resident placeholder): peak sampled RSS {peak}, ")?;
        writeln!(w, "steady {steady}, table pages cached {cached}")?;
    }
    for b in &m.budgets {
        let (name, size) = (&b.budget.name, human_bytes(b.budget.bytes));
        if interp != Interpretation::FullProcess {
            let (weights, v) = (human_bytes(b.weights_bytes), b.weights_only.as_str());
            writeln!(w, "Budget {name} ({size}), weights only ({weights}): {v}")?;
        }
        if interp != Interpretation::WeightsOnly {
            let (v, why) = (b.whole_process.as_str(), &b.reason);
            writeln!(w, "Budget {name} ({size}), whole process: {v} — {why}")?;
        }
    }
    let v = &r.verdict;
    let (target, margin, verdict) = (v.target_tps, v.warn_margin * 100.0, v.verdict.as_str());
    writeln!(
        w,
        "\nMmap gate (target {target} tok/s, WARN within ±{margin:.0}%): {verdict}"
    )?;
    writeln!(w, "{}", v.reason)
}
