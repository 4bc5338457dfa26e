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

use dhurandhar_model::{ComponentBytes, ModelArchitecture};
use dhurandhar_plan::{
    builtin_device, builtin_devices, Component, DeviceAssessment, DeviceProfile, ParamCounts,
    PerToken, PlanOptions, PublishedCheck, Summary, Totals, WeightFormat,
};
use serde::Serialize;

pub use dhurandhar_plan::{describe_changes, summary_line, Change, PleLayout};

use crate::model::{is_yaml_path, resolve_model, MAX_PROFILE_BYTES};
use crate::{Error, Result};

/// Version of the [`AnalyzeReport`] document; bumped on any incompatible change.
/// 2: a mitigation's `change` is a list of typed [`Change`]s (was a flag string) and
/// summary lines name options in words.
pub const SCHEMA_VERSION: u32 = 2;
/// The model planned when none is named.
pub const DEFAULT_MODEL: &str = "gemma4-e2b";
/// int4 with per-channel scales: the format of the LiteRT-LM checkpoints whose
/// published sizes the plan is cross-checked against.
pub const DEFAULT_WEIGHT_FORMAT: &str = "int4";

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
    /// Bits per KV-cache value; fractional allowed.
    pub kv_bits: f64,
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
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            model: DEFAULT_MODEL.to_string(),
            context_tokens: 32768,
            weights: WeightChoice::Format(DEFAULT_WEIGHT_FORMAT.to_string()),
            kv_bits: 4.0,
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

/// The plan of one model on the chosen devices: the `analyze --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    pub schema_version: u32,
    pub model: ModelArchitecture,
    pub model_origin: String,
    pub context_tokens: u64,
    pub weight_format: FormatReport,
    pub kv_bits: f64,
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

/// The planner's options from `opts` (validated where the planner does not).
pub fn plan_options(opts: &AnalyzeOptions) -> Result<PlanOptions> {
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
    Ok(PlanOptions {
        context_tokens: opts.context_tokens,
        weight_format,
        kv_bits: opts.kv_bits,
        strip_audio: opts.strip_audio,
        strip_vision: opts.strip_vision,
        page_bytes: opts.page_kib * 1024,
        ple_hot_tokens: opts.ple_hot_tokens,
        ple_layout: opts.ple_layout,
        prefill_chunk_tokens: opts.prefill_chunk,
        activation_bytes: 4,
        runtime_overhead_mb: opts.runtime_overhead_mb,
    })
}

/// Plan the model on every selected device.
pub fn analyze(opts: &AnalyzeOptions) -> Result<AnalyzeReport> {
    let plan_opts = plan_options(opts)?;
    let model = resolve_model(&opts.model)?;
    let devices = select_devices(&opts.devices, opts.custom_device)?;
    let a = dhurandhar_plan::analyze(
        &model.arch,
        model.weights.as_ref(),
        &plan_opts,
        &devices,
        opts.target_decode_tps,
    )?;
    let p = a.plan;
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

/// One device: a built-in slug (case-insensitive) or a YAML device profile (its file
/// stem is the slug unless the profile names one).
pub fn resolve_device(spec: &str) -> Result<DeviceProfile> {
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
