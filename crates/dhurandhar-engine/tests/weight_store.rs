//! The three weight stores serve the same bytes and produce the same tokens: streamed
//! layers (under a small RAM budget) against the memory map and the resident copy, on
//! the SmolLM2 fixture and on tiny random-weight models of every architecture
//! (`scripts/make_tiny_models.py`). Skips with a printed reason when the fixture or the
//! tiny models are missing, unless `DHURANDHAR_REQUIRE_FIXTURES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dhurandhar_engine::sampling::argmax;
use dhurandhar_engine::{EngineError, Logits, Model, WeightMode};

fn require() -> bool {
    std::env::var("DHURANDHAR_REQUIRE_FIXTURES").is_ok_and(|v| v == "1")
}

fn smollm2() -> Option<PathBuf> {
    dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)
}

/// Greedy decode of `n` tokens after `prompt` (prefilled in chunks of 7, so a pass over
/// several tokens and single-token passes both run).
fn greedy(m: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = m.session(2, None).unwrap();
    let mut logits = s.prefill(prompt, 7).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        logits = s.forward(&[t], Logits::Last, None).unwrap();
    }
    out
}

/// A streamed model with its pool sized for `budget` and `context` tokens.
fn open_stream(path: &Path, budget: Option<u64>, context: usize) -> Model {
    let m = Model::open_with(path, WeightMode::Stream).unwrap();
    m.start_stream(budget, context, 7).unwrap();
    m
}

fn check_model(path: &Path, prompt: &[u32], n: usize) {
    let mapped = Model::open(path).unwrap();
    let resident = Model::open_with(path, WeightMode::Resident).unwrap();
    let context = prompt.len() + n;
    // Minimum window first (nothing pinned), then a budget that pins some layers.
    let minimal = open_stream(path, None, context);
    let plan = minimal.stream_plan().unwrap();
    assert_eq!((plan.window_slots, plan.pinned_layers), (2, 0));
    let want = greedy(&mapped, prompt, n);
    assert_eq!(greedy(&resident, prompt, n), want, "resident vs mmap");
    assert_eq!(greedy(&minimal, prompt, n), want, "stream (minimum window) vs mmap");
    // Every pass reads every streamed layer once, plus nothing else for tied heads.
    let passes = prompt.len().div_ceil(7) + n;
    assert!(minimal.weight_bytes_read() >= passes as u64 * plan.streamed_bytes_per_pass);

    // A budget: refuse zero with the breakdown, then give the minimum plus half the
    // layers' bytes, which must pin some but not all layers.
    let probe = Model::open_with(path, WeightMode::Stream).unwrap();
    let e = probe.start_stream(Some(0), context, 7).unwrap_err();
    assert!(matches!(e, EngineError::Budget(_)));
    let msg = e.to_string();
    assert!(msg.contains("cannot hold the minimum") && msg.contains("KV cache"), "{msg}");
    drop((mapped, resident, minimal, probe));
    let layers = plan.streamed_bytes_per_pass;
    let m = Model::open_with(path, WeightMode::Stream).unwrap();
    let base = m.start_stream(Some(u64::MAX / 4), context, 7).unwrap().unwrap();
    assert_eq!((base.window_slots, base.streamed_bytes_per_pass), (0, 0));
    drop(m);
    let others = base.kv_bytes + base.activation_bytes + base.resident_bytes + base.fixed_bytes;
    // The fixed overhead is measured again by the next model: half the layers over the
    // window leaves room for it to differ without pinning none or all.
    let budget = others + layers / 2 + plan.pool_bytes;
    let pinned = open_stream(path, Some(budget), context);
    let p = pinned.stream_plan().unwrap();
    assert!(p.pinned_layers > 0 && p.window_slots == 2, "{p:?}");
    assert!(p.streamed_bytes_per_pass < layers);
    assert_eq!(greedy(&pinned, prompt, n), want, "stream (pinned layers) vs mmap");
}

fn check_bytes(path: &Path) {
    let mapped = Model::open(path).unwrap();
    let streamed = open_stream(path, None, 16);
    let n = mapped.config.n_layers;
    // Two cycles through the stream, so recycled buffers are checked too.
    for li in (0..n).chain(0..n) {
        assert_eq!(
            streamed.layer_tensors(li).unwrap(),
            mapped.layer_tensors(li).unwrap(),
            "layer {li}"
        );
    }
}

#[test]
fn smollm2_stream_serves_the_mapped_bytes_and_tokens() {
    let Some(p) = smollm2() else { return };
    check_bytes(&p);
    let m = Model::open(&p).unwrap();
    let prompt = m.tokenizer.encode("The capital of France is");
    check_model(&p, &prompt, 12);
}

#[test]
fn tiny_models_stream_token_identically() {
    let Some(vocab) = smollm2() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join(".cache/tiny-models");
    let out = Command::new("python3")
        .arg(root.join("scripts/make_tiny_models.py"))
        .arg("--vocab-from")
        .arg(&vocab)
        .arg("--out")
        .arg(&dir)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => {
            let why = format!("{other:?}");
            assert!(!require(), "tiny models cannot be made: {why}");
            eprintln!("skipping: tiny models cannot be made: {why}");
            return;
        }
    }
    let mut seen = 0;
    for arch in ["llama", "qwen2", "qwen3", "gemma3", "phi3"] {
        let p = dir.join(format!("tiny-{arch}.gguf"));
        check_bytes(&p);
        check_model(&p, &[1, 17, 300, 42, 9, 1000, 5, 77, 12], 6);
        seen += 1;
    }
    assert_eq!(seen, 5);
}
