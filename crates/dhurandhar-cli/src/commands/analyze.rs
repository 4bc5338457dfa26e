//! `dhurandhar analyze`: flags → [`dhurandhar::plan::AnalyzeOptions`] → the report,
//! rendered as tables or JSON. Also serves the `dhurandhar-analyze-ple` alias.

use dhurandhar::plan::{
    self, AnalyzeOptions, AnalyzeReport, Change, CustomDevice, PleLayout, WeightChoice,
};
use dhurandhar::units::{human_bytes, signed_mib};

use crate::output::{emit, OutputArgs};
use crate::render::wide_table;

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
    #[arg(long, short = 'm', default_value = plan::DEFAULT_MODEL)]
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

    /// KV codec charged at its encoded bytes (see `dhurandhar kv`). Default: turbo-mse
    /// at 4 bits unless --kv-bits is given alone.
    #[arg(long, value_name = "NAME")]
    pub kv_codec: Option<dhurandhar::dhurandhar_kv::Codec>,

    /// The codec's bits per value; without --kv-codec, a flat what-if charge per value
    /// (fractional allowed) that no codec stores.
    #[arg(long, short = 'k', allow_negative_numbers = true)]
    pub kv_bits: Option<f64>,

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

    /// Shortest context a suggested fix may propose.
    #[arg(long, default_value_t = 1024)]
    pub min_context_tokens: u64,

    #[command(flatten)]
    pub out: OutputArgs,
}

impl Args {
    /// The facade options these flags describe.
    pub fn options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            model: self.model.clone(),
            context_tokens: self.context_tokens,
            weights: match (&self.weight_format, self.quant_bits) {
                (Some(f), _) => WeightChoice::Format(f.clone()),
                (None, Some(b)) => WeightChoice::PlainBits(b),
                (None, None) => AnalyzeOptions::default().weights,
            },
            kv_codec: self.kv_codec,
            kv_bits: self.kv_bits,
            strip_audio: !self.keep_audio,
            strip_vision: self.strip_vision,
            devices: self.device.clone(),
            custom_device: match (self.ram_mb, self.flash_gbps) {
                (Some(ram_mb), Some(flash_gbps)) => Some(CustomDevice { ram_mb, flash_gbps }),
                _ => None,
            },
            target_decode_tps: self.target_decode_tps,
            ple_hot_tokens: self.ple_hot_tokens,
            ple_layout: match self.ple_layout {
                LayoutArg::Row => PleLayout::Row,
                LayoutArg::PerLayer => PleLayout::PerLayer,
            },
            page_kib: self.page_kib,
            prefill_chunk: self.prefill_chunk,
            runtime_overhead_mb: self.runtime_overhead_mb,
            min_context_tokens: self.min_context_tokens,
        }
    }
}

/// A mitigation's changes as the flags that make them.
fn flags(changes: &[Change]) -> String {
    let v: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::ContextTokens(n) => format!("--context-tokens {n}"),
            Change::PleHotTokens(n) => format!("--ple-hot-tokens {n}"),
            Change::KvBits(b) => format!("--kv-bits {b}"),
            Change::KvCodec { codec, bits } => format!("--kv-codec {codec} --kv-bits {bits}"),
            Change::StripAudio => "--strip-audio".to_string(),
            Change::StripVision => "--strip-vision".to_string(),
            Change::WeightFormat(f) => format!("--weight-format {f}"),
        })
        .collect();
    v.join(" ")
}

const MIB: f64 = 1024.0 * 1024.0;

fn tps(x: Option<f64>) -> String {
    match x {
        None => "unknown".into(),
        Some(t) if t >= 100.0 => format!("{t:.0}"),
        Some(t) => format!("{t:.1}"),
    }
}

/// The human-readable report.
pub fn render(r: &AnalyzeReport) -> String {
    let mut s = String::new();
    let audio = if r.strip_audio {
        "audio stripped"
    } else {
        "audio kept"
    };
    let weights = if r.checkpoint_weights.is_some() {
        "weights: exact bytes from the checkpoint".to_string()
    } else {
        format!(
            "weights: {} ({:.4} bits/weight incl. scales)",
            r.weight_format.name, r.weight_format.bits_per_weight
        )
    };
    let kv = match &r.kv.codec {
        Some(c) => format!(
            "KV {c} {}-bit ({:.4} bits/value)",
            r.kv.bits, r.kv.bits_per_value
        ),
        None => format!("KV {} bits (what-if)", r.kv.bits),
    };
    s.push_str(&format!(
        "{} ({}) — context {} tokens — {} — {kv} — {audio}\n",
        r.model.name, r.model_origin, r.context_tokens, weights
    ));
    if r.kv.what_if {
        s.push_str(&format!(
            "note: KV is {}; name one with --kv-codec\n",
            r.kv.note
        ));
    }
    let mut t = wide_table("Component|Size|Notes", &[1]);
    for c in &r.components {
        t.add_row([c.name.to_string(), human_bytes(c.bytes), c.note.clone()]);
    }
    t.add_row([
        "TOTAL resident".to_string(),
        human_bytes(r.totals.resident_bytes),
        "everything in RAM".to_string(),
    ]);
    if r.model.has_ple {
        t.add_row([
            "TOTAL PLE mmap'd".to_string(),
            human_bytes(r.totals.ple_mmap_bytes),
            format!(
                "PLE table on flash; {} hot rows x {:.2} pages cached = {}; PLE/decoder = {:.2}",
                r.ple_hot_tokens,
                r.per_token.ple_pages,
                human_bytes(r.totals.ple_working_set_bytes),
                r.totals.ple_to_decoder_ratio
            ),
        ]);
    }
    s.push_str(&format!("{t}\n"));
    for c in &r.published {
        s.push_str(&format!(
            "published {}: {:.2} GB, this estimate {:.2} GB ({:+.0}%)\n",
            c.item,
            c.published_bytes as f64 / 1e9,
            c.estimated_bytes as f64 / 1e9,
            (c.ratio - 1.0) * 100.0
        ));
    }
    let header = "Device|RAM budget|Mode|Headroom|Decode tok/s|Bound|Prefill tok/s";
    let mut d = wide_table(header, &[1, 3, 4, 6]);
    for x in &r.devices {
        d.add_row([
            x.slug.clone(),
            format!("{:.0} MiB", x.ram_budget_bytes as f64 / MIB),
            x.mode.as_str().to_string(),
            signed_mib(x.headroom_bytes),
            tps(x.decode_tps_ceiling),
            x.binding_bound
                .map_or("unknown".to_string(), |b| b.words().to_string()),
            tps(x.prefill_tps_ceiling),
        ]);
    }
    s.push_str(&format!("\n{d}\n"));
    for x in &r.devices {
        s.push_str(&format!("\n{} — {}\n", x.slug, x.name));
        for n in &x.notes {
            s.push_str(&format!("  {n}\n"));
        }
        for b in &x.bounds {
            s.push_str(&format!(
                "    {} bound: {} — {}\n",
                b.kind.words(),
                b.tps
                    .map_or("unknown".to_string(), |t| format!("{} tok/s", tps(Some(t)))),
                b.note
            ));
        }
        for m in x.modes.iter().filter(|m| m.mode != x.mode) {
            s.push_str(&format!("  [{}] {}\n", m.mode.as_str(), m.note));
        }
    }
    s.push_str(&format!(
        "\nGo / no-go (target {} tok/s):\n",
        r.devices.first().map_or(0.0, |d| d.target_decode_tps)
    ));
    for x in &r.devices {
        s.push_str(&format!("  {}\n", plan::summary_line(x, &flags)));
    }
    s
}

/// Plan, print the warnings to stderr, and emit the report.
pub fn run_options(opts: &AnalyzeOptions, out: &OutputArgs) -> anyhow::Result<()> {
    let r = plan::analyze(opts)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    emit(out, &r, render)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    run_options(&args.options(), &args.out)
}
