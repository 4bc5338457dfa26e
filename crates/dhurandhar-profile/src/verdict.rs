//! PASS / WARN / FAIL of the decode throughput against a target.
//!
//! WARN margin: a measurement within ±`margin` (default 25 %) of the target is WARN, because
//! run-to-run noise on flash and the host-vs-device gap are both larger than that. PASS needs
//! at least `target × (1 + margin)`; below `target × (1 − margin)` is FAIL. A verdict that
//! rests on warm (page-cache) numbers or on an unverified cold run is capped at WARN.

use serde::Serialize;

use crate::error::ProfileError;
use crate::memory::GateVerdict;
use crate::profile::{Eviction, Mode, Pattern, PatternResult};

pub const DEFAULT_WARN_MARGIN: f64 = 0.25;

/// Printed with every verdict: the numbers are only as good as the storage they ran on.
pub const HOST_CAVEAT: &str =
    "host storage is not device flash: run this same binary on the target device to decide";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThroughputVerdict {
    pub verdict: GateVerdict,
    pub reason: String,
    pub target_tps: f64,
    pub warn_margin: f64,
    /// The measurement the verdict rests on.
    pub pattern: Option<Pattern>,
    pub mode: Option<Mode>,
    pub measured_tps: Option<f64>,
}

/// Judge the decode throughput in `results` against `target_tps`.
///
/// Basis: `random_decode` (what a decode step does), else `random_scatter`, else
/// `sequential_prefill`; cold if a cold number exists, else warm.
pub fn evaluate_throughput(
    results: &[PatternResult],
    target_tps: f64,
    margin: f64,
) -> Result<ThroughputVerdict, ProfileError> {
    if !target_tps.is_finite() || target_tps <= 0.0 {
        return Err(ProfileError::Invalid(format!(
            "target tokens/s must be a positive number, got {target_tps}"
        )));
    }
    if !margin.is_finite() || !(0.0..1.0).contains(&margin) {
        return Err(ProfileError::Invalid(format!(
            "warn margin must be in [0, 1), got {margin}"
        )));
    }
    let order = [
        Pattern::RandomDecode,
        Pattern::RandomScatter,
        Pattern::SequentialPrefill,
    ];
    let pick = |mode: Mode| {
        order.iter().find_map(|p| {
            results
                .iter()
                .find(|r| r.pattern == *p && r.mode == mode && r.tokens_per_s.is_some())
        })
    };
    let cold_missing = results
        .iter()
        .find(|r| r.mode == Mode::Cold && r.tokens_per_s.is_none())
        .and_then(|r| r.note.clone());
    let basis = pick(Mode::Cold).or_else(|| pick(Mode::Warm));
    let mut v = ThroughputVerdict {
        verdict: GateVerdict::Unknown,
        reason: String::new(),
        target_tps,
        warn_margin: margin,
        pattern: basis.map(|r| r.pattern),
        mode: basis.map(|r| r.mode),
        measured_tps: basis.and_then(|r| r.tokens_per_s),
    };
    let Some(r) = basis else {
        v.reason = format!(
            "no throughput was measured{}; {HOST_CAVEAT}",
            cold_missing.map(|n| format!(" ({n})")).unwrap_or_default()
        );
        return Ok(v);
    };
    let tps = r.tokens_per_s.unwrap_or(0.0);
    let hi = target_tps * (1.0 + margin);
    let lo = target_tps * (1.0 - margin);
    let what = format!("{} {} {:.1} tok/s", r.mode.name(), r.pattern.name(), tps);
    let (mut verdict, mut reason) = if tps >= hi {
        (
            GateVerdict::Pass,
            format!("{what} >= target {target_tps} x {:.2}", 1.0 + margin),
        )
    } else if tps >= lo {
        (
            GateVerdict::Warn,
            format!(
                "{what} is within {:.0}% of target {target_tps}: too close to call",
                margin * 100.0
            ),
        )
    } else {
        (
            GateVerdict::Fail,
            format!("{what} < target {target_tps} x {:.2}", 1.0 - margin),
        )
    };
    let capped = if r.mode == Mode::Warm {
        Some(match cold_missing {
            Some(n) => format!("only a page-cache-warm number exists ({n})"),
            None => "only page-cache-warm numbers were measured (no cold run)".to_string(),
        })
    } else if r.eviction == Some(Eviction::Unverified) {
        Some("the cold run's residency could not be verified".to_string())
    } else {
        None
    };
    if let Some(why) = capped {
        if verdict == GateVerdict::Pass {
            verdict = GateVerdict::Warn;
        }
        reason = format!("{reason}; {why}");
    }
    v.verdict = verdict;
    v.reason = format!("{reason}; {HOST_CAVEAT}");
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Advice;

    fn row(pattern: Pattern, mode: Mode, tps: Option<f64>) -> PatternResult {
        PatternResult {
            pattern,
            mode,
            advice: Advice::Random,
            populate: false,
            tokens: 10,
            bytes_per_token: 4096,
            tokens_per_s: tps,
            mb_per_s: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            mean_us: None,
            max_us: None,
            resident_fraction_before: Some(0.0),
            resident_fraction_after: None,
            major_faults: 0,
            minor_faults: 0,
            map_ms: 0.0,
            eviction: (mode == Mode::Cold).then_some(Eviction::Evicted),
            note: None,
        }
    }

    fn verdict(tps: f64) -> GateVerdict {
        let rs = [row(Pattern::RandomDecode, Mode::Cold, Some(tps))];
        evaluate_throughput(&rs, 100.0, 0.25).unwrap().verdict
    }

    #[test]
    fn boundaries() {
        assert_eq!(verdict(125.0), GateVerdict::Pass);
        assert_eq!(verdict(124.999), GateVerdict::Warn);
        assert_eq!(verdict(100.0), GateVerdict::Warn);
        assert_eq!(verdict(75.0), GateVerdict::Warn);
        assert_eq!(verdict(74.999), GateVerdict::Fail);
    }

    #[test]
    fn cold_decode_is_the_basis_even_when_warm_is_faster() {
        let rs = [
            row(Pattern::SequentialPrefill, Mode::Cold, Some(1e6)),
            row(Pattern::RandomDecode, Mode::Warm, Some(1e6)),
            row(Pattern::RandomDecode, Mode::Cold, Some(10.0)),
        ];
        let v = evaluate_throughput(&rs, 100.0, 0.25).unwrap();
        assert_eq!(v.verdict, GateVerdict::Fail);
        assert_eq!(
            (v.pattern, v.mode),
            (Some(Pattern::RandomDecode), Some(Mode::Cold))
        );
        assert!(v.reason.contains("not device flash"));
    }

    #[test]
    fn warm_only_pass_is_capped_at_warn_and_fail_stays_fail() {
        let rs = [row(Pattern::RandomDecode, Mode::Warm, Some(1e6))];
        let v = evaluate_throughput(&rs, 100.0, 0.25).unwrap();
        assert_eq!(v.verdict, GateVerdict::Warn);
        assert!(v.reason.contains("warm"), "{}", v.reason);
        let rs = [row(Pattern::RandomDecode, Mode::Warm, Some(1.0))];
        assert_eq!(
            evaluate_throughput(&rs, 100.0, 0.25).unwrap().verdict,
            GateVerdict::Fail
        );
    }

    #[test]
    fn failed_eviction_falls_back_to_warm_and_says_why() {
        let mut cold = row(Pattern::RandomDecode, Mode::Cold, None);
        cold.eviction = Some(Eviction::Failed);
        cold.note = Some("still cached".into());
        let rs = [cold, row(Pattern::RandomDecode, Mode::Warm, Some(1e6))];
        let v = evaluate_throughput(&rs, 100.0, 0.25).unwrap();
        assert_eq!(v.verdict, GateVerdict::Warn);
        assert!(v.reason.contains("still cached"), "{}", v.reason);
    }

    #[test]
    fn unverified_cold_is_capped() {
        let mut cold = row(Pattern::RandomDecode, Mode::Cold, Some(1e6));
        cold.eviction = Some(Eviction::Unverified);
        let v = evaluate_throughput(&[cold], 100.0, 0.25).unwrap();
        assert_eq!(v.verdict, GateVerdict::Warn);
    }

    #[test]
    fn nothing_measured_is_unknown_and_bad_targets_are_errors() {
        let v = evaluate_throughput(&[], 15.0, 0.25).unwrap();
        assert_eq!(v.verdict, GateVerdict::Unknown);
        for t in [0.0, -1.0, f64::NAN] {
            assert!(evaluate_throughput(&[], t, 0.25).is_err());
        }
        assert!(evaluate_throughput(&[], 15.0, 1.0).is_err());
    }
}
