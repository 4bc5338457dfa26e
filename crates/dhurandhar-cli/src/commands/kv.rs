//! `dhurandhar kv ...`: benchmark a codec on a model, compare codecs, measure speed,
//! capture real KV (the `capture` subcommand lives in `kv_capture.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar_kv::compare::{CompareOptions, Row, Skipped};
use dhurandhar_kv::speed::{SpeedOptions, SpeedReport, Stage1Cost};
use dhurandhar_kv::synth::{synthetic_heads, Distribution};
use dhurandhar_kv::tensorfile::{heads_from_file, FileSummary, HeadSelect};
use dhurandhar_kv::{Codec, CodecSpec, Footprint, KvRole};
use serde::Serialize;

use crate::output::{print_json, write_json_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Quality of a codec on a model's KV geometry and the KV-cache footprint at a length.
    Bench(BenchArgs),
    /// Side-by-side sweep of codecs × bit budgets on synthetic or captured KV.
    Compare(CompareArgs),
    /// Encode / decode ns per vector and GB/s next to a memcpy of the same bytes.
    Speed(SpeedArgs),
    /// Capture real K/V/Q tensors from a GGUF model into a safetensors file.
    Capture(super::kv_capture::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KvCommand::Bench(a) => run_bench(a),
        KvCommand::Compare(a) => run_compare(a),
        KvCommand::Speed(a) => run_speed(a),
        KvCommand::Capture(a) => super::kv_capture::run(a),
    }
}

/// Default model of `kv bench` (the Python tool's).
pub const DEFAULT_MODEL: &str = "gemma4-e2b";

fn parse_dist(s: &str) -> anyhow::Result<Distribution> {
    Ok(s.parse::<Distribution>()?)
}

/// One item of a comma-separated codec list: a codec, or `all` (every codec).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CodecArg {
    All,
    One(Codec),
}

impl std::str::FromStr for CodecArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(CodecArg::All);
        }
        s.parse().map(CodecArg::One).map_err(|_| {
            format!(
                "unknown codec `{s}` (known: {}, or `all`)",
                Codec::known_names()
            )
        })
    }
}

/// The codecs a list names, `all` expanded to [`Codec::ALL`].
pub fn expand_codecs(list: &[CodecArg]) -> Vec<Codec> {
    let mut out = Vec::new();
    for c in list {
        match c {
            CodecArg::All => out.extend(Codec::ALL),
            CodecArg::One(c) => out.push(*c),
        }
    }
    out
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() && v != 0.0 && v.abs() < 10f64.powi(-(digits as i32)) {
        format!("{v:.2e}")
    } else {
        format!("{v:.digits$}")
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------- bench

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Built-in model name, YAML profile, or checkpoint (GGUF / safetensors / config.json).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Sequence length of the footprint (sliding layers are capped at their window).
    #[arg(long, default_value_t = 32768)]
    pub seq_len: u64,
    /// Codec (see `kv compare --help` for the list).
    #[arg(long, default_value = "turbo-mse")]
    pub codec: Codec,
    /// Bit budget (for `turbo`/`rotor`: the residual bits).
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Synthetic KV for the quality block: gaussian, outlier-channels, low-rank,
    /// imbalanced-norms.
    #[arg(long, default_value = "outlier-channels")]
    pub distribution: String,
    /// Tokens per KV head in the quality block.
    #[arg(long, default_value_t = 1024)]
    pub samples: usize,
    /// Queries per KV head for the attention metrics.
    #[arg(long, default_value_t = 64)]
    pub queries: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Serialize)]
struct GeometryQuality {
    head_dim: u32,
    kv_heads: u32,
    fresh_layers: usize,
    #[serde(flatten)]
    row: Row,
}

#[derive(Serialize)]
struct BenchJson {
    model: String,
    origin: String,
    seq_len: u64,
    codec: Codec,
    bits: u32,
    distribution: &'static str,
    samples: usize,
    quality: Vec<GeometryQuality>,
    footprint: Footprint,
}

pub fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let dist = parse_dist(&a.distribution)?;
    if a.samples < 2 {
        anyhow::bail!("--samples must be at least 2");
    }
    let m = super::model_arg::resolve_model(&a.model)?;
    let arch = &m.arch;
    let footprint = dhurandhar_kv::footprint(arch, a.seq_len, a.codec, a.bits, a.seed)?;
    // One quality block per distinct (head_dim, kv_heads) of the fresh layers.
    let mut geoms: Vec<(u32, u32, usize)> = Vec::new();
    for l in arch.layers() {
        if l.kv != dhurandhar_model::KvSource::Fresh {
            continue;
        }
        match geoms
            .iter_mut()
            .find(|g| g.0 == l.head_dim && g.1 == l.kv_heads)
        {
            Some(g) => g.2 += 1,
            None => geoms.push((l.head_dim, l.kv_heads, 1)),
        }
    }
    let opts = CompareOptions {
        codecs: vec![a.codec],
        bits: vec![a.bits],
        seed: a.seed,
        amortize_tokens: Some(a.seq_len as usize),
    };
    let mut quality = Vec::new();
    for (d, h, n) in geoms {
        let heads = synthetic_heads(dist, a.samples, h as usize, d as usize, a.queries, a.seed);
        let (rows, skipped) = dhurandhar_kv::compare(&heads, &opts)?;
        if let Some(s) = skipped.first() {
            anyhow::bail!(
                "codec `{}` cannot run at {} bits: {}",
                s.codec,
                s.bits,
                s.reason
            );
        }
        for row in rows {
            quality.push(GeometryQuality {
                head_dim: d,
                kv_heads: h,
                fresh_layers: n,
                row,
            });
        }
    }
    let report = BenchJson {
        model: arch.name.clone(),
        origin: m.origin.clone(),
        seq_len: a.seq_len,
        codec: a.codec,
        bits: a.bits,
        distribution: dist.name(),
        samples: a.samples,
        quality,
        footprint,
    };
    if let Some(p) = &a.json_out {
        write_json_file(p, &report)?;
    }
    if a.json {
        return print_json(&report);
    }
    print_bench(&report);
    Ok(())
}

fn print_bench(r: &BenchJson) {
    println!(
        "{} ({}): KV codec {} at {} bits, {} tokens",
        r.model, r.origin, r.codec, r.bits, r.seq_len
    );
    println!();
    println!(
        "Quality on synthetic {} KV, {} tokens per KV head (medians over heads; worst head in brackets)",
        r.distribution, r.samples
    );
    let mut t = table();
    t.set_header(vec![
        "head_dim",
        "kv heads",
        "layers",
        "bits/value",
        "nmse",
        "cosine",
        "ip slope",
        "attn rel err",
        "attn KL",
    ]);
    for q in &r.quality {
        let w = &q.row.worst;
        t.add_row(vec![
            right(q.head_dim.to_string()),
            right(q.kv_heads.to_string()),
            right(q.fresh_layers.to_string()),
            right(f(q.row.bits_per_value, 3)),
            right(format!("{} [{}]", f(q.row.nmse, 4), f(w.nmse.value, 4))),
            right(f(q.row.cosine, 4)),
            right(f(q.row.ip_bias_slope, 3)),
            right(format!(
                "{} [{}]",
                f(q.row.attn_rel_err, 4),
                f(w.attn_rel_err.value, 4)
            )),
            right(f(q.row.attn_kl, 5)),
        ]);
    }
    println!("{t}");
    let fp = &r.footprint;
    println!();
    println!("KV cache at {} tokens", fp.seq_len);
    let mut t = table();
    t.set_header(vec!["", "bytes", "MiB"]);
    t.add_row(vec![
        Cell::new("baseline (bf16)"),
        right(fp.baseline_bytes.to_string()),
        right(mib(fp.baseline_bytes)),
    ]);
    t.add_row(vec![
        Cell::new(format!("{} {}-bit", fp.codec, fp.bits)),
        right(fp.compressed_bytes.to_string()),
        right(mib(fp.compressed_bytes)),
    ]);
    t.add_row(vec![
        Cell::new("savings"),
        right(fp.savings_bytes.to_string()),
        right(mib(fp.savings_bytes)),
    ]);
    println!("{t}");
    println!(
        "ratio {:.2}x, {:.3} bits/value stored; layers: {} fresh, {} shared-KV (no storage), {} without KV; {} sliding, {} global",
        fp.ratio,
        fp.bits_per_value,
        fp.fresh_layers,
        fp.shared_layers,
        fp.ssm_layers,
        fp.sliding_layers,
        fp.global_layers
    );
}

// ---------------------------------------------------------------- compare

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// head_dim of synthetic data (a file's own head_dim is used with --data FILE).
    #[arg(long, default_value_t = 256)]
    pub head_dim: usize,
    /// KV heads of synthetic data.
    #[arg(long, default_value_t = 4)]
    pub num_kv_heads: usize,
    /// Tokens per head of synthetic data.
    #[arg(long, default_value_t = 2048)]
    pub seq_len: usize,
    /// Bit budgets, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,6,8")]
    pub bits: Vec<u32>,
    /// Codecs, comma-separated, or `all`: turbo, turbo-mse, turbo-prod, rotor, spectral,
    /// oscar, q8_0, q4_0, q4_0-rot, kivi2.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub codecs: Vec<CodecArg>,
    /// `synthetic`, or a safetensors / .npy file of KV tensors ([..., head_dim]).
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Synthetic distribution: gaussian, outlier-channels, low-rank, imbalanced-norms.
    #[arg(long, default_value = "outlier-channels")]
    pub distribution: String,
    /// With --data FILE: use this tensor as K and V.
    #[arg(long)]
    pub tensor: Option<String>,
    /// With a captured file: only these layers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub layer: Vec<usize>,
    /// Queries per KV head for the attention metrics.
    #[arg(long, default_value_t = 64)]
    pub queries: usize,
    /// Amortise per-head side information (SpectralQuant calibration) over this many
    /// tokens; default: the tokens of each head in the data.
    #[arg(long)]
    pub amortize_tokens: Option<usize>,
    /// Skip the stage-1 timing (the table and JSON are then fully deterministic).
    #[arg(long)]
    pub no_timing: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Serialize)]
struct CompareConfig {
    data: String,
    distribution: Option<&'static str>,
    file: Option<FileSummary>,
    head_dim: usize,
    kv_heads: usize,
    seq_len: usize,
    queries: usize,
    seed: u64,
    kernel: &'static str,
}

#[derive(Serialize)]
struct CompareJson {
    config: CompareConfig,
    rows: Vec<Row>,
    skipped: Vec<Skipped>,
    stage1: Vec<Stage1Cost>,
}

fn load_file_heads(
    path: &Path,
    a: &CompareArgs,
) -> anyhow::Result<(Vec<dhurandhar_kv::HeadData>, FileSummary)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_npy =
        path.extension().and_then(|e| e.to_str()) == Some("npy") || bytes.starts_with(b"\x93NUMPY");
    let file = if is_npy {
        dhurandhar_kv::tensorfile::parse_npy(&bytes)
    } else {
        let tensor = a.tensor.clone();
        let layers = a.layer.clone();
        dhurandhar_kv::tensorfile::parse_safetensors(&bytes, move |n| match &tensor {
            Some(t) => n == t,
            None if layers.is_empty() => true,
            None => layers.iter().any(|l| {
                let p = format!("layers.{l}.");
                n.strip_prefix(&p)
                    .is_some_and(|r| matches!(r, "k" | "v" | "q"))
            }),
        })
    }
    .with_context(|| format!("cannot read KV tensors from {}", path.display()))?;
    let sel = HeadSelect {
        tensor: if is_npy { None } else { a.tensor.clone() },
        layers: a.layer.clone(),
        queries: a.queries,
        seed: a.seed,
    };
    heads_from_file(&file, &sel).with_context(|| format!("cannot use {}", path.display()))
}

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let codecs = expand_codecs(&a.codecs);
    if a.bits.is_empty() {
        anyhow::bail!("--bits is empty");
    }
    if a.queries == 0 {
        anyhow::bail!("--queries must be at least 1");
    }
    let (heads, file, dist) = if a.data == "synthetic" {
        let dist = parse_dist(&a.distribution)?;
        if a.head_dim == 0 || a.head_dim > dhurandhar_kv::MAX_HEAD_DIM {
            anyhow::bail!("--head-dim must be in 1..={}", dhurandhar_kv::MAX_HEAD_DIM);
        }
        if a.seq_len < 2 || a.num_kv_heads == 0 {
            anyhow::bail!("--seq-len must be at least 2 and --num-kv-heads at least 1");
        }
        let heads = synthetic_heads(
            dist,
            a.seq_len,
            a.num_kv_heads,
            a.head_dim,
            a.queries,
            a.seed,
        );
        (heads, None, Some(dist.name()))
    } else {
        let (h, s) = load_file_heads(Path::new(&a.data), &a)?;
        (h, Some(s), None)
    };
    let d = heads[0].d;
    let opts = CompareOptions {
        codecs: codecs.clone(),
        bits: a.bits.clone(),
        seed: a.seed,
        amortize_tokens: a.amortize_tokens,
    };
    let (rows, skipped) = dhurandhar_kv::compare(&heads, &opts)?;
    let stage1 = codecs
        .iter()
        .map(|&c| dhurandhar_kv::stage1_cost(c, d, a.seed, !a.no_timing))
        .collect();
    let report = CompareJson {
        config: CompareConfig {
            data: a.data.clone(),
            distribution: dist,
            kv_heads: if file.is_some() {
                heads.len()
            } else {
                a.num_kv_heads
            },
            file,
            head_dim: d,
            seq_len: heads[0].tokens(),
            queries: a.queries,
            seed: a.seed,
            kernel: dhurandhar_kv::simd::kernel_name(),
        },
        rows,
        skipped,
        stage1,
    };
    if let Some(p) = &a.json_out {
        write_json_file(p, &report)?;
    }
    if a.json {
        return print_json(&report);
    }
    print_compare(&report);
    Ok(())
}

fn print_compare(r: &CompareJson) {
    let c = &r.config;
    match &c.file {
        Some(fs) => println!(
            "{}: {} heads × {} tokens, head_dim {} ({}; queries: {})",
            c.data, fs.heads, fs.tokens, c.head_dim, fs.layout, fs.queries
        ),
        None => println!(
            "synthetic {}: {} KV heads × {} tokens, head_dim {}, seed {}",
            c.distribution.unwrap_or("?"),
            c.kv_heads,
            c.seq_len,
            c.head_dim,
            c.seed
        ),
    }
    println!("bits/value = stored bytes × 8 / values (K and V, all side information); quality = median over heads [worst head]");
    let mut t = table();
    t.set_header(vec![
        "codec",
        "bits",
        "bits/value",
        "vs bf16",
        "nmse",
        "cosine",
        "norm ratio",
        "ip slope",
        "attn rel err",
        "attn KL",
    ]);
    for row in &r.rows {
        t.add_row(vec![
            Cell::new(row.codec),
            right(row.bits.to_string()),
            right(f(row.bits_per_value, 3)),
            right(format!("{:.2}x", row.compression_vs_bf16)),
            right(format!(
                "{} [{}]",
                f(row.nmse, 4),
                f(row.worst.nmse.value, 4)
            )),
            right(f(row.cosine, 4)),
            right(f(row.norm_ratio, 4)),
            right(f(row.ip_bias_slope, 3)),
            right(format!(
                "{} [{}]",
                f(row.attn_rel_err, 4),
                f(row.worst.attn_rel_err.value, 4)
            )),
            right(f(row.attn_kl, 5)),
        ]);
    }
    println!("{t}");
    if !r.skipped.is_empty() {
        let s: Vec<String> = r
            .skipped
            .iter()
            .map(|s| format!("{}@{} ({})", s.codec, s.bits, s.reason))
            .collect();
        println!("not run: {}", s.join("; "));
    }
    println!();
    let timed = r.stage1.iter().any(|s| s.ns_per_vector.is_some());
    let how = if timed {
        format!(" and measured ns/vector (1 thread, {} kernels)", c.kernel)
    } else {
        String::new()
    };
    println!(
        "Stage 1 (rotation) at head_dim {}: counted ops per vector (add, mul or FMA = 1){how}",
        c.head_dim
    );
    let mut t = table();
    t.set_header(vec!["codec", "transform", "ops/vector", "ns/vector"]);
    for s in &r.stage1 {
        t.add_row(vec![
            Cell::new(s.codec),
            Cell::new(s.transform),
            right(s.ops_per_vector.to_string()),
            right(
                s.ns_per_vector
                    .map_or("-".to_string(), |v| format!("{v:.1}")),
            ),
        ]);
    }
    println!("{t}");
}

// ---------------------------------------------------------------- speed

#[derive(Debug, clap::Args)]
pub struct SpeedArgs {
    /// head_dim(s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub head_dim: Vec<usize>,
    /// Codec(s), comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "turbo-mse")]
    pub codec: Vec<CodecArg>,
    /// Bit budget (codecs that do not support it are skipped with a note).
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Thread counts, comma-separated; 0 = all cores. Default: 1 and all cores.
    #[arg(long, value_delimiter = ',', default_value = "1,0")]
    pub threads: Vec<usize>,
    /// key or value path (they differ for oscar and kivi2).
    #[arg(long, default_value = "key")]
    pub role: String,
    /// Vectors per batch.
    #[arg(long, default_value_t = 4096)]
    pub vectors: usize,
    /// Minimum time per measurement; each figure is the best of the trials run.
    #[arg(long, default_value_t = 0.3)]
    pub min_seconds: f64,
    /// Print JSON: the first run's fields at the top level, every run in `runs`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct SpeedJson {
    #[serde(flatten)]
    first: SpeedReport,
    runs: Vec<SpeedReport>,
    skipped: Vec<String>,
}

pub fn run_speed(a: SpeedArgs) -> anyhow::Result<()> {
    let codecs = expand_codecs(&a.codec);
    let role = match a.role.as_str() {
        "key" | "k" => KvRole::Key,
        "value" | "v" => KvRole::Value,
        r => anyhow::bail!("--role must be key or value, not `{r}`"),
    };
    if a.vectors == 0 || a.vectors > 1 << 22 {
        anyhow::bail!("--vectors must be in 1..=4194304");
    }
    if !(a.min_seconds.is_finite() && a.min_seconds >= 0.0 && a.min_seconds <= 60.0) {
        anyhow::bail!("--min-seconds must be in 0..=60");
    }
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for &d in &a.head_dim {
        for &c in &codecs {
            if !c.supported_bits().contains(&a.bits) {
                skipped.push(format!("{c} does not support {} bits", a.bits));
                continue;
            }
            for &t in &a.threads {
                let opts = SpeedOptions {
                    spec: CodecSpec {
                        codec: c,
                        bits: a.bits,
                        head_dim: d,
                        seed: dhurandhar_kv::DEFAULT_SEED,
                    },
                    role,
                    threads: t,
                    vectors: a.vectors,
                    min_seconds: a.min_seconds,
                };
                runs.push(dhurandhar_kv::measure(&opts)?);
            }
        }
    }
    skipped.dedup();
    let Some(first) = runs.first().cloned() else {
        anyhow::bail!("nothing to measure: {}", skipped.join("; "));
    };
    if a.json {
        return print_json(&SpeedJson {
            first,
            runs,
            skipped,
        });
    }
    println!(
        "best of repeated trials over {} vectors, {} role, {} kernels; GB/s counts the f32 bytes (head_dim × 4 per vector)",
        first.vectors,
        role.as_str(),
        first.kernel
    );
    let mut t = table();
    t.set_header(vec![
        "codec",
        "bits",
        "head_dim",
        "threads",
        "B/vector",
        "encode ns",
        "decode ns",
        "memcpy ns",
        "encode GB/s",
        "decode GB/s",
        "memcpy GB/s",
        "(enc+dec)/memcpy",
    ]);
    for r in &runs {
        t.add_row(vec![
            Cell::new(r.codec),
            right(r.bits.to_string()),
            right(r.head_dim.to_string()),
            right(r.threads.to_string()),
            right(format!("{:.1}", r.encoded_bytes_per_vector)),
            right(format!("{:.1}", r.encode_ns_per_vector)),
            right(format!("{:.1}", r.decode_ns_per_vector)),
            right(format!("{:.1}", r.memcpy_ns_per_vector)),
            right(format!("{:.2}", r.encode_gb_per_s)),
            right(format!("{:.2}", r.decode_gb_per_s)),
            right(format!("{:.2}", r.memcpy_gb_per_s)),
            right(format!("{:.1}x", r.encode_decode_vs_memcpy)),
        ]);
    }
    println!("{t}");
    if !skipped.is_empty() {
        println!("skipped: {}", skipped.join("; "));
    }
    Ok(())
}
