//! `dhurandhar analyze`: peak memory breakdown at a context length and a verdict per
//! device (resident / PLE mmap'd / weights streamed / infeasible) with a decode ceiling.
//!
//! Also serves the Python tool's `dhurandhar-analyze-ple` command (see the alias binary).

use std::path::{Path, PathBuf};

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar_model::{ComponentBytes, ModelArchitecture};
use dhurandhar_plan::{
    analyze, builtin_device, builtin_devices, Analysis, DeviceProfile, PlanOptions, PleLayout,
    WeightFormat,
};
use serde::Serialize;

use crate::commands::model_arg::{resolve_model, ResolvedModel};
use crate::output::{print_json, write_json_file};

/// The model `analyze` uses when `--model` is not given.
pub const DEFAULT_MODEL: &str = "gemma4-e2b";
/// The weight format used when neither `--weight-format` nor `--quant-bits` is given:
/// int4 with per-channel scales, the format of the LiteRT-LM checkpoints whose
/// published sizes we cross-check against.
pub const DEFAULT_WEIGHT_FORMAT: &str = "int4";
/// Version of the JSON document; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// One contiguous row of layers × ple_dim per token (HF, GGUF, LiteRT).
    Row,
    /// One table per layer: every layer's slice costs its own page.
    PerLayer,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in name (see `dhurandhar models`), a YAML profile, or a checkpoint
    /// (.gguf, .safetensors, config.json, a model directory).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Tokens in the context (prompt + generated).
    #[arg(long, short = 'c', default_value_t = 32768)]
    pub context_tokens: u64,

    /// Weight format: f32, bf16, f16, q8_0, q6_k, q5_k, q5_0, q5_1, q4_k, q4_0, q4_1,
    /// q3_k, q2_k, nf4, intN (per-channel scales), intN-gG (scale per G weights), Nbit.
    #[arg(long, short = 'w', conflicts_with = "quant_bits")]
    pub weight_format: Option<String>,

    /// Plain bits per weight with no scale overhead (the Python tool's flag).
    #[arg(long, short = 'q', allow_negative_numbers = true)]
    pub quant_bits: Option<f64>,

    /// Bits per KV-cache element; fractional allowed (a codec's effective bits).
    #[arg(
        long,
        short = 'k',
        default_value_t = 4.0,
        allow_negative_numbers = true
    )]
    pub kv_bits: f64,

    /// Leave the audio encoder out (default).
    #[arg(long, overrides_with = "keep_audio")]
    pub strip_audio: bool,

    /// Keep the audio encoder.
    #[arg(long, overrides_with = "strip_audio")]
    pub keep_audio: bool,

    /// Leave the vision encoder out.
    #[arg(long)]
    pub strip_vision: bool,

    /// Device: a built-in slug (see `dhurandhar devices`) or a YAML device profile.
    /// Repeat for several. Default: every built-in device.
    #[arg(long, short = 'd')]
    pub device: Vec<String>,

    /// Ad-hoc device RAM budget in MiB (with --flash-gbps).
    #[arg(long, requires = "flash_gbps", allow_negative_numbers = true)]
    pub ram_mb: Option<f64>,

    /// Ad-hoc device flash read bandwidth in GB/s (with --ram-mb).
    #[arg(long, requires = "ram_mb", allow_negative_numbers = true)]
    pub flash_gbps: Option<f64>,

    /// Decode speed a flash-backed mode must reach to count as viable.
    #[arg(long, default_value_t = 15.0, allow_negative_numbers = true)]
    pub target_decode_tps: f64,

    /// PLE rows kept hot in the page cache in mmap mode (default: every context token).
    #[arg(long)]
    pub ple_hot_tokens: Option<u64>,

    /// PLE table layout on flash.
    #[arg(long, value_enum, default_value_t = LayoutArg::Row)]
    pub ple_layout: LayoutArg,

    /// Flash page size in KiB.
    #[arg(long, default_value_t = 4)]
    pub page_kib: u64,

    /// Prefill chunk size in tokens (sizes the activation peak).
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: u64,

    /// Override the profile's runtime overhead (MiB).
    #[arg(long, allow_negative_numbers = true)]
    pub runtime_overhead_mb: Option<f64>,

    /// Print the JSON document to stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON document to this file (atomically).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Resolve one `--device` value: a built-in slug, or a YAML profile path.
pub fn resolve_device(spec: &str) -> anyhow::Result<DeviceProfile> {
    let path = Path::new(spec);
    if crate::commands::model_arg::is_yaml_path(path) {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read device profile {}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("device")
            .to_string();
        return Ok(DeviceProfile::from_yaml_str(
            &text,
            &path.display().to_string(),
            &stem,
        )?);
    }
    Ok(builtin_device(spec)?)
}

/// The devices the flags select (built-ins when none).
pub fn select_devices(
    specs: &[String],
    ram_mb: Option<f64>,
    flash_gbps: Option<f64>,
) -> anyhow::Result<Vec<DeviceProfile>> {
    let mut out = Vec::new();
    for s in specs {
        if s.eq_ignore_ascii_case("all") {
            out.extend(builtin_devices());
        } else {
            out.push(resolve_device(s)?);
        }
    }
    if let (Some(r), Some(f)) = (ram_mb, flash_gbps) {
        out.push(
            DeviceProfile::custom(r, f)
                .context("invalid ad-hoc device from --ram-mb/--flash-gbps")?,
        );
    }
    if out.is_empty() {
        out = builtin_devices();
    }
    Ok(out)
}

/// Planner options from the flags.
pub fn plan_options(args: &Args) -> anyhow::Result<PlanOptions> {
    let weight_format = match (&args.weight_format, args.quant_bits) {
        (Some(f), _) => WeightFormat::parse(f)?,
        (None, Some(b)) => WeightFormat::plain_bits(b)?,
        (None, None) => WeightFormat::parse(DEFAULT_WEIGHT_FORMAT)?,
    };
    if args.page_kib == 0 || args.page_kib > 16384 {
        anyhow::bail!("invalid --page-kib {}: must be in 1..=16384", args.page_kib);
    }
    Ok(PlanOptions {
        context_tokens: args.context_tokens,
        weight_format,
        kv_bits: args.kv_bits,
        strip_audio: !args.keep_audio,
        strip_vision: args.strip_vision,
        page_bytes: args.page_kib * 1024,
        ple_hot_tokens: args.ple_hot_tokens,
        ple_layout: match args.ple_layout {
            LayoutArg::Row => PleLayout::Row,
            LayoutArg::PerLayer => PleLayout::PerLayer,
        },
        prefill_chunk_tokens: args.prefill_chunk,
        activation_bytes: 4,
        runtime_overhead_mb: args.runtime_overhead_mb,
    })
}

/// `weight_format` in the JSON document.
#[derive(Debug, Serialize)]
pub struct FormatJson {
    pub name: String,
    /// Bits per weight including scales at this model's hidden size.
    pub bits_per_weight: f64,
    pub description: String,
    /// False when the weights came from a checkpoint (its own formats apply).
    pub applied: bool,
}

/// The `analyze --json` document.
#[derive(Debug, Serialize)]
pub struct AnalyzeJson<'a> {
    pub schema_version: u32,
    pub model: &'a ModelArchitecture,
    pub model_origin: &'a str,
    pub context_tokens: u64,
    pub weight_format: FormatJson,
    pub kv_bits: f64,
    pub strip_audio: bool,
    pub strip_vision: bool,
    /// `estimated` or `checkpoint`.
    pub weights_source: &'static str,
    pub checkpoint_weights: Option<&'a ComponentBytes>,
    pub components: &'a [dhurandhar_plan::Component],
    pub totals: &'a dhurandhar_plan::Totals,
    pub per_token: &'a dhurandhar_plan::PerToken,
    pub params: &'a dhurandhar_plan::ParamCounts,
    pub ple_hot_tokens: u64,
    pub published: &'a [dhurandhar_plan::PublishedCheck],
    pub devices: &'a [dhurandhar_plan::DeviceAssessment],
    pub summary: &'a dhurandhar_plan::Summary,
    pub warnings: &'a [String],
}

/// Build the JSON document for an analysis.
pub fn to_json<'a>(
    model: &'a ResolvedModel,
    opts: &PlanOptions,
    a: &'a Analysis,
) -> AnalyzeJson<'a> {
    AnalyzeJson {
        schema_version: SCHEMA_VERSION,
        model: &model.arch,
        model_origin: &model.origin,
        context_tokens: a.plan.context_tokens,
        weight_format: FormatJson {
            name: opts.weight_format.name.clone(),
            bits_per_weight: a.plan.weight_bits_per_weight,
            description: opts.weight_format.description.clone(),
            applied: model.weights.is_none(),
        },
        kv_bits: a.plan.kv_bits,
        strip_audio: a.plan.strip_audio,
        strip_vision: a.plan.strip_vision,
        weights_source: a.plan.weights_source,
        checkpoint_weights: model.weights.as_ref(),
        components: &a.plan.components,
        totals: &a.plan.totals,
        per_token: &a.plan.per_token,
        params: &a.plan.params,
        ple_hot_tokens: a.plan.ple_hot_tokens,
        published: &a.plan.published,
        devices: &a.devices,
        summary: &a.summary,
        warnings: &a.plan.warnings,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `812.3 MiB`, `2.41 GiB`, `96 KiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn signed_mib(b: i64) -> String {
    format!("{:+.0} MiB", b as f64 / MIB)
}

fn tps(x: Option<f64>) -> String {
    match x {
        None => "n/a (no flash reads)".into(),
        Some(t) if t >= 100.0 => format!("{t:.0}"),
        Some(t) => format!("{t:.1}"),
    }
}

fn table(width: u16) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    t
}

/// The human-readable report.
pub fn render(model: &ResolvedModel, a: &Analysis) -> String {
    let p = &a.plan;
    let mut s = String::new();
    let audio = if p.strip_audio {
        "audio stripped"
    } else {
        "audio kept"
    };
    let weights = if model.weights.is_some() {
        "weights: exact bytes from the checkpoint".to_string()
    } else {
        format!(
            "weights: {} ({:.4} bits/weight incl. scales)",
            p.weight_format, p.weight_bits_per_weight
        )
    };
    s.push_str(&format!(
        "{} ({}) — context {} tokens — {} — KV {} bits — {}\n",
        p.model, model.origin, p.context_tokens, weights, p.kv_bits, audio
    ));
    let mut t = table(120);
    t.set_header(vec!["Component", "Size", "Notes"]);
    for c in &p.components {
        t.add_row(vec![
            Cell::new(c.name),
            Cell::new(human(c.bytes)).set_alignment(CellAlignment::Right),
            Cell::new(&c.note),
        ]);
    }
    t.add_row(vec![
        Cell::new("TOTAL resident"),
        Cell::new(human(p.totals.resident_bytes)).set_alignment(CellAlignment::Right),
        Cell::new("everything in RAM"),
    ]);
    if p.has_ple {
        t.add_row(vec![
            Cell::new("TOTAL PLE mmap'd"),
            Cell::new(human(p.totals.ple_mmap_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "PLE table on flash; {} hot rows x {:.2} pages cached = {}; PLE/decoder = {:.2}",
                p.ple_hot_tokens,
                p.per_token.ple_pages,
                human(p.totals.ple_working_set_bytes),
                p.totals.ple_to_decoder_ratio
            )),
        ]);
    }
    s.push_str(&t.to_string());
    s.push('\n');
    for c in &p.published {
        s.push_str(&format!(
            "published {}: {:.2} GB, this estimate {:.2} GB ({:+.0}%)\n",
            c.item,
            c.published_bytes as f64 / 1e9,
            c.estimated_bytes as f64 / 1e9,
            (c.ratio - 1.0) * 100.0
        ));
    }
    s.push('\n');
    let mut d = table(120);
    d.set_header(vec![
        "Device",
        "RAM budget",
        "Flash",
        "Mode",
        "Headroom",
        "Decode ceiling tok/s",
    ]);
    for x in &a.devices {
        d.add_row(vec![
            Cell::new(&x.slug),
            Cell::new(format!("{:.0} MiB", x.ram_budget_bytes as f64 / MIB))
                .set_alignment(CellAlignment::Right),
            Cell::new(format!("{} GB/s", x.flash_read_gbps)).set_alignment(CellAlignment::Right),
            Cell::new(x.mode.as_str()),
            Cell::new(signed_mib(x.headroom_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(tps(x.decode_tps_ceiling)).set_alignment(CellAlignment::Right),
        ]);
    }
    s.push_str(&d.to_string());
    s.push('\n');
    for x in &a.devices {
        s.push_str(&format!("\n{} — {}\n", x.slug, x.name));
        for n in &x.notes {
            s.push_str(&format!("  {n}\n"));
        }
        for m in &x.modes {
            if m.mode != x.mode {
                s.push_str(&format!("  [{}] {}\n", m.mode.as_str(), m.note));
            }
        }
    }
    s.push_str(&format!(
        "\nGo / no-go (target {} tok/s):\n",
        a.devices.first().map_or(0.0, |d| d.target_decode_tps)
    ));
    for l in &a.summary.lines {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Run the analysis the flags describe; returns the model, options and result.
pub fn compute(args: &Args) -> anyhow::Result<(ResolvedModel, PlanOptions, Analysis)> {
    let opts = plan_options(args)?;
    let model = resolve_model(&args.model)?;
    let devices = select_devices(&args.device, args.ram_mb, args.flash_gbps)?;
    let a = analyze(
        &model.arch,
        model.weights.as_ref(),
        &opts,
        &devices,
        args.target_decode_tps,
    )?;
    Ok((model, opts, a))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (model, opts, a) = compute(&args)?;
    for w in &a.plan.warnings {
        eprintln!("warning: {w}");
    }
    let doc = to_json(&model, &opts, &a);
    if let Some(path) = &args.json_out {
        write_json_file(path, &doc)?;
    }
    if args.json {
        print_json(&doc)?;
    } else {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(render(&model, &a).as_bytes())?;
        if let Some(path) = &args.json_out {
            writeln!(out, "\nJSON written to {}", path.display())?;
        }
    }
    Ok(())
}
