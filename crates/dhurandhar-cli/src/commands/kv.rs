//! `dhurandhar kv ...`: flags → [`dhurandhar::kv`] options → a table or JSON. The
//! `capture` subcommand lives in `kv_capture.rs`.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar::kv::{
    BenchOptions, BenchReport, Codec, CompareOptions, CompareReport, KvData, SpeedOptions,
    SpeedReport, DEFAULT_MODEL,
};
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};

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
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let opts = BenchOptions {
        model: a.model,
        seq_len: a.seq_len,
        codec: a.codec,
        bits: a.bits,
        distribution: a.distribution.parse()?,
        samples: a.samples,
        queries: a.queries,
        seed: a.seed,
    };
    bench(&opts, &a.out)
}

/// Run [`dhurandhar::kv::bench`] and print it (also the `dhurandhar-benchmark-kv` alias).
pub fn bench(opts: &BenchOptions, out: &OutputArgs) -> anyhow::Result<()> {
    let report = dhurandhar::kv::bench(opts, &out.progress(), &CancelToken::new())?;
    emit(out, &report, render_bench)
}

fn render_bench(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({}): KV codec {} at {} bits, {} tokens",
        r.model, r.origin, r.codec, r.bits, r.seq_len
    );
    let _ = writeln!(s);
    let _ = writeln!(s,
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
    let _ = writeln!(s, "{t}");
    let fp = &r.footprint;
    let _ = writeln!(s);
    let _ = writeln!(s, "KV cache at {} tokens", fp.seq_len);
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
    let _ = writeln!(s, "{t}");
    let _ = writeln!(s,
        "ratio {:.2}x, {:.3} bits/value stored; layers: {} fresh, {} shared-KV (no storage), {} without KV; {} sliding, {} global",
        fp.ratio,
        fp.bits_per_value,
        fp.fresh_layers,
        fp.shared_layers,
        fp.ssm_layers,
        fp.sliding_layers,
        fp.global_layers
    );
    s
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
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let opts = CompareOptions {
        data: if a.data == "synthetic" {
            KvData::Synthetic
        } else {
            KvData::File(PathBuf::from(&a.data))
        },
        head_dim: a.head_dim,
        kv_heads: a.num_kv_heads,
        seq_len: a.seq_len,
        distribution: a.distribution.parse()?,
        bits: a.bits,
        codecs: expand_codecs(&a.codecs),
        tensor: a.tensor,
        layers: a.layer,
        queries: a.queries,
        amortize_tokens: a.amortize_tokens,
        timing: !a.no_timing,
        seed: a.seed,
    };
    compare(&opts, &a.out)
}

/// Run [`dhurandhar::kv::compare`] and print it (also the `dhurandhar-compare-codecs` alias).
pub fn compare(opts: &CompareOptions, out: &OutputArgs) -> anyhow::Result<()> {
    let report = dhurandhar::kv::compare(opts, &out.progress(), &CancelToken::new())?;
    emit(out, &report, render_compare)
}

fn render_compare(r: &CompareReport) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = match &c.file {
        Some(fs) => writeln!(
            s,
            "{}: {} heads × {} tokens, head_dim {} ({}; queries: {})",
            c.data, fs.heads, fs.tokens, c.head_dim, fs.layout, fs.queries
        ),
        None => writeln!(
            s,
            "synthetic {}: {} KV heads × {} tokens, head_dim {}, seed {}",
            c.distribution.unwrap_or("?"),
            c.kv_heads,
            c.seq_len,
            c.head_dim,
            c.seed
        ),
    };
    let _ = writeln!(s, "bits/value = stored bytes × 8 / values (K and V, all side information); quality = median over heads [worst head]");
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
    let _ = writeln!(s, "{t}");
    if !r.skipped.is_empty() {
        let list: Vec<String> = r
            .skipped
            .iter()
            .map(|k| format!("{}@{} ({})", k.codec, k.bits, k.reason))
            .collect();
        let _ = writeln!(s, "not run: {}", list.join("; "));
    }
    let _ = writeln!(s);
    let timed = r.stage1.iter().any(|s| s.ns_per_vector.is_some());
    let how = if timed {
        format!(" and measured ns/vector (1 thread, {} kernels)", c.kernel)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "Stage 1 (rotation) at head_dim {}: counted ops per vector (add, mul or FMA = 1){how}",
        c.head_dim
    );
    let mut t = table();
    t.set_header(vec!["codec", "transform", "ops/vector", "ns/vector"]);
    for st in &r.stage1 {
        t.add_row(vec![
            Cell::new(st.codec),
            Cell::new(st.transform),
            right(st.ops_per_vector.to_string()),
            right(
                st.ns_per_vector
                    .map_or("-".to_string(), |v| format!("{v:.1}")),
            ),
        ]);
    }
    let _ = writeln!(s, "{t}");
    s
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
    /// JSON: the first run's fields at the top level, every run in `runs`.
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_speed(a: SpeedArgs) -> anyhow::Result<()> {
    let opts = SpeedOptions {
        head_dims: a.head_dim,
        codecs: expand_codecs(&a.codec),
        bits: a.bits,
        threads: a.threads,
        role: a.role.parse()?,
        vectors: a.vectors,
        min_seconds: a.min_seconds,
    };
    let report = dhurandhar::kv::speed(&opts, &a.out.progress(), &CancelToken::new())?;
    emit(&a.out, &report, render_speed)
}

fn render_speed(rep: &SpeedReport) -> String {
    let mut s = String::new();
    let first = &rep.first;
    let _ = writeln!(s,
        "best of repeated trials over {} vectors, {} role, {} kernels; GB/s counts the f32 bytes (head_dim × 4 per vector)",
        first.vectors,
        first.role.as_str(),
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
    for r in &rep.runs {
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
    let _ = writeln!(s, "{t}");
    if !rep.skipped.is_empty() {
        let _ = writeln!(s, "skipped: {}", rep.skipped.join("; "));
    }
    s
}
