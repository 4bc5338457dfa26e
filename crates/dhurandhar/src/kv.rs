//! KV-cache codecs as jobs: quality and footprint on a model ([`bench()`]), the
//! codec × bits sweep ([`compare`]), throughput ([`speed`]) and real K/V/Q capture
//! from a GGUF model ([`capture`]).
//!
//! Every size a caller supplies is checked against a stated limit before anything is
//! allocated, and errors name the option field (`head_dim`, `samples`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dhurandhar_engine::{Capture, Logits, Model};
use dhurandhar_kv::compare::{Row, Skipped};
use dhurandhar_kv::speed::Stage1Cost;
use dhurandhar_kv::tensorfile::{heads_from_file, FileSummary, HeadSelect};
use dhurandhar_kv::{Footprint, HeadData};
use dhurandhar_model::KvSource;
use serde::Serialize;

pub use dhurandhar_kv::{Codec, Distribution, KvRole, DEFAULT_SEED, MAX_HEAD_DIM};

use crate::{CancelToken, Error, Progress, Result, Unit};

/// One item of a codec list as a user types it: a codec, or `all` (every codec), so
/// every front end expands `all` the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    All,
    One(Codec),
}

impl std::str::FromStr for CodecChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "all" {
            return Ok(CodecChoice::All);
        }
        s.parse().map(CodecChoice::One).map_err(|_| {
            format!(
                "unknown codec `{s}` (known: {}, or `all`)",
                Codec::known_names()
            )
        })
    }
}

impl CodecChoice {
    /// The codecs a list names, in order, `all` expanded to [`Codec::ALL`].
    pub fn expand(list: &[CodecChoice]) -> Vec<Codec> {
        let mut out = Vec::new();
        for c in list {
            match c {
                CodecChoice::All => out.extend(Codec::ALL),
                CodecChoice::One(c) => out.push(*c),
            }
        }
        out
    }
}

/// Version of the `kv bench`, `kv compare` and `kv speed` JSON documents.
pub const SCHEMA_VERSION: u32 = 1;

/// Default model of [`bench()`] (the Python tool's).
pub const DEFAULT_MODEL: &str = "gemma4-e2b";

/// Largest sequence length a footprint is computed for (tokens).
pub const MAX_SEQ_LEN: u64 = 1 << 32;
/// Most tokens per KV head of synthetic data.
pub const MAX_SAMPLES: usize = 1 << 20;
/// Most KV heads of synthetic data.
pub const MAX_KV_HEADS: usize = 1024;
/// Most queries per KV head for the attention metrics.
pub const MAX_QUERIES: usize = 4096;
/// Most f32 values of one synthetic K (or V) set: tokens × KV heads × head_dim
/// (256 MiB; K, V and calibration samples are held together).
pub const MAX_SYNTH_VALUES: usize = 1 << 26;
/// Largest KV tensor file [`compare`] reads (it is read whole).
pub const MAX_DATA_BYTES: u64 = 4 << 30;
/// Largest text [`capture`] and [`eval`](crate::eval) read.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;
/// Most worker threads a job starts.
pub const MAX_THREADS: usize = dhurandhar_kv::speed::MAX_SPEED_THREADS;
/// Most vectors per [`speed`] batch.
pub const MAX_VECTORS: usize = dhurandhar_kv::speed::MAX_SPEED_VECTORS;
/// Longest minimum measuring time per [`speed`] figure, seconds.
pub const MAX_MIN_SECONDS: f64 = 60.0;

/// `Err(InvalidOption)` unless `lo <= v <= hi`.
pub(crate) fn check_range<T>(option: &'static str, v: T, lo: T, hi: T) -> Result<()>
where
    T: PartialOrd + std::fmt::Display,
{
    if v < lo || v > hi {
        return Err(Error::invalid(
            option,
            format!("{v} is out of range ({lo}..={hi})"),
        ));
    }
    Ok(())
}

/// The product of `dims` if it fits in `max`, else an error naming `option`.
fn checked_product(option: &'static str, dims: &[usize], max: usize) -> Result<usize> {
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= max);
    total.ok_or_else(|| {
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        Error::invalid(
            option,
            format!("{} values is over the {max}-value limit", dims.join(" × ")),
        )
    })
}

/// Cores of this machine (1 when unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a job starts on this machine: 8 × the cores (at least 8), and
/// never more than [`MAX_THREADS`]. More threads than that only thrash, and thousands
/// of them exhaust memory for their stacks.
pub fn thread_limit() -> usize {
    cores().saturating_mul(8).clamp(8, MAX_THREADS)
}

/// `Err(InvalidOption)` naming `option` unless `lo <= t <= thread_limit()`.
pub(crate) fn check_threads(option: &'static str, t: usize, lo: usize) -> Result<()> {
    let hi = thread_limit();
    if t < lo || t > hi {
        return Err(Error::invalid(
            option,
            format!(
                "{t} is out of range ({lo}..={hi}: at most 8 × the {} cores, and at least 8)",
                cores()
            ),
        ));
    }
    Ok(())
}

/// Worker threads: the request, or every core.
pub(crate) fn resolve_threads(threads: Option<usize>) -> Result<usize> {
    let t = threads.unwrap_or_else(cores);
    check_threads("threads", t, 1)?;
    Ok(t)
}

/// Check the synthetic-data sizes shared by [`bench()`] and [`compare`].
fn check_synthetic(
    samples_option: &'static str,
    tokens: usize,
    heads: usize,
    d: usize,
    queries: usize,
) -> Result<()> {
    check_range(samples_option, tokens, 2, MAX_SAMPLES)?;
    check_range("queries", queries, 1, MAX_QUERIES)?;
    checked_product(samples_option, &[tokens, heads, d], MAX_SYNTH_VALUES)?;
    Ok(())
}

// ---------------------------------------------------------------- bench

/// What [`bench()`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Built-in model name, YAML profile, or checkpoint (GGUF / safetensors / config.json).
    pub model: String,
    /// Sequence length of the footprint (sliding layers are capped at their window).
    pub seq_len: u64,
    pub codec: Codec,
    /// Bit budget (for `turbo`/`rotor`: the residual bits).
    pub bits: u32,
    /// Synthetic KV of the quality block.
    pub distribution: Distribution,
    /// Tokens per KV head in the quality block.
    pub samples: usize,
    /// Queries per KV head for the attention metrics.
    pub queries: usize,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: DEFAULT_MODEL.to_string(),
            seq_len: 32768,
            codec: Codec::TurboMse,
            bits: 4,
            distribution: Distribution::OutlierChannels,
            samples: 1024,
            queries: 64,
            seed: 0,
        }
    }
}

/// Quality of the codec on one (head_dim, kv_heads) geometry of the model.
#[derive(Debug, Clone, Serialize)]
pub struct GeometryQuality {
    pub head_dim: u32,
    pub kv_heads: u32,
    /// Fresh-KV layers with this geometry.
    pub fresh_layers: usize,
    #[serde(flatten)]
    pub row: Row,
}

/// The `kv bench` document.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema_version: u32,
    pub model: String,
    pub origin: String,
    pub seq_len: u64,
    pub codec: Codec,
    pub bits: u32,
    pub distribution: &'static str,
    pub samples: usize,
    pub quality: Vec<GeometryQuality>,
    pub footprint: Footprint,
}

/// Quality of a codec on a model's KV geometries (synthetic data) and the KV-cache
/// footprint at `seq_len`.
pub fn bench(
    opts: &BenchOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<BenchReport> {
    check_range("seq_len", opts.seq_len, 1, MAX_SEQ_LEN)?;
    check_range("samples", opts.samples, 2, MAX_SAMPLES)?;
    check_range("queries", opts.queries, 1, MAX_QUERIES)?;
    let m = crate::model::resolve_model(&opts.model)?;
    let arch = &m.arch;
    let footprint = dhurandhar_kv::footprint(arch, opts.seq_len, opts.codec, opts.bits, opts.seed)?;
    // One quality block per distinct (head_dim, kv_heads) of the fresh layers.
    let mut geoms: Vec<(u32, u32, usize)> = Vec::new();
    for l in arch.layers() {
        if l.kv != KvSource::Fresh {
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
    for &(d, h, _) in &geoms {
        check_synthetic(
            "samples",
            opts.samples,
            h as usize,
            d as usize,
            opts.queries,
        )?;
    }
    let kv_opts = dhurandhar_kv::CompareOptions {
        codecs: vec![opts.codec],
        bits: vec![opts.bits],
        seed: opts.seed,
        amortize_tokens: Some(usize::try_from(opts.seq_len).unwrap_or(usize::MAX)),
    };
    progress.start(
        "KV quality",
        Some(geoms.len() as u64),
        Unit::Items("geometries"),
    );
    let mut quality = Vec::new();
    for (d, h, n) in geoms {
        cancel.check()?;
        let heads = dhurandhar_kv::synth::synthetic_heads(
            opts.distribution,
            opts.samples,
            h as usize,
            d as usize,
            opts.queries,
            opts.seed,
        );
        let (rows, skipped) = dhurandhar_kv::compare(&heads, &kv_opts)?;
        if let Some(s) = skipped.first() {
            return Err(Error::invalid(
                "bits",
                format!(
                    "codec `{}` cannot run at {} bits: {}",
                    s.codec, s.bits, s.reason
                ),
            ));
        }
        quality.extend(rows.into_iter().map(|row| GeometryQuality {
            head_dim: d,
            kv_heads: h,
            fresh_layers: n,
            row,
        }));
        progress.advance(1);
    }
    progress.finish();
    Ok(BenchReport {
        schema_version: SCHEMA_VERSION,
        model: arch.name.clone(),
        origin: m.origin,
        seq_len: opts.seq_len,
        codec: opts.codec,
        bits: opts.bits,
        distribution: opts.distribution.name(),
        samples: opts.samples,
        quality,
        footprint,
    })
}

// ---------------------------------------------------------------- sweep

/// Largest sweep (models × codecs × bits points) one call runs.
pub const MAX_SWEEP_POINTS: usize = 256;

/// What [`sweep`] runs: [`bench()`] for every model × codec × bit width.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOptions {
    /// Models as [`BenchOptions::model`] names them.
    pub models: Vec<String>,
    pub codecs: Vec<Codec>,
    /// Widths to try; a codec is run only at the widths it supports (others are listed
    /// in the report's `skipped`).
    pub bits: Vec<u32>,
    pub seq_len: u64,
    pub distribution: Distribution,
    pub samples: usize,
    pub queries: usize,
    pub seed: u64,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            models: vec![DEFAULT_MODEL.to_string()],
            codecs: vec![Codec::TurboMse, Codec::Q4_0, Codec::Q8_0],
            bits: vec![2, 3, 4, 5, 6, 8],
            seq_len: 32768,
            distribution: Distribution::OutlierChannels,
            samples: 256,
            queries: 32,
            seed: 0,
        }
    }
}

/// One model × codec × width of a sweep: quality averaged over the model's fresh KV
/// heads (each geometry weighted by its layers × heads) and the cache at `seq_len`.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub model: String,
    pub codec: Codec,
    pub bits: u32,
    /// Stored bits per cached value at `seq_len`, from the encoded bytes.
    pub bits_per_value: f64,
    pub nmse: f64,
    pub cosine: f64,
    pub attn_kl: f64,
    pub compressed_bytes: u64,
    pub baseline_bytes: u64,
    pub ratio: f64,
}

/// A point of the sweep that was not run.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSkip {
    pub model: String,
    pub codec: Codec,
    pub bits: u32,
    pub reason: String,
}

/// The sweep document.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub schema_version: u32,
    pub seq_len: u64,
    pub distribution: &'static str,
    pub samples: usize,
    pub points: Vec<SweepPoint>,
    pub skipped: Vec<SweepSkip>,
}

/// Quality-versus-bits of several codecs on several models (synthetic KV shaped like
/// each model's heads): the data of a quality/bits chart and of a cross-model chart.
pub fn sweep(
    opts: &SweepOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<SweepReport> {
    if opts.models.is_empty() || opts.codecs.is_empty() || opts.bits.is_empty() {
        return Err(Error::invalid(
            "models",
            "a sweep needs at least one model, codec and bit width",
        ));
    }
    let n = opts.models.len() * opts.codecs.len() * opts.bits.len();
    if n > MAX_SWEEP_POINTS {
        return Err(Error::invalid(
            "bits",
            format!("{n} points (models × codecs × bits) exceed the limit of {MAX_SWEEP_POINTS}"),
        ));
    }
    progress.start("KV sweep", Some(n as u64), Unit::Items("points"));
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for model in &opts.models {
        for &codec in &opts.codecs {
            for &bits in &opts.bits {
                cancel.check()?;
                progress.advance(1);
                if !codec.supported_bits().contains(&bits) {
                    skipped.push(SweepSkip {
                        model: model.clone(),
                        codec,
                        bits,
                        reason: format!("{codec} has no {bits}-bit mode"),
                    });
                    continue;
                }
                let r = bench(
                    &BenchOptions {
                        model: model.clone(),
                        seq_len: opts.seq_len,
                        codec,
                        bits,
                        distribution: opts.distribution,
                        samples: opts.samples,
                        queries: opts.queries,
                        seed: opts.seed,
                    },
                    &crate::NoProgress,
                    cancel,
                )?;
                let weight = |q: &GeometryQuality| (q.fresh_layers as f64) * q.kv_heads as f64;
                let total: f64 = r.quality.iter().map(weight).sum();
                let mean = |f: fn(&Row) -> f64| {
                    if total > 0.0 {
                        r.quality.iter().map(|q| weight(q) * f(&q.row)).sum::<f64>() / total
                    } else {
                        0.0
                    }
                };
                points.push(SweepPoint {
                    model: r.model.clone(),
                    codec,
                    bits,
                    bits_per_value: r.footprint.bits_per_value,
                    nmse: mean(|r| r.nmse),
                    cosine: mean(|r| r.cosine),
                    attn_kl: mean(|r| r.attn_kl),
                    compressed_bytes: r.footprint.compressed_bytes,
                    baseline_bytes: r.footprint.baseline_bytes,
                    ratio: r.footprint.ratio,
                });
            }
        }
    }
    progress.finish();
    Ok(SweepReport {
        schema_version: SCHEMA_VERSION,
        seq_len: opts.seq_len,
        distribution: opts.distribution.name(),
        samples: opts.samples,
        points,
        skipped,
    })
}

// ---------------------------------------------------------------- compare

/// Where [`compare`]'s KV comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum KvData {
    /// Generated by [`CompareOptions::distribution`] at the synthetic geometry.
    #[default]
    Synthetic,
    /// A safetensors file (a `kv capture` or any `[..., head_dim]` tensors) or a `.npy`.
    File(PathBuf),
    /// Keys and values already in memory (a notebook's arrays), read exactly as a
    /// captured file holding them as `layers.0.k` / `layers.0.v` would be.
    Arrays(KvArrays),
}

/// In-memory K and V of one shape, row-major f32. The last axis is head_dim, the one
/// before it KV heads (`[tokens, head_dim]` is one head; earlier axes are tokens).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvArrays {
    pub shape: Vec<usize>,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// Tensor names the arrays take, so the report names what a captured file would.
const ARRAY_KEYS: &str = "layers.0.k";
const ARRAY_VALUES: &str = "layers.0.v";

/// What [`CompareConfig::data`] says for in-memory arrays.
pub const ARRAYS_LABEL: &str = "in-memory arrays";

/// Per-head KV from in-memory arrays: the captured-file path on a one-layer "file".
fn array_heads(a: &KvArrays, opts: &CompareOptions) -> Result<(Vec<HeadData>, FileSummary)> {
    if a.shape.is_empty() || a.shape.contains(&0) {
        return Err(Error::invalid(
            "data",
            format!("shape {:?} holds no vectors", a.shape),
        ));
    }
    let n = checked_product("data", &a.shape, (MAX_DATA_BYTES / 4) as usize)?;
    for (what, v) in [("keys", &a.keys), ("values", &a.values)] {
        if v.len() != n {
            return Err(Error::invalid(
                "data",
                format!(
                    "{what} hold {} values, shape {:?} needs {n}",
                    v.len(),
                    a.shape
                ),
            ));
        }
    }
    let tensor = |name: &str, data: &[f32]| dhurandhar_kv::tensorfile::Tensor {
        name: name.to_string(),
        shape: a.shape.clone(),
        data: data.to_vec(),
    };
    let file = dhurandhar_kv::tensorfile::TensorFile {
        tensors: vec![tensor(ARRAY_KEYS, &a.keys), tensor(ARRAY_VALUES, &a.values)],
        metadata: Default::default(),
        names: vec![ARRAY_KEYS.to_string(), ARRAY_VALUES.to_string()],
    };
    let sel = HeadSelect {
        tensor: None,
        layers: opts.layers.clone(),
        queries: opts.queries,
        seed: opts.seed,
    };
    heads_from_file(&file, &sel).map_err(|e| Error::from(e).context("cannot use the KV arrays"))
}

/// `synthetic`, or else the path of a file: how a user names the data.
impl std::str::FromStr for KvData {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "synthetic" => KvData::Synthetic,
            path => KvData::File(PathBuf::from(path)),
        })
    }
}

/// What [`compare`] sweeps.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    pub data: KvData,
    /// head_dim of synthetic data (a file's own head_dim is used otherwise).
    pub head_dim: usize,
    /// KV heads of synthetic data.
    pub kv_heads: usize,
    /// Tokens per head of synthetic data.
    pub seq_len: usize,
    pub distribution: Distribution,
    pub bits: Vec<u32>,
    pub codecs: Vec<Codec>,
    /// File data: use this tensor as K and V.
    pub tensor: Option<String>,
    /// Captured file: only these layers (empty = all).
    pub layers: Vec<usize>,
    /// Queries per KV head for the attention metrics.
    pub queries: usize,
    /// Amortise per-head side information over this many tokens (default: each head's).
    pub amortize_tokens: Option<usize>,
    /// Measure stage-1 ns/vector (off: the report is fully deterministic).
    pub timing: bool,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            data: KvData::Synthetic,
            head_dim: 256,
            kv_heads: 4,
            seq_len: 2048,
            distribution: Distribution::OutlierChannels,
            bits: vec![2, 3, 4, 6, 8],
            codecs: Codec::ALL.to_vec(),
            tensor: None,
            layers: Vec::new(),
            queries: 64,
            amortize_tokens: None,
            timing: true,
            seed: 0,
        }
    }
}

/// The data and settings a comparison ran on.
#[derive(Debug, Clone, Serialize)]
pub struct CompareConfig {
    /// `synthetic` or the file path.
    pub data: String,
    pub distribution: Option<&'static str>,
    pub file: Option<FileSummary>,
    pub head_dim: usize,
    pub kv_heads: usize,
    pub seq_len: usize,
    pub queries: usize,
    pub seed: u64,
    pub kernel: &'static str,
}

/// The `kv compare` document.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub schema_version: u32,
    pub config: CompareConfig,
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
    pub stage1: Vec<Stage1Cost>,
}

/// Per-head KV from a tensor file, read whole within [`MAX_DATA_BYTES`].
fn load_file_heads(path: &Path, opts: &CompareOptions) -> Result<(Vec<HeadData>, FileSummary)> {
    let what = || format!("cannot read KV tensors from {}", path.display());
    let bytes = dhurandhar_io::read_bounded(path, MAX_DATA_BYTES, "a KV tensor file")
        .map_err(|e| Error::from(e).context(what()))?;
    let is_npy =
        path.extension().and_then(|e| e.to_str()) == Some("npy") || bytes.starts_with(b"\x93NUMPY");
    let file = if is_npy {
        dhurandhar_kv::tensorfile::parse_npy(&bytes)
    } else {
        dhurandhar_kv::tensorfile::parse_safetensors(&bytes, |n| match &opts.tensor {
            Some(t) => n == t,
            None if opts.layers.is_empty() => true,
            None => opts.layers.iter().any(|l| {
                n.strip_prefix(&format!("layers.{l}."))
                    .is_some_and(|r| matches!(r, "k" | "v" | "q"))
            }),
        })
    }
    .map_err(|e| Error::from(e).context(what()))?;
    drop(bytes);
    let sel = HeadSelect {
        tensor: if is_npy { None } else { opts.tensor.clone() },
        layers: opts.layers.clone(),
        queries: opts.queries,
        seed: opts.seed,
    };
    heads_from_file(&file, &sel)
        .map_err(|e| Error::from(e).context(format!("cannot use {}", path.display())))
}

/// Every codec × bit budget on synthetic or file KV, plus each codec's stage-1 cost.
pub fn compare(
    opts: &CompareOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<CompareReport> {
    if opts.bits.is_empty() {
        return Err(Error::invalid(
            "bits",
            "empty; give at least one bit budget",
        ));
    }
    if opts.codecs.is_empty() {
        return Err(Error::invalid("codecs", "empty; give at least one codec"));
    }
    check_range("queries", opts.queries, 1, MAX_QUERIES)?;
    let (heads, file, dist, data) = match &opts.data {
        KvData::Synthetic => {
            check_range("head_dim", opts.head_dim, 1, MAX_HEAD_DIM)?;
            check_range("kv_heads", opts.kv_heads, 1, MAX_KV_HEADS)?;
            check_synthetic(
                "seq_len",
                opts.seq_len,
                opts.kv_heads,
                opts.head_dim,
                opts.queries,
            )?;
            let heads = dhurandhar_kv::synth::synthetic_heads(
                opts.distribution,
                opts.seq_len,
                opts.kv_heads,
                opts.head_dim,
                opts.queries,
                opts.seed,
            );
            (
                heads,
                None,
                Some(opts.distribution.name()),
                "synthetic".to_string(),
            )
        }
        KvData::File(p) => {
            let (h, s) = load_file_heads(p, opts)?;
            (h, Some(s), None, p.display().to_string())
        }
        KvData::Arrays(a) => {
            let (h, s) = array_heads(a, opts)?;
            (h, Some(s), None, ARRAYS_LABEL.to_string())
        }
    };
    let Some(first) = heads.first() else {
        return Err(Error::invalid("data", "holds no KV heads"));
    };
    let (d, tokens) = (first.d, first.tokens());
    progress.start(
        "comparing codecs",
        Some(opts.codecs.len() as u64),
        Unit::Items("codecs"),
    );
    let (mut rows, mut skipped) = (Vec::new(), Vec::new());
    for &codec in &opts.codecs {
        cancel.check()?;
        let one = dhurandhar_kv::CompareOptions {
            codecs: vec![codec],
            bits: opts.bits.clone(),
            seed: opts.seed,
            amortize_tokens: opts.amortize_tokens,
        };
        let (r, s) = dhurandhar_kv::compare(&heads, &one)?;
        rows.extend(r);
        skipped.extend(s);
        progress.advance(1);
    }
    progress.finish();
    let stage1 = opts
        .codecs
        .iter()
        .map(|&c| dhurandhar_kv::stage1_cost(c, d, opts.seed, opts.timing))
        .collect();
    Ok(CompareReport {
        schema_version: SCHEMA_VERSION,
        config: CompareConfig {
            data,
            distribution: dist,
            kv_heads: if file.is_some() {
                heads.len()
            } else {
                opts.kv_heads
            },
            file,
            head_dim: d,
            seq_len: tokens,
            queries: opts.queries,
            seed: opts.seed,
            kernel: dhurandhar_kv::simd::kernel_name(),
        },
        rows,
        skipped,
        stage1,
    })
}

// ---------------------------------------------------------------- speed

/// What [`speed`] measures: every head_dim × codec × thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedOptions {
    pub head_dims: Vec<usize>,
    pub codecs: Vec<Codec>,
    /// Bit budget (codecs that do not support it are skipped with a note).
    pub bits: u32,
    /// Thread counts; 0 = all cores.
    pub threads: Vec<usize>,
    /// Key or value path (they differ for oscar and kivi2).
    pub role: KvRole,
    /// Vectors per batch.
    pub vectors: usize,
    /// Minimum time per measurement; each figure is the best of the trials run.
    pub min_seconds: f64,
}

impl Default for SpeedOptions {
    fn default() -> Self {
        SpeedOptions {
            head_dims: vec![128],
            codecs: vec![Codec::TurboMse],
            bits: 4,
            threads: vec![1, 0],
            role: KvRole::Key,
            vectors: 4096,
            min_seconds: 0.3,
        }
    }
}

/// One measurement (one head_dim × codec × thread count).
pub type SpeedRun = dhurandhar_kv::SpeedReport;

/// The `kv speed` document: the first run's fields at the top level, every run in `runs`.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedReport {
    pub schema_version: u32,
    #[serde(flatten)]
    pub first: SpeedRun,
    pub runs: Vec<SpeedRun>,
    /// Codecs skipped, with why.
    pub skipped: Vec<String>,
}

/// Encode / decode ns per vector and GB/s next to a memcpy of the same bytes.
pub fn speed(
    opts: &SpeedOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<SpeedReport> {
    check_range("vectors", opts.vectors, 1, MAX_VECTORS)?;
    if !(opts.min_seconds.is_finite() && (0.0..=MAX_MIN_SECONDS).contains(&opts.min_seconds)) {
        return Err(Error::invalid(
            "min_seconds",
            format!(
                "{} is out of range (0..={MAX_MIN_SECONDS})",
                opts.min_seconds
            ),
        ));
    }
    for &d in &opts.head_dims {
        check_range("head_dim", d, 1, MAX_HEAD_DIM)?;
        checked_product(
            "vectors",
            &[opts.vectors, d],
            dhurandhar_kv::speed::MAX_SPEED_VALUES,
        )?;
    }
    for &t in &opts.threads {
        check_threads("threads", t, 0)?;
    }
    let total = opts.head_dims.len() * opts.codecs.len() * opts.threads.len();
    progress.start("measuring", Some(total as u64), Unit::Items("runs"));
    let (mut runs, mut skipped) = (Vec::new(), Vec::new());
    for &d in &opts.head_dims {
        for &c in &opts.codecs {
            if !c.supported_bits().contains(&opts.bits) {
                skipped.push(format!("{c} does not support {} bits", opts.bits));
                progress.advance(opts.threads.len() as u64);
                continue;
            }
            for &t in &opts.threads {
                cancel.check()?;
                let o = dhurandhar_kv::SpeedOptions {
                    spec: dhurandhar_kv::CodecSpec::new(c, opts.bits, d),
                    role: opts.role,
                    threads: t,
                    vectors: opts.vectors,
                    min_seconds: opts.min_seconds,
                };
                runs.push(dhurandhar_kv::measure(&o)?);
                progress.advance(1);
            }
        }
    }
    progress.finish();
    skipped.dedup();
    let Some(first) = runs.first().cloned() else {
        return Err(Error::invalid(
            "codecs",
            format!("nothing to measure: {}", skipped.join("; ")),
        ));
    };
    Ok(SpeedReport {
        schema_version: SCHEMA_VERSION,
        first,
        runs,
        skipped,
    })
}

// ---------------------------------------------------------------- capture

/// What [`capture`] runs and where it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureOptions {
    /// GGUF model file (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe or qwen3moe).
    pub model: PathBuf,
    /// UTF-8 text to run through the model (at most [`MAX_TEXT_BYTES`]).
    pub text_file: PathBuf,
    /// Output safetensors file, written atomically; never one of the inputs.
    pub out: PathBuf,
    /// Capture at most this many tokens (also capped at the model's context).
    pub max_tokens: usize,
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
}

/// Name and shape of one captured tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorShape {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The `kv capture` document.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub schema_version: u32,
    pub model: String,
    pub out: String,
    pub n_tokens: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub tensors: Vec<TensorShape>,
    pub file_bytes: usize,
    /// Wall time of the run (not part of the JSON document).
    #[serde(skip)]
    pub seconds: f64,
}

/// Tokens per forward pass of [`capture`].
const CAPTURE_CHUNK: usize = 128;

/// Run a GGUF model over a text and save every layer's queries, keys (before and after
/// RoPE) and values as f32 safetensors, readable by [`compare`] with [`KvData::File`].
pub fn capture(
    opts: &CaptureOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<CaptureReport> {
    check_range("max_tokens", opts.max_tokens, 1, usize::MAX)?;
    let threads = resolve_threads(opts.threads)?;
    dhurandhar_io::check_output(&opts.out, &[&opts.model, &opts.text_file])?;
    let model = Model::open(&opts.model)?;
    let text = dhurandhar_io::read_to_string_bounded(&opts.text_file, MAX_TEXT_BYTES, "a text")?;
    let mut tokens = model.tokenizer.encode(&text);
    tokens.truncate(opts.max_tokens.min(model.config.context_length));
    if tokens.is_empty() {
        return Err(Error::invalid(
            "text_file",
            format!("{} holds no tokens", opts.text_file.display()),
        ));
    }
    let c = &model.config;
    let t0 = Instant::now();
    let mut cap = Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = model.session(threads, None)?;
    // Exact f32 activations: the captured tensors are the reference codecs are judged on.
    s.set_f32_activations(true);
    progress.start(
        "capturing",
        Some(tokens.len() as u64),
        Unit::Items("tokens"),
    );
    for piece in tokens.chunks(CAPTURE_CHUNK) {
        cancel.check()?;
        s.forward(piece, Logits::None, Some(&mut cap))?;
        progress.advance(piece.len() as u64);
    }
    progress.finish();
    let file_name = |p: &Path, stem: bool| {
        let part = if stem { p.file_stem() } else { p.file_name() };
        part.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let model_name = if c.name.is_empty() {
        file_name(&opts.model, true)
    } else {
        c.name.clone()
    };
    let bytes = cap.to_safetensors(&[
        ("model", model_name),
        ("architecture", c.architecture.clone()),
        ("rope_base", c.rope_base.to_string()),
        ("rope_style", format!("{:?}", c.rope_style).to_lowercase()),
        ("source_text", file_name(&opts.text_file, false)),
    ])?;
    cancel.check()?;
    dhurandhar_io::write_atomic(&opts.out, &bytes)?;
    let kv = vec![cap.n_tokens, c.n_kv_heads, c.head_dim];
    let q = vec![cap.n_tokens, c.n_heads, c.head_dim];
    let mut tensors = Vec::with_capacity(c.n_layers * 4);
    for i in 0..c.n_layers {
        for (n, shape) in [("k", &kv), ("k_pre_rope", &kv), ("v", &kv), ("q", &q)] {
            tensors.push(TensorShape {
                name: format!("layers.{i}.{n}"),
                shape: shape.clone(),
            });
        }
    }
    Ok(CaptureReport {
        schema_version: SCHEMA_VERSION,
        model: opts.model.display().to_string(),
        out: opts.out.display().to_string(),
        n_tokens: cap.n_tokens,
        n_layers: c.n_layers,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        rope_base: c.rope_base,
        tensors,
        file_bytes: bytes.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------- arrays

/// One codec built for one head_dim, for a front end that encodes its own arrays (the
/// Python package's codec classes): the codec plus what it was built from, so reports
/// can name it. Shareable across threads; encoding takes `&self`.
pub struct CodecHandle {
    codec: Codec,
    bits: u32,
    head_dim: usize,
    seed: u64,
    d_eff: Option<(usize, usize)>,
    inner: Box<dyn dhurandhar_kv::KvCodec>,
}

impl std::fmt::Debug for CodecHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecHandle")
            .field("codec", &self.codec)
            .field("bits", &self.bits)
            .field("head_dim", &self.head_dim)
            .field("seed", &self.seed)
            .finish()
    }
}

/// How well one encode → decode round trip kept a batch of vectors.
#[derive(Debug, Clone, Serialize)]
pub struct Reconstruction {
    pub codec: Codec,
    pub bits: u32,
    pub head_dim: usize,
    pub role: KvRole,
    pub vectors: usize,
    /// Mean over vectors of the cosine between x and its reconstruction.
    pub cos_sim: f64,
    /// Mean squared error per value.
    pub mse: f64,
    /// Σ‖x − x̂‖² / Σ‖x‖².
    pub nmse: f64,
    /// Mean over vectors of ‖x̂‖ / ‖x‖.
    pub norm_preservation: f64,
    /// Stored bits per value of this batch (a trailing partial token group is kept as
    /// bf16, as a real cache would; per-head calibration is not included).
    pub bits_per_value: f64,
    /// 16 / `bits_per_value`.
    pub compression_vs_bf16: f64,
    /// SpectralQuant: the calibrated effective rank of this role's basis.
    pub d_eff: Option<usize>,
}

impl CodecHandle {
    /// Build `codec` at `bits` for vectors of `head_dim` values. SpectralQuant needs
    /// `calibration` (key samples, value samples; `n × head_dim` each, n ≥ 2); the
    /// other codecs ignore it.
    pub fn new(
        codec: Codec,
        bits: u32,
        head_dim: usize,
        seed: u64,
        calibration: Option<(&[f32], &[f32])>,
    ) -> Result<Self> {
        check_range("head_dim", head_dim, 1, MAX_HEAD_DIM)?;
        let spec = dhurandhar_kv::CodecSpec {
            codec,
            bits,
            head_dim,
            seed,
        };
        let (kc, vc) = calibration.unzip();
        let inner = dhurandhar_kv::build_codec_roles(&spec, kc, vc)?;
        let d_eff = match (codec.needs_calibration(), calibration) {
            (true, Some((k, v))) => Some((
                dhurandhar_kv::spectral::Calibration::fit(k, head_dim, bits)?.d_eff,
                dhurandhar_kv::spectral::Calibration::fit(v, head_dim, bits)?.d_eff,
            )),
            _ => None,
        };
        Ok(CodecHandle {
            codec,
            bits,
            head_dim,
            seed,
            d_eff,
            inner,
        })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }
    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Tokens per encoded record for `role` (the encoder takes whole groups only).
    pub fn token_group(&self, role: KvRole) -> usize {
        self.inner.token_group(role)
    }
    /// Bytes stored once per head (SpectralQuant's calibration), not per token.
    pub fn side_bytes(&self, role: KvRole) -> usize {
        self.inner.side_bytes(role)
    }
    /// Encoded bytes of `tokens` vectors (a whole number of token groups).
    pub fn encoded_len(&self, role: KvRole, tokens: usize) -> usize {
        self.inner.encoded_len(role, tokens)
    }

    /// Encode `x` (`n × head_dim`, row-major; n a multiple of the token group).
    pub fn encode(&self, role: KvRole, x: &[f32]) -> Result<Vec<u8>> {
        Ok(self.inner.encode(role, x)?)
    }

    /// Decode `bytes` into `out` (`n × head_dim`; n the tokens that were encoded).
    pub fn decode(&self, role: KvRole, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        Ok(self.inner.decode(role, bytes, out)?)
    }

    /// Round-trip `x` (`n × head_dim`) and measure what was kept.
    pub fn reconstruction(&self, role: KvRole, x: &[f32]) -> Result<Reconstruction> {
        let d = self.head_dim;
        if x.is_empty() {
            return Err(dhurandhar_kv::KvError::EmptyBatch.into());
        }
        if !x.len().is_multiple_of(d) {
            return Err(dhurandhar_kv::KvError::ShapeMismatch {
                len: x.len(),
                head_dim: d,
            }
            .into());
        }
        let (xh, bytes) = dhurandhar_kv::round_trip(self.inner.as_ref(), role, x)?;
        let (nmse, cos_sim, norm_preservation) = dhurandhar_kv::metrics::vector_metrics(x, &xh, d);
        let sq: f64 = x
            .iter()
            .zip(&xh)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let bits_per_value = bytes as f64 * 8.0 / x.len() as f64;
        Ok(Reconstruction {
            codec: self.codec,
            bits: self.bits,
            head_dim: d,
            role,
            vectors: x.len() / d,
            cos_sim,
            mse: sq / x.len() as f64,
            nmse,
            norm_preservation,
            bits_per_value,
            compression_vs_bf16: 16.0 / bits_per_value,
            d_eff: self.d_eff.map(|(k, v)| match role {
                KvRole::Key => k,
                KvRole::Value => v,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors buffer holding f32 `layers.0.k` and `layers.0.v` of `shape`.
    fn safetensors_kv(shape: &[usize], k: &[f32], v: &[f32]) -> Vec<u8> {
        let n = k.len() * 4;
        let header = format!(
            r#"{{"layers.0.k":{{"dtype":"F32","shape":{shape:?},"data_offsets":[0,{n}]}},"layers.0.v":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{n},{}]}}}}"#,
            2 * n
        );
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        for x in k.iter().chain(v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    #[test]
    fn compare_on_arrays_matches_the_same_kv_in_a_file() {
        let (t, h, d) = (48, 2, 32);
        let k =
            dhurandhar_kv::synth::generate(Distribution::OutlierChannels, t * h, d, 3, 0, false);
        let v = dhurandhar_kv::synth::generate(Distribution::OutlierChannels, t * h, d, 3, 0, true);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.safetensors");
        std::fs::write(&path, safetensors_kv(&[t, h, d], &k, &v)).unwrap();
        let base = CompareOptions {
            codecs: vec![Codec::Q8_0, Codec::TurboMse],
            bits: vec![4],
            queries: 8,
            timing: false,
            ..CompareOptions::default()
        };
        let run = |data: KvData| {
            let opts = CompareOptions {
                data,
                ..base.clone()
            };
            let mut r = serde_json::to_value(
                compare(&opts, &crate::progress::NoProgress, &CancelToken::new()).unwrap(),
            )
            .unwrap();
            r["config"]["data"].take();
            r
        };
        let arrays = KvArrays {
            shape: vec![t, h, d],
            keys: k.clone(),
            values: v.clone(),
        };
        let from_arrays = run(KvData::Arrays(arrays));
        assert_eq!(from_arrays, run(KvData::File(path)));
        assert_eq!(from_arrays["config"]["kv_heads"], h);
        let short = KvArrays {
            shape: vec![t, h, d],
            keys: k,
            values: v[1..].to_vec(),
        };
        let opts = CompareOptions {
            data: KvData::Arrays(short),
            ..base
        };
        let e = compare(&opts, &crate::progress::NoProgress, &CancelToken::new()).unwrap_err();
        assert!(e.to_string().contains("values hold"), "{e}");
    }

    #[test]
    fn codec_handle_round_trips_and_measures() {
        let d = 64;
        let x = dhurandhar_kv::synth::generate(Distribution::OutlierChannels, 40, d, 1, 0, false);
        let h = CodecHandle::new(Codec::Q8_0, 8, d, DEFAULT_SEED, None).unwrap();
        let enc = h.encode(KvRole::Key, &x).unwrap();
        assert_eq!(enc.len(), h.encoded_len(KvRole::Key, 40));
        let mut out = vec![0.0; x.len()];
        h.decode(KvRole::Key, &enc, &mut out).unwrap();
        let r = h.reconstruction(KvRole::Key, &x).unwrap();
        let mse = x
            .iter()
            .zip(&out)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        assert_eq!(r.mse, mse);
        assert_eq!(r.vectors, 40);
        // q8_0: 34 bytes per 32 values.
        assert_eq!(r.bits_per_value, 34.0 * 8.0 / 32.0);
        assert!(r.cos_sim > 0.999 && r.d_eff.is_none());
    }

    #[test]
    fn codec_handle_checks_its_inputs() {
        assert!(CodecHandle::new(Codec::Turbo, 4, 0, 0, None).is_err());
        let e = CodecHandle::new(Codec::Spectral, 4, 16, 0, None).unwrap_err();
        assert!(e.to_string().contains("calibration"), "{e}");
        let h = CodecHandle::new(Codec::Turbo, 4, 16, 0, None).unwrap();
        assert!(h.reconstruction(KvRole::Key, &[]).is_err());
        assert!(h.reconstruction(KvRole::Key, &[0.5; 17]).is_err());
        let cal = dhurandhar_kv::synth::generate(Distribution::LowRank, 256, 16, 0, 0, false);
        let s = CodecHandle::new(Codec::Spectral, 4, 16, 0, Some((&cal, &cal))).unwrap();
        let r = s.reconstruction(KvRole::Value, &cal).unwrap();
        assert!(r.d_eff.is_some_and(|d| (1..=16).contains(&d)));
    }

    #[test]
    fn kv_data_is_synthetic_or_a_path() {
        assert_eq!("synthetic".parse(), Ok(KvData::Synthetic));
        let file = KvData::File(PathBuf::from("kv.safetensors"));
        assert_eq!("kv.safetensors".parse(), Ok(file));
    }

    #[test]
    fn codec_choice_expands_all_and_names_the_known_codecs() {
        let list: Vec<CodecChoice> = ["q8_0", "all"].iter().map(|s| s.parse().unwrap()).collect();
        let codecs = CodecChoice::expand(&list);
        assert_eq!(codecs.len(), 1 + Codec::ALL.len());
        assert_eq!(
            codecs[0],
            Codec::ALL
                .iter()
                .copied()
                .find(|c| c.name() == "q8_0")
                .unwrap()
        );
        let err = "turbo-xl".parse::<CodecChoice>().unwrap_err();
        assert!(
            err.starts_with("unknown codec `turbo-xl` (known: "),
            "{err}"
        );
        assert!(err.ends_with(", or `all`)"), "{err}");
    }
    use crate::NoProgress;

    fn invalid_option(e: Error) -> &'static str {
        match e {
            Error::InvalidOption { option, .. } => option,
            other => panic!("not an invalid option: {other}"),
        }
    }

    /// Each point is the bench of that codec × width (same bytes, quality averaged over
    /// the geometries by layers × heads); widths a codec lacks are listed, not run.
    #[test]
    fn sweep_points_are_benches_and_unsupported_widths_are_skipped() {
        let t = CancelToken::new();
        let o = SweepOptions {
            models: vec!["gemma4-e2b".into()],
            codecs: vec![Codec::TurboMse, Codec::Q8_0],
            bits: vec![4, 8],
            seq_len: 4096,
            samples: 64,
            queries: 8,
            ..SweepOptions::default()
        };
        let r = sweep(&o, &NoProgress, &t).unwrap();
        assert_eq!(r.points.len(), 3);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!((r.skipped[0].codec, r.skipped[0].bits), (Codec::Q8_0, 4));
        let b = bench(
            &BenchOptions {
                model: "gemma4-e2b".into(),
                seq_len: 4096,
                codec: Codec::TurboMse,
                bits: 4,
                samples: 64,
                queries: 8,
                ..BenchOptions::default()
            },
            &NoProgress,
            &t,
        )
        .unwrap();
        let p = &r.points[0];
        assert_eq!(p.compressed_bytes, b.footprint.compressed_bytes);
        assert_eq!(p.bits_per_value, b.footprint.bits_per_value);
        // gemma4-e2b has two fresh geometries: the mean lies between them.
        assert!(b.quality.len() >= 2);
        let lo = b
            .quality
            .iter()
            .map(|q| q.row.nmse)
            .fold(f64::MAX, f64::min);
        let hi = b.quality.iter().map(|q| q.row.nmse).fold(0.0, f64::max);
        assert!(lo <= p.nmse && p.nmse <= hi, "{lo} {} {hi}", p.nmse);
        let mut big = o.clone();
        big.bits = (1..=8).collect();
        big.models = vec!["gemma4-e2b".into(); 20];
        assert_eq!(
            invalid_option(sweep(&big, &NoProgress, &t).unwrap_err()),
            "bits"
        );
        big.models.clear();
        assert_eq!(
            invalid_option(sweep(&big, &NoProgress, &t).unwrap_err()),
            "models"
        );
        t.cancel();
        assert!(matches!(sweep(&o, &NoProgress, &t), Err(Error::Cancelled)));
    }

    #[test]
    fn speed_rejects_huge_sizes_before_allocating() {
        let t = CancelToken::new();
        let o = SpeedOptions {
            head_dims: vec![1_000_000_000],
            ..SpeedOptions::default()
        };
        assert_eq!(
            invalid_option(speed(&o, &NoProgress, &t).unwrap_err()),
            "head_dim"
        );
        let o = SpeedOptions {
            head_dims: vec![8192],
            vectors: MAX_VECTORS,
            ..SpeedOptions::default()
        };
        assert_eq!(
            invalid_option(speed(&o, &NoProgress, &t).unwrap_err()),
            "vectors"
        );
        let o = SpeedOptions {
            threads: vec![1 << 40],
            ..SpeedOptions::default()
        };
        assert_eq!(
            invalid_option(speed(&o, &NoProgress, &t).unwrap_err()),
            "threads"
        );
    }

    #[test]
    fn bench_and_compare_reject_huge_sizes() {
        let t = CancelToken::new();
        let o = BenchOptions {
            samples: 1_000_000_000,
            ..BenchOptions::default()
        };
        assert_eq!(
            invalid_option(bench(&o, &NoProgress, &t).unwrap_err()),
            "samples"
        );
        let o = CompareOptions {
            seq_len: MAX_SAMPLES,
            kv_heads: MAX_KV_HEADS,
            ..CompareOptions::default()
        };
        let e = compare(&o, &NoProgress, &t).unwrap_err();
        assert!(e.to_string().contains("value limit"), "{e}");
        assert_eq!(invalid_option(e), "seq_len");
        assert!(checked_product("x", &[usize::MAX, 2], usize::MAX).is_err());
    }

    #[test]
    fn compare_runs_one_row_per_supported_pair_and_honours_cancel() {
        let o = CompareOptions {
            head_dim: 32,
            kv_heads: 1,
            seq_len: 64,
            bits: vec![4, 8],
            codecs: vec![Codec::Q4_0, Codec::TurboMse],
            queries: 4,
            timing: false,
            ..CompareOptions::default()
        };
        let t = CancelToken::new();
        let r = compare(&o, &NoProgress, &t).unwrap();
        let got: Vec<(Codec, u32)> = r.rows.iter().map(|r| (r.codec, r.bits)).collect();
        assert_eq!(
            got,
            [(Codec::Q4_0, 4), (Codec::TurboMse, 4), (Codec::TurboMse, 8)]
        );
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.config.data, "synthetic");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["rows"][0]["codec"], "q4_0");
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        t.cancel();
        assert!(matches!(
            compare(&o, &NoProgress, &t),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn capture_refuses_to_overwrite_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "hello").unwrap();
        let o = CaptureOptions {
            model: dir.path().join("missing.gguf"),
            text_file: text.clone(),
            out: text.clone(),
            max_tokens: 8,
            threads: Some(1),
        };
        let e = capture(&o, &NoProgress, &CancelToken::new()).unwrap_err();
        assert!(e.to_string().contains("same file"), "{e}");
        assert_eq!(std::fs::read_to_string(&text).unwrap(), "hello");
    }
}
