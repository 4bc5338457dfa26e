//! Model-aware compression: shared-KV layers skipped, sliding layers window-capped,
//! per KV head (GQA), footprint follows the codec's real bytes.

use dhurandhar_kv::model::{footprint, KvCacheCompressor};
use dhurandhar_kv::{Codec, KvRole};
use dhurandhar_model::{KvSource, ModelArchitecture};

fn e2b_like() -> ModelArchitecture {
    let yaml = r#"
name: t
family: gemma
param_count_b: 5.1
num_hidden_layers: 35
hidden_size: 1536
intermediate_size: 6144
vocab_size: 262144
num_attention_heads: 8
num_key_value_heads: 1
head_dim: 256
global_head_dim: 512
local_to_global_ratio: 4
sliding_window: 512
shared_kv_last_n_layers: 20
"#;
    ModelArchitecture::from_yaml_str(yaml, "t.yaml").unwrap()
}

#[test]
fn shared_layers_cost_nothing_and_windows_cap_sliding_layers() {
    let m = e2b_like();
    let f = footprint(&m, 32768, Codec::TurboMse, 4, 1).unwrap();
    assert_eq!(f.fresh_layers, 15);
    assert_eq!(f.shared_layers, 20);
    for l in &f.layers {
        match l.kv {
            KvSource::SharedFrom(_) => assert_eq!((l.tokens, l.compressed_bytes), (0, 0)),
            KvSource::Fresh => assert!(l.compressed_bytes > 0),
            KvSource::None => unreachable!(),
        }
        if l.kv == KvSource::Fresh && l.window.is_some() {
            assert_eq!(l.tokens, 512);
        }
    }
    assert_eq!(f.baseline_bytes, m.kv_cache_bytes(32768, 16.0));
    // turbo-mse 4 bits at d=256: 4 bits + one f16 norm per 256 values.
    let want = 4.0 + 16.0 / 256.0;
    let sliding_vals = 12.0 * 512.0 * 2.0 * 256.0;
    let global_vals = 3.0 * 32768.0 * 2.0 * 512.0;
    let want_bpv =
        (sliding_vals * want + global_vals * (4.0 + 16.0 / 512.0)) / (sliding_vals + global_vals);
    assert!(
        (f.bits_per_value - want_bpv).abs() < 1e-9,
        "{} vs {want_bpv}",
        f.bits_per_value
    );
}

#[test]
fn footprint_changes_with_bits() {
    let m = e2b_like();
    let a = footprint(&m, 4096, Codec::Turbo, 2, 1)
        .unwrap()
        .compressed_bytes;
    let b = footprint(&m, 4096, Codec::Turbo, 8, 1)
        .unwrap()
        .compressed_bytes;
    assert!(b > a, "{a} {b}");
}

#[test]
fn compressor_skips_shared_layers_and_round_trips_fresh_ones() {
    let m = e2b_like();
    let c = KvCacheCompressor::new(&m, Codec::Kivi2, 4, 1).unwrap();
    let layers = m.layers();
    let shared = layers
        .iter()
        .find(|l| matches!(l.kv, KvSource::SharedFrom(_)))
        .unwrap();
    let x = vec![0.5f32; 40 * 256];
    assert!(c
        .compress_layer(shared.index, KvRole::Key, &x)
        .unwrap()
        .is_none());
    // Layer 0 is sliding (window 512): 600 tokens keep the last 512.
    let n = 600;
    let x: Vec<f32> = (0..n * 256)
        .map(|i| ((i % 97) as f32 - 48.0) / 10.0)
        .collect();
    let z = c.compress_layer(0, KvRole::Key, &x).unwrap().unwrap();
    assert_eq!((z.tokens, z.dropped), (512, 88));
    let y = c.decompress_layer(&z).unwrap();
    assert_eq!(y.len(), 512 * 256);
    let tail = &x[88 * 256..];
    let err: f32 = tail
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 0.5, "{err}");
    // Wrong shape is an error, not a panic.
    assert!(c.compress_layer(0, KvRole::Key, &x[..1000]).is_err());
    assert!(c.compress_layer(99, KvRole::Key, &x).is_err());
}
