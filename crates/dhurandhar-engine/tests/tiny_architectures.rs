//! Every architecture end to end against llama.cpp, on tiny random-weight GGUFs in
//! llama.cpp's real layout (`scripts/make_tiny_models.py`, generated at test time into the
//! git-ignored `.cache/tiny-models`, never committed) and the goldens
//! `scripts/goldens/make_goldens.sh` recorded from llama.cpp (`tests/goldens/tiny-*.json`).
//!
//! Needs python3 with the `gguf` package and the SmolLM2 fixture (whose vocabulary the
//! tiny models reuse). Skips with a printed reason when either is missing, unless
//! `DHURANDHAR_REQUIRE_FIXTURES=1` (CI), which turns the skip into a failure.
//!
//! Tolerance, from the float formats. Weights and llama.cpp's KV cache are F32 for these
//! models (the goldens record every digit of llama.cpp's f32 logits), so two correct
//! implementations differ by f32 rounding in a different summation order and RoPE angle
//! arithmetic: allowed `2^-16 · max|logit|` at worst over each position's top-8 (256 f32
//! ulps at the logits' scale) and `2^-18 · max|logit|` rms. GeGLU models (gemma3) add
//! ggml's GELU, which rounds its input and output through an f16 table (2^-11 relative,
//! f16's half-ulp, per activation; emulating that table in our engine takes the rms gap
//! from 5.8e-4 to 3.5e-5): allowed `2^-11 · max|logit|` worst and `2^-13` rms. Measured
//! figures are printed with `--nocapture`; a real defect (a wrong RoPE base or pairing,
//! a missing norm, the wrong window or activation) moves logits by whole units (a
//! wrong local RoPE base on gemma3: worst 1.48 against a bound of 0.016).

use std::path::PathBuf;

use dhurandhar_engine::arch::Activation;
use dhurandhar_engine::{Logits, Model};
use dhurandhar_testkit::tiny_models;
use serde_json::Value;

const ARCHS: &[&str] = &[
    "llama", "qwen2", "qwen3", "gemma3", "phi3", "qwen2moe", "qwen3moe",
];

/// The `general.architecture` of tiny model `name` (the Mixtral layout is `llama` with
/// experts).
fn architecture(name: &str) -> &str {
    match name {
        "mixtral" => "llama",
        other => other,
    }
}

fn golden(arch: &str) -> Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/tiny-{arch}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

/// Open the tiny model of `arch`, checking it is the file the golden was made from.
fn open(arch: &str) -> Option<(Model, Value)> {
    let (dir, shas) = tiny_models()?;
    let g = golden(arch);
    let sha = &shas.iter().find(|(a, _)| a == arch).expect("model made").1;
    assert_eq!(
        g["model_sha256"].as_str().unwrap(),
        sha,
        "tiny-{arch}.gguf differs from the file the golden was made from: make_tiny_models.py \
         or the gguf package changed; regenerate with scripts/goldens/make_goldens.sh"
    );
    let path = dir.join(format!("tiny-{arch}.gguf"));
    let m = Model::open(&path).expect("tiny model loads");
    // The engine (`generate`) and the checkpoint reader behind `inspect` and
    // `analyze --model` name the architecture alike.
    assert_eq!(m.config.architecture, architecture(arch));
    let (planned, _) = dhurandhar_checkpoint::load_model(&path).unwrap();
    assert_eq!(planned.family, architecture(arch));
    Some((m, g))
}

fn check_logits(arch: &str) {
    let Some((m, g)) = open(arch) else { return };
    let toks = ids(&g["tokens"]);
    let positions = g["positions"].as_array().unwrap();
    assert_eq!(positions.len(), toks.len());
    let vocab = m.config.vocab_size;
    let mut s = m.session(1, None).unwrap();
    let ours = s.forward(&toks, Logits::All, None).unwrap();
    let scale = positions
        .iter()
        .flat_map(|p| p.as_array().unwrap().iter())
        .map(|e| e[1].as_f64().unwrap().abs() as f32)
        .fold(0f32, f32::max);
    let (tol, tol_rms) = match m.spec().activation {
        Activation::Silu => (scale * 2f32.powi(-16), scale * 2f32.powi(-18)),
        Activation::GeluTanh => (scale * 2f32.powi(-11), scale * 2f32.powi(-13)),
    };
    let (mut worst, mut sq, mut n) = (0f32, 0f64, 0f64);
    let mut agree = 0;
    for (i, p) in positions.iter().enumerate() {
        let row = &ours[i * vocab..(i + 1) * vocab];
        let top: Vec<(usize, f32)> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_u64().unwrap() as usize,
                    e[1].as_f64().unwrap() as f32,
                )
            })
            .collect();
        for &(id, want) in &top {
            let d = (row[id] - want).abs();
            worst = worst.max(d);
            sq += (d as f64).powi(2);
            n += 1.0;
        }
        let same = argmax(row) as usize == top[0].0;
        agree += usize::from(same);
        // Only a near-tie (within twice the bound) may flip the winner.
        assert!(
            same || top[0].1 - top[1].1 <= 2.0 * tol,
            "{arch}: position {i}: llama.cpp's top-1 {:?} but ours is {}",
            top[0],
            argmax(row)
        );
    }
    let rms = (sq / n).sqrt() as f32;
    eprintln!(
        "{arch}: top-1 agreement {agree}/{}; |ours - llama.cpp| over top-8 worst {worst:.2e} (bound {tol:.2e}) rms {rms:.2e} (bound {tol_rms:.2e}); logits up to {scale:.1}",
        toks.len()
    );
    assert!(
        worst <= tol,
        "{arch}: worst logit difference {worst} > {tol}"
    );
    assert!(
        rms <= tol_rms,
        "{arch}: rms logit difference {rms} > {tol_rms}"
    );
}

/// Greedy decoding one token per forward pass (the cache's incremental path; on gemma3
/// the ring buffer wraps, the window being 8) equals llama.cpp's.
fn check_greedy(arch: &str) {
    let Some((m, g)) = open(arch) else { return };
    let toks = ids(&g["tokens"]);
    let n_prompt = g["greedy"]["prompt_tokens"].as_u64().unwrap() as usize;
    let want = ids(&g["greedy"]["tokens"]);
    let mut s = m.session(1, None).unwrap();
    let mut logits = s.prefill(&toks[..n_prompt], 5).unwrap();
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let t = argmax(&logits);
        got.push(t);
        logits = s.forward(&[t], Logits::Last, None).unwrap();
    }
    assert_eq!(
        got, want,
        "{arch}: greedy continuation differs from llama.cpp"
    );
}

#[test]
fn llama_matches_llama_cpp() {
    check_logits("llama");
    check_greedy("llama");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check_logits("qwen2");
    check_greedy("qwen2");
}

#[test]
fn qwen3_matches_llama_cpp() {
    check_logits("qwen3");
    check_greedy("qwen3");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_logits("gemma3");
    check_greedy("gemma3");
}

#[test]
fn phi3_matches_llama_cpp() {
    check_logits("phi3");
    check_greedy("phi3");
}

#[test]
fn qwen2moe_matches_llama_cpp() {
    check_logits("qwen2moe");
    check_greedy("qwen2moe");
}

#[test]
fn qwen3moe_matches_llama_cpp() {
    check_logits("qwen3moe");
    check_greedy("qwen3moe");
}

#[test]
fn mixtral_matches_llama_cpp() {
    check_logits("mixtral");
    check_greedy("mixtral");
}

#[test]
fn every_engine_architecture_has_a_tiny_model_and_golden() {
    let engine: Vec<&str> = dhurandhar_engine::ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .filter(|&a| a != "mistral") // llama's computation under another name
        .collect();
    assert_eq!(engine, ARCHS);
}

/// The cache holds what the planner charges: on gemma3 (5 sliding layers with a window of
/// 8, 1 global) the engine's ring buffers keep `min(context, 8)` positions per sliding
/// layer, and its bytes after any context equal `dhurandhar-plan`'s KV component at 32
/// bits per value (the engine's f32 cache), whatever the prefill chunking.
#[test]
fn gemma3_kv_bytes_equal_the_planners() {
    let Some((m, g)) = open("gemma3") else { return };
    let path = tiny_models().unwrap().0.join("tiny-gemma3.gguf");
    let (arch, weights) = dhurandhar_checkpoint::load_model(&path).unwrap();
    let toks = ids(&g["tokens"]);
    assert_eq!(m.config.sliding_layers, 5);
    assert_eq!(m.config.sliding_window, Some(8));
    for (ctx, chunk) in [(1, 1), (5, 2), (8, 8), (9, 4), (40, 7), (64, 64)] {
        let opts = dhurandhar_plan::PlanOptions {
            context_tokens: ctx as u64,
            kv_bits: 32.0,
            ..Default::default()
        };
        let planned = dhurandhar_plan::plan(&arch, Some(&weights), &opts)
            .unwrap()
            .component("kv_cache");
        let mut s = m.session(1, None).unwrap();
        s.prefill(&toks[..ctx], chunk).unwrap();
        assert_eq!(
            s.cache.bytes() as u64,
            planned,
            "context {ctx}, chunk {chunk}"
        );
        assert_eq!(m.kv_bytes(ctx) as u64, planned, "context {ctx}");
    }
    // The windows are what makes the difference: at 64 tokens the sliding layers hold 8.
    assert_eq!(m.kv_bytes(64), (5 * 8 + 64) * m.kv_bytes_per_token() / 6);
}

/// Chunked prefill (the ring-buffer gather path with earlier positions in the cache) and
/// token-by-token decoding give the logits of one pass over the whole sequence.
#[test]
fn chunked_and_incremental_runs_equal_one_pass() {
    for arch in ["gemma3", "llama"] {
        let Some((m, g)) = open(arch) else { return };
        let toks = &ids(&g["tokens"])[..40];
        let v = m.config.vocab_size;
        let all = m
            .session(1, None)
            .unwrap()
            .forward(toks, Logits::All, None)
            .unwrap();
        let scale = all.iter().fold(0f32, |a, &b| a.max(b.abs()));
        for chunk in [1, 3, 7, 9, 40] {
            let mut s = m.session(2, None).unwrap();
            let mut start = 0;
            while start < toks.len() {
                let end = (start + chunk).min(toks.len());
                let got = s.forward(&toks[start..end], Logits::All, None).unwrap();
                let want = &all[start * v..end * v];
                let worst = got
                    .iter()
                    .zip(want)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    worst <= scale * 2f32.powi(-16),
                    "{arch}: chunk {chunk} at {start}: logits differ by {worst}"
                );
                start = end;
            }
        }
    }
}

/// KV capture (`kv capture`) records every layer's Q/K/V for every token on a model
/// with sliding layers, whatever the cache keeps.
#[test]
fn capture_records_every_token_on_sliding_layers() {
    let Some((m, g)) = open("gemma3") else { return };
    let toks = &ids(&g["tokens"])[..20];
    let c = &m.config;
    let mut cap = dhurandhar_engine::Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = m.session(1, None).unwrap();
    for piece in toks.chunks(6) {
        s.forward(piece, Logits::None, Some(&mut cap)).unwrap();
    }
    assert_eq!(cap.n_tokens, 20);
    for l in &cap.layers {
        assert_eq!(l.k.len(), 20 * c.n_kv_heads * c.head_dim);
        assert_eq!(l.q.len(), 20 * c.n_heads * c.head_dim);
    }
    assert!(s.cache.bytes() < 20 * m.kv_bytes_per_token());
}

/// An architecture outside the table is refused, naming it and listing what runs.
#[test]
fn unknown_architectures_are_refused_with_the_supported_list() {
    use dhurandhar_checkpoint::gguf::{GgufBuilder, GgufValue};
    let bytes = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("gemma3n".into()))
        .kv("gemma3n.block_count", GgufValue::U32(2))
        .kv("gemma3n.embedding_length", GgufValue::U32(64))
        .to_bytes()
        .unwrap();
    let path = std::env::temp_dir().join(format!(
        "dhurandhar-unknown-arch-{}.gguf",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let e = Model::open(&path).err().expect("refused").to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(
        e.contains("architecture `gemma3n` is not supported by the engine (supported: llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe, qwen3moe)"),
        "{e}"
    );
}

/// A KV codec on sliding-window layers is refused (its token groups would straddle the
/// ring's overwrites), not run wrongly; full-attention models keep codecs.
#[test]
fn codecs_are_refused_on_sliding_layers_only() {
    use dhurandhar_kv::{build_codec, Codec, CodecSpec};
    for (arch, refused) in [("gemma3", true), ("qwen3", false)] {
        let Some((m, _)) = open(arch) else { return };
        let c = &m.config;
        let spec = CodecSpec::new(Codec::Q8_0, 8, c.head_dim);
        let codec = std::sync::Arc::from(build_codec(&spec, None).unwrap());
        let cc = dhurandhar_engine::CacheCodec::shared("q8_0", codec, c.n_layers);
        match m.new_cache(Some(cc)) {
            Err(e) => {
                assert!(refused, "{arch}: {e}");
                assert_eq!(
                    e.to_string(),
                    "KV codecs are not supported on sliding-window layers yet"
                );
            }
            Ok(cache) => {
                assert!(!refused, "{arch}: codec accepted on sliding layers");
                m.session(1, Some(cache)).unwrap();
            }
        }
    }
}

/// A GGUF's metadata, in order.
type Metadata = Vec<(String, dhurandhar_checkpoint::gguf::GgufValue)>;
/// A change to a GGUF's metadata.
type Edit = fn(&mut Metadata);

/// A copy of tiny model `name` with its metadata edited by `edit`, for refusals.
fn edited(name: &str, edit: impl Fn(&mut Metadata)) -> Option<PathBuf> {
    use dhurandhar_checkpoint::gguf::GgufFile;
    use dhurandhar_checkpoint::gguf_write::{GgufTensorOut, GgufWriter};
    let (dir, _) = tiny_models()?;
    let bytes = std::fs::read(dir.join(format!("tiny-{name}.gguf"))).unwrap();
    let f = GgufFile::parse(&bytes, name).unwrap();
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let outs: Vec<GgufTensorOut> = f
        .tensors
        .iter()
        .map(|t| GgufTensorOut {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    let mut w = GgufWriter::new(Vec::new(), &meta, &outs).unwrap();
    for t in &f.tensors {
        w.write_data(f.tensor_data(t, &bytes).unwrap()).unwrap();
        w.end_tensor().unwrap();
    }
    let path = std::env::temp_dir().join(format!(
        "dhurandhar-edited-{name}-{}-{}.gguf",
        std::process::id(),
        meta.len()
    ));
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    Some(path)
}

/// Expert layers the engine cannot run as written are refused at load, naming what.
#[test]
fn expert_layers_it_cannot_run_are_refused() {
    use dhurandhar_checkpoint::gguf::GgufValue;
    let cases: [(&str, Edit, &str); 3] = [
        (
            "qwen2moe",
            |m| m.retain(|(k, _)| k != "qwen2moe.expert_count"),
            "layer 0 has a router but `qwen2moe.expert_count` is missing",
        ),
        (
            "qwen3moe",
            |m| m.push(("qwen3moe.expert_gating_func".into(), GgufValue::U32(2))),
            "expert gating function 2 (`qwen3moe.expert_gating_func`) is not supported",
        ),
        (
            // The same tensors under an architecture without experts.
            "qwen3moe",
            |m| {
                for (k, v) in m.iter_mut() {
                    if k == "general.architecture" {
                        *v = GgufValue::String("qwen3".into());
                    } else if let Some(rest) = k.strip_prefix("qwen3moe.") {
                        *k = format!("qwen3.{rest}");
                    }
                }
            },
            "qwen3 with mixture-of-experts layers (tensor blk.0.ffn_gate_inp.weight) is not supported",
        ),
    ];
    for (name, edit, want) in cases {
        let Some(path) = edited(name, edit) else {
            return;
        };
        let e = Model::open(&path).err().expect("refused").to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains(want), "{name}: {e}");
    }
}
