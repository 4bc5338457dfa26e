//! A PEFT adapter applied by the engine (`--adapter`) against the same adapter exported
//! with `lora export-gguf` and applied by llama.cpp (`--lora`): teacher-forced top-8
//! logits over 64 tokens of the shipped text on the SmolLM2 fixture, recorded by
//! `scripts/goldens/make_goldens.sh` in `tests/goldens/smollm2-lora-logits.json`. The
//! adapter is made at test time by `scripts/make_test_adapter.py` (fixed seed; its
//! sha256 must equal the one the golden was made with). Skipped when the fixture or
//! numpy is missing, unless `DHURANDHAR_REQUIRE_FIXTURES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dhurandhar::lora::{load_stack, AdapterSpec};
use dhurandhar_engine::Logits;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn adapter_logits_match_llama_cpp_lora() {
    let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let require = std::env::var("DHURANDHAR_REQUIRE_FIXTURES").is_ok_and(|v| v == "1");
    let golden: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/smollm2-lora-logits.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(root().join("scripts/make_test_adapter.py"))
        .arg("--out")
        .arg(dir.path())
        .output();
    let sha = match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
        other => {
            assert!(!require, "the test adapter cannot be made: {other:?}");
            eprintln!("skipping: the test adapter cannot be made: {other:?}");
            return;
        }
    };
    assert_eq!(
        sha,
        golden["adapter_sha256"].as_str().unwrap(),
        "the golden was made with another adapter"
    );

    let model = dhurandhar::generate::load_model(&path).unwrap();
    let toks: Vec<u32> = golden["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let tops = dhurandhar_testkit::llama_cpp::top_k(&golden["positions"]);
    let stack = load_stack(&model, &[AdapterSpec::new(dir.path())]).unwrap();
    let run = |f32_acts: bool, adapters: bool| {
        let mut s = model.session(1, None).unwrap();
        s.set_f32_activations(f32_acts);
        s.set_adapters(if adapters { stack.clone() } else { None })
            .unwrap();
        s.forward(&toks, Logits::All, None).unwrap()
    };
    let q8 = run(false, true);
    let a =
        dhurandhar_testkit::llama_cpp::check(&q8, &run(true, true), model.config.vocab_size, &tops);
    // The adapter moves the logits far beyond the rounding noise, so the agreement above
    // could not hold without it being applied.
    let base = run(false, false);
    let vocab = model.config.vocab_size;
    let moved = tops
        .iter()
        .enumerate()
        .flat_map(|(i, top)| top.iter().map(move |&(id, _)| (i, id)))
        .map(|(i, id)| (q8[i * vocab + id] - base[i * vocab + id]).abs())
        .fold(0f32, f32::max);
    assert!(
        moved > 10.0 * a.noise,
        "the adapter moved the logits by only {moved}"
    );
}
