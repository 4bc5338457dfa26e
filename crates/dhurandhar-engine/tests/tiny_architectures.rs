//! Every architecture end to end against llama.cpp, on tiny random-weight GGUFs in
//! llama.cpp's real layout (`scripts/make_tiny_models.py`, generated at test time into the
//! git-ignored `.cache/tiny-models`, never committed) and the goldens
//! `scripts/goldens/make_goldens.sh` recorded from llama.cpp (`tests/goldens/tiny-*.json`).
//!
//! Needs python3 with the `gguf` package and the SmolLM2 fixture (whose vocabulary the
//! tiny models reuse). Skips with a printed reason when either is missing, unless
//! `DHURANDHAR_REQUIRE_FIXTURES=1` (CI), which turns the skip into a failure.
//!
//! Tolerance. Weights and the llama.cpp KV cache are F32 for these models, so two correct
//! implementations differ only by f32 rounding in a different summation order, f32 RoPE
//! angles in ggml, and (gemma3) ggml's GELU, which reads an f16 table: its output carries
//! up to 2^-11 relative error. The logit bound is therefore stated relative to the
//! logits' scale: `|ours - llama.cpp| <= 2^-11 · max|logit|` at worst over each
//! position's top-8 (the f16 rounding of one GELU-sized step), and their rms within a
//! quarter of that. Any real defect (a wrong RoPE base or pairing, a missing norm, the
//! wrong window, the wrong activation) moves logits by whole units.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dhurandhar_engine::{Logits, Model};
use serde_json::Value;

const ARCHS: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "phi3"];

fn require() -> bool {
    std::env::var("DHURANDHAR_REQUIRE_FIXTURES").is_ok_and(|v| v == "1")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(directory, arch -> sha256)` of the generated models, once per test binary; `None`
/// (after printing why) when they cannot be made here.
fn tiny_models() -> Option<&'static (PathBuf, Vec<(String, String)>)> {
    static MODELS: OnceLock<Option<(PathBuf, Vec<(String, String)>)>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let vocab = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)?;
            let dir = root().join(".cache/tiny-models");
            let out = Command::new("python3")
                .arg(root().join("scripts/make_tiny_models.py"))
                .arg("--vocab-from")
                .arg(&vocab)
                .arg("--out")
                .arg(&dir)
                .output();
            let reason = match out {
                Err(e) => format!("python3 cannot run: {e}"),
                Ok(o) if o.status.code() == Some(3) => {
                    String::from_utf8_lossy(&o.stderr).trim().to_string()
                }
                Ok(o) if !o.status.success() => panic!(
                    "make_tiny_models.py failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Ok(o) => {
                    let shas = String::from_utf8(o.stdout)
                        .unwrap()
                        .lines()
                        .map(|l| {
                            let (path, sha) = l.rsplit_once(' ').unwrap();
                            let stem = Path::new(path).file_stem().unwrap().to_str().unwrap();
                            (stem.trim_start_matches("tiny-").to_string(), sha.to_string())
                        })
                        .collect();
                    return Some((dir, shas));
                }
            };
            if require() {
                panic!("DHURANDHAR_REQUIRE_FIXTURES=1 but the tiny models cannot be made: {reason}");
            }
            eprintln!("skipping the tiny-architecture checks: {reason}");
            None
        })
        .as_ref()
}

fn golden(arch: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/tiny-{arch}.json"));
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
    let m = Model::open(&dir.join(format!("tiny-{arch}.gguf"))).expect("tiny model loads");
    assert_eq!(m.config.architecture, arch);
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
    let (mut worst, mut sq, mut n, mut scale) = (0f32, 0f64, 0f64, 0f32);
    let mut agree = 0;
    for (i, p) in positions.iter().enumerate() {
        let row = &ours[i * vocab..(i + 1) * vocab];
        let top: Vec<(usize, f32)> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap() as f32))
            .collect();
        for &(id, want) in &top {
            let d = (row[id] - want).abs();
            worst = worst.max(d);
            sq += (d as f64).powi(2);
            n += 1.0;
            scale = scale.max(want.abs());
        }
        agree += usize::from(argmax(row) as usize == top[0].0);
    }
    let rms = (sq / n).sqrt() as f32;
    let tol = scale / 2048.0;
    eprintln!(
        "{arch}: top-1 agreement {agree}/{}; |ours - llama.cpp| over top-8 worst {worst:.2e} rms {rms:.2e} (bound {tol:.2e}, logits up to {scale:.1})",
        toks.len()
    );
    assert!(worst <= tol, "{arch}: worst logit difference {worst} > {tol}");
    assert!(rms <= tol / 4.0, "{arch}: rms logit difference {rms} > {}", tol / 4.0);
    // With differences this small only an exact tie could flip the winner; llama.cpp's
    // top-1 margins on these models are far larger than `tol`.
    assert_eq!(agree, toks.len(), "{arch}: top-1 disagrees with llama.cpp");
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
    assert_eq!(got, want, "{arch}: greedy continuation differs from llama.cpp");
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
fn every_engine_architecture_has_a_tiny_model_and_golden() {
    let engine: Vec<&str> = dhurandhar_engine::ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .filter(|&a| a != "mistral") // llama's computation under another name
        .collect();
    assert_eq!(engine, ARCHS);
}
