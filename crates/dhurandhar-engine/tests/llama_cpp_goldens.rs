//! The engine against llama.cpp on the real SmolLM2 fixture: token ids and teacher-forced
//! next-token logits recorded by `scripts/goldens/make_goldens.sh` (committed in
//! `tests/goldens/`, a few KB). Skipped when the fixture is not fetched.

use dhurandhar_engine::{Logits, Model, WeightMode};
use serde_json::Value;

fn model() -> Option<Model> {
    let p = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)?;
    Some(Model::open(&p).expect("fixture loads"))
}

fn golden(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_ids_equal_llama_cpp_on_the_eval_text() {
    let Some(m) = model() else { return };
    let g = golden("smollm2-q4_1-logits.json");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/eval/pride-and-prejudice-ch1.txt"),
    )
    .unwrap();
    let want = ids(&g["tokens"]);
    let got = m.tokenizer.encode(&text);
    assert_eq!(&got[..want.len()], &want[..]);
}

#[test]
fn tokenizer_ids_equal_llama_cpp_on_multilingual_text() {
    let Some(m) = model() else { return };
    let g = golden("smollm2-tokenizer.json");
    let text = g["text"].as_str().unwrap();
    let want = ids(&g["tokens"]);
    let got = m.tokenizer.encode(text);
    if got != want {
        let first = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "token ids differ from llama.cpp at index {first}: ours {:?} vs llama.cpp {:?} (lengths {} vs {})",
            &got[first..(first + 8).min(got.len())],
            &want[first..(first + 8).min(want.len())],
            got.len(),
            want.len()
        );
    }
}

/// Teacher-forced over the 64 golden tokens, judged by
/// [`dhurandhar_testkit::llama_cpp::check`] (our own Q8-vs-f32 rounding noise measured in
/// the same run sets the tolerance). Resident, the Q4_1 matrices are interleaved by eight
/// rows on x86 and run other kernels than mapped ones: both are held to the goldens.
#[test]
fn teacher_forced_logits_match_llama_cpp() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let g = golden("smollm2-q4_1-logits.json");
    let toks = ids(&g["tokens"]);
    let tops = dhurandhar_testkit::llama_cpp::top_k(&g["positions"]);
    assert_eq!(tops.len(), toks.len());
    for mode in [WeightMode::Mmap, WeightMode::Resident] {
        let m = Model::open_with(&p, mode).unwrap();
        let run = |f32_acts: bool| {
            let mut s = m.session(1, None).unwrap();
            s.set_f32_activations(f32_acts);
            s.forward(&toks, Logits::All, None).unwrap()
        };
        eprintln!("weights {}:", mode.name());
        dhurandhar_testkit::llama_cpp::check(&run(false), &run(true), m.config.vocab_size, &tops);
    }
}
