//! `dhurandhar kv ...`: flags → [`dhurandhar::kv`] options → a table or JSON. The
//! `capture` subcommand lives in `kv_capture.rs`.

use std::fmt::Write as _;

use clap::Subcommand;
use dhurandhar::kv::{
    BenchOptions, BenchReport, Codec, CodecChoice, CompareOptions, CompareReport, KvData,
    SpeedOptions, SpeedReport, DEFAULT_MODEL,
};
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};
use crate::render::{f, mib, table, with_worst};

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
    let header = "head_dim|kv heads|layers|bits/value|nmse|cosine|ip slope|attn rel err|attn KL";
    let mut t = table(header, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    for q in &r.quality {
        let (row, w) = (&q.row, &q.row.worst);
        t.add_row([
            q.head_dim.to_string(),
            q.kv_heads.to_string(),
            q.fresh_layers.to_string(),
            f(row.bits_per_value, 3),
            with_worst(row.nmse, w.nmse.value, 4),
            f(row.cosine, 4),
            f(row.ip_bias_slope, 3),
            with_worst(row.attn_rel_err, w.attn_rel_err.value, 4),
            f(row.attn_kl, 5),
        ]);
    }
    let _ = writeln!(s, "{t}");
    let fp = &r.footprint;
    let _ = writeln!(s);
    let _ = writeln!(s, "KV cache at {} tokens", fp.seq_len);
    let mut t = table("|bytes|MiB", &[1, 2]);
    let compressed = format!("{} {}-bit", fp.codec, fp.bits);
    for (name, bytes) in [
        ("baseline (bf16)", fp.baseline_bytes),
        (compressed.as_str(), fp.compressed_bytes),
        ("savings", fp.savings_bytes),
    ] {
        t.add_row([name.to_string(), bytes.to_string(), mib(bytes)]);
    }
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
    pub codecs: Vec<CodecChoice>,
    /// `synthetic`, or a safetensors / .npy file of KV tensors ([..., head_dim]).
    #[arg(long, default_value = "synthetic")]
    pub data: KvData,
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
        data: a.data,
        head_dim: a.head_dim,
        kv_heads: a.num_kv_heads,
        seq_len: a.seq_len,
        distribution: a.distribution.parse()?,
        bits: a.bits,
        codecs: CodecChoice::expand(&a.codecs),
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
    let header =
        "codec|bits|bits/value|vs bf16|nmse|cosine|norm ratio|ip slope|attn rel err|attn KL";
    let mut t = table(header, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for row in &r.rows {
        t.add_row([
            row.codec.to_string(),
            row.bits.to_string(),
            f(row.bits_per_value, 3),
            format!("{:.2}x", row.compression_vs_bf16),
            with_worst(row.nmse, row.worst.nmse.value, 4),
            f(row.cosine, 4),
            f(row.norm_ratio, 4),
            f(row.ip_bias_slope, 3),
            with_worst(row.attn_rel_err, row.worst.attn_rel_err.value, 4),
            f(row.attn_kl, 5),
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
    let mut t = table("codec|transform|ops/vector|ns/vector", &[2, 3]);
    for st in &r.stage1 {
        let ns = st
            .ns_per_vector
            .map_or("-".to_string(), |v| format!("{v:.1}"));
        t.add_row([
            st.codec.to_string(),
            st.transform.to_string(),
            st.ops_per_vector.to_string(),
            ns,
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
    pub codec: Vec<CodecChoice>,
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
        codecs: CodecChoice::expand(&a.codec),
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
    let header = "codec|bits|head_dim|threads|B/vector|encode ns|decode ns|memcpy ns\
        |encode GB/s|decode GB/s|memcpy GB/s|(enc+dec)/memcpy";
    let mut t = table(header, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    for r in &rep.runs {
        t.add_row([
            r.codec.to_string(),
            r.bits.to_string(),
            r.head_dim.to_string(),
            r.threads.to_string(),
            format!("{:.1}", r.encoded_bytes_per_vector),
            format!("{:.1}", r.encode_ns_per_vector),
            format!("{:.1}", r.decode_ns_per_vector),
            format!("{:.1}", r.memcpy_ns_per_vector),
            format!("{:.2}", r.encode_gb_per_s),
            format!("{:.2}", r.decode_gb_per_s),
            format!("{:.2}", r.memcpy_gb_per_s),
            format!("{:.1}x", r.encode_decode_vs_memcpy),
        ]);
    }
    let _ = writeln!(s, "{t}");
    if !rep.skipped.is_empty() {
        let _ = writeln!(s, "skipped: {}", rep.skipped.join("; "));
    }
    s
}
