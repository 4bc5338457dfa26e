//! Codec invariants: round trips, bit accounting, quality vs bits, the TurboQuant
//! distortion table, bad input.

use dhurandhar_kv::synth::{generate, Distribution};
use dhurandhar_kv::{build_codec, build_codec_roles, Codec, CodecSpec, KvCodec, KvError, KvRole};
use proptest::prelude::*;

fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
    generate(Distribution::Gaussian, n, d, seed, 0, false)
}

fn codec(name: &str) -> Codec {
    name.parse().unwrap()
}

fn build(name: &str, bits: u32, d: usize) -> Box<dyn KvCodec> {
    let cal = gaussian(256, d, 99);
    build_codec(&CodecSpec::new(codec(name), bits, d), Some(&cal)).unwrap()
}

fn nmse(x: &[f32], y: &[f32]) -> f64 {
    let e: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let t: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    e / t
}

fn round_trip(c: &dyn KvCodec, role: KvRole, x: &[f32]) -> (Vec<f32>, usize) {
    let enc = c.encode(role, x).unwrap();
    let mut out = vec![0.0; x.len()];
    c.decode(role, &enc, &mut out).unwrap();
    (out, enc.len())
}

/// Every codec at every supported width, for head_dims that are powers of two, odd,
/// and not multiples of 3 or 32: lengths match `encoded_len`, bits/value is what the
/// record layout says, reconstruction is close.
#[test]
fn every_codec_round_trips_on_awkward_head_dims() {
    for &d in &[64usize, 96, 128, 255, 256] {
        let x = gaussian(64, d, 1);
        for c in Codec::ALL {
            let name = c.name();
            for &b in c.supported_bits() {
                let c = build(name, b, d);
                for role in [KvRole::Key, KvRole::Value] {
                    let (y, len) = round_trip(c.as_ref(), role, &x);
                    assert_eq!(len, c.encoded_len(role, 64), "{name} b={b} d={d}");
                    assert!(y.iter().all(|v| v.is_finite()));
                    let e = nmse(&x, &y);
                    // Loose sanity bound; exact quality is tested below.
                    assert!(e < 0.75, "{name} b={b} d={d} {role:?} nmse={e}");
                    if b >= 4 {
                        assert!(e < 0.12, "{name} b={b} d={d} {role:?} nmse={e}");
                    }
                }
            }
        }
    }
}

/// Bits per value from the bytes equals the documented record layout (so no codec can
/// hide metadata): e.g. turbo at d=256, 4 residual bits stores 1 + 4 bits + two f16 per
/// vector = 5.125 bits, not the Python tool's claimed 3.5.
#[test]
fn bits_accounting_matches_record_layouts() {
    let bpv = |name: &str, b: u32, d: usize, role: KvRole| {
        let c = build(name, b, d);
        let x = gaussian(64, d, 2);
        let enc = c.encode(role, &x).unwrap();
        enc.len() as f64 * 8.0 / x.len() as f64
    };
    assert_eq!(bpv("turbo", 4, 256, KvRole::Key), 5.125);
    assert_eq!(bpv("turbo-mse", 4, 128, KvRole::Key), 4.125);
    assert_eq!(bpv("turbo-prod", 4, 128, KvRole::Key), 4.25);
    // Padding to 128 is counted at head_dim 96.
    assert_eq!(
        bpv("turbo-mse", 4, 96, KvRole::Key),
        (2.0 + 64.0) * 8.0 / 96.0
    );
    assert_eq!(bpv("q8_0", 8, 128, KvRole::Key), 8.5);
    assert_eq!(bpv("q4_0", 4, 128, KvRole::Key), 4.5);
    // OScaR keys: 32 f16 norms + p·(min, step) + codes per 32 tokens.
    assert_eq!(bpv("oscar", 4, 128, KvRole::Key), 4.0 + 1.0 + 0.125);
    assert_eq!(bpv("kivi2", 2, 128, KvRole::Key), 3.0);
    assert_eq!(bpv("kivi2", 2, 128, KvRole::Value), 3.0);
    assert_eq!(bpv("rotor", 4, 96, KvRole::Key), 5.0 + 32.0 / 96.0);
}

#[test]
fn quality_is_monotone_in_bits() {
    let d = 128;
    let x = generate(Distribution::OutlierChannels, 128, d, 3, 0, false);
    for codec in Codec::ALL {
        let name = codec.name();
        let widths = codec.supported_bits();
        let mut last = f64::INFINITY;
        for &b in widths {
            let cal = generate(Distribution::OutlierChannels, 256, d, 4, 0, false);
            let c = build_codec(&CodecSpec::new(codec, b, d), Some(&cal)).unwrap();
            let (y, _) = round_trip(c.as_ref(), KvRole::Key, &x);
            let e = nmse(&x, &y);
            assert!(e < last, "{name}: nmse {e} at {b} bits is not below {last}");
            last = e;
        }
    }
}

/// TurboQuant (arXiv 2504.19874) at d = 128 on Gaussian vectors: the paper and
/// independent ports measure nmse ≈ 0.36, 0.117, 0.034, 0.009 for b = 1..4, between
/// 4^-b and 2.72·4^-b. Tolerance 6 % relative: the two-decimal published figures are
/// themselves rounded by up to 3 % (0.034 vs the Lloyd–Max 0.0345), 4096 vectors give
/// a Monte-Carlo standard error under 0.5 %, the Beta(d = 128) codebook differs from the
/// Gaussian one by O(1/d) ≈ 1 %, and the f16 norm adds < 1e-6.
#[test]
fn turboquant_distortion_table_d128() {
    let d = 128;
    let x = gaussian(4096, d, 5);
    let published = [0.36, 0.117, 0.034, 0.009];
    for (b, want) in (1..=4).zip(published) {
        let c = build("turbo-mse", b, d);
        let (y, _) = round_trip(c.as_ref(), KvRole::Key, &x);
        let e = nmse(&x, &y);
        let lo = 4f64.powi(-(b as i32));
        assert!(
            e >= lo && e <= 2.72 * lo,
            "b={b} nmse={e} outside Shannon/upper bounds"
        );
        assert!(
            (e - want).abs() / want < 0.06,
            "b={b} nmse={e} vs published {want}"
        );
    }
}

/// QJL makes turbo-prod's inner products unbiased; turbo-mse shrinks them at low bits.
#[test]
fn turbo_prod_is_unbiased_for_inner_products() {
    let d = 128;
    let k = gaussian(2048, d, 6);
    let q = gaussian(16, d, 7);
    let slope = |name: &str| {
        let c = build(name, 2, d);
        let (kh, _) = round_trip(c.as_ref(), KvRole::Key, &k);
        let (mut sxy, mut sxx) = (0.0f64, 0.0f64);
        for qi in q.chunks_exact(d) {
            for (a, b) in k.chunks_exact(d).zip(kh.chunks_exact(d)) {
                let y: f64 = qi.iter().zip(a).map(|(u, v)| (u * v) as f64).sum();
                let yh: f64 = qi.iter().zip(b).map(|(u, v)| (u * v) as f64).sum();
                sxy += y * yh;
                sxx += y * y;
            }
        }
        sxy / sxx
    };
    let (mse, prod) = (slope("turbo-mse"), slope("turbo-prod"));
    assert!(mse < 0.93, "turbo-mse 2-bit slope {mse} should be shrunk");
    assert!(
        (prod - 1.0).abs() < 0.03,
        "turbo-prod slope {prod} should be ~1"
    );
}

/// SpectralQuant calibrated on low-rank data beats the data-oblivious rotation codecs
/// at equal stored bits per value, and calibrates on isotropic data without crashing.
#[test]
fn spectral_calibration_helps_on_low_rank_and_survives_isotropic() {
    let d = 64;
    let x = generate(Distribution::LowRank, 256, d, 8, 0, false);
    let cal = dhurandhar_kv::synth::generate_samples(Distribution::LowRank, 512, d, 8, 0, false, 1);
    let sq = build_codec(&CodecSpec::new(Codec::Spectral, 3, d), Some(&cal)).unwrap();
    let tq = build_codec(&CodecSpec::new(Codec::TurboMse, 3, d), None).unwrap();
    let (ys, ls) = round_trip(sq.as_ref(), KvRole::Key, &x);
    let (yt, lt) = round_trip(tq.as_ref(), KvRole::Key, &x);
    assert!(ls <= lt + 2 * 256, "spectral {ls} B vs turbo-mse {lt} B");
    assert!(
        nmse(&x, &ys) < nmse(&x, &yt),
        "{} vs {}",
        nmse(&x, &ys),
        nmse(&x, &yt)
    );
    let iso = gaussian(512, d, 10);
    let c = build_codec(&CodecSpec::new(Codec::Spectral, 4, d), Some(&iso)).unwrap();
    let (y, _) = round_trip(c.as_ref(), KvRole::Value, &gaussian(32, d, 11));
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(c.side_bytes(KvRole::Key) > 2 * d * d);
}

#[test]
fn bad_input_gives_clear_errors() {
    let c = build("turbo-mse", 4, 64);
    assert!(matches!(
        c.encode(KvRole::Key, &[]),
        Err(KvError::EmptyBatch)
    ));
    assert!(matches!(
        c.encode(KvRole::Key, &[0.0; 65]),
        Err(KvError::ShapeMismatch { .. })
    ));
    let mut x = gaussian(3, 64, 1);
    x[64 + 5] = f32::NAN;
    match c.encode(KvRole::Key, &x) {
        Err(KvError::NonFinite { token, channel, .. }) => assert_eq!((token, channel), (1, 5)),
        other => panic!("{other:?}"),
    }
    x[64 + 5] = 1e30;
    assert!(matches!(
        c.encode(KvRole::Key, &x),
        Err(KvError::Overflow { token: 1, .. })
    ));
    for (name, bits) in [
        ("turbo", 1),
        ("turbo", 9),
        ("q8_0", 4),
        ("oscar", 0),
        ("kivi2", 16),
    ] {
        let e = build_codec(&CodecSpec::new(codec(name), bits, 64), None)
            .err()
            .unwrap();
        assert!(matches!(e, KvError::BitsOutOfRange { .. }), "{e}");
    }
    let e = "nope".parse::<Codec>().unwrap_err();
    assert!(matches!(e, KvError::UnknownCodec { .. }), "{e}");
    assert!(e.to_string().contains("turbo-mse"), "{e}");
    assert!(matches!(
        build_codec(&CodecSpec::new(Codec::Spectral, 4, 64), None),
        Err(KvError::NeedsCalibration(_))
    ));
    let k = build("kivi2", 2, 64);
    assert!(matches!(
        k.encode(KvRole::Key, &gaussian(33, 64, 1)),
        Err(KvError::PartialGroup { .. })
    ));
}

#[test]
fn corrupted_buffers_are_errors_not_panics() {
    for codec in Codec::ALL {
        let name = codec.name();
        let b = codec.supported_bits()[0];
        let c = build(name, b, 96);
        let x = gaussian(32, 96, 12);
        let enc = c.encode(KvRole::Key, &x).unwrap();
        let mut out = vec![0.0; x.len()];
        assert!(matches!(
            c.decode(KvRole::Key, &enc[..enc.len() - 1], &mut out),
            Err(KvError::EncodedLength { .. })
        ));
        // An all-0xFF buffer holds NaN f16 side values.
        let bad = vec![0xFFu8; enc.len()];
        assert!(
            matches!(
                c.decode(KvRole::Key, &bad, &mut out),
                Err(KvError::Corrupted(_))
            ),
            "{name}"
        );
    }
}

const GROUP_CODECS: &[&str] = &["oscar", "kivi2"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any shape: encode/decode agree with `encoded_len`, outputs are finite, and
    /// arbitrary bytes of the right length never panic on decode.
    #[test]
    fn any_shape_round_trips(
        ci in 0usize..Codec::ALL.len(),
        d in 1usize..300,
        groups in 1usize..3,
        seed in 0u64..1000,
        junk in any::<u8>(),
    ) {
        let codec = Codec::ALL[ci];
        let name = codec.name();
        let b = *codec.supported_bits().last().unwrap().min(&4);
        let b = if codec.supported_bits().contains(&b) { b } else { codec.supported_bits()[0] };
        let cal = gaussian(64, d, seed + 1);
        let c = build_codec_roles(&CodecSpec { codec, bits: b, head_dim: d, seed }, Some(&cal), Some(&cal)).unwrap();
        let n = if GROUP_CODECS.contains(&name) { 32 * groups } else { groups * 5 };
        let x = gaussian(n, d, seed);
        for role in [KvRole::Key, KvRole::Value] {
            let enc = c.encode(role, &x).unwrap();
            prop_assert_eq!(enc.len(), c.encoded_len(role, n));
            let mut y = vec![0.0; x.len()];
            c.decode(role, &enc, &mut y).unwrap();
            prop_assert!(y.iter().all(|v| v.is_finite()));
            let noise: Vec<u8> = enc.iter().enumerate().map(|(i, v)| v ^ junk.wrapping_mul(i as u8 | 1)).collect();
            let _ = c.decode(role, &noise, &mut y);
        }
    }
}
