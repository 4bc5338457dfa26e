//! Round trips through the engine's dequantizers (themselves checked against the `gguf`
//! Python package in `dhurandhar-engine/tests/quant_reference.rs`).

use super::*;
use dhurandhar_checkpoint::gguf::GgmlType;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn ggml(f: Format) -> GgmlType {
    GgmlType::from_u32(f.ggml_id()).unwrap()
}

fn round_trip(f: Format, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; f.row_bytes(x.len()).unwrap()];
    quantize_row(f, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dhurandhar_engine::quant::dequantize_row(ggml(f), &q, &mut y).unwrap();
    y
}

/// Relative error of one f16 rounding (2^-11), times a little for f32 arithmetic.
const F16_REL: f32 = 1.0 / 2048.0 * 1.001;
/// Absolute error of one f16 rounding in the subnormal range (half of 2^-24): small
/// super-block scales (Q6_K's is max|x|/4096) are f16 subnormals for real weights.
const F16_ABS: f32 = 1.0 / (1u32 << 25) as f32;

fn range0(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(0.0f32, f32::max);
    let min = x.iter().copied().fold(0.0f32, f32::min);
    max - min
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

/// The largest error each format's step size allows for block `x`.
///
/// * Q8_0: half a step of `max|x|/127`; the f16 scale adds at most `127·d·2⁻¹¹`.
/// * Q4_0/Q5_0: the level grid runs from `-max|x|` to `+(7/8)·max|x|` (`15/16`), so the
///   far end clips by one step `max|x|/8` (`/16`); f16 scale as above.
/// * Q4_1/Q5_1: half a step of `(max-min)/15` (`/31`); f16 scale and f16 minimum.
/// * IQ4_NL: levels −127..113 at a scale near `max|x|/120` (the search tries ±7 around
///   127): half its widest gap (24) is `max|x|/10`, and the far end, 113 against 127,
///   clips by 14 levels, under `max|x|/8`.
/// * IQ4_XS: IQ4_NL's bound per block of 32, plus the block scale's rounding to a
///   multiple of the super-block scale `d = max block scale / 32`, at most `d/2`, which
///   moves a value at level 127 by `127·d/2`; the largest block scale is at most
///   `max|x|/113` (the search's smallest −127 + 7 = −120 start, refitted), so that is
///   under `127·max|x| / (64·113)`.
/// * k-quants: one step of the super-block grid, `max sub-block range / levels`: the
///   scale search may shorten a sub-block's grid by up to one level (it tries
///   `levels ± 1`) and clip its extreme value by that much, and the 6-bit (Q4_K/Q5_K),
///   4-bit (Q2_K) or 8-bit (Q6_K) sub-block scales move each grid point by at most
///   half a step of the super-block scale; the f16 super-block scales add `2⁻¹¹`
///   relative. Q2_K's few levels make its least-absolute-error fit clip by up to two
///   of its steps.
fn bound(f: Format, x: &[f32]) -> f32 {
    use Format::*;
    let a = amax(x);
    let sub = |n: usize, levels: f32, range: fn(&[f32]) -> f32| {
        x.chunks(n).map(range).fold(0.0f32, f32::max) / levels
    };
    // The largest multiple of a stored f16 scale in a value (level × sub-scale), for the
    // absolute f16 rounding error of subnormal scales.
    let mult = match f {
        F32 | F16 | BF16 => 0.0,
        Q8_0 => 127.0,
        Q4_0 => 8.0,
        Q5_0 => 16.0,
        Q4_1 => 16.0,
        Q5_1 => 32.0,
        Q2_K => 15.0 * 3.0 + 15.0,
        Q3_K => 32.0 * 4.0,
        Q4_K => 63.0 * 15.0 + 63.0,
        Q5_K => 63.0 * 31.0 + 63.0,
        Q6_K => 128.0 * 32.0,
        IQ4_NL => 127.0,
        IQ4_XS => 127.0 * 32.0,
    };
    let tiny = a * 1e-6 + 1e-30 + F16_ABS * mult;
    tiny + match f {
        F32 => 0.0,
        F16 => a * F16_REL,
        BF16 => a / 256.0,
        Q8_0 => a / 254.0 + a * F16_REL * 2.0,
        Q4_0 => a / 8.0 + a * F16_REL * 2.0,
        Q5_0 => a / 16.0 + a * F16_REL * 2.0,
        Q4_1 => range0(x) / 30.0 + 2.0 * a * F16_REL * 2.0,
        Q5_1 => range0(x) / 62.0 + 2.0 * a * F16_REL * 2.0,
        Q2_K => 2.0 * sub(16, 3.0, range0) + 2.0 * a * F16_REL * 4.0,
        Q3_K => sub(16, 4.0, amax) + a * F16_REL * 4.0,
        Q4_K => sub(32, 15.0, range0) + 2.0 * a * F16_REL * 16.0,
        Q5_K => sub(32, 31.0, range0) + 2.0 * a * F16_REL * 32.0,
        Q6_K => sub(16, 32.0, amax) + a * F16_REL * 32.0,
        IQ4_NL => a / 8.0 + a * F16_REL * 2.0,
        IQ4_XS => sub(32, 8.0, amax) + a * 127.0 / (64.0 * 113.0) + a * F16_REL * 2.0,
    }
}

fn check_block_errors(f: Format, x: &[f32]) -> Result<(), String> {
    let y = round_trip(f, x);
    let bs = f.block_size().max(QK_K);
    for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
        let lim = bound(f, xb);
        for (i, (a, b2)) in xb.iter().zip(yb).enumerate() {
            if (a - b2).abs().is_nan() || (a - b2).abs() > lim {
                return Err(format!(
                    "{f}: block {b} value {i}: {a} came back as {b2} (bound {lim})"
                ));
            }
        }
    }
    Ok(())
}

fn gaussian_row(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    // Sum of uniforms: close enough to a bell for weight-like data, no extra crate.
    (0..n)
        .map(|_| (0..4).map(|_| rng.gen::<f32>() - 0.5).sum::<f32>() * scale)
        .collect()
}

fn rel_rms(x: &[f32], y: &[f32]) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn block_sizes_match_ggml() {
    for f in Format::ALL {
        let g = ggml(f);
        assert_eq!(f.name(), g.name());
        assert_eq!(f.block_size() as u64, g.block_size(), "{f}");
        assert_eq!(f.block_bytes() as u64, g.type_size(), "{f}");
        assert!(dhurandhar_engine::computes_with(g), "{f}");
        assert_eq!(Format::from_ggml_id(f.ggml_id()), Some(f));
    }
}

#[test]
fn iq4_levels_are_the_engines() {
    let engine = dhurandhar_engine::kquants::IQ4_LEVELS.map(f32::from);
    assert_eq!(crate::legacy::IQ4_LEVELS, engine);
}

#[test]
fn bad_lengths_are_refused() {
    let x = vec![0.0f32; 100];
    let mut out = vec![0u8; 1000];
    assert!(matches!(
        quantize_row(Format::Q4_K, &x, &mut out),
        Err(QuantizeError::RowLength { len: 100, .. })
    ));
    let x = vec![0.0f32; 256];
    assert!(matches!(
        quantize_row(Format::Q4_K, &x, &mut out[..143]),
        Err(QuantizeError::OutputLength { need: 144, .. })
    ));
    assert!(quantize_rows(Format::Q8_0, &x[..96], 64, &mut out[..68]).is_err());
}

#[test]
fn gaussian_rows_round_trip_within_bounds_and_in_quality_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = gaussian_row(&mut rng, 256 * 64, 0.02);
    let mut err = std::collections::BTreeMap::new();
    for f in Format::ALL {
        check_block_errors(f, &x).unwrap();
        err.insert(f, rel_rms(&x, &round_trip(f, &x)));
    }
    use Format::*;
    // More bits, less error; and the k-quants beat the classic type of the same size
    // (Q4_K 4.5 bits vs Q4_0 4.5, Q5_K 5.5 vs Q5_0 5.5): what the scale search is for.
    let order = [F32, F16, Q8_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K];
    for w in order.windows(2) {
        assert!(err[&w[0]] <= err[&w[1]], "{:?}: {err:?}", w);
    }
    assert!(err[&Q4_K] < err[&Q4_0], "{err:?}");
    // IQ4_NL's levels, dense near zero, fit a bell better than Q4_0's even grid.
    assert!(err[&IQ4_NL] < err[&Q4_0], "{err:?}");
    // IQ4_XS stores them with 6-bit block scales in 4.25 bits: still better than Q4_0's
    // 4.5.
    assert!(err[&IQ4_XS] < err[&Q4_0], "{err:?}");
    assert!(err[&Q5_K] < err[&Q5_0], "{err:?}");
    assert!(
        err[&Q4_1] < err[&Q4_0] && err[&Q5_1] < err[&Q5_0],
        "{err:?}"
    );
}

#[test]
fn zero_and_constant_rows() {
    for f in Format::ALL {
        let z = vec![0.0f32; 512];
        assert!(round_trip(f, &z).iter().all(|&v| v == 0.0), "{f}");
        let c = vec![0.375f32; 512];
        check_block_errors(f, &c).unwrap();
    }
}

#[test]
fn classic_types_hit_their_extremes_exactly() {
    // The value of largest magnitude comes back exactly when it / level is an f16
    // (127/64 divided by 127, 8 or 16 is).
    let m = -127.0 / 64.0;
    let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) / 16.0).collect();
    x[7] = m;
    for f in [Format::Q8_0, Format::Q4_0, Format::Q5_0] {
        let y = round_trip(f, &x);
        assert_eq!(y[7], m, "{f}");
    }
    for f in [Format::Q4_1, Format::Q5_1] {
        let y = round_trip(f, &x);
        assert_eq!(y[7], m, "{f}: the minimum is stored");
    }
}

#[test]
fn parallel_rows_equal_serial_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = gaussian_row(&mut rng, 256 * 12, 1.0);
    for f in Format::ALL {
        let rb = f.row_bytes(512).unwrap();
        let mut par = vec![0u8; rb * 6];
        quantize_rows(f, &x, 512, &mut par).unwrap();
        for (r, chunk) in x.chunks(512).enumerate() {
            let mut one = vec![0u8; rb];
            quantize_row(f, chunk, &mut one).unwrap();
            assert_eq!(&par[r * rb..(r + 1) * rb], &one[..], "{f} row {r}");
        }
    }
}

/// Rows of 256 values with magnitudes from 1e-4 to 1e3, outliers and sign skew.
fn rows() -> impl Strategy<Value = Vec<f32>> {
    (
        prop::collection::vec(-1.0f32..1.0, 256),
        -4i32..3,
        -1.0f32..1.0,
        0usize..256,
        1.0f32..20.0,
    )
        .prop_map(|(mut v, exp, skew, at, outlier)| {
            let s = 10f32.powi(exp);
            for x in v.iter_mut() {
                *x = (*x + skew) * s;
            }
            v[at] *= outlier;
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_format_round_trips_within_its_step(x in rows()) {
        for f in Format::ALL {
            let mut q = vec![0u8; f.row_bytes(x.len()).unwrap()];
            prop_assert_eq!(q.len(), x.len() / f.block_size() * f.block_bytes());
            quantize_row(f, &x, &mut q).unwrap();
            if let Err(e) = check_block_errors(f, &x) {
                return Err(TestCaseError::fail(e));
            }
        }
    }

}

#[test]
fn non_finite_values_do_not_panic_and_finite_blocks_are_unaffected() {
    // A corrupt input must give a file (with non-finite scales in the bad blocks),
    // never a panic; blocks without bad values quantize as usual.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let good = gaussian_row(&mut rng, 256, 1.0);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = good.clone();
        x.extend_from_slice(&good);
        x[300] = bad;
        for f in Format::ALL {
            let mut q = vec![0u8; f.row_bytes(x.len()).unwrap()];
            quantize_row(f, &x, &mut q).unwrap();
            let mut first = vec![0u8; f.row_bytes(256).unwrap()];
            quantize_row(f, &good, &mut first).unwrap();
            assert_eq!(&q[..first.len()], &first[..], "{f} with {bad}");
        }
    }
}
