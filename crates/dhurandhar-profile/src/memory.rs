//! Resident-set readings and memory-budget gates.
//!
//! File-backed resident pages of a read-only mapping are reclaimable: under pressure the
//! kernel drops them and the next access re-reads flash. Anonymous (and locked) memory is
//! not. So a budget is judged on both the whole-process peak and the anonymous part.
//!
//! This is the workspace's one RSS probe: the engine's benchmark and `generate` call
//! [`peak_rss_bytes`] too.

use serde::Serialize;

use crate::error::ProfileError;

const MIB: u64 = 1 << 20;

/// Memory budget presets (MiB) of the Python tool, kept by name so old scripts still work.
pub const BUDGET_PRESETS: [(&str, u64); 4] = [
    ("int2_extreme", 1024),
    ("int4_aggressive", 1536),
    ("int8_deployment", 2048),
    ("bf16_development", 4096),
];

/// One reading of the process's memory, in bytes. Fields the platform does not expose are
/// `None` (macOS has no anonymous/file split).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemorySnapshot {
    /// Peak resident set (VmHWM on Linux/Android, ru_maxrss on macOS).
    pub peak_rss_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub rss_anon_bytes: Option<u64>,
    pub rss_file_bytes: Option<u64>,
    pub rss_shmem_bytes: Option<u64>,
    /// mlock'ed memory (VmLck): never reclaimable, counted with anonymous.
    pub locked_bytes: Option<u64>,
    /// Where the numbers came from.
    pub source: &'static str,
}

impl MemorySnapshot {
    /// Parse the text of `/proc/<pid>/status`. Values there are in kB (KiB).
    pub fn from_proc_status(text: &str) -> Self {
        let mut s = MemorySnapshot {
            source: "/proc/self/status",
            ..Default::default()
        };
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let slot = match key.trim() {
                "VmHWM" => &mut s.peak_rss_bytes,
                "VmRSS" => &mut s.rss_bytes,
                "RssAnon" => &mut s.rss_anon_bytes,
                "RssFile" => &mut s.rss_file_bytes,
                "RssShmem" => &mut s.rss_shmem_bytes,
                "VmLck" => &mut s.locked_bytes,
                _ => continue,
            };
            *slot = parse_kb(rest);
        }
        s
    }

    /// Read this process's memory now.
    pub fn current() -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Ok(text) = std::fs::read_to_string("/proc/self/status") {
            return Self::from_proc_status(&text);
        }
        #[cfg(target_vendor = "apple")]
        {
            return MemorySnapshot {
                peak_rss_bytes: crate::sys::ru_maxrss_bytes(),
                rss_bytes: crate::sys::macos_resident_bytes(),
                source: "getrusage + proc_pidinfo (no anon/file split on macOS)",
                ..Default::default()
            };
        }
        #[allow(unreachable_code)]
        MemorySnapshot {
            peak_rss_bytes: crate::sys::ru_maxrss_bytes(),
            source: "getrusage",
            ..Default::default()
        }
    }

    /// Non-reclaimable resident bytes: anonymous + shared-memory + locked (when known).
    pub fn unreclaimable_bytes(&self) -> Option<u64> {
        self.rss_anon_bytes
            .map(|a| a + self.rss_shmem_bytes.unwrap_or(0) + self.locked_bytes.unwrap_or(0))
    }
}

/// Peak resident set of this process in bytes (VmHWM on Linux/Android, ru_maxrss
/// elsewhere), or `None` where the OS does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    MemorySnapshot::current().peak_rss_bytes
}

/// Reset the peak mark so a later [`peak_rss_bytes`] covers only what follows (Linux
/// >= 4.0); false where unsupported.
pub fn reset_peak_rss() -> bool {
    crate::sys::reset_peak_rss()
}

/// "  1234 kB" -> 1234 * 1024.
fn parse_kb(rest: &str) -> Option<u64> {
    let mut it = rest.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// A named memory budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub name: String,
    pub bytes: u64,
}

impl Budget {
    /// A preset name (`int4_aggressive`) or a size in MB (`1800`, MiB as in the presets).
    pub fn parse(spec: &str) -> Result<Self, ProfileError> {
        let s = spec.trim();
        if let Some((name, mb)) = BUDGET_PRESETS.iter().find(|(n, _)| *n == s) {
            return Ok(Budget {
                name: name.to_string(),
                bytes: mb * MIB,
            });
        }
        let digits = s
            .strip_suffix("MB")
            .or_else(|| s.strip_suffix("MiB"))
            .unwrap_or(s)
            .trim();
        match digits.parse::<u64>() {
            Ok(mb) if mb > 0 && mb <= (1 << 24) => Ok(Budget {
                name: format!("custom_{mb}mb"),
                bytes: mb * MIB,
            }),
            _ => Err(ProfileError::BadBudget(spec.to_string())),
        }
    }

    /// The preset the Python tool used for a weight bit width.
    pub fn for_bits(bits: u32) -> Self {
        let name = match bits {
            0..=2 => "int2_extreme",
            3..=4 => "int4_aggressive",
            5..=8 => "int8_deployment",
            _ => "bf16_development",
        };
        Budget::parse(name).expect("preset names parse")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GateVerdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
    /// The platform did not give the numbers needed.
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl GateVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            GateVerdict::Pass => "PASS",
            GateVerdict::Warn => "WARN",
            GateVerdict::Fail => "FAIL",
            GateVerdict::Unknown => "UNKNOWN",
        }
    }
}

/// Verdicts of one budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetVerdict {
    pub budget: Budget,
    /// Bytes the weights would need if held resident instead of mapped.
    pub weights_bytes: u64,
    /// PASS if `weights_bytes` fits the budget, else FAIL.
    pub weights_only: GateVerdict,
    /// PASS if the measured peak RSS fits; WARN if only the unreclaimable (anonymous +
    /// locked) part fits, i.e. the kernel must keep evicting mapped pages; FAIL otherwise.
    pub whole_process: GateVerdict,
    pub reason: String,
}

/// Judge `mem` and `weights_bytes` against `budget`.
pub fn evaluate_budget(budget: &Budget, weights_bytes: u64, mem: &MemorySnapshot) -> BudgetVerdict {
    let b = budget.bytes;
    let weights_only = if weights_bytes <= b {
        GateVerdict::Pass
    } else {
        GateVerdict::Fail
    };
    let mib = |x: u64| x as f64 / MIB as f64;
    let (whole_process, reason) = match (mem.peak_rss_bytes, mem.unreclaimable_bytes()) {
        (Some(peak), _) if peak <= b => (
            GateVerdict::Pass,
            format!("peak RSS {:.1} MiB fits {:.0} MiB", mib(peak), mib(b)),
        ),
        (Some(peak), Some(anon)) if anon <= b => (
            GateVerdict::Warn,
            format!(
                "peak RSS {:.1} MiB exceeds {:.0} MiB, but the unreclaimable part ({:.1} MiB) fits: \
                 file-backed pages will be evicted and re-read from flash",
                mib(peak),
                mib(b),
                mib(anon)
            ),
        ),
        (Some(peak), Some(anon)) => (
            GateVerdict::Fail,
            format!(
                "unreclaimable memory {:.1} MiB (peak RSS {:.1} MiB) exceeds {:.0} MiB",
                mib(anon),
                mib(peak),
                mib(b)
            ),
        ),
        (Some(peak), None) => (
            GateVerdict::Fail,
            format!(
                "peak RSS {:.1} MiB exceeds {:.0} MiB (no anonymous/file split on this platform)",
                mib(peak),
                mib(b)
            ),
        ),
        (None, _) => (
            GateVerdict::Unknown,
            "this platform reports no peak RSS".to_string(),
        ),
    };
    BudgetVerdict {
        budget: budget.clone(),
        weights_bytes,
        weights_only,
        whole_process,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Name:\tdhurandhar\nUmask:\t0022\nState:\tR (running)\n\
VmPeak:\t  120000 kB\nVmSize:\t  110000 kB\nVmLck:\t       0 kB\nVmHWM:\t   51200 kB\n\
VmRSS:\t   40960 kB\nRssAnon:\t    8192 kB\nRssFile:\t   32768 kB\nRssShmem:\t       0 kB\n\
Threads:\t1\n";

    #[test]
    fn proc_status_parses_to_bytes() {
        let m = MemorySnapshot::from_proc_status(SAMPLE);
        assert_eq!(m.peak_rss_bytes, Some(50 * MIB));
        assert_eq!(m.rss_bytes, Some(40 * MIB));
        assert_eq!(m.rss_anon_bytes, Some(8 * MIB));
        assert_eq!(m.rss_file_bytes, Some(32 * MIB));
        assert_eq!(m.locked_bytes, Some(0));
        assert_eq!(m.unreclaimable_bytes(), Some(8 * MIB));
    }

    #[test]
    fn old_kernels_without_rss_split_parse_as_none() {
        let m = MemorySnapshot::from_proc_status("VmHWM:\t 100 kB\nVmRSS:\tgarbage kB\n");
        assert_eq!(m.peak_rss_bytes, Some(102_400));
        assert_eq!(m.rss_bytes, None);
        assert_eq!(m.rss_anon_bytes, None);
        assert_eq!(m.unreclaimable_bytes(), None);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn live_reading_has_the_split() {
        let m = MemorySnapshot::current();
        assert!(m.peak_rss_bytes.unwrap() >= m.rss_bytes.unwrap());
        assert!(m.rss_anon_bytes.unwrap() > 0);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn peak_covers_a_fresh_allocation() {
        let v = vec![1u8; 64 << 20];
        let p = std::hint::black_box(&v)
            .iter()
            .step_by(4096)
            .map(|&b| b as u64)
            .sum::<u64>();
        assert_eq!(p, (64 << 20) / 4096);
        assert!(peak_rss_bytes().unwrap() >= 64 << 20);
    }

    #[test]
    fn budgets_parse_presets_and_megabytes() {
        assert_eq!(Budget::parse("int4_aggressive").unwrap().bytes, 1536 * MIB);
        assert_eq!(Budget::parse("1800").unwrap().bytes, 1800 * MIB);
        assert_eq!(Budget::parse("1800MB").unwrap().name, "custom_1800mb");
        for bad in ["", "0", "-5", "int3", "1e3", "99999999999"] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Budget::for_bits(2).name, "int2_extreme");
        assert_eq!(Budget::for_bits(4).name, "int4_aggressive");
        assert_eq!(Budget::for_bits(8).name, "int8_deployment");
        assert_eq!(Budget::for_bits(16).name, "bf16_development");
    }

    fn mem(peak_mib: u64, anon_mib: u64) -> MemorySnapshot {
        MemorySnapshot {
            peak_rss_bytes: Some(peak_mib * MIB),
            rss_anon_bytes: Some(anon_mib * MIB),
            ..Default::default()
        }
    }

    #[test]
    fn budget_gate_boundaries() {
        let b = Budget::parse("int2_extreme").unwrap(); // 1024 MiB
        let v = evaluate_budget(&b, 1024 * MIB, &mem(1024, 10));
        assert_eq!(
            (v.weights_only, v.whole_process),
            (GateVerdict::Pass, GateVerdict::Pass)
        );
        let v = evaluate_budget(&b, 1024 * MIB + 1, &mem(1025, 1024));
        assert_eq!(
            (v.weights_only, v.whole_process),
            (GateVerdict::Fail, GateVerdict::Warn)
        );
        let v = evaluate_budget(&b, 0, &mem(2000, 1025));
        assert_eq!(v.whole_process, GateVerdict::Fail);
        let v = evaluate_budget(&b, 0, &MemorySnapshot::default());
        assert_eq!(v.whole_process, GateVerdict::Unknown);
        let no_split = MemorySnapshot {
            peak_rss_bytes: Some(2000 * MIB),
            ..Default::default()
        };
        assert_eq!(
            evaluate_budget(&b, 0, &no_split).whole_process,
            GateVerdict::Fail
        );
    }
}
