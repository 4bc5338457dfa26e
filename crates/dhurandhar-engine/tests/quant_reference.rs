//! Every quant type against an independent reference: `gguf.quants.dequantize` from the
//! `gguf` Python package, run through `scripts/quant_reference.py` on random valid blocks.
//!
//! Checked per type:
//! - dequantization equals the reference bit for bit (both compute `d·sc·q − m` in f32
//!   from the same f16 fields in the same order, so no ulp slack is needed);
//! - portable, AVX2 and 4-row AVX2 dot products with 8-bit activations, and `matmul` on the path the
//!   engine picks, against f64 dot products of the reference weights with (i) the same
//!   8-bit activations dequantized (tolerance: f32 rounding only,
//!   `1e-5·Σ|w·x̂|`), and (ii) the original f32 activations (tolerance: the worst-case
//!   activation rounding error `Σ_blocks d_a/2 · Σ|w|`, plus the same rounding slack);
//! - `matmul` with f32 activations, and the F16/BF16 portable and AVX2 kernels, against
//!   (ii) with rounding slack only.
//!
//! Skips with a printed reason when python3 or gguf is missing, unless
//! `DHURANDHAR_REQUIRE_FIXTURES=1`, which turns the skip into a failure (CI).

use std::path::PathBuf;
use std::process::Command;

use dhurandhar_engine::kernels::{matmul, Acts, QMatrix, Simd};
use dhurandhar_engine::quant::{dequantize_row, GgmlType, Q8Acts};
use dhurandhar_engine::{floats, kquants};

const ROWS: usize = 6;
const COLS: usize = 512;
const N_TOK: usize = 5;

/// Types with integer kernels against 8-bit activations.
const Q8_TYPES: &[&str] = &[
    "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
    "IQ4_XS",
];
/// Types multiplied against f32 activations only.
const FLOAT_TYPES: &[&str] = &["F16", "BF16"];

/// Run the reference script; `None` (after printing why) when it cannot run here.
fn reference(types: &[&str], values: usize, seed: u64) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quant_reference.py");
    let dir = std::env::temp_dir().join(format!(
        "dhurandhar-quant-ref-{}-{seed}-{values}",
        std::process::id()
    ));
    dhurandhar_testkit::python_script(
        Command::new("python3")
            .arg(&script)
            .args(["--seed", &seed.to_string(), "--values", &values.to_string()])
            .arg("--out")
            .arg(&dir)
            .args(types),
        "the gguf reference check",
    )?;
    Some(dir)
}

fn read_f32(p: &std::path::Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Deterministic activations with a spread of magnitudes across blocks.
fn activations(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let u = (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            u * (1.0 + (i / 32 % 7) as f32)
        })
        .collect()
}

struct Bounds {
    exact_q: f64,
    tol_q: f64,
    exact_f: f64,
    tol_f: f64,
    tol_round: f64,
}

/// Reference dot products and tolerances for weight row `w` and activation row `tok`.
fn bounds(w: &[f32], x: &[f32], a: &Q8Acts, tok: usize) -> Bounds {
    let nb = COLS / 32;
    let (mut exact_q, mut exact_f, mut mag_q, mut mag_f, mut act_err) =
        (0f64, 0f64, 0f64, 0f64, 0f64);
    for (i, &wi) in w.iter().enumerate() {
        let da = a.d[tok * nb + i / 32] as f64;
        let xq = da * a.qs[tok * COLS + i] as f64;
        let xf = x[tok * COLS + i] as f64;
        exact_q += wi as f64 * xq;
        exact_f += wi as f64 * xf;
        mag_q += (wi as f64 * xq).abs();
        mag_f += (wi as f64 * xf).abs();
        act_err += (wi as f64).abs() * da / 2.0;
    }
    let round = 1e-5 * mag_q.max(mag_f) + 1e-6;
    Bounds {
        exact_q,
        tol_q: round,
        exact_f,
        tol_f: act_err * 1.0001 + round,
        tol_round: 1e-5 * mag_f + 1e-6,
    }
}

#[test]
fn kernels_match_the_gguf_reference() {
    // Every type gets the same number of values: ROWS × COLS.
    let mut all: Vec<&str> = Q8_TYPES.to_vec();
    all.extend(FLOAT_TYPES);
    let Some(dir) = reference(&all, ROWS * COLS, 20_261_202) else {
        return;
    };

    let x = activations(N_TOK * COLS, 99);
    let mut acts = Q8Acts::default();
    acts.quantize_into(&x, COLS);
    let mut report = Vec::new();

    for name in &all {
        let t = &GgmlType::from_name(name).unwrap();
        let raw = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let want = read_f32(&dir.join(format!("{name}.f32")));
        assert_eq!(want.len(), ROWS * COLS, "{name}: reference size");

        // (a) Dequantization, bit for bit.
        let mut got = vec![0f32; ROWS * COLS];
        dequantize_row(*t, &raw, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{name}: value {i} dequantizes to {g}, reference {w}"
            );
        }

        let m = QMatrix::new(*t, ROWS, COLS, &raw).unwrap();
        let q8 = Q8_TYPES.contains(name);
        assert_eq!(m.uses_q8(), q8, "{name}: activation format");

        // (b) Dot products and matmul with 8-bit activations.
        let mut out_q8 = vec![0f32; N_TOK * ROWS];
        if q8 {
            matmul(&m, &Acts::Q8(&acts), &mut out_q8, false).unwrap();
        }
        let mut out_f32 = vec![0f32; N_TOK * ROWS];
        matmul(&m, &Acts::F32(&x), &mut out_f32, false).unwrap();
        let mut worst = 0f64;
        for r in 0..ROWS {
            let w = &want[r * COLS..(r + 1) * COLS];
            for tok in 0..N_TOK {
                let b = bounds(w, &x, &acts, tok);
                let f = out_f32[tok * ROWS + r] as f64;
                assert!(
                    (f - b.exact_f).abs() <= b.tol_round,
                    "{name} f32-activation matmul row {r} tok {tok}: {f} vs {}",
                    b.exact_f
                );
                if !q8 {
                    let xr = &x[tok * COLS..(tok + 1) * COLS];
                    let mut paths = vec![("portable", floats::dot_portable(*t, &m.row(r), xr))];
                    if let Some(v) = floats::dot_avx2(*t, &m.row(r), xr) {
                        paths.push(("avx2", v));
                    }
                    for (path, v) in paths {
                        let v = v as f64;
                        assert!(
                            (v - b.exact_f).abs() <= b.tol_round,
                            "{name} {path} row {r} tok {tok}: {v} vs {}",
                            b.exact_f
                        );
                    }
                    continue;
                }
                let mut results = vec![("matmul", out_q8[tok * ROWS + r])];
                if kquants::supports(*t) {
                    results.push(("portable", kquants::dot_portable(*t, &m.row(r), &acts, tok)));
                    for tier in Simd::available() {
                        if let Some([v]) = kquants::dot_on::<1>(tier, *t, &m.row(r), &acts, tok) {
                            results.push((tier_name(tier, 1), v));
                        }
                        // The 4-row prefill kernel, rows 0..4 and 1..5.
                        for first in [0, 1] {
                            if (first..first + 4).contains(&tok) {
                                let v = kquants::dot_on::<4>(tier, *t, &m.row(r), &acts, first);
                                if let Some(v) = v {
                                    results.push((tier_name(tier, 4), v[tok - first]));
                                }
                            }
                        }
                    }
                }
                for (path, v) in results {
                    let v = v as f64;
                    assert!(
                        (v - b.exact_q).abs() <= b.tol_q,
                        "{name} {path} row {r} tok {tok}: {v} vs quantized-activation reference {} (tol {})",
                        b.exact_q,
                        b.tol_q
                    );
                    assert!(
                        (v - b.exact_f).abs() <= b.tol_f,
                        "{name} {path} row {r} tok {tok}: {v} vs f32 reference {} (tol {})",
                        b.exact_f,
                        b.tol_f
                    );
                    worst = worst.max((v - b.exact_f).abs() / b.tol_f);
                }
            }
        }
        report.push(format!("{name}: worst |err| / bound = {worst:.3}"));
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("{}", report.join("\n"));
}

/// A label for tier `s` running `n` activation rows at once.
fn tier_name(s: Simd, n: usize) -> &'static str {
    match (s, n) {
        (Simd::Avx2Vnni, 1) => "avx2+vnni",
        (Simd::Avx2Vnni, _) => "avx2+vnni x4",
        (_, 1) => "avx2",
        _ => "avx2 x4",
    }
}

#[test]
fn every_type_has_a_kernel_on_this_cpu() {
    // The AVX2 kernels exist on x86_64; elsewhere the portable ones are the only path.
    for name in [
        "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
    ] {
        let t = GgmlType::from_name(name).unwrap();
        assert!(kquants::supports(t), "{name}");
        let x = activations(256, 1);
        let mut a = Q8Acts::default();
        a.quantize_into(&x, 256);
        let w = vec![0u8; dhurandhar_engine::quant::row_bytes(t, 256).unwrap()];
        // All-zero blocks have zero scales: every kernel must return exactly 0.
        assert_eq!(kquants::dot_portable(t, &w, &a, 0), 0.0, "{name}");
        for tier in Simd::available() {
            if tier.avx2() {
                let got = kquants::dot_on::<1>(tier, t, &w, &a, 0);
                assert_eq!(got, Some([0.0]), "{name} {tier:?}");
            }
        }
    }
}
