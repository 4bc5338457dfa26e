//! Device verdicts: can the plan run resident, with the PLE mmap'd, with weights
//! streamed from flash, or not at all — and how fast can it decode at best.
//!
//! Every mode has a decode ceiling: the minimum of three bounds, each an upper bound on
//! tokens/s from one resource (they assume the other two overlap perfectly):
//!
//! - **flash**: `1 / (streamed_bytes / flash_bw + ple_pages × max(page / flash_bw, 1 / iops))`
//!   — modes that read from flash only;
//! - **memory bandwidth**: `memory_bw / ram_bytes_per_token` (weights at their stored
//!   format, the KV cache at the planned context, the PLE and embedding rows, SSM state);
//! - **compute**: `1 / (matmul_flops / int8_rate + attention_flops / f32_rate)` (f32
//!   rate for the matmuls too when the weights are f16/bf16/f32). For decode on a
//!   device with measured one-token matvec rates (a probed host) and a checkpoint that
//!   gives its weight types: `1 / (attention_flops / f32_rate + Σ_type [weights /
//!   matvec_rate + rows × row_overhead + matrices × call_overhead])` — a one-row matvec
//!   cannot reuse a dequantized weight across tokens, so it runs well below the batched
//!   rate; a narrow row pays its fixed cost over fewer weights; every call pays for
//!   handing its rows to the threads; and each layer's vector work (norms, activation
//!   quantization, RoPE, the gated activation) runs on one thread.
//!
//! A device profile without a rate has that bound *unknown*: it is listed as unknown,
//! never taken as infinite, the verdict rests on the known bounds and says which were not
//! checked. A mode is viable when it fits RAM and its ceiling reaches the target.

use std::collections::BTreeMap;

use dhurandhar_model::{ComponentBytes, Matrices, ModelArchitecture};
use serde::Serialize;

use crate::device::{DeviceProfile, MatvecCost, MatvecRates};
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

/// The resource a speed bound comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundKind {
    /// Flash reads (sequential bandwidth and random-read IOPS).
    Flash,
    /// RAM read bandwidth.
    MemoryBandwidth,
    /// CPU arithmetic.
    Compute,
}

impl BoundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BoundKind::Flash => "flash",
            BoundKind::MemoryBandwidth => "memory_bandwidth",
            BoundKind::Compute => "compute",
        }
    }

    /// The words used in notes: `memory-bandwidth`.
    pub fn words(self) -> &'static str {
        match self {
            BoundKind::Flash => "flash",
            BoundKind::MemoryBandwidth => "memory-bandwidth",
            BoundKind::Compute => "compute",
        }
    }
}

/// One speed bound: the work a token needs from one resource and the tokens/s the
/// device's rate for it allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bound {
    pub kind: BoundKind,
    /// Work per token: bytes (flash, memory_bandwidth) or FLOPs (compute).
    pub per_token: f64,
    /// `bytes` or `flop`.
    pub unit: &'static str,
    /// Tokens/s this resource allows; `None` when the device profile lacks its rate.
    pub tps: Option<f64>,
    /// The arithmetic in words.
    pub note: String,
}

/// One mode evaluated on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeEval {
    pub mode: Mode,
    /// Minimum RAM the mode needs (stream: fixed part + layer buffer, before caching).
    pub ram_bytes: u64,
    /// Budget minus what the mode uses (stream: minus its weight cache too, so a budget
    /// spent on caching has no headroom left). Negative = shortfall.
    pub headroom_bytes: i64,
    pub fits_ram: bool,
    /// Bytes read from flash per decoded token.
    pub flash_bytes_per_token: u64,
    /// Decode ceiling: the minimum of the known bounds; `None` when none is known.
    pub decode_tps_ceiling: Option<f64>,
    /// The bound that sets the ceiling.
    pub binding_bound: Option<BoundKind>,
    /// Prefill ceiling (prompt tokens/s over a prompt of the planned context).
    pub prefill_tps_ceiling: Option<f64>,
    /// Decode bounds, each with its per-token work.
    pub bounds: Vec<Bound>,
    /// Prefill bounds.
    pub prefill_bounds: Vec<Bound>,
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

impl Change {
    /// What the change costs the user.
    pub fn cost(&self) -> Cost {
        match self {
            Change::ContextTokens(_) => Cost::Context,
            Change::StripAudio | Change::StripVision => Cost::Capability,
            Change::KvBits(_) | Change::KvCodec { .. } | Change::WeightFormat(_) => Cost::Quality,
            Change::PleHotTokens(_) => Cost::Speed,
        }
    }
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

/// What a mitigation costs the user, cheapest first: a shorter context, an encoder left
/// out, lower-fidelity weights or KV, slower decoding (more cold flash reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    Context,
    Capability,
    Quality,
    Speed,
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
    /// The dearest cost among the changes; mitigations are listed cheapest first.
    pub cost: Cost,
    pub mode: Mode,
    pub headroom_bytes: i64,
    pub decode_tps_ceiling: Option<f64>,
    pub binding_bound: Option<BoundKind>,
}

/// The verdict for one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAssessment {
    pub slug: String,
    pub name: String,
    pub ram_budget_bytes: u64,
    pub flash_read_gbps: f64,
    /// RAM bandwidth of the device (GB/s), when its profile gives it.
    pub memory_bandwidth_gbps: Option<f64>,
    /// The cheapest viable mode (resident < mmap < stream), or infeasible.
    pub mode: Mode,
    /// Headroom of the chosen mode. For infeasible: budget minus the RAM the closest
    /// mode would need to reach the target (negative); when no amount of RAM reaches it
    /// (a memory-bandwidth or compute bound below the target), the resident headroom,
    /// and the note says RAM is not what is missing.
    pub headroom_bytes: i64,
    pub decode_tps_ceiling: Option<f64>,
    /// The bound that sets the ceiling of the chosen (or closest) mode.
    pub binding_bound: Option<BoundKind>,
    pub prefill_tps_ceiling: Option<f64>,
    pub flash_bytes_per_token: u64,
    /// Decode bounds of the chosen (or closest) mode.
    pub bounds: Vec<Bound>,
    /// Bounds the device profile gives no rate for: the verdict did not check them.
    pub unchecked_bounds: Vec<BoundKind>,
    pub target_decode_tps: f64,
    pub notes: Vec<String>,
    /// Every mode that applies, evaluated.
    pub modes: Vec<ModeEval>,
    /// For infeasible devices: changes that make it work, cheapest cost first.
    pub mitigations: Vec<Mitigation>,
}

fn mib(b: i128) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

/// Bytes in the unit that shows them: `512 B`, `8.4 KiB`, `740 MiB`, `1.19 GiB`.
fn bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < MIB {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * MIB {
        format!("{:.0} MiB", b / MIB)
    } else {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    }
}

/// FLOPs in G: `2.31 GFLOP`.
fn gflop(f: f64) -> String {
    if f >= 1e9 {
        format!("{:.2} GFLOP", f / 1e9)
    } else {
        format!("{:.1} MFLOP", f / 1e6)
    }
}

fn tps(x: Option<f64>) -> String {
    match x {
        None => "unknown".into(),
        Some(t) if t >= 100.0 => format!("{t:.0} tok/s"),
        Some(t) => format!("{t:.1} tok/s"),
    }
}

/// `57.3 tok/s, memory-bandwidth bound`.
fn ceiling_words(c: Option<f64>, b: Option<BoundKind>) -> String {
    match (c, b) {
        (Some(_), Some(k)) => format!("{}, {} bound", tps(c), k.words()),
        _ => "unknown".into(),
    }
}

/// The per-device rates, in base units, `None` where the profile is silent.
struct Rates<'a> {
    flash: f64,
    iops: Option<f64>,
    mem: Option<f64>,
    f32: Option<f64>,
    int8: Option<f64>,
    /// One-token matvec costs by stored type (all threads).
    matvec: Option<BTreeMap<String, MatvecCost>>,
    /// Decode attention FLOP/s measured with the engine's kernels (all threads).
    attention: Option<f64>,
    /// Seconds each KV byte read from RAM adds to decode attention (all threads).
    kv_per_byte: Option<f64>,
    /// The one-token costs as measured, for what depends on the model's shape.
    matvec_rates: Option<&'a MatvecRates>,
}

impl<'a> Rates<'a> {
    fn of(d: &'a DeviceProfile) -> Self {
        Rates {
            flash: d.flash_bytes_per_sec(),
            iops: d.flash_random_read_iops,
            mem: d.memory_bytes_per_sec(),
            f32: d.compute_f32_gflops.map(|g| g * 1e9),
            int8: d.compute_int8_gops.map(|g| g * 1e9),
            matvec: d.matvec.as_ref().map(|m| m.all_threads()),
            attention: d
                .matvec
                .as_ref()
                .and_then(|m| m.attention_flops_per_s(usize::MAX)),
            kv_per_byte: d
                .matvec
                .as_ref()
                .and_then(|m| m.kv_seconds_per_byte(usize::MAX)),
            matvec_rates: d.matvec.as_ref(),
        }
    }
}

/// The flash bound of `streamed` sequential bytes plus `pages` random page reads.
fn flash_bound(r: &Rates, streamed: f64, pages: f64, page: f64) -> Bound {
    let per_page = match r.iops {
        Some(iops) => (page / r.flash).max(1.0 / iops),
        None => page / r.flash,
    };
    let secs = streamed / r.flash + pages * per_page;
    let per_token = streamed + pages * page;
    let mut note = String::new();
    if streamed > 0.0 {
        note.push_str(&format!(
            "{} of weights streamed at {} GB/s",
            bytes(streamed),
            fmt_bits(r.flash / 1e9)
        ));
    }
    if pages > 0.0 {
        if !note.is_empty() {
            note.push_str(" + ");
        }
        match r.iops {
            Some(iops) => note.push_str(&format!(
                "{pages:.2} random {} page reads at {} IOPS",
                bytes(page),
                iops
            )),
            None => note.push_str(&format!(
                "{pages:.2} random {} page reads at sequential speed (random-read IOPS unknown)",
                bytes(page)
            )),
        }
    }
    Bound {
        kind: BoundKind::Flash,
        per_token,
        unit: "bytes",
        tps: (secs > 0.0).then(|| 1.0 / secs),
        note,
    }
}

fn memory_bound(r: &Rates, ram_bytes: f64, what: &str) -> Bound {
    Bound {
        kind: BoundKind::MemoryBandwidth,
        per_token: ram_bytes,
        unit: "bytes",
        tps: r.mem.filter(|_| ram_bytes > 0.0).map(|bw| bw / ram_bytes),
        note: match r.mem {
            Some(bw) => format!(
                "{} read from RAM ({what}) at {} GB/s",
                bytes(ram_bytes),
                fmt_bits(bw / 1e9)
            ),
            None => format!(
                "{} read from RAM ({what}); memory bandwidth unknown",
                bytes(ram_bytes)
            ),
        },
    }
}

fn compute_bound(r: &Rates, matmul: f64, attention: f64, int8: bool) -> Bound {
    let mm_rate = if int8 { r.int8 } else { r.f32 };
    let secs = match (mm_rate, r.f32) {
        (Some(m), Some(f)) => Some(matmul / m + attention / f),
        _ => None,
    };
    let kind = if int8 { "int8" } else { "f32" };
    Bound {
        kind: BoundKind::Compute,
        per_token: matmul + attention,
        unit: "flop",
        tps: secs.filter(|s| *s > 0.0).map(|s| 1.0 / s),
        note: match secs {
            Some(_) => format!(
                "{} of {kind} matmuls + {} of f32 attention",
                gflop(matmul),
                gflop(attention)
            ),
            None => format!(
                "{} of {kind} matmuls + {} of f32 attention; compute throughput unknown",
                gflop(matmul),
                gflop(attention)
            ),
        },
    }
}

/// The prefill compute bound from each stored type's batched matmul rate (a probed
/// host): per prompt token `Σ_type 2 · weights / prefill_rate(type) + attention /
/// f32_rate`. `None` unless the device has a batched rate for every type the checkpoint
/// multiplies, and an f32 rate.
fn prefill_bound(r: &Rates, by_type: &BTreeMap<String, Matrices>, attention: f64) -> Option<Bound> {
    let matmuls = r.matvec_rates?.prefill_seconds(by_type, usize::MAX)?;
    let secs = matmuls + attention / r.f32?;
    let flops = 2.0 * by_type.values().map(|m| m.weights as f64).sum::<f64>();
    let types: Vec<&str> = by_type.keys().map(|k| k.as_str()).collect();
    Some(Bound {
        kind: BoundKind::Compute,
        per_token: flops + attention,
        unit: "flop",
        tps: (secs > 0.0).then(|| 1.0 / secs),
        note: format!(
            "{} of matmuls at each type's batched rate ({}) + {} of f32 attention",
            gflop(flops),
            types.join(", "),
            gflop(attention)
        ),
    })
}

/// The decode compute bound from one-token matvec costs: the sum over weight types of
/// `weights(type) / rate(type) + rows(type) × row_overhead(type) + matrices(type) ×
/// call_overhead`, plus `attention / attention_rate` (the measured decode-attention rate,
/// else the f32 matmul rate), plus the KV cache's bytes at the price of a byte from RAM
/// ([`crate::MatvecRates::kv_seconds_per_byte`], when the device has it), plus the
/// layers' vector work ([`crate::VectorCost`], when measured). `None` unless the device
/// has a rate for every stored type the token multiplies (and a rate for attention).
fn matvec_bound(
    r: &Rates,
    by_type: &BTreeMap<String, Matrices>,
    attention_by_kv_heads: &BTreeMap<u32, u64>,
    kv_bytes: f64,
    (vector_width, vector_ffn): (u64, u64),
) -> Option<Bound> {
    let rates = r.matvec.as_ref()?;
    let (att_rate, att_how) = match (r.attention, r.f32) {
        (Some(a), _) => (a, "measured"),
        (None, Some(f)) => (f, "f32 matmul"),
        (None, None) => return None,
    };
    if by_type.is_empty() {
        return None;
    }
    // Threads take whole KV heads: a head count the threads do not divide leaves some
    // of them idle for part of the attention.
    let split = |h: u32| r.matvec_rates.map_or(1.0, |m| m.attention_split_factor(h));
    let attention: f64 = attention_by_kv_heads.values().map(|&f| f as f64).sum();
    let mut secs: f64 = attention_by_kv_heads
        .iter()
        .map(|(&h, &f)| f as f64 / (att_rate * split(h)))
        .sum();
    let slowest = attention_by_kv_heads
        .keys()
        .map(|&h| (h, split(h)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, f)| *f < 1.0);
    for (t, m) in by_type {
        secs += rates.get(t)?.seconds(m);
    }
    // The KV cache comes from RAM each token (the weights stream through the caches
    // between one token's visits to a layer): its bytes at the rate measured for that.
    let kv_secs = r.kv_per_byte.map(|c| c * kv_bytes);
    secs += kv_secs.unwrap_or(0.0);
    // Norms, quantization, RoPE, activation, residuals: serial, whatever the threads.
    let vector_secs = r
        .matvec_rates
        .and_then(|m| m.vector_ns)
        .map(|v| v.seconds(vector_width, vector_ffn))
        .filter(|s| *s > 0.0);
    secs += vector_secs.unwrap_or(0.0);
    let weights: u64 = by_type.values().map(|m| m.weights).sum();
    let types: Vec<&str> = by_type.keys().map(|k| k.as_str()).collect();
    let kv_note = match kv_secs {
        Some(s) if kv_bytes > 0.0 && s > 0.0 => format!(
            " + {} of KV cache from RAM at {} GB/s beyond its FLOPs",
            bytes(kv_bytes),
            fmt_bits(kv_bytes / s / 1e9)
        ),
        _ => String::new(),
    };
    let vector_note = vector_secs.map_or(String::new(), |s| {
        format!(
            " + {:.0} µs of vector work (norms, quantization, RoPE, activation)",
            s * 1e6
        )
    });
    Some(Bound {
        kind: BoundKind::Compute,
        per_token: 2.0 * weights as f64 + attention,
        unit: "flop",
        tps: (secs > 0.0).then(|| 1.0 / secs),
        note: format!(
            "{} weights through one-token matvecs ({}) at the measured cost per type + {} of attention at the {att_how} rate{split_note}{kv_note}{vector_note}",
            format_count(weights as f64),
            types.join(", "),
            gflop(attention),
            split_note = slowest.map_or(String::new(), |(h, f)| format!(
                " (× {f:.2}: {h} KV heads split over the threads)"
            )),
        ),
    })
}

/// `135.5 M`, `1.24 G`.
fn format_count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else {
        format!("{:.1} M", n / 1e6)
    }
}

/// The minimum known bound and its kind.
fn ceiling_of(bounds: &[Bound]) -> (Option<f64>, Option<BoundKind>) {
    bounds
        .iter()
        .filter_map(|b| b.tps.map(|t| (t, b.kind)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or((None, None), |(t, k)| (Some(t), Some(k)))
}

/// Decode and prefill bounds of a mode that streams `streamed` bytes and reads `pages`
/// PLE pages from flash per token.
fn mode_bounds(p: &MemoryPlan, r: &Rates, streamed: f64, pages: f64) -> (Vec<Bound>, Vec<Bound>) {
    let t = &p.per_token;
    let page = t.page_bytes as f64;
    let mut decode = Vec::new();
    if streamed > 0.0 || pages > 0.0 {
        decode.push(flash_bound(r, streamed, pages, page));
    }
    decode.push(memory_bound(
        r,
        t.ram_bytes as f64,
        "weights, KV cache at the context, PLE and embedding rows",
    ));
    decode.push(
        matvec_bound(
            r,
            &t.matmul_weights_by_type,
            &t.attention_flops_by_kv_heads,
            t.kv_read_bytes as f64,
            (t.vector_width_elements, t.vector_ffn_elements),
        )
        .unwrap_or_else(|| {
            compute_bound(
                r,
                t.matmul_flops as f64,
                t.attention_flops as f64,
                t.matmul_int8,
            )
        }),
    );
    let chunk = t.prefill_chunk_tokens.max(1) as f64;
    let mut prefill = Vec::new();
    if streamed > 0.0 || pages > 0.0 {
        // Weights stream once per chunk; every prompt token looks up its PLE row.
        prefill.push(flash_bound(r, streamed / chunk, pages, page));
    }
    prefill.push(memory_bound(
        r,
        t.prefill_ram_bytes as f64,
        "weights once per chunk, KV at the mean position",
    ));
    prefill.push(
        prefill_bound(
            r,
            &t.matmul_weights_by_type,
            t.prefill_attention_flops as f64,
        )
        .unwrap_or_else(|| {
            compute_bound(
                r,
                t.matmul_flops as f64,
                t.prefill_attention_flops as f64,
                t.matmul_int8,
            )
        }),
    );
    (decode, prefill)
}

/// The speed ceilings of one run: the decode and prefill bounds and their minimum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceilings {
    pub decode_tps: Option<f64>,
    pub decode_bound: Option<BoundKind>,
    pub prefill_tps: Option<f64>,
    pub bounds: Vec<Bound>,
    pub prefill_bounds: Vec<Bound>,
}

/// The ceilings of a run of `plan` on `device` that reads `streamed_bytes` of weights
/// from flash per decoded token (0 when the weights are in RAM) and, for a model with
/// PLE, looks its rows up through mmap. The same bounds as [`assess`] gives each mode,
/// for a weight store whose flash traffic is known (an engine's pool plan).
pub fn ceilings(plan: &MemoryPlan, device: &DeviceProfile, streamed_bytes: f64) -> Ceilings {
    let pages = if plan.has_ple {
        plan.per_token.ple_pages
    } else {
        0.0
    };
    let (bounds, prefill_bounds) = mode_bounds(plan, &Rates::of(device), streamed_bytes, pages);
    let (decode_tps, decode_bound) = ceiling_of(&bounds);
    let (prefill_tps, _) = ceiling_of(&prefill_bounds);
    Ceilings {
        decode_tps,
        decode_bound,
        prefill_tps,
        bounds,
        prefill_bounds,
    }
}

/// Stream mode's split of a weight cache: the bytes one token still reads from flash
/// when `cache` bytes of weights are cached. The cache pins dense weights first (every
/// token needs them), then a uniform share of the experts. Tied embeddings are the LM
/// head and stay resident (in the fixed part).
fn streamed_bytes(p: &MemoryPlan, cache: u64) -> f64 {
    let dense = (p.component("decoder_weights") + p.component("lm_head")) as f64;
    let experts = p.component("experts") as f64;
    let dense_cached = (cache as f64).min(dense);
    let expert_cached = (cache as f64 - dense_cached).min(experts);
    let expert_miss = if experts > 0.0 {
        1.0 - expert_cached / experts
    } else {
        0.0
    };
    ((dense - dense_cached) + experts * p.expert_active_fraction * expert_miss).ceil()
}

/// Evaluate every mode of `plan` on `device` and pick the verdict.
pub fn assess(
    plan: &MemoryPlan,
    device: &DeviceProfile,
    target_decode_tps: f64,
) -> DeviceAssessment {
    let budget = device.ram_budget_bytes();
    let rates = Rates::of(device);
    let head = |ram: u64| budget as i64 - ram as i64;
    let meets = |c: Option<f64>| c.is_none_or(|t| t >= target_decode_tps);
    let mut modes = Vec::new();
    // RAM each mode would need to reach the target (None: no RAM size does).
    let mut need: Vec<Option<u64>> = Vec::new();

    let eval = |mode: Mode,
                ram: u64,
                headroom: i64,
                streamed: f64,
                pages: f64,
                note: &dyn Fn(Option<f64>, Option<BoundKind>) -> String| {
        let (bounds, prefill_bounds) = mode_bounds(plan, &rates, streamed, pages);
        let (c, b) = ceiling_of(&bounds);
        let (pc, _) = ceiling_of(&prefill_bounds);
        let fits = ram <= budget;
        ModeEval {
            mode,
            ram_bytes: ram,
            headroom_bytes: headroom,
            fits_ram: fits,
            flash_bytes_per_token: (streamed + pages * plan.per_token.page_bytes as f64).ceil()
                as u64,
            decode_tps_ceiling: c,
            binding_bound: b,
            prefill_tps_ceiling: pc,
            bounds,
            prefill_bounds,
            viable: fits && meets(c),
            note: note(c, b),
        }
    };

    // Resident.
    let r = plan.totals.resident_bytes;
    let m = eval(Mode::Resident, r, head(r), 0.0, 0.0, &|c, b| {
        if r <= budget {
            format!(
                "fits resident with {} headroom; ceiling {}",
                mib(head(r) as i128),
                ceiling_words(c, b)
            )
        } else {
            format!(
                "resident needs {}, short by {}",
                mib(r as i128),
                mib(-(head(r) as i128))
            )
        }
    });
    need.push(meets(m.decode_tps_ceiling).then_some(r));
    modes.push(m);

    // PLE mmap'd.
    let pages = plan.per_token.ple_pages;
    if plan.has_ple {
        let mm = plan.totals.ple_mmap_bytes;
        let m = eval(Mode::Mmap, mm, head(mm), 0.0, pages, &|c, b| {
            format!(
                "PLE mmap'd ({} hot rows cached = {}): {} headroom; a cold token reads {:.2} pages = {} of PLE -> ceiling {}",
                plan.ple_hot_tokens,
                mib(plan.totals.ple_working_set_bytes as i128),
                mib(head(mm) as i128),
                pages,
                bytes(plan.per_token.ple_flash_bytes as f64),
                ceiling_words(c, b)
            )
        });
        need.push(meets(m.decode_tps_ceiling).then_some(mm));
        modes.push(m);
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
        let streamed = streamed_bytes(plan, cache);
        let all_cached = streamed == 0.0;
        let cached_pct = 100.0 * cache as f64 / streamable as f64;
        let mut m = eval(
            Mode::Stream,
            min_ram,
            head(min_ram + cache),
            streamed,
            pages,
            &|c, b| {
                if !fits {
                    format!(
                        "even streaming the weights needs {}, short by {}",
                        mib(min_ram as i128),
                        mib(-(head(min_ram) as i128))
                    )
                } else if all_cached {
                    format!(
                        "nothing to stream: the budget caches all {} of weights, which is the {} plan plus a {} layer buffer",
                        mib(streamable as i128),
                        if plan.has_ple { "mmap" } else { "resident" },
                        mib(buffer as i128)
                    )
                } else {
                    format!(
                        "weights streamed: needs {} (2-layer buffer {}), the other {} caches {:.0}% of {} of weights; a token reads {} of weights from flash -> ceiling {}",
                        mib(min_ram as i128),
                        mib(buffer as i128),
                        mib((budget - min_ram) as i128),
                        cached_pct,
                        mib(streamable as i128),
                        bytes(streamed),
                        ceiling_words(c, b)
                    )
                }
            },
        );
        // Streaming nothing is the mmap (or resident) plan with a spare buffer: never
        // the better choice, so not offered.
        if all_cached {
            m.viable = false;
        }
        // The smallest cache whose flash bound reaches the target (bounds other than
        // flash do not depend on the cache).
        let reach = |cache: u64| {
            let (b, _) = mode_bounds(plan, &rates, streamed_bytes(plan, cache), pages);
            meets(ceiling_of(&b).0) && streamed_bytes(plan, cache) > 0.0
        };
        let stream_need = if reach(streamable.saturating_sub(1)) {
            let (mut lo, mut hi) = (0u64, streamable - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if reach(mid) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Some(min_ram + lo)
        } else {
            None
        };
        need.push(stream_need);
        modes.push(m);
    }

    let chosen = modes.iter().find(|m| m.viable).cloned();
    let mut notes = Vec::new();
    let (mode, headroom, pick) = match &chosen {
        Some(m) => {
            notes.push(m.note.clone());
            (m.mode, m.headroom_bytes, m.clone())
        }
        None => {
            let closest = modes
                .iter()
                .zip(&need)
                .filter_map(|(m, n)| n.map(|n| (m, n)))
                .min_by_key(|(_, n)| *n);
            match closest {
                Some((m, n)) => {
                    let h = head(n);
                    if m.fits_ram {
                        notes.push(format!(
                            "fits RAM as {}, but its ceiling ({}) is below the {} tok/s target; reaching it needs {} of RAM, short by {}",
                            m.mode.as_str(),
                            ceiling_words(m.decode_tps_ceiling, m.binding_bound),
                            fmt_bits(target_decode_tps),
                            mib(n as i128),
                            mib(-(h as i128))
                        ));
                    } else {
                        notes.push(format!(
                            "insufficient RAM: the closest mode ({}) needs {}, short by {}",
                            m.mode.as_str(),
                            mib(n as i128),
                            mib(-(h as i128))
                        ));
                    }
                    (Mode::Infeasible, h, m.clone())
                }
                None => {
                    // No RAM size reaches the target: the fastest mode is too slow.
                    // Ties go to the earlier (cheaper) mode.
                    let fastest = modes
                        .iter()
                        .rev()
                        .max_by(|a, b| {
                            a.decode_tps_ceiling
                                .unwrap_or(0.0)
                                .total_cmp(&b.decode_tps_ceiling.unwrap_or(0.0))
                        })
                        .expect("resident mode is always evaluated");
                    let ram = if fastest.fits_ram {
                        "more RAM would not help".to_string()
                    } else {
                        format!(
                            "it is also short of RAM by {}",
                            mib(-(fastest.headroom_bytes as i128))
                        )
                    };
                    notes.push(format!(
                        "too slow at any RAM size: the fastest mode ({}) decodes at most {}, below the {} tok/s target; {ram}",
                        fastest.mode.as_str(),
                        ceiling_words(fastest.decode_tps_ceiling, fastest.binding_bound),
                        fmt_bits(target_decode_tps)
                    ));
                    (Mode::Infeasible, fastest.headroom_bytes, fastest.clone())
                }
            }
        }
    };
    let unchecked: Vec<BoundKind> = pick
        .bounds
        .iter()
        .filter(|b| b.tps.is_none())
        .map(|b| b.kind)
        .collect();
    if !unchecked.is_empty() {
        let names: Vec<&str> = unchecked.iter().map(|k| k.words()).collect();
        notes.push(format!(
            "unchecked: the device profile gives no rate for the {} bound",
            names.join(" or ")
        ));
    }
    DeviceAssessment {
        slug: device.slug.clone(),
        name: device.name.clone(),
        ram_budget_bytes: budget,
        flash_read_gbps: device.flash_read_gbps,
        memory_bandwidth_gbps: device.memory_bandwidth_gbps,
        mode,
        headroom_bytes: headroom,
        decode_tps_ceiling: pick.decode_tps_ceiling,
        binding_bound: pick.binding_bound,
        prefill_tps_ceiling: pick.prefill_tps_ceiling,
        flash_bytes_per_token: pick.flash_bytes_per_token,
        bounds: pick.bounds,
        unchecked_bounds: unchecked,
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
        cost: change
            .iter()
            .map(Change::cost)
            .max()
            .unwrap_or(Cost::Context),
        change,
        mode: a.mode,
        headroom_bytes: a.headroom_bytes,
        decode_tps_ceiling: a.decode_tps_ceiling,
        binding_bound: a.binding_bound,
    }
}

/// Changes that make `device` work, cheapest cost to the user first (see [`Cost`]): single
/// changes, then one combination if none works alone. A shorter context is offered only
/// down to `opts.min_context_tokens`.
pub fn mitigations(
    arch: &ModelArchitecture,
    weights: Option<&ComponentBytes>,
    opts: &PlanOptions,
    device: &DeviceProfile,
    target: f64,
) -> Vec<Mitigation> {
    let mut out = Vec::new();
    let min_ctx = opts.min_context_tokens.max(1);
    // Largest context that works (memory and per-token work grow with context).
    let try_ctx = |c: u64| {
        let o = PlanOptions {
            context_tokens: c,
            ..opts.clone()
        };
        verdict_for(arch, weights, &o, device, target)
    };
    if opts.context_tokens > min_ctx && try_ctx(min_ctx).is_some() {
        let (mut lo, mut hi) = (min_ctx, opts.context_tokens - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if try_ctx(mid).is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        // A round number when that stays above the floor.
        let c = if lo / 256 * 256 >= min_ctx {
            lo / 256 * 256
        } else {
            lo
        };
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
        let short = 4096.max(min_ctx);
        if o.context_tokens > short {
            o.context_tokens = short;
            changes.push(Change::ContextTokens(short));
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
    out.sort_by_key(|m| m.cost);
    out
}

/// One device's go/no-go sentence; `changes` spells a mitigation's changes (in words
/// for the report, as flags in the CLI).
pub fn summary_line(a: &DeviceAssessment, changes: &dyn Fn(&[Change]) -> String) -> String {
    if a.mode != Mode::Infeasible {
        let unchecked = if a.unchecked_bounds.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = a.unchecked_bounds.iter().map(|k| k.words()).collect();
            format!("; {} unchecked", names.join(", "))
        };
        let speed = match a.decode_tps_ceiling {
            Some(_) => ceiling_words(a.decode_tps_ceiling, a.binding_bound),
            None => "speed unknown".into(),
        };
        return format!("GO    {}: {} ({speed}{unchecked})", a.slug, a.mode.as_str(),);
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
