//! Device verdicts: can the plan run resident, with the PLE mmap'd, with weights
//! streamed from flash, or not at all — and how fast can it decode at best.
//!
//! The decode ceiling is `flash bandwidth / bytes read from flash per token`. It is an
//! upper bound: it ignores compute, and uses the device's sequential bandwidth although
//! page-sized random reads are slower on every flash part.

use dhurandhar_model::{ComponentBytes, ModelArchitecture};
use serde::Serialize;

use crate::device::DeviceProfile;
use crate::error::PlanError;
use crate::format::{fmt_bits, WeightFormat};
use crate::plan::{plan, MemoryPlan, PlanOptions};

const MIB: f64 = 1024.0 * 1024.0;

/// Where the weights live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Everything in RAM.
    Resident,
    /// Everything in RAM except the PLE table, read through mmap.
    Mmap,
    /// Decoder weights (and PLE) read from flash as needed; what fits is cached.
    Stream,
    /// No mode fits the RAM budget at the target speed.
    Infeasible,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Resident => "resident",
            Mode::Mmap => "mmap",
            Mode::Stream => "stream",
            Mode::Infeasible => "infeasible",
        }
    }
}

/// One mode evaluated on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeEval {
    pub mode: Mode,
    /// Minimum RAM the mode needs.
    pub ram_bytes: u64,
    /// Budget minus `ram_bytes` (negative = shortfall).
    pub headroom_bytes: i64,
    pub fits_ram: bool,
    /// Bytes read from flash per decoded token.
    pub flash_bytes_per_token: u64,
    /// Flash bandwidth / flash bytes per token; `None` when nothing is read from flash.
    pub decode_tps_ceiling: Option<f64>,
    /// Fits RAM and the ceiling reaches the target.
    pub viable: bool,
    pub note: String,
}

/// One option changed from what was planned. Front ends spell it their own way (the
/// CLI as a flag); [`Display`](std::fmt::Display) names the planner option.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "option", content = "value", rename_all = "snake_case")]
pub enum Change {
    /// Plan this many context tokens.
    ContextTokens(u64),
    /// Keep this many PLE rows hot in the page cache (mmap mode).
    PleHotTokens(u64),
    /// Charge the KV cache at a flat number of bits per value (no codec named).
    KvBits(f64),
    /// Charge the KV cache at this codec's encoded bytes at `bits` bits.
    KvCodec { codec: String, bits: u32 },
    /// Leave the audio encoder out.
    StripAudio,
    /// Leave the vision encoder out.
    StripVision,
    /// Store the weights in this format.
    WeightFormat(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::ContextTokens(c) => write!(f, "context_tokens={c}"),
            Change::PleHotTokens(n) => write!(f, "ple_hot_tokens={n}"),
            Change::KvBits(b) => write!(f, "kv_bits={b}"),
            Change::KvCodec { codec, bits } => write!(f, "kv_codec={codec} kv_bits={bits}"),
            Change::StripAudio => f.write_str("strip_audio"),
            Change::StripVision => f.write_str("strip_vision"),
            Change::WeightFormat(w) => write!(f, "weight_format={w}"),
        }
    }
}

/// Changes in words: `context_tokens=4096, strip_vision`.
pub fn describe_changes(changes: &[Change]) -> String {
    let v: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    v.join(", ")
}

/// A change that would make an infeasible device work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mitigation {
    /// The options to change together (one, or a combination when no single one works).
    pub change: Vec<Change>,
    pub mode: Mode,
    pub headroom_bytes: i64,
    pub decode_tps_ceiling: Option<f64>,
}

/// The verdict for one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAssessment {
    pub slug: String,
    pub name: String,
    pub ram_budget_bytes: u64,
    pub flash_read_gbps: f64,
    /// The cheapest viable mode (resident < mmap < stream), or infeasible.
    pub mode: Mode,
    /// Headroom of the chosen mode; for infeasible, of the mode closest to fitting.
    pub headroom_bytes: i64,
    pub decode_tps_ceiling: Option<f64>,
    pub flash_bytes_per_token: u64,
    pub target_decode_tps: f64,
    pub notes: Vec<String>,
    /// Every mode that applies, evaluated.
    pub modes: Vec<ModeEval>,
    /// For infeasible devices: single changes (or one combination) that make it work.
    pub mitigations: Vec<Mitigation>,
}

fn mib(b: i128) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

fn tps(x: Option<f64>) -> String {
    match x {
        None => "not flash-bound".into(),
        Some(t) if t >= 100.0 => format!("{t:.0} tok/s"),
        Some(t) => format!("{t:.1} tok/s"),
    }
}

/// Evaluate every mode of `plan` on `device` and pick the verdict.
pub fn assess(
    plan: &MemoryPlan,
    device: &DeviceProfile,
    target_decode_tps: f64,
) -> DeviceAssessment {
    let budget = device.ram_budget_bytes();
    let bw = device.flash_bytes_per_sec();
    let head = |ram: u64| budget as i64 - ram as i64;
    let ceiling = |bytes: u64| {
        if bytes == 0 {
            None
        } else {
            Some(bw / bytes as f64)
        }
    };
    let meets = |c: Option<f64>| c.is_none_or(|t| t >= target_decode_tps);
    let mut modes = Vec::new();

    // Resident.
    let r = plan.totals.resident_bytes;
    modes.push(ModeEval {
        mode: Mode::Resident,
        ram_bytes: r,
        headroom_bytes: head(r),
        fits_ram: r <= budget,
        flash_bytes_per_token: 0,
        decode_tps_ceiling: None,
        viable: r <= budget,
        note: if r <= budget {
            format!("fits resident with {} headroom", mib(head(r) as i128))
        } else {
            format!(
                "resident needs {}, short by {}",
                mib(r as i128),
                mib(-(head(r) as i128))
            )
        },
    });

    // PLE mmap'd.
    let ple_flash = plan.per_token.ple_flash_bytes;
    if plan.has_ple {
        let m = plan.totals.ple_mmap_bytes;
        let c = ceiling(ple_flash);
        let fits = m <= budget;
        modes.push(ModeEval {
            mode: Mode::Mmap,
            ram_bytes: m,
            headroom_bytes: head(m),
            fits_ram: fits,
            flash_bytes_per_token: ple_flash,
            decode_tps_ceiling: c,
            viable: fits && meets(c),
            note: format!(
                "PLE mmap'd ({} hot rows cached = {}): {} headroom; a cold token reads {:.2} pages = {} B of PLE -> ceiling {}",
                plan.ple_hot_tokens,
                mib(plan.totals.ple_working_set_bytes as i128),
                mib(head(m) as i128),
                plan.per_token.ple_pages,
                ple_flash,
                tps(c)
            ),
        });
    }

    // Weights streamed.
    let streamable = plan.totals.streamable_weight_bytes;
    if streamable > 0 {
        let fixed = plan.totals.ple_mmap_bytes - streamable.min(plan.totals.ple_mmap_bytes);
        // Double-buffer the largest layer (its active experts only) so one layer
        // computes while the next loads; priced at the weight bytes per parameter.
        let weight_params = plan.params.decoder + plan.params.experts + plan.params.lm_head;
        let bytes_per_param = if weight_params > 0 {
            streamable as f64 / weight_params as f64
        } else {
            0.0
        };
        let buffer = (2.0 * plan.params.largest_layer as f64 * bytes_per_param).ceil() as u64;
        let min_ram = fixed + buffer;
        let fits = min_ram <= budget;
        let cache = if fits {
            (budget - min_ram).min(streamable)
        } else {
            0
        };
        // Per token: every dense weight (decoder + untied LM head), the active share of
        // the experts. The cache pins dense weights first (every token needs them), then
        // a uniform share of the experts. Tied embeddings are the LM head and stay
        // resident (in `fixed`).
        let dense = (plan.component("decoder_weights") + plan.component("lm_head")) as f64;
        let experts = plan.component("experts") as f64;
        let dense_cached = (cache as f64).min(dense);
        let expert_cached = (cache as f64 - dense_cached).min(experts);
        let expert_miss = if experts > 0.0 {
            1.0 - expert_cached / experts
        } else {
            0.0
        };
        let flash = ((dense - dense_cached) + experts * plan.expert_active_fraction * expert_miss)
            .ceil() as u64
            + ple_flash;
        let cached_pct = 100.0 * cache as f64 / streamable as f64;
        let c = ceiling(flash);
        modes.push(ModeEval {
            mode: Mode::Stream,
            ram_bytes: min_ram,
            headroom_bytes: head(min_ram),
            fits_ram: fits,
            flash_bytes_per_token: flash,
            decode_tps_ceiling: c,
            viable: fits && meets(c),
            note: if fits {
                format!(
                    "weights streamed: needs {} (2-layer buffer {}), the other {} caches {:.0}% of {} of weights; a token reads {} from flash -> ceiling {}",
                    mib(min_ram as i128),
                    mib(buffer as i128),
                    mib(head(min_ram) as i128),
                    cached_pct,
                    mib(streamable as i128),
                    mib(flash as i128),
                    tps(c)
                )
            } else {
                format!(
                    "even streaming the weights needs {}, short by {}",
                    mib(min_ram as i128),
                    mib(-(head(min_ram) as i128))
                )
            },
        });
    }

    let chosen = modes.iter().find(|m| m.viable).cloned();
    let mut notes = Vec::new();
    let (mode, headroom, ceil, flash) = match &chosen {
        Some(m) => {
            notes.push(m.note.clone());
            (
                m.mode,
                m.headroom_bytes,
                m.decode_tps_ceiling,
                m.flash_bytes_per_token,
            )
        }
        None => {
            // Closest to working: a mode that fits but is too slow, else the smallest shortfall.
            let fitting = modes.iter().filter(|m| m.fits_ram).max_by(|a, b| {
                a.decode_tps_ceiling
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b.decode_tps_ceiling.unwrap_or(f64::INFINITY))
            });
            match fitting {
                Some(m) => {
                    notes.push(format!(
                        "fits RAM only as {} ({} headroom), but the flash ceiling {} is below the {} tok/s target",
                        m.mode.as_str(),
                        mib(m.headroom_bytes as i128),
                        tps(m.decode_tps_ceiling),
                        fmt_bits(target_decode_tps)
                    ));
                    (
                        Mode::Infeasible,
                        m.headroom_bytes,
                        m.decode_tps_ceiling,
                        m.flash_bytes_per_token,
                    )
                }
                None => {
                    let best = modes
                        .iter()
                        .max_by_key(|m| m.headroom_bytes)
                        .expect("resident mode is always evaluated");
                    notes.push(format!(
                        "insufficient RAM in every mode: the smallest ({}) needs {}, short by {}",
                        best.mode.as_str(),
                        mib(best.ram_bytes as i128),
                        mib(-(best.headroom_bytes as i128))
                    ));
                    (
                        Mode::Infeasible,
                        best.headroom_bytes,
                        None,
                        best.flash_bytes_per_token,
                    )
                }
            }
        }
    };
    DeviceAssessment {
        slug: device.slug.clone(),
        name: device.name.clone(),
        ram_budget_bytes: budget,
        flash_read_gbps: device.flash_read_gbps,
        mode,
        headroom_bytes: headroom,
        decode_tps_ceiling: ceil,
        flash_bytes_per_token: flash,
        target_decode_tps,
        notes,
        modes,
        mitigations: Vec::new(),
    }
}

/// Plan + every device + mitigations + go/no-go summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub plan: MemoryPlan,
    pub devices: Vec<DeviceAssessment>,
    pub summary: Summary,
}

/// The go/no-go verdict over all devices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Devices that work as configured (slug).
    pub go: Vec<String>,
    /// Devices that do not (slug).
    pub no_go: Vec<String>,
    /// One sentence per device (changes named by their option, see [`Change`]).
    pub lines: Vec<String>,
}

fn verdict_for(
    arch: &ModelArchitecture,
    weights: Option<&ComponentBytes>,
    opts: &PlanOptions,
    device: &DeviceProfile,
    target: f64,
) -> Option<DeviceAssessment> {
    let p = plan(arch, weights, opts).ok()?;
    let a = assess(&p, device, target);
    (a.mode != Mode::Infeasible).then_some(a)
}

fn mitigation(change: Vec<Change>, a: DeviceAssessment) -> Mitigation {
    Mitigation {
        change,
        mode: a.mode,
        headroom_bytes: a.headroom_bytes,
        decode_tps_ceiling: a.decode_tps_ceiling,
    }
}

/// Single changes that make `device` work, then one combination if none does alone.
pub fn mitigations(
    arch: &ModelArchitecture,
    weights: Option<&ComponentBytes>,
    opts: &PlanOptions,
    device: &DeviceProfile,
    target: f64,
) -> Vec<Mitigation> {
    let mut out = Vec::new();
    // Largest context that works (memory grows monotonically with context).
    let try_ctx = |c: u64| {
        let o = PlanOptions {
            context_tokens: c,
            ..opts.clone()
        };
        verdict_for(arch, weights, &o, device, target)
    };
    if opts.context_tokens > 1 && try_ctx(1).is_some() {
        let (mut lo, mut hi) = (1u64, opts.context_tokens - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if try_ctx(mid).is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let c = if lo >= 1024 { lo / 256 * 256 } else { lo };
        if let Some(a) = try_ctx(c) {
            out.push(mitigation(vec![Change::ContextTokens(c)], a));
        }
    }
    // Fewer PLE rows kept in the page cache: the ceiling already assumes every lookup is
    // a cold read, so this trades only RAM. Largest hot set that makes mmap mode work.
    if arch.has_ple {
        let current = opts
            .ple_hot_tokens
            .unwrap_or(opts.context_tokens)
            .min(arch.ple_vocab_size);
        let try_hot = |h: u64| {
            let o = PlanOptions {
                ple_hot_tokens: Some(h),
                ..opts.clone()
            };
            verdict_for(arch, weights, &o, device, target).filter(|a| a.mode == Mode::Mmap)
        };
        if current > 0 && try_hot(0).is_some() {
            let (mut lo, mut hi) = (0u64, current - 1);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if try_hot(mid).is_some() {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            if let Some(a) = try_hot(lo) {
                out.push(mitigation(vec![Change::PleHotTokens(lo)], a));
            }
        }
    }
    // Fewer KV bits: the same codec at a lower width it was costed at, or flat bits.
    let kv_available = |kb: f64| opts.kv_codec.as_ref().is_none_or(|c| c.width(kb).is_some());
    let kv_change = |kb: f64| match &opts.kv_codec {
        None => Change::KvBits(kb),
        Some(c) => Change::KvCodec {
            codec: c.name.clone(),
            bits: kb as u32,
        },
    };
    for kb in [8.0, 4.0, 3.0, 2.0] {
        if kb < opts.kv_bits && kv_available(kb) {
            let o = PlanOptions {
                kv_bits: kb,
                ..opts.clone()
            };
            if let Some(a) = verdict_for(arch, weights, &o, device, target) {
                out.push(mitigation(vec![kv_change(kb)], a));
                break;
            }
        }
    }
    let has_audio = arch.audio_encoder_mb > 0.0 || arch.audio_encoder_params_b > 0.0;
    if !opts.strip_audio && has_audio {
        let o = PlanOptions {
            strip_audio: true,
            ..opts.clone()
        };
        if let Some(a) = verdict_for(arch, weights, &o, device, target) {
            out.push(mitigation(vec![Change::StripAudio], a));
        }
    }
    let has_vision = arch.vision_encoder_mb > 0.0 || arch.vision_encoder_params_b > 0.0;
    if !opts.strip_vision && has_vision {
        let o = PlanOptions {
            strip_vision: true,
            ..opts.clone()
        };
        if let Some(a) = verdict_for(arch, weights, &o, device, target) {
            out.push(mitigation(vec![Change::StripVision], a));
        }
    }
    if weights.is_none() {
        let cur = opts.weight_format.bits_per_weight(arch.hidden_size);
        for f in ["q4_k", "int4", "q3_k", "q2_k"] {
            let Ok(wf) = WeightFormat::parse(f) else {
                continue;
            };
            if wf.bits_per_weight(arch.hidden_size) >= cur {
                continue;
            }
            let o = PlanOptions {
                weight_format: wf,
                ..opts.clone()
            };
            if let Some(a) = verdict_for(arch, weights, &o, device, target) {
                out.push(mitigation(vec![Change::WeightFormat(f.to_string())], a));
                break;
            }
        }
    }
    if out.is_empty() {
        let mut o = opts.clone();
        let mut changes = Vec::new();
        if o.context_tokens > 4096 {
            o.context_tokens = 4096;
            changes.push(Change::ContextTokens(4096));
        }
        if o.kv_bits > 2.0 && kv_available(2.0) {
            o.kv_bits = 2.0;
            changes.push(kv_change(2.0));
        }
        if !o.strip_audio && has_audio {
            o.strip_audio = true;
            changes.push(Change::StripAudio);
        }
        if !o.strip_vision && has_vision {
            o.strip_vision = true;
            changes.push(Change::StripVision);
        }
        if weights.is_none() {
            if let Ok(wf) = WeightFormat::parse("q2_k") {
                if wf.bits_per_weight(arch.hidden_size)
                    < opts.weight_format.bits_per_weight(arch.hidden_size)
                {
                    o.weight_format = wf;
                    changes.push(Change::WeightFormat("q2_k".to_string()));
                }
            }
        }
        if changes.len() > 1 {
            if let Some(a) = verdict_for(arch, weights, &o, device, target) {
                out.push(mitigation(changes, a));
            }
        }
    }
    out
}

/// One device's go/no-go sentence; `changes` spells a mitigation's changes (in words
/// for the report, as flags in the CLI).
pub fn summary_line(a: &DeviceAssessment, changes: &dyn Fn(&[Change]) -> String) -> String {
    if a.mode != Mode::Infeasible {
        return format!(
            "GO    {}: {} ({})",
            a.slug,
            a.mode.as_str(),
            tps(a.decode_tps_ceiling)
        );
    }
    let fix = if a.mitigations.is_empty() {
        "nothing tried fits: a smaller model or a larger device is needed".to_string()
    } else {
        let list: Vec<String> = a
            .mitigations
            .iter()
            .map(|m| format!("{} ({})", changes(&m.change), m.mode.as_str()))
            .collect();
        format!("would fit with {}", list.join(" or "))
    };
    format!("NO-GO {}: {}; {fix}", a.slug, a.notes.join("; "))
}

/// Plan `arch`, assess every device, add mitigations to the infeasible ones and write
/// the go/no-go summary.
pub fn analyze(
    arch: &ModelArchitecture,
    weights: Option<&ComponentBytes>,
    opts: &PlanOptions,
    devices: &[DeviceProfile],
    target_decode_tps: f64,
) -> Result<Analysis, PlanError> {
    if !(target_decode_tps.is_finite() && target_decode_tps > 0.0) {
        return Err(PlanError::option(
            "target decode tokens/s",
            format!("must be a positive number, got {target_decode_tps}"),
        ));
    }
    for d in devices {
        d.validate()?;
    }
    let p = plan(arch, weights, opts)?;
    let mut out = Vec::new();
    let mut summary = Summary {
        go: Vec::new(),
        no_go: Vec::new(),
        lines: Vec::new(),
    };
    for d in devices {
        let mut a = assess(&p, d, target_decode_tps);
        if a.mode == Mode::Infeasible {
            a.mitigations = mitigations(arch, weights, opts, d, target_decode_tps);
            summary.no_go.push(a.slug.clone());
        } else {
            summary.go.push(a.slug.clone());
        }
        summary.lines.push(summary_line(&a, &describe_changes));
        out.push(a);
    }
    Ok(Analysis {
        plan: p,
        devices: out,
        summary,
    })
}
