//! Single-bit flips anywhere in a pack (issue 10): 1,200 flips at seeded random
//! positions over the whole file (header, chunks, index, footer) of a lossless, a delta
//! and a quant-residual pack. Every one must be detected by `verify` (deep) and by the
//! restore (`unpack`, or `delta apply` for the delta), which must leave no output: no
//! flip may produce a wrong file with success.

use std::path::Path;

use dhurandhar_pack::{
    apply_delta, delta, pack, unpack, PackMode, PackOptions, PackReader, QuantConfig, Weights,
};
use rand::{Rng, SeedableRng};

/// Flips per pack kind.
const FLIPS: usize = 400;

fn write_st(path: &Path, tensors: &[(&str, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Weight-like f32 values (a smooth ramp plus seeded noise).
fn weights(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let x = ((i % 89) as f32 * 1e-3 - 0.04) + rng.gen_range(-0.01f32..0.01);
            x.to_le_bytes()
        })
        .collect()
}

enum Kind {
    Lossless,
    Quant,
    Delta,
}

/// Flip `FLIPS` bits of `good` one at a time; each damaged copy must fail both checks.
fn flip_all(dir: &Path, good: &[u8], kind: Kind, base: &Weights, seed: u64) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let bad = dir.join("bad.dhp");
    let out = dir.join("restored.safetensors");
    let mut detected = 0;
    for i in 0..FLIPS {
        let pos = rng.gen_range(0..good.len());
        let bit = rng.gen_range(0..8u8);
        let mut bytes = good.to_vec();
        bytes[pos] ^= 1 << bit;
        std::fs::write(&bad, &bytes).unwrap();
        let what = format!("flip #{i} at byte {pos} bit {bit}");
        let reader = match PackReader::open(&bad) {
            // Refused at open: verify and every restore open it first.
            Err(_) => {
                detected += 1;
                continue;
            }
            Ok(r) => r,
        };
        assert!(reader.verify(true).is_err(), "{what}: verify said OK");
        let restored = match kind {
            Kind::Delta => apply_delta(base, &reader, &out, &|_| true).map(|_| ()),
            Kind::Lossless | Kind::Quant => unpack(&reader, &out, &|_| true).map(|_| ()),
        };
        assert!(restored.is_err(), "{what}: restore succeeded");
        assert!(!out.exists(), "{what}: restore left an output");
        detected += 1;
    }
    detected
}

#[test]
fn every_single_bit_flip_is_detected_by_verify_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let a = weights(&mut rng, 128 * 64);
    let b = weights(&mut rng, 64 * 64);
    let base_st = d.join("base.safetensors");
    write_st(
        &base_st,
        &[
            ("blk.0.proj", vec![128, 64], a.clone()),
            ("blk.0.norm", vec![64, 64], b.clone()),
        ],
    );
    // A fine-tune of the base: a few changed values in one tensor.
    let mut a2 = a;
    for i in (0..a2.len()).step_by(4 * 61) {
        a2[i] ^= 0x10;
    }
    let new_st = d.join("new.safetensors");
    write_st(
        &new_st,
        &[
            ("blk.0.proj", vec![128, 64], a2),
            ("blk.0.norm", vec![64, 64], b),
        ],
    );
    let base = Weights::open(&base_st).unwrap();
    let new = Weights::open(&new_st).unwrap();
    // Small chunks: several per tensor, so flips land in many different chunks.
    let small = PackOptions {
        chunk_size: 4096,
        ..Default::default()
    };
    let quant = PackOptions {
        mode: PackMode::QuantResidual(QuantConfig {
            bits: 4,
            group: 32,
            residual_frac: 0.02,
        }),
        ..small
    };
    let lossless_p = d.join("lossless.dhp");
    let quant_p = d.join("quant.dhp");
    let delta_p = d.join("delta.dhp");
    pack(&base, &lossless_p, &small, &|_| true).unwrap();
    let q = pack(&base, &quant_p, &quant, &|_| true).unwrap();
    assert!(
        q.tensors.iter().any(|t| t.mode == "quant-residual"),
        "the quant pack must hold a quant-residual tensor"
    );
    delta(&base, &new, &delta_p, &small, &|_| true).unwrap();
    let mut total = 0;
    for (p, kind, seed) in [
        (&lossless_p, Kind::Lossless, 1),
        (&quant_p, Kind::Quant, 2),
        (&delta_p, Kind::Delta, 3),
    ] {
        let good = std::fs::read(p).unwrap();
        // The undamaged pack passes both checks (so a failure below is the flip's).
        let r = PackReader::open(p).unwrap();
        r.verify(true).unwrap();
        drop(r);
        total += flip_all(d, &good, kind, &base, seed);
    }
    assert_eq!(total, 3 * FLIPS);
    eprintln!("{total} single-bit flips, all detected by verify and restore");
}
