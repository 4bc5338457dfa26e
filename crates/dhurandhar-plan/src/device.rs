//! Device profiles and memory budget presets.

use std::collections::BTreeMap;

use dhurandhar_model::Matrices;
use serde::{Deserialize, Serialize};

use crate::error::{did_you_mean, PlanError};

/// A deployment target: how much RAM the model may use, how fast flash and memory read,
/// and how fast the CPU multiplies.
///
/// YAML profiles use the Python tool's field names (`name`, `ram_budget_mb`,
/// `flash_read_gbps`, `supports_npu`, `notes`), so its device files load unchanged. The
/// speed fields are optional: a profile without one has that decode bound *unknown*
/// (reported as such and never taken as infinite; see [`crate::assess`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Short id; YAML profiles may omit it (the file stem is used by the CLI).
    #[serde(default)]
    pub slug: String,
    /// Human-readable name.
    pub name: String,
    /// RAM the model may use, in MiB.
    pub ram_budget_mb: f64,
    /// Sequential flash read bandwidth in GB/s (10^9 bytes per second).
    pub flash_read_gbps: f64,
    /// 4 KiB random reads per second at queue depth 1: what a cold mmap page fault costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_random_read_iops: Option<f64>,
    /// RAM read bandwidth in GB/s (10^9 bytes per second): every byte a token touches in
    /// RAM crosses it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth_gbps: Option<f64>,
    /// f32 throughput of all cores together, 10^9 FLOP/s (a multiply-add is 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_f32_gflops: Option<f64>,
    /// int8 dot-product throughput of all cores together, 10^9 ops/s (a multiply-add is
    /// 2): the rate of quantized matmuls, whose activations are quantized to int8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_int8_gops: Option<f64>,
    /// The same int8 throughput with the weights interleaved by eight rows, the layout
    /// the engine gives resident weights of the types it can interleave (a probed x86
    /// host; see [`MatvecRates::interleaved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_int8_interleaved_gops: Option<f64>,
    /// CPU cores the compute figures use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    /// One-token matrix-vector throughput per stored weight type, measured with the
    /// engine's own kernels (a probed host). Decoding multiplies one activation row by
    /// every weight, so it runs at this rate, not at the batched `compute_int8_gops`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matvec: Option<MatvecRates>,
    #[serde(default)]
    pub supports_npu: bool,
    #[serde(default)]
    pub notes: String,
    /// Where every number comes from; estimates say so.
    #[serde(default)]
    pub source: String,
    /// When the numbers were measured (a probed host), RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<String>,
}

/// Suffix of a [`MatvecRates`] key for a type interleaved by eight rows (`Q4_0@x8`).
pub const INTERLEAVED: &str = "@x8";

/// The one-token matvec cost of each stored weight type at each measured thread count:
/// multiplying a matrix by one vector takes `call_overhead_ns[i] + rows ×
/// row_overhead_ns[type][i]` ns plus `weights / (gweights_per_s[type][i] × 10^9)` s on
/// `threads[i]` threads. The rate and the row cost are measured on a wide and a narrow
/// matrix of the same bytes (models differ in row width, and a narrow row pays its fixed
/// cost over fewer weights); the call cost on a tiny matrix (a token makes hundreds of
/// calls, and on several threads each one hands its rows to the pool).
///
/// A key `T@x8` is type `T` with its rows interleaved by eight, which the engine does to
/// resident Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 matrices on x86: [`MatvecRates::interleaved`]
/// gives the rates a resident run meets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatvecRates {
    /// Thread counts, ascending.
    pub threads: Vec<usize>,
    /// Stored type (`Q4_K`, `Q8_0`, `F16`, …) → the marginal rate in 10^9 weights per
    /// second, one per entry of `threads`.
    pub gweights_per_s: BTreeMap<String, Vec<f64>>,
    /// Stored type → the fixed time per row in ns, one per entry of `threads` (a type
    /// missing here costs nothing per row).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_overhead_ns: BTreeMap<String, Vec<f64>>,
    /// The fixed time per call in ns, one per entry of `threads` (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_overhead_ns: Vec<f64>,
    /// Decode attention in 10^9 FLOP/s (4 · head_dim per head and attended position: the
    /// score dot and the value axpy), one per entry of `threads`, measured with the
    /// engine's own kernels, softmax included (empty: unknown, and attention is charged
    /// at the f32 matmul rate, which short strided dots and one `exp` per position do
    /// not reach).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention_gflops: Vec<f64>,
    /// The same attention with its K and V read from RAM (a cache far larger than the
    /// last-level cache), one per entry of `threads` (empty: unknown, and the KV cache
    /// costs nothing beyond `attention_gflops`). The difference prices each byte of KV a
    /// token reads from RAM: [`MatvecRates::kv_seconds_per_byte`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention_ram_gflops: Vec<f64>,
    /// KV heads of the attention probe: the pieces of work its threads shared (the
    /// engine gives a thread whole KV heads). Absent: the rates are taken to be
    /// evenly shared by any model (see [`MatvecRates::attention_split_factor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_kv_heads: Option<u32>,
    /// What a decoded token's layer does besides its matmuls and attention (norms,
    /// activation quantization, RoPE, the gated activation, residual adds), on one
    /// thread: a decode step does it serially, its vectors too short to split. Absent:
    /// not charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_ns: Option<VectorCost>,
    /// Stored type (keys as in `gweights_per_s`) → the engine's batched matmul (a
    /// prefill chunk of 64 tokens) in 10^9 op/s (2 per weight and token), one per entry
    /// of `threads`: each type has its own kernel, and a prompt's matmuls run at their
    /// types' rates, not at the one Q8_0 figure of `compute_int8_gops` (empty: that figure
    /// is used).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefill_gops: BTreeMap<String, Vec<f64>>,
}

/// One layer's vector work for one token: `per_width × width + per_ffn × FFN width` ns,
/// measured on two layer shapes of the same width and different FFN widths (the FFN's
/// share, activation and quantization, scales with the FFN; the rest with the width).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorCost {
    /// ns per element of the layer's width (the hidden size).
    pub per_width: f64,
    /// ns per element of the FFN width the token runs (active experts' widths summed).
    pub per_ffn: f64,
}

impl VectorCost {
    /// Seconds of vector work over `width` width elements and `ffn` FFN elements (each
    /// summed over the layers).
    pub fn seconds(&self, width: u64, ffn: u64) -> f64 {
        (self.per_width * width as f64 + self.per_ffn * ffn as f64) * 1e-9
    }
}

/// The share of `threads` threads' time that `items` equal pieces of work keep busy
/// when each thread takes whole pieces: `items / (threads · ⌈items / threads⌉)`.
/// 3 KV heads on 2 threads: one thread does two heads while the other does one, 0.75.
pub fn split_efficiency(items: u64, threads: usize) -> f64 {
    let t = threads.max(1) as u64;
    if items == 0 {
        return 1.0;
    }
    items as f64 / (t * items.div_ceil(t)) as f64
}

/// What one type's matvec costs on a given thread count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatvecCost {
    /// Marginal rate, weights per second.
    pub weights_per_s: f64,
    /// Fixed time per row, seconds.
    pub row_seconds: f64,
    /// Fixed time per call, seconds.
    pub call_seconds: f64,
}

impl MatvecCost {
    /// Seconds to multiply these matrices by one vector each.
    pub fn seconds(&self, m: &Matrices) -> f64 {
        m.weights as f64 / self.weights_per_s
            + m.rows as f64 * self.row_seconds
            + m.matrices as f64 * self.call_seconds
    }
}

impl MatvecRates {
    /// Index of the measured entry for a run on `threads` threads: the one with the most
    /// threads not above it (a run cannot use cores it does not have).
    fn index(&self, threads: usize) -> usize {
        self.threads
            .iter()
            .rposition(|&t| t <= threads.max(1))
            .unwrap_or(0)
    }

    /// The costs on `threads` threads (see [`MatvecRates::only`]).
    pub fn at(&self, threads: usize) -> BTreeMap<String, MatvecCost> {
        let i = self.index(threads);
        let call_seconds = self.call_overhead_ns.get(i).map_or(0.0, |ns| ns * 1e-9);
        self.gweights_per_s
            .iter()
            .filter_map(|(k, v)| {
                let row_ns = self.row_overhead_ns.get(k).and_then(|o| o.get(i)).copied();
                v.get(i).map(|r| {
                    let cost = MatvecCost {
                        weights_per_s: r * 1e9,
                        row_seconds: row_ns.unwrap_or(0.0) * 1e-9,
                        call_seconds,
                    };
                    (k.clone(), cost)
                })
            })
            .collect()
    }

    /// These rates cut to the one entry that applies to a run on `threads` threads.
    pub fn only(&self, threads: usize) -> MatvecRates {
        let i = self.index(threads);
        let cut = |m: &BTreeMap<String, Vec<f64>>| {
            m.iter()
                .filter_map(|(k, v)| v.get(i).map(|r| (k.clone(), vec![*r])))
                .collect()
        };
        MatvecRates {
            threads: vec![self.threads.get(i).copied().unwrap_or(1)],
            gweights_per_s: cut(&self.gweights_per_s),
            row_overhead_ns: cut(&self.row_overhead_ns),
            call_overhead_ns: self.call_overhead_ns.get(i).map_or(vec![], |c| vec![*c]),
            attention_gflops: self.attention_gflops.get(i).map_or(vec![], |a| vec![*a]),
            attention_ram_gflops: self
                .attention_ram_gflops
                .get(i)
                .map_or(vec![], |a| vec![*a]),
            attention_kv_heads: self.attention_kv_heads,
            vector_ns: self.vector_ns,
            prefill_gops: cut(&self.prefill_gops),
        }
    }

    /// Decode attention FLOP/s on `threads` threads, if measured.
    pub fn attention_flops_per_s(&self, threads: usize) -> Option<f64> {
        self.attention_gflops
            .get(self.index(threads))
            .map(|g| g * 1e9)
    }

    /// The share of the measured decode-attention rate a model whose layers have
    /// `kv_heads` KV heads reaches on the most threads here: the engine gives each
    /// thread whole KV heads of a token, so the probe's rate holds for its own head
    /// count, and 3 heads on 2 threads (one thread doing two) reach 0.75 of it.
    /// 1.0 when the probe's head count is unknown or the run has one thread.
    pub fn attention_split_factor(&self, kv_heads: u32) -> f64 {
        let threads = self.threads[self.index(usize::MAX)];
        match self.attention_kv_heads {
            Some(probe) => {
                split_efficiency(kv_heads as u64, threads) / split_efficiency(probe as u64, threads)
            }
            None => 1.0,
        }
    }

    /// Seconds each byte of f32 KV cache read from RAM adds to decode attention on
    /// `threads` threads, beyond its FLOPs at [`MatvecRates::attention_flops_per_s`]: the
    /// probe's attention does 4 · head_dim FLOPs per head and position over 2 · head_dim
    /// f32 values (K and V) of 4 bytes, 0.5 FLOP per byte, so a byte from RAM costs
    /// `0.5 · (1 / ram rate − 1 / in-cache rate)`; zero where RAM was not slower, `None`
    /// where either rate is unknown.
    pub fn kv_seconds_per_byte(&self, threads: usize) -> Option<f64> {
        let i = self.index(threads);
        let cache = self.attention_gflops.get(i)? * 1e9;
        let ram = self.attention_ram_gflops.get(i)? * 1e9;
        Some((0.5 * (1.0 / ram - 1.0 / cache)).max(0.0))
    }

    /// These rates with each interleaved entry (`T@x8`) in place of its type's row-major
    /// one: what a run whose weights are resident (and so interleaved) meets.
    pub fn interleaved(&self) -> MatvecRates {
        let mut r = self.clone();
        for (key, rate) in &self.prefill_gops {
            if let Some(t) = key.strip_suffix(INTERLEAVED) {
                r.prefill_gops.insert(t.to_string(), rate.clone());
            }
        }
        for (key, rate) in &self.gweights_per_s {
            if let Some(t) = key.strip_suffix(INTERLEAVED) {
                r.gweights_per_s.insert(t.to_string(), rate.clone());
                match self.row_overhead_ns.get(key) {
                    Some(o) => r.row_overhead_ns.insert(t.to_string(), o.clone()),
                    None => r.row_overhead_ns.remove(t),
                };
            }
        }
        r
    }

    /// Seconds of a prompt token's matmuls over `by_type` (weights per stored type) at
    /// the batched rates on `threads` threads; `None` unless every type has one.
    pub fn prefill_seconds(
        &self,
        by_type: &BTreeMap<String, Matrices>,
        threads: usize,
    ) -> Option<f64> {
        let i = self.index(threads);
        if by_type.is_empty() {
            return None;
        }
        by_type
            .iter()
            .map(|(t, m)| {
                let gops = self.prefill_gops.get(t)?.get(i)?;
                Some(2.0 * m.weights as f64 / (gops * 1e9))
            })
            .sum()
    }

    /// The costs on the most threads measured (the device running flat out).
    pub fn all_threads(&self) -> BTreeMap<String, MatvecCost> {
        self.at(usize::MAX)
    }

    /// An optional list with one figure per thread count (empty: not measured): the
    /// right length, and every figure `ok`, else the message `bad` gives for it.
    fn per_thread(
        &self,
        name: &str,
        v: &[f64],
        ok: impl Fn(f64) -> bool,
        bad: impl Fn(f64) -> String,
    ) -> Result<(), String> {
        if v.is_empty() {
            return Ok(());
        }
        if v.len() != self.threads.len() {
            return Err(format!(
                "{name} has {} entries for {} thread counts",
                v.len(),
                self.threads.len()
            ));
        }
        match v.iter().find(|x| !ok(**x)) {
            Some(x) => Err(bad(*x)),
            None => Ok(()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.threads.is_empty()
            || self.threads.contains(&0)
            || !self.threads.windows(2).all(|w| w[0] < w[1])
        {
            return Err(format!(
                "threads must be ascending counts ≥ 1, got {:?}",
                self.threads
            ));
        }
        let lengths = |m: &BTreeMap<String, Vec<f64>>| {
            m.iter()
                .find(|(_, v)| v.len() != self.threads.len())
                .map(|(k, v)| {
                    format!(
                        "{k} has {} entries for {} thread counts",
                        v.len(),
                        self.threads.len()
                    )
                })
        };
        if let Some(e) = lengths(&self.gweights_per_s)
            .or(lengths(&self.row_overhead_ns))
            .or(lengths(&self.prefill_gops))
        {
            return Err(e);
        }
        for (k, v) in self.gweights_per_s.iter().chain(&self.prefill_gops) {
            if let Some(r) = v
                .iter()
                .find(|r| !(r.is_finite() && **r > 0.0 && **r < MAX_GFLOPS))
            {
                return Err(format!(
                    "{k}: rates must be positive numbers (G weights/s, G op/s) below {MAX_GFLOPS:e}, got {r}"
                ));
            }
        }
        for (name, rates) in [
            ("attention_gflops", &self.attention_gflops),
            ("attention_ram_gflops", &self.attention_ram_gflops),
        ] {
            self.per_thread(
                name,
                rates,
                |g| g.is_finite() && g > 0.0 && g < MAX_GFLOPS,
                |g| {
                    format!(
                        "attention rates must be positive GFLOP/s below {MAX_GFLOPS:e}, got {g}"
                    )
                },
            )?;
        }
        if self.attention_kv_heads == Some(0) {
            return Err("attention_kv_heads must be at least 1".into());
        }
        if let Some(v) = self.vector_ns {
            if ![v.per_width, v.per_ffn]
                .iter()
                .all(|x| x.is_finite() && (0.0..1e6).contains(x))
            {
                return Err(format!(
                    "vector_ns must be ns per element in [0, 1e6), got per_width {} and per_ffn {}",
                    v.per_width, v.per_ffn
                ));
            }
        }
        self.per_thread(
            "call_overhead_ns",
            &self.call_overhead_ns,
            |o| o.is_finite() && (0.0..1e9).contains(&o),
            |o| format!("call overheads must be ns in [0, 1e9), got {o}"),
        )?;
        for (k, v) in &self.row_overhead_ns {
            if !self.gweights_per_s.contains_key(k) {
                return Err(format!("{k} has a row overhead but no rate"));
            }
            if let Some(o) = v
                .iter()
                .find(|o| !(o.is_finite() && (0.0..1e9).contains(*o)))
            {
                return Err(format!(
                    "{k}: row overheads must be ns in [0, 1e9), got {o}"
                ));
            }
        }
        Ok(())
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Upper limits that catch unit mistakes (a GB/s figure typed in MB/s).
const MAX_GBPS: f64 = 1e4;
const MAX_GFLOPS: f64 = 1e7;
const MAX_IOPS: f64 = 1e8;

impl DeviceProfile {
    /// RAM budget in bytes.
    pub fn ram_budget_bytes(&self) -> u64 {
        (self.ram_budget_mb * MIB).round() as u64
    }

    /// Flash bandwidth in bytes per second.
    pub fn flash_bytes_per_sec(&self) -> f64 {
        self.flash_read_gbps * 1e9
    }

    /// RAM bandwidth in bytes per second, when known.
    pub fn memory_bytes_per_sec(&self) -> Option<f64> {
        self.memory_bandwidth_gbps.map(|g| g * 1e9)
    }

    /// Reject values the math cannot use: no RAM, no flash, NaN, zero or absurd rates.
    pub fn validate(&self) -> Result<(), PlanError> {
        let dev = if self.slug.is_empty() {
            &self.name
        } else {
            &self.slug
        };
        let bad = |field, reason: String| {
            Err(PlanError::InvalidDevice {
                device: dev.clone(),
                field,
                reason,
            })
        };
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        if !(self.ram_budget_mb.is_finite() && self.ram_budget_mb > 0.0) {
            return bad(
                "ram_budget_mb",
                format!(
                    "must be a positive number of MiB, got {}",
                    self.ram_budget_mb
                ),
            );
        }
        if self.ram_budget_mb > 64.0 * 1024.0 * 1024.0 {
            return bad(
                "ram_budget_mb",
                format!("({}) is implausibly large", self.ram_budget_mb),
            );
        }
        if !(self.flash_read_gbps.is_finite()
            && self.flash_read_gbps > 0.0
            && self.flash_read_gbps < MAX_GBPS)
        {
            return bad(
                "flash_read_gbps",
                format!(
                    "must be a positive number of GB/s, got {}",
                    self.flash_read_gbps
                ),
            );
        }
        let rates: [(&'static str, Option<f64>, f64, &str); 5] = [
            (
                "memory_bandwidth_gbps",
                self.memory_bandwidth_gbps,
                MAX_GBPS,
                "GB/s",
            ),
            (
                "compute_f32_gflops",
                self.compute_f32_gflops,
                MAX_GFLOPS,
                "GFLOP/s",
            ),
            (
                "compute_int8_gops",
                self.compute_int8_gops,
                MAX_GFLOPS,
                "Gop/s",
            ),
            (
                "compute_int8_interleaved_gops",
                self.compute_int8_interleaved_gops,
                MAX_GFLOPS,
                "Gop/s",
            ),
            (
                "flash_random_read_iops",
                self.flash_random_read_iops,
                MAX_IOPS,
                "reads/s",
            ),
        ];
        for (field, v, max, unit) in rates {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v < max) {
                    return bad(
                        field,
                        format!("must be a positive number of {unit} below {max:e}, got {v}"),
                    );
                }
            }
        }
        if self.cpu_cores == Some(0) {
            return bad("cpu_cores", "must be at least 1".into());
        }
        if let Some(m) = &self.matvec {
            if let Err(reason) = m.validate() {
                return bad("matvec", reason);
            }
        }
        Ok(())
    }

    /// Parse and validate a YAML device profile; `origin` names the file in errors and
    /// `default_slug` fills a missing `slug`.
    pub fn from_yaml_str(text: &str, origin: &str, default_slug: &str) -> Result<Self, PlanError> {
        dhurandhar_model::check_yaml_depth(text).map_err(|message| PlanError::Parse {
            origin: origin.to_string(),
            message,
        })?;
        let mut d: DeviceProfile = serde_yaml_ng::from_str(text).map_err(|e| PlanError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        if d.slug.is_empty() {
            d.slug = default_slug.to_string();
        }
        d.validate().map_err(|e| PlanError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(d)
    }

    /// The profile as YAML that [`DeviceProfile::from_yaml_str`] reads back.
    pub fn to_yaml(&self) -> Result<String, PlanError> {
        serde_yaml_ng::to_string(self).map_err(|e| PlanError::Parse {
            origin: self.slug.clone(),
            message: e.to_string(),
        })
    }

    /// An ad-hoc device from its two numbers; its memory-bandwidth and compute bounds
    /// are unknown unless set afterwards.
    pub fn custom(ram_budget_mb: f64, flash_read_gbps: f64) -> Result<Self, PlanError> {
        let d = DeviceProfile {
            slug: "custom".into(),
            name: format!("Custom ({ram_budget_mb} MiB, {flash_read_gbps} GB/s)"),
            ram_budget_mb,
            flash_read_gbps,
            flash_random_read_iops: None,
            memory_bandwidth_gbps: None,
            compute_f32_gflops: None,
            compute_int8_gops: None,
            compute_int8_interleaved_gops: None,
            cpu_cores: None,
            matvec: None,
            supports_npu: false,
            notes: "ad-hoc device given by its RAM budget and flash bandwidth".into(),
            source: "given on the command line".into(),
            measured_at: None,
        };
        d.validate()?;
        Ok(d)
    }
}

/// (slug, YAML text), sorted by slug: each file names the source of every number.
const BUILTIN: &[(&str, &str)] = &[
    (
        "high_end_mobile_ufs4",
        include_str!("../devices/high_end_mobile_ufs4.yaml"),
    ),
    ("laptop_nvme", include_str!("../devices/laptop_nvme.yaml")),
    (
        "low_tier_mobile_emmc",
        include_str!("../devices/low_tier_mobile_emmc.yaml"),
    ),
    (
        "mid_tier_mobile_ufs3",
        include_str!("../devices/mid_tier_mobile_ufs3.yaml"),
    ),
    ("tablet_ufs3", include_str!("../devices/tablet_ufs3.yaml")),
];

/// The YAML of a built-in device (a starting point for one's own).
pub fn builtin_device_yaml(slug: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(slug.trim()))
        .map(|(_, y)| *y)
}

/// The built-in devices, sorted by slug (the Python tool's five, with sourced speeds).
pub fn builtin_devices() -> Vec<DeviceProfile> {
    BUILTIN
        .iter()
        .map(|(slug, y)| {
            DeviceProfile::from_yaml_str(y, slug, slug).expect("built-in device YAML is valid")
        })
        .collect()
}

/// Built-in device by slug (case-insensitive).
pub fn builtin_device(slug: &str) -> Result<DeviceProfile, PlanError> {
    let q = slug.trim().to_ascii_lowercase();
    let all = builtin_devices();
    if let Some(d) = all.iter().find(|d| d.slug == q) {
        return Ok(d.clone());
    }
    let names: Vec<&str> = all.iter().map(|d| d.slug.as_str()).collect();
    Err(PlanError::UnknownDevice {
        name: slug.to_string(),
        hint: did_you_mean(&q, &names),
    })
}

/// A named RAM budget for a deployment tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPreset {
    pub name: &'static str,
    pub ram_budget_mb: f64,
    pub description: &'static str,
}

/// Memory budget presets (MiB), as in the Python tool.
pub fn budget_presets() -> Vec<BudgetPreset> {
    vec![
        BudgetPreset {
            name: "int2_extreme",
            ram_budget_mb: 1024.0,
            description: "2-bit weights on a 1 GiB budget",
        },
        BudgetPreset {
            name: "int4_aggressive",
            ram_budget_mb: 1536.0,
            description: "4-bit weights on a 1.5 GiB budget",
        },
        BudgetPreset {
            name: "int8_deployment",
            ram_budget_mb: 2048.0,
            description: "8-bit weights on a 2 GiB budget",
        },
        BudgetPreset {
            name: "bf16_development",
            ram_budget_mb: 4096.0,
            description: "bf16 weights on a 4 GiB budget",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_validate_and_are_sorted() {
        let d = builtin_devices();
        assert_eq!(d.len(), 5);
        for x in &d {
            x.validate().unwrap();
        }
        let mut s: Vec<_> = d.iter().map(|x| x.slug.clone()).collect();
        s.sort();
        assert_eq!(s, d.iter().map(|x| x.slug.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn yaml_profile_uses_python_field_names() {
        let y = "name: Pixel 10 Pro (Tensor G5, UFS 4.0)\nram_budget_mb: 3072\nflash_read_gbps: 4.2\nsupports_npu: true\n";
        let d = DeviceProfile::from_yaml_str(y, "pixel.yaml", "pixel").unwrap();
        assert_eq!(d.slug, "pixel");
        assert_eq!(d.ram_budget_bytes(), 3072 * 1024 * 1024);
    }

    #[test]
    fn zero_ram_is_refused() {
        let y = "name: x\nram_budget_mb: 0\nflash_read_gbps: 1\n";
        let e = DeviceProfile::from_yaml_str(y, "d.yaml", "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.yaml") && e.contains("ram_budget_mb"), "{e}");
        assert!(DeviceProfile::custom(-1.0, 2.0).is_err());
        assert!(DeviceProfile::custom(1024.0, 0.0).is_err());
    }

    #[test]
    fn typo_field_is_named() {
        let y = "name: x\nram_budget_mbb: 10\nflash_read_gbps: 1\n";
        let e = DeviceProfile::from_yaml_str(y, "d.yaml", "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ram_budget_mbb") && e.contains("line"), "{e}");
    }

    #[test]
    fn builtins_have_every_speed_and_a_source() {
        for d in builtin_devices() {
            assert!(d.memory_bandwidth_gbps.is_some(), "{}", d.slug);
            assert!(d.compute_f32_gflops.is_some() && d.compute_int8_gops.is_some());
            assert!(d.flash_random_read_iops.is_some() && d.cpu_cores.is_some());
            assert!(d.source.contains("memory_bandwidth_gbps"), "{}", d.slug);
            assert!(builtin_device_yaml(&d.slug).is_some());
        }
    }

    #[test]
    fn old_profile_loads_with_unknown_speeds_and_round_trips() {
        let y = "name: old\nram_budget_mb: 2048\nflash_read_gbps: 2\n";
        let d = DeviceProfile::from_yaml_str(y, "old.yaml", "old").unwrap();
        assert_eq!(d.memory_bandwidth_gbps, None);
        assert_eq!(d.compute_int8_gops, None);
        let full = builtin_device("laptop_nvme").unwrap();
        let back = DeviceProfile::from_yaml_str(&full.to_yaml().unwrap(), "x", "x").unwrap();
        assert_eq!(back, full);
    }

    #[test]
    fn bad_speed_fields_are_named() {
        let e = |extra: &str| {
            let y = format!("name: x\nram_budget_mb: 10\nflash_read_gbps: 1\n{extra}\n");
            DeviceProfile::from_yaml_str(&y, "d.yaml", "d")
                .unwrap_err()
                .to_string()
        };
        assert!(e("memory_bandwidth_gbps: 0").contains("memory_bandwidth_gbps"));
        assert!(e("compute_f32_gflops: -3").contains("compute_f32_gflops"));
        assert!(e("compute_int8_gops: .nan").contains("compute_int8_gops"));
        assert!(e("flash_random_read_iops: 0").contains("flash_random_read_iops"));
        assert!(e("cpu_cores: 0").contains("cpu_cores"));
        let typo = e("memory_bandwith_gbps: 10");
        assert!(
            typo.contains("memory_bandwith_gbps") && typo.contains("line"),
            "{typo}"
        );
    }

    /// A resident run meets the interleaved rate and row cost of each type that has them;
    /// other types, and mapped runs, keep the row-major figures.
    #[test]
    fn interleaved_entries_replace_their_types() {
        let y = "name: h\nram_budget_mb: 1\nflash_read_gbps: 1\nmatvec:\n  threads: [1]\n  \
                 gweights_per_s: {Q4_0: [20.0], Q4_0@x8: [30.0], Q4_K: [15.0], Q8_0: [12.0], Q8_0@x8: [14.0]}\n  \
                 row_overhead_ns: {Q4_0: [9.0], Q4_K: [8.0], Q8_0: [5.0], Q8_0@x8: [1.0]}\n";
        let d = DeviceProfile::from_yaml_str(y, "h.yaml", "h").unwrap();
        let m = d.matvec.unwrap();
        let x = m.interleaved();
        assert_eq!(x.gweights_per_s["Q4_0"], vec![30.0]);
        assert_eq!(x.gweights_per_s["Q8_0"], vec![14.0]);
        assert_eq!(x.gweights_per_s["Q4_K"], vec![15.0]);
        // Q4_0@x8 has no row cost measured: none is charged, not the row-major one.
        assert_eq!(x.row_overhead_ns.get("Q4_0"), None);
        assert_eq!(x.row_overhead_ns["Q8_0"], vec![1.0]);
        assert_eq!(x.row_overhead_ns["Q4_K"], vec![8.0]);
        assert_eq!(m.gweights_per_s["Q4_0"], vec![20.0]);
    }

    #[test]
    fn unknown_device_suggests() {
        let e = builtin_device("laptop_nvm").unwrap_err().to_string();
        assert!(e.contains("laptop_nvme"), "{e}");
    }
}
