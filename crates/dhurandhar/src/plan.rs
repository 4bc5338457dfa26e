//! Plan a model on devices: the peak memory breakdown at a context length and a verdict
//! per device (resident / PLE mmap'd / weights streamed / infeasible) with a decode
//! ceiling, plus the changes that would make an infeasible device work.
//!
//! ```
//! use dhurandhar::plan::{analyze, AnalyzeOptions};
//! let r = analyze(&AnalyzeOptions::default()).unwrap();
//! assert_eq!(r.model.name, "gemma4-e2b");
//! assert_eq!(r.devices.len(), 5);
//! ```

use std::path::Path;

use dhurandhar_engine::{StorePlan, WeightMode};
use dhurandhar_kv::Codec;
use dhurandhar_model::{ComponentBytes, ModelArchitecture};
use dhurandhar_plan::{
    builtin_device, builtin_devices, Component, DeviceAssessment, DeviceProfile, KvCodecCost,
    KvCodecWidth, KvHeadCost, KvRoleCost, ParamCounts, PerToken, PlanOptions, PublishedCheck,
    Summary, Totals, WeightFormat,
};
use serde::Serialize;

pub use dhurandhar_plan::{describe_changes, summary_line, Change, PleLayout};

use crate::model::{is_yaml_path, resolve_model, ResolvedModel, MAX_PROFILE_BYTES};
use crate::{Error, Result};

/// Version of the [`AnalyzeReport`] document; bumped on any incompatible change.
/// 2: a mitigation's `change` is a list of typed [`Change`]s (was a flag string) and
/// summary lines name options in words.
/// 3: speed bounds. Devices and modes carry `bounds` (flash / memory_bandwidth / compute,
/// each with its per-token work), `binding_bound`, `prefill_tps_ceiling` and
/// `unchecked_bounds`; `decode_tps_ceiling` is the minimum of the bounds (resident has one
/// now); an infeasible device's `headroom_bytes` is budget minus the RAM it needs to
/// reach the target; stream headroom counts its weight cache as used; mitigations carry
/// `cost` and are sorted by it; `per_token` gains RAM bytes and FLOPs.
pub const SCHEMA_VERSION: u32 = 3;
/// The model planned when none is named.
pub const DEFAULT_MODEL: &str = "gemma4-e2b";
/// int4 with per-channel scales: the format of the LiteRT-LM checkpoints whose
/// published sizes the plan is cross-checked against.
pub const DEFAULT_WEIGHT_FORMAT: &str = "int4";
/// The KV codec charged when neither a codec nor KV bits are given.
pub const DEFAULT_KV_CODEC: Codec = Codec::TurboMse;
/// A codec's bit width when none is given (or its only width if it has no 4-bit mode).
pub const DEFAULT_KV_CODEC_BITS: u32 = 4;
/// KV widths mitigations try below the planned one.
const KV_LADDER: [u32; 4] = [8, 4, 3, 2];

/// How the weights are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightChoice {
    /// A named format with its real scale overhead (`q4_0`, `int4`, `int4-g128`, `bf16`, ...).
    Format(String),
    /// Plain bits per weight with no scale overhead (the Python tool's meaning).
    PlainBits(f64),
}

/// An ad-hoc device given by its two numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomDevice {
    /// RAM budget in MiB.
    pub ram_mb: f64,
    /// Sequential flash read bandwidth in GB/s.
    pub flash_gbps: f64,
}

/// What to plan: the model, the context, how weights and KV are stored, and the devices.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeOptions {
    /// Built-in name, YAML profile or checkpoint (see [`resolve_model`]).
    pub model: String,
    /// Tokens in the context (prompt + generated).
    pub context_tokens: u64,
    /// Weight storage; ignored for weight components when the model is a checkpoint.
    pub weights: WeightChoice,
    /// The KV codec whose encoded bytes are charged (`turbo-mse`, `q8_0`, ...). `None`
    /// with `kv_bits` also `None` charges [`DEFAULT_KV_CODEC`].
    pub kv_codec: Option<Codec>,
    /// With a codec: its bit width (whole bits; default 4, or its only width). Without
    /// one: a flat charge per value, fractional allowed: a what-if no codec stores.
    pub kv_bits: Option<f64>,
    /// Leave the audio encoder out.
    pub strip_audio: bool,
    /// Leave the vision encoder out.
    pub strip_vision: bool,
    /// Devices: built-in slugs, YAML device profiles, or `all` (every built-in). Empty
    /// means every built-in unless `custom_device` is given.
    pub devices: Vec<String>,
    /// An ad-hoc device, planned after `devices`.
    pub custom_device: Option<CustomDevice>,
    /// Decode speed a flash-backed mode must reach to count as viable.
    pub target_decode_tps: f64,
    /// PLE rows kept hot in the page cache in mmap mode (`None`: every context token).
    pub ple_hot_tokens: Option<u64>,
    /// PLE table layout on flash.
    pub ple_layout: PleLayout,
    /// Flash page size in KiB (1..=16384).
    pub page_kib: u64,
    /// Prefill chunk in tokens (sizes the activation peak).
    pub prefill_chunk: u64,
    /// Runtime overhead in MiB instead of the profile's.
    pub runtime_overhead_mb: Option<f64>,
    /// Shortest context a mitigation may propose (a shorter one is of little use).
    pub min_context_tokens: u64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            model: DEFAULT_MODEL.to_string(),
            context_tokens: 32768,
            weights: WeightChoice::Format(DEFAULT_WEIGHT_FORMAT.to_string()),
            kv_codec: None,
            kv_bits: None,
            strip_audio: true,
            strip_vision: false,
            devices: Vec::new(),
            custom_device: None,
            target_decode_tps: 15.0,
            ple_hot_tokens: None,
            ple_layout: PleLayout::Row,
            page_kib: 4,
            prefill_chunk: 512,
            runtime_overhead_mb: None,
            min_context_tokens: 1024,
        }
    }
}

/// `weight_format` in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FormatReport {
    pub name: String,
    /// Bits per weight including scales at this model's hidden size.
    pub bits_per_weight: f64,
    pub description: String,
    /// False when the weights came from a checkpoint (its own formats apply).
    pub applied: bool,
}

/// How the KV cache was charged.
#[derive(Debug, Clone, Serialize)]
pub struct KvReport {
    /// The codec whose encoded bytes are charged; `None` for a flat what-if.
    pub codec: Option<String>,
    /// The codec's bit width, or the flat bits.
    pub bits: f64,
    /// KV bytes × 8 / cached values at this context (side bytes and bf16 tails included).
    pub bits_per_value: f64,
    /// True when no codec was named: flat bits that no codec stores.
    pub what_if: bool,
    /// The charge in words.
    pub note: String,
}

/// The plan of one model on the chosen devices: the `analyze --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    pub schema_version: u32,
    pub model: ModelArchitecture,
    pub model_origin: String,
    pub context_tokens: u64,
    pub weight_format: FormatReport,
    pub kv_bits: f64,
    pub kv: KvReport,
    pub strip_audio: bool,
    pub strip_vision: bool,
    /// `estimated` or `checkpoint`.
    pub weights_source: &'static str,
    pub checkpoint_weights: Option<ComponentBytes>,
    pub components: Vec<Component>,
    pub totals: Totals,
    pub per_token: PerToken,
    pub params: ParamCounts,
    pub ple_hot_tokens: u64,
    pub published: Vec<PublishedCheck>,
    pub devices: Vec<DeviceAssessment>,
    pub summary: Summary,
    pub warnings: Vec<String>,
}

/// The planner's options from `opts` for `arch` (validated where the planner does not).
pub fn plan_options(opts: &AnalyzeOptions, arch: &ModelArchitecture) -> Result<PlanOptions> {
    let weight_format = match &opts.weights {
        WeightChoice::Format(f) => WeightFormat::parse(f)?,
        WeightChoice::PlainBits(b) => WeightFormat::plain_bits(*b)?,
    };
    if opts.page_kib == 0 || opts.page_kib > 16384 {
        return Err(Error::invalid(
            "page_kib",
            format!("must be in 1..=16384, got {}", opts.page_kib),
        ));
    }
    let (kv_bits, kv_codec) = match (&opts.kv_codec, opts.kv_bits) {
        (None, Some(bits)) => (bits, None),
        (codec, bits) => {
            let codec = codec.unwrap_or(DEFAULT_KV_CODEC);
            let bits = match bits {
                Some(b) if b.fract() != 0.0 || !(1.0..=32.0).contains(&b) => {
                    return Err(Error::invalid(
                        "kv_bits",
                        format!("a codec stores whole bits per value (1..=8), got {b}"),
                    ))
                }
                b => b.map(|b| b as u32),
            };
            let cost = kv_codec_cost(arch, codec, bits)?;
            (cost.widths[0].bits as f64, Some(cost))
        }
    };
    Ok(PlanOptions {
        context_tokens: opts.context_tokens,
        weight_format,
        kv_bits,
        kv_codec,
        strip_audio: opts.strip_audio,
        strip_vision: opts.strip_vision,
        page_bytes: opts.page_kib * 1024,
        ple_hot_tokens: opts.ple_hot_tokens,
        ple_layout: opts.ple_layout,
        prefill_chunk_tokens: opts.prefill_chunk,
        activation_bytes: 4,
        runtime_overhead_mb: opts.runtime_overhead_mb,
        min_context_tokens: opts.min_context_tokens,
    })
}

/// What `name` stores for every head_dim of `arch`, at `bits` (or its default width)
/// first, then at the lower widths mitigations may try. The one place that asks the KV
/// crate about a codec by name. Per-head side bytes (SpectralQuant's calibration, fitted
/// on the KV crate's synthetic low-rank samples as `kv bench` does) are charged once per
/// head and so amortised over the tokens it holds.
fn kv_codec_cost(arch: &ModelArchitecture, codec: Codec, bits: Option<u32>) -> Result<KvCodecCost> {
    use dhurandhar_kv::{KvCodec, KvRole};
    let supported = codec.supported_bits();
    let bits = bits.unwrap_or(
        if supported.contains(&DEFAULT_KV_CODEC_BITS) || supported.is_empty() {
            DEFAULT_KV_CODEC_BITS
        } else {
            supported[supported.len() - 1]
        },
    );
    let lower = KV_LADDER
        .into_iter()
        .filter(|&b| b < bits && supported.contains(&b));
    let role = |c: &dyn KvCodec, r: KvRole| {
        let g = c.token_group(r);
        KvRoleCost {
            token_group: g as u64,
            group_bytes: c.encoded_len(r, g) as u64,
            side_bytes: c.side_bytes(r) as u64,
        }
    };
    let mut widths = Vec::new();
    for b in std::iter::once(bits).chain(lower) {
        let codecs = dhurandhar_kv::model::codecs_for(arch, codec, b, dhurandhar_kv::DEFAULT_SEED)
            .map_err(|e| Error::from(e).context("kv_codec"))?;
        let heads = codecs
            .iter()
            .map(|(&head_dim, c)| KvHeadCost {
                head_dim,
                key: role(c.as_ref(), KvRole::Key),
                value: role(c.as_ref(), KvRole::Value),
            })
            .collect();
        widths.push(KvCodecWidth { bits: b, heads });
    }
    let side: Vec<String> = widths[0]
        .heads
        .iter()
        .filter(|h| h.key.side_bytes + h.value.side_bytes > 0)
        .map(|h| {
            format!(
                "{} B at head_dim {}",
                h.key.side_bytes + h.value.side_bytes,
                h.head_dim
            )
        })
        .collect();
    Ok(KvCodecCost {
        name: codec.name().to_string(),
        widths,
        side_note: (!side.is_empty()).then(|| {
            format!(
                "plus a calibration per KV head ({}) amortised over the tokens that head holds",
                side.join(", ")
            )
        }),
    })
}

/// The plan components that hold weights.
const WEIGHT_COMPONENTS: [&str; 5] = [
    "decoder_weights",
    "ple",
    "token_embeddings",
    "lm_head",
    "experts",
];

/// Plan the model on every selected device.
pub fn analyze(opts: &AnalyzeOptions) -> Result<AnalyzeReport> {
    analyze_resolved(opts, resolve_model(&opts.model)?, &[])
}

/// [`analyze`] for a front end that holds values rather than names: `arch` (when
/// given) is planned instead of resolving `opts.model`, and the `extra` device
/// profiles (a front end's own registry of custom devices) are assessed after the ones
/// `opts` names. With `None` and no extra devices this is exactly [`analyze`].
pub fn analyze_with(
    opts: &AnalyzeOptions,
    arch: Option<ModelArchitecture>,
    extra: &[DeviceProfile],
) -> Result<AnalyzeReport> {
    let model = match arch {
        Some(arch) => {
            arch.validate()?;
            ResolvedModel {
                arch,
                weights: None,
                origin: "given".to_string(),
                weights_estimated: false,
            }
        }
        None => resolve_model(&opts.model)?,
    };
    analyze_resolved(opts, model, extra)
}

/// [`analyze_with`] for a model already resolved (`opts.model` is not read): a front
/// end that holds a profile in memory (the web dashboard's uploaded YAML) plans it
/// without writing it to a file.
pub fn analyze_resolved(
    opts: &AnalyzeOptions,
    model: ResolvedModel,
    extra: &[DeviceProfile],
) -> Result<AnalyzeReport> {
    let plan_opts = plan_options(opts, &model.arch)?;
    let named = !opts.devices.is_empty() || opts.custom_device.is_some();
    let mut devices = if extra.is_empty() || named {
        select_devices(&opts.devices, opts.custom_device)?
    } else {
        Vec::new()
    };
    for d in extra {
        d.validate()
            .map_err(|e| Error::from(e).context(format!("invalid device `{}`", d.slug)))?;
        devices.push(d.clone());
    }
    let a = dhurandhar_plan::analyze(
        &model.arch,
        model.weights.as_ref(),
        &plan_opts,
        &devices,
        opts.target_decode_tps,
    )?;
    let mut p = a.plan;
    if model.weights_estimated {
        for c in &mut p.components {
            if WEIGHT_COMPONENTS.contains(&c.name) {
                c.note = format!("estimated (no weights beside the config): {}", c.note);
            }
        }
    }
    let kv = KvReport {
        note: match &p.kv_codec {
            Some(c) => format!(
                "charged at the encoded bytes of {c} at {} bits: {:.4} bits/value at {} tokens",
                p.kv_bits, p.kv_bits_per_value, p.context_tokens
            ),
            None => format!(
                "a what-if: {} bits per value charged flat with no codec named; a real codec \
                 also stores scales or norms",
                p.kv_bits
            ),
        },
        what_if: p.kv_codec.is_none(),
        codec: p.kv_codec,
        bits: p.kv_bits,
        bits_per_value: p.kv_bits_per_value,
    };
    Ok(AnalyzeReport {
        schema_version: SCHEMA_VERSION,
        model_origin: model.origin,
        context_tokens: p.context_tokens,
        weight_format: FormatReport {
            name: plan_opts.weight_format.name.clone(),
            bits_per_weight: p.weight_bits_per_weight,
            description: plan_opts.weight_format.description.clone(),
            applied: model.weights.is_none(),
        },
        kv_bits: p.kv_bits,
        kv,
        strip_audio: p.strip_audio,
        strip_vision: p.strip_vision,
        weights_source: p.weights_source,
        checkpoint_weights: model.weights,
        model: model.arch,
        components: p.components,
        totals: p.totals,
        per_token: p.per_token,
        params: p.params,
        ple_hot_tokens: p.ple_hot_tokens,
        published: p.published,
        devices: a.devices,
        summary: a.summary,
        warnings: p.warnings,
    })
}

/// One device: a built-in slug (case-insensitive), `host` (this machine as measured by
/// [`crate::probe`]) or a YAML device profile (its file stem is the slug unless the
/// profile names one).
pub fn resolve_device(spec: &str) -> Result<DeviceProfile> {
    if spec.trim().eq_ignore_ascii_case(crate::probe::HOST_SLUG) {
        return crate::probe::load_host();
    }
    let path = Path::new(spec);
    if is_yaml_path(path) {
        let text =
            dhurandhar_io::read_to_string_bounded(path, MAX_PROFILE_BYTES, "a device profile")
                .map_err(|e| Error::from(e).context("cannot read device profile"))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("device");
        return Ok(DeviceProfile::from_yaml_str(
            &text,
            &path.display().to_string(),
            stem,
        )?);
    }
    Ok(builtin_device(spec)?)
}

/// The devices `specs` name (`all` expands to every built-in), then the custom device;
/// every built-in when that leaves none.
pub fn select_devices(
    specs: &[String],
    custom: Option<CustomDevice>,
) -> Result<Vec<DeviceProfile>> {
    let mut out = Vec::new();
    for s in specs {
        if s.trim().eq_ignore_ascii_case("all") {
            out.extend(builtin_devices());
        } else {
            out.push(resolve_device(s)?);
        }
    }
    if let Some(c) = custom {
        out.push(
            DeviceProfile::custom(c.ram_mb, c.flash_gbps)
                .map_err(|e| Error::from(e).context("invalid custom device"))?,
        );
    }
    if out.is_empty() {
        out = builtin_devices();
    }
    Ok(out)
}

/// What the planner predicts for one benchmark thread count, next to what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPrediction {
    pub threads: usize,
    /// Decode ceiling at the run's context: the host's matvec rates measured on this many
    /// threads (or fewer) when probed, else its compute scaled to
    /// `min(threads, cpu_cores) / cpu_cores` of the probed (all-core) rate.
    pub decode_tps: Option<f64>,
    pub decode_bound: Option<dhurandhar_plan::BoundKind>,
    pub prefill_tps: Option<f64>,
    pub measured_decode_tps: Option<f64>,
    pub measured_prefill_tps: Option<f64>,
    /// (predicted − measured) / measured × 100.
    pub decode_error_pct: Option<f64>,
    pub prefill_error_pct: Option<f64>,
}

/// The planner's prediction for a run of a checkpoint on the probed `host` device.
#[derive(Debug, Clone, Serialize)]
pub struct RunPrediction {
    /// `host`.
    pub device: String,
    pub measured_at: Option<String>,
    pub context_tokens: u64,
    /// How the run held its weights.
    pub weight_mode: WeightMode,
    /// Weights in RAM (every tensor; streamed: the engine's buffers for its budget), the
    /// f32 KV cache, activations and the runtime's own footprint.
    pub peak_rss_bytes: u64,
    pub measured_peak_rss_bytes: Option<u64>,
    pub peak_rss_error_pct: Option<f64>,
    /// The runtime's own footprint in that total (see [`RunFacts::runtime_bytes`]).
    pub runtime_bytes: u64,
    /// Bytes one decoded token reads from RAM in the plan.
    pub ram_bytes_per_token: u64,
    /// Weight bytes one decoded token reads from the file: the streamed items of the
    /// engine's pool plan (0 unless streamed).
    pub flash_bytes_per_token: u64,
    /// The same, as the engine counted its reads.
    pub measured_flash_bytes_per_token: Option<f64>,
    /// The flash read rate the prediction used, GB/s, and where it came from.
    pub flash_read_gbps: f64,
    pub flash_read_source: FlashReadSource,
    pub threads: Vec<ThreadPrediction>,
}

/// A benchmark run for [`predict_run`] to predict: what was run and what it measured.
#[derive(Debug, Clone)]
pub struct RunFacts<'a> {
    /// The checkpoint (a path the model resolver reads).
    pub model: &'a str,
    pub context: u64,
    pub prefill_chunk: u64,
    /// (threads, measured prefill tok/s, measured decode tok/s) per thread count.
    pub threads: &'a [(usize, f64, f64)],
    pub measured_peak_rss: Option<u64>,
    /// The runtime's own footprint: RSS once the model was loaded minus the weights the
    /// load put in RAM (it replaces the profile's generic runtime overhead).
    pub runtime_bytes: Option<u64>,
    pub weight_mode: WeightMode,
    /// Streamed runs: how the engine spent the budget (window, pinned items, reads per
    /// pass).
    pub store: Option<&'a StorePlan>,
    /// Streamed runs: weight bytes read per decoded token, as counted.
    pub measured_flash_bytes_per_token: Option<f64>,
    /// The model file's own cold read rate, bytes/s, measured just before the run: it
    /// replaces the profile's flash figure, which the probe measured on its test file
    /// (a model on another disk, or a file the disk serves at another speed, reads at
    /// its own rate).
    pub file_read_bytes_per_s: Option<f64>,
}

/// Where a prediction's flash read rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashReadSource {
    /// The probed host profile (`devices --probe`, its test file).
    HostProfile,
    /// A cold read of the model file just before the run.
    ModelFile,
}

fn error_pct(predicted: Option<f64>, measured: Option<f64>) -> Option<f64> {
    match (predicted, measured) {
        (Some(p), Some(m)) if m > 0.0 => Some((p - m) / m * 100.0),
        _ => None,
    }
}

/// Expert bytes a streamed MoE model reads per token, if the router spread tokens
/// evenly and independently over the experts: each token uses `active / experts` of
/// every expert's bytes, and finds a share `cache / all experts` of them cached. Real
/// routing repeats experts from token to token, so this is an upper bound in practice
/// (docs/run.md measures the hit rate).
fn expert_reads_per_token(s: &StorePlan, arch: &ModelArchitecture) -> u64 {
    if s.expert_bytes == 0 || arch.num_experts == 0 {
        return 0;
    }
    let used = arch.num_active_experts as f64 / arch.num_experts as f64;
    let cached = (s.expert_cache_bytes as f64 / s.expert_bytes as f64).min(1.0);
    (s.expert_bytes as f64 * used * (1.0 - cached)).round() as u64
}

/// Predict a benchmark run of a checkpoint on `host`: the engine's f32 KV cache (32 bits
/// per value) at the run's context, prefill chunks of `prefill_chunk`, one prediction per
/// thread count. Weights in RAM follow the run's weight mode: all of them (resident, and
/// mapped, whose pages the run touches), or the engine's buffers for its budget plus the
/// norms (streamed), which then read `store.streamed_bytes_per_pass` per token from
/// flash. Errors when the host was never probed.
pub fn predict_run(f: &RunFacts<'_>) -> Result<RunPrediction> {
    let host = crate::probe::load_host()?;
    let resolved = resolve_model(f.model)?;
    let popts = AnalyzeOptions {
        model: f.model.to_string(),
        context_tokens: f.context,
        kv_bits: Some(32.0),
        prefill_chunk: f.prefill_chunk,
        runtime_overhead_mb: f.runtime_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        ..AnalyzeOptions::default()
    };
    let plan_opts = plan_options(&popts, &resolved.arch)?;
    let p = dhurandhar_plan::plan(&resolved.arch, resolved.weights.as_ref(), &plan_opts)?;
    let streamed = match (f.weight_mode, f.store) {
        (WeightMode::Stream, Some(s)) => {
            s.streamed_bytes_per_pass + expert_reads_per_token(s, &resolved.arch)
        }
        _ => 0,
    };
    let rss = match (f.weight_mode, f.store) {
        (WeightMode::Stream, Some(s)) => {
            ["kv_cache", "activations", "runtime_overhead"]
                .iter()
                .map(|c| p.component(c))
                .sum::<u64>()
                + s.resident_bytes
                + s.buffer_bytes
        }
        _ => p.totals.resident_bytes,
    };
    let (flash_read_gbps, flash_read_source) = match f.file_read_bytes_per_s {
        Some(r) if r.is_finite() && r > 0.0 => (r / 1e9, FlashReadSource::ModelFile),
        _ => (host.flash_read_gbps, FlashReadSource::HostProfile),
    };
    let cores = host.cpu_cores.unwrap_or(1).max(1) as f64;
    // Resident weights are interleaved by eight rows where the engine can (x86): they
    // run at the interleaved rates the probe measured, where it measured them (the one
    // interleaved Q8_0 figure for every batched matmul only on a profile without
    // per-type prefill rates).
    let resident = f.weight_mode == WeightMode::Resident;
    let int8 = match (resident, host.compute_int8_interleaved_gops) {
        (true, Some(x8)) => Some(x8),
        _ => host.compute_int8_gops,
    };
    let mut out = Vec::new();
    for &(t, prefill, decode) in f.threads {
        let share = (t as f64).min(cores) / cores;
        let d = DeviceProfile {
            compute_f32_gflops: host.compute_f32_gflops.map(|g| g * share),
            compute_int8_gops: int8.map(|g| g * share),
            matvec: host.matvec.as_ref().map(|m| {
                if resident {
                    m.interleaved().only(t)
                } else {
                    m.only(t)
                }
            }),
            flash_read_gbps,
            ..host.clone()
        };
        let c = dhurandhar_plan::ceilings(&p, &d, streamed as f64);
        let measured = |x: f64| (x > 0.0).then_some(x);
        out.push(ThreadPrediction {
            threads: t,
            decode_tps: c.decode_tps,
            decode_bound: c.decode_bound,
            prefill_tps: c.prefill_tps,
            measured_decode_tps: measured(decode),
            measured_prefill_tps: measured(prefill),
            decode_error_pct: error_pct(c.decode_tps, measured(decode)),
            prefill_error_pct: error_pct(c.prefill_tps, measured(prefill)),
        });
    }
    Ok(RunPrediction {
        device: host.slug.clone(),
        measured_at: host.measured_at.clone(),
        context_tokens: f.context,
        weight_mode: f.weight_mode,
        peak_rss_bytes: rss,
        measured_peak_rss_bytes: f.measured_peak_rss,
        peak_rss_error_pct: error_pct(Some(rss as f64), f.measured_peak_rss.map(|m| m as f64)),
        runtime_bytes: p.component("runtime_overhead"),
        ram_bytes_per_token: p.per_token.ram_bytes,
        flash_bytes_per_token: streamed,
        flash_read_gbps,
        flash_read_source,
        measured_flash_bytes_per_token: f.measured_flash_bytes_per_token,
        threads: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_experts_are_predicted_at_the_uncached_share_of_the_active_ones() {
        let mut arch = dhurandhar_model::registry::get("qwen3-30b-a3b").unwrap();
        arch.num_experts = 32;
        arch.num_active_experts = 4;
        let mut s = StorePlan {
            budget_bytes: None,
            kv_bytes: 0,
            activation_bytes: 0,
            resident_bytes: 0,
            fixed_bytes: 0,
            pool_bytes: 0,
            buffer_bytes: 0,
            window_slots: 2,
            pinned_layers: 0,
            head_chunks: 0,
            pinned_head_chunks: 0,
            streamed_bytes_per_pass: 0,
            expert_cache_bytes: 200,
            expert_bytes: 800,
        };
        // 800 bytes of experts, 4 of 32 used: 100 bytes per token, a quarter cached: 75.
        assert_eq!(expert_reads_per_token(&s, &arch), 75);
        s.expert_cache_bytes = 800;
        assert_eq!(expert_reads_per_token(&s, &arch), 0);
        s.expert_bytes = 0;
        assert_eq!(expert_reads_per_token(&s, &arch), 0);
    }

    #[test]
    fn analyze_with_values_matches_names() {
        let opts = AnalyzeOptions {
            model: "qwen2.5-0.5b".into(),
            devices: vec!["laptop_nvme".into()],
            ..AnalyzeOptions::default()
        };
        let by_name = analyze(&opts).unwrap();
        let arch = dhurandhar_model::registry::get("qwen2.5-0.5b").unwrap();
        let by_value = analyze_with(&opts, Some(arch), &[]).unwrap();
        assert_eq!(by_value.model_origin, "given");
        assert_eq!(by_value.totals, by_name.totals);
        let phone = DeviceProfile::custom(3072.0, 4.5).unwrap();
        let only = AnalyzeOptions {
            devices: vec![],
            ..opts.clone()
        };
        let r = analyze_with(&only, None, std::slice::from_ref(&phone)).unwrap();
        assert_eq!(
            r.devices.len(),
            1,
            "extra devices alone replace the built-ins"
        );
        let r = analyze_with(&opts, None, &[phone]).unwrap();
        let slugs: Vec<&str> = r.devices.iter().map(|d| d.slug.as_str()).collect();
        assert_eq!(slugs, ["laptop_nvme", "custom"]);
        let mut bad = DeviceProfile::custom(1.0, 1.0).unwrap();
        bad.ram_budget_mb = 0.0;
        assert!(analyze_with(&only, None, &[bad]).is_err());
    }

    fn kv_bytes(r: &AnalyzeReport) -> u64 {
        r.components
            .iter()
            .find(|c| c.name == "kv_cache")
            .map(|c| c.bytes)
            .unwrap()
    }

    fn opts(model: &str, ctx: u64) -> AnalyzeOptions {
        AnalyzeOptions {
            model: model.into(),
            context_tokens: ctx,
            devices: vec!["laptop_nvme".into()],
            ..AnalyzeOptions::default()
        }
    }

    /// A profile held in memory plans exactly as the same profile read from its file.
    #[test]
    fn analyze_resolved_equals_analyze_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.yaml");
        let yaml = crate::catalog::model_yaml("qwen2.5-0.5b").unwrap();
        std::fs::write(&path, &yaml).unwrap();
        let o = opts(path.to_str().unwrap(), 8192);
        let from_file = analyze(&o).unwrap();
        let model = resolve_model(path.to_str().unwrap()).unwrap();
        let held = analyze_resolved(
            &AnalyzeOptions {
                model: String::new(),
                ..o
            },
            model,
            &[],
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&held).unwrap()
        );
    }

    /// A Llama-3.2-1B config.json with no weights beside it: the weights are estimated at
    /// the chosen format (not 0 B), the notes say so, and a 1 GiB phone is no longer GO.
    #[test]
    fn config_json_without_weights_is_estimated_not_free() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":2048,
            "intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,
            "num_key_value_heads":8,"head_dim":64,"vocab_size":128256,
            "tie_word_embeddings":true,"max_position_embeddings":131072}"#,
        )
        .unwrap();
        let o = AnalyzeOptions {
            model: cfg.display().to_string(),
            context_tokens: 2048,
            weights: WeightChoice::Format("f16".into()),
            devices: Vec::new(),
            custom_device: Some(CustomDevice {
                ram_mb: 1024.0,
                flash_gbps: 1.0,
            }),
            ..AnalyzeOptions::default()
        };
        let r = analyze(&o).unwrap();
        let c = |n: &str| r.components.iter().find(|c| c.name == n).unwrap();
        // About 1.24 B params at 2 bytes each.
        let weights = c("decoder_weights").bytes + c("token_embeddings").bytes;
        assert!(
            weights > 2_000_000_000 && weights < 3_000_000_000,
            "{weights}"
        );
        assert!(
            c("decoder_weights").note.starts_with("estimated"),
            "{}",
            c("decoder_weights").note
        );
        assert_eq!(r.weights_source, "estimated");
        assert!(r.summary.go.is_empty(), "{:?}", r.summary);
    }

    #[test]
    fn default_charges_turbo_mse_4_like_kv_bench() {
        // head_dim 64 at 4 bits: 32 B of codes + a 2 B norm per vector = 4.25 bits/value;
        // 24 layers x 2 KV heads x (K + V) x 32768 tokens x 34 B.
        let r = analyze(&opts("qwen2.5-0.5b", 32768)).unwrap();
        assert_eq!(kv_bytes(&r), 106_954_752);
        assert_eq!(kv_bytes(&r), 24 * 2 * 2 * 32768 * 34);
        assert_eq!(r.kv.codec.as_deref(), Some("turbo-mse"));
        assert_eq!(r.kv.bits_per_value, 4.25);
        assert!(!r.kv.what_if);
    }

    #[test]
    fn codec_charge_equals_the_kv_crate_footprint() {
        // Windows, several head_dims (gemma4: 256/512), shared and SSM layers, partial
        // key groups (kivi2) and per-head calibration (spectral).
        let cases: &[(&str, Codec, u32, u64)] = &[
            ("gemma4-e2b", Codec::TurboMse, 4, 32768),
            ("gemma4-e2b", Codec::Q8_0, 8, 1000),
            ("llama-3.2-1b", Codec::Kivi2, 2, 1000),
            ("zaya1-8b", Codec::Turbo, 3, 4096),
            ("qwen2.5-0.5b", Codec::Spectral, 4, 777),
        ];
        for &(m, codec, bits, ctx) in cases {
            let o = AnalyzeOptions {
                kv_codec: Some(codec),
                kv_bits: Some(bits as f64),
                ..opts(m, ctx)
            };
            let r = analyze(&o).unwrap();
            let arch = dhurandhar_model::registry::get(m).unwrap();
            let fp = dhurandhar_kv::footprint(&arch, ctx, codec, bits, dhurandhar_kv::DEFAULT_SEED)
                .unwrap();
            assert_eq!(
                kv_bytes(&r),
                fp.compressed_bytes,
                "{m} {codec}@{bits} ctx {ctx}"
            );
            assert!((r.kv.bits_per_value - fp.bits_per_value).abs() < 1e-9);
        }
    }

    #[test]
    fn spectral_says_it_amortises_calibration() {
        let o = AnalyzeOptions {
            kv_codec: Some(Codec::Spectral),
            ..opts("qwen2.5-0.5b", 4096)
        };
        let r = analyze(&o).unwrap();
        let note = &r
            .components
            .iter()
            .find(|c| c.name == "kv_cache")
            .unwrap()
            .note;
        assert!(
            note.contains("calibration") && note.contains("amortised"),
            "{note}"
        );
    }

    #[test]
    fn plain_kv_bits_is_a_flat_what_if() {
        let o = AnalyzeOptions {
            kv_bits: Some(4.0),
            ..opts("qwen2.5-0.5b", 32768)
        };
        let r = analyze(&o).unwrap();
        assert_eq!(kv_bytes(&r), 24 * 2 * 2 * 32768 * 64 / 2);
        assert!(r.kv.what_if && r.kv.codec.is_none());
        assert!(r.kv.note.contains("what-if"));
    }

    #[test]
    fn bad_options_name_the_field() {
        let bad = |o: AnalyzeOptions| analyze(&o).unwrap_err().to_string();
        let e = bad(AnalyzeOptions {
            kv_codec: Some(Codec::TurboMse),
            kv_bits: Some(4.5),
            ..opts("qwen2.5-0.5b", 1024)
        });
        assert!(e.starts_with("kv_bits:"), "{e}");
        // An unknown codec cannot reach the planner: the name is checked when parsed.
        let e = "turbo-msx".parse::<Codec>().unwrap_err().to_string();
        assert!(e.contains("turbo-msx") && e.contains("turbo-mse"), "{e}");
        let e = bad(AnalyzeOptions {
            kv_codec: Some(Codec::Q8_0),
            kv_bits: Some(4.0),
            ..opts("qwen2.5-0.5b", 1024)
        });
        assert!(e.contains("q8_0") && e.contains("4 bits"), "{e}");
        let e = bad(AnalyzeOptions {
            page_kib: 0,
            ..opts("qwen2.5-0.5b", 1024)
        });
        assert!(e.starts_with("page_kib:"), "{e}");
        let e = bad(AnalyzeOptions {
            weights: WeightChoice::PlainBits(0.0),
            ..opts("qwen2.5-0.5b", 1024)
        });
        assert!(e.contains("quant bits"), "{e}");
        let e = bad(AnalyzeOptions {
            target_decode_tps: 0.0,
            ..opts("qwen2.5-0.5b", 1024)
        });
        assert!(e.contains("target decode"), "{e}");
    }

    #[test]
    fn codec_without_bits_takes_its_default_width() {
        let o = AnalyzeOptions {
            kv_codec: Some(Codec::Q8_0),
            ..opts("qwen2.5-0.5b", 1024)
        };
        assert_eq!(analyze(&o).unwrap().kv_bits, 8.0);
    }

    #[test]
    fn device_selection() {
        let slugs = |v: Vec<DeviceProfile>| v.into_iter().map(|d| d.slug).collect::<Vec<_>>();
        assert_eq!(select_devices(&[], None).unwrap().len(), 5);
        let custom = CustomDevice {
            ram_mb: 3072.0,
            flash_gbps: 2.0,
        };
        assert_eq!(
            slugs(select_devices(&[], Some(custom)).unwrap()),
            ["custom"]
        );
        let all = select_devices(&["ALL".into(), "tablet_ufs3".into()], Some(custom)).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[5].slug, "tablet_ufs3");
        let bad = CustomDevice {
            ram_mb: 0.0,
            flash_gbps: 2.0,
        };
        let e = select_devices(&[], Some(bad)).unwrap_err().to_string();
        assert!(e.contains("ram_budget_mb"), "{e}");
        let e = select_devices(&["laptop_nvm".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("laptop_nvme"), "{e}");
    }

    #[test]
    fn yaml_device_profile_takes_its_file_stem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("my_phone.yaml");
        std::fs::write(
            &p,
            "name: My phone\nram_budget_mb: 3072\nflash_read_gbps: 4.2\n",
        )
        .unwrap();
        let d = resolve_device(p.to_str().unwrap()).unwrap();
        assert_eq!(d.slug, "my_phone");
        assert_eq!(d.ram_budget_bytes(), 3072 * 1024 * 1024);
        let e = resolve_device(dir.path().join("none.yaml").to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device profile") && e.contains("none.yaml"),
            "{e}"
        );
    }

    #[test]
    fn mitigations_are_typed_changes() {
        let o = AnalyzeOptions {
            devices: vec!["mid_tier_mobile_ufs3".into()],
            ..AnalyzeOptions::default()
        };
        let r = analyze(&o).unwrap();
        let m = &r.devices[0].mitigations;
        assert!(
            m.iter()
                .any(|m| matches!(m.change[..], [Change::ContextTokens(_)])),
            "{m:?}"
        );
        let line = &r.summary.lines[0];
        assert!(
            line.contains("context_tokens=") && !line.contains("--"),
            "{line}"
        );
    }
}
