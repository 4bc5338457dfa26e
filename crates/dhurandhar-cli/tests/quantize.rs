//! `dhurandhar quantize` end to end: the real SmolLM2 fixture (Q4_1) is quantized to
//! q8_0 and q4_k_m at test time, then read back by `inspect`, `generate` and `eval`.
//! Skipped locally when the fixture is not fetched; required in CI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

fn text_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/eval/pride-and-prejudice-ch1.txt")
}

fn json_of(out: &[u8]) -> Value {
    serde_json::from_slice(out).expect("stdout is JSON")
}

/// The two outputs and their `--json` reports, made once for all tests.
struct Made {
    _dir: tempfile::TempDir,
    source: PathBuf,
    q8: (PathBuf, Value),
    q4km: (PathBuf, Value),
}

fn made() -> Option<&'static Made> {
    static MADE: OnceLock<Option<Made>> = OnceLock::new();
    MADE.get_or_init(|| {
        let source = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)?;
        let dir = tempfile::tempdir().unwrap();
        let run = |ty: &str| {
            let out = dir.path().join(format!("smol-{ty}.gguf"));
            let o = dh()
                .arg("quantize")
                .arg(&source)
                .arg("-o")
                .arg(&out)
                .args(["--type", ty, "--json"])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            (out, json_of(&o))
        };
        let q8 = run("q8_0");
        let q4km = run("Q4_K_M");
        Some(Made {
            _dir: dir,
            source,
            q8,
            q4km,
        })
    })
    .as_ref()
}

fn inspect(p: &Path) -> Value {
    let o = dh().arg("inspect").arg(p).arg("--json").assert().success();
    json_of(&o.get_output().stdout)
}

fn greedy(p: &Path) -> String {
    let o = dh()
        .args(["generate", "--model"])
        .arg(p)
        .args(["--prompt", "The capital of France is", "--max-tokens", "4"])
        .args(["--threads", "2"])
        .assert()
        .success();
    String::from_utf8(o.get_output().stdout.clone()).unwrap()
}

fn perplexity(p: &Path) -> f64 {
    let o = dh()
        .args(["eval", "--model"])
        .arg(p)
        .arg("--text-file")
        .arg(text_file())
        .args(["--max-tokens", "512", "--q8-activations", "--json"])
        .assert()
        .success();
    json_of(&o.get_output().stdout)["exact"]["perplexity"]
        .as_f64()
        .unwrap()
}

#[test]
fn reports_types_bytes_and_the_requantization() {
    let Some(m) = made() else { return };
    let (path, r) = &m.q4km;
    assert_eq!(r["preset"], "q4_k_m");
    assert_eq!(r["file_type"], 15);
    // The fixture is Q4_1 (with a Q8_0 embedding): every converted tensor was requantized.
    assert_eq!(r["requantized_tensors"], r["totals"]["converted"]);
    assert!(r["warnings"][0]
        .as_str()
        .unwrap()
        .contains("already quantized (Q4_1, Q8_0)"));
    let row = |name: &str| {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    // Hidden size 576 is not a multiple of 256: Q4_K falls back to Q5_0, Q6_K to Q8_0.
    let q = row("blk.3.attn_q.weight");
    assert_eq!(
        (q["new_type"].as_str(), q["fallback_from"].as_str()),
        (Some("Q5_0"), Some("Q4_K"))
    );
    // FFN rows are 1536 = 6·256: true k-quants, Q6_K on the "more bits" layers.
    assert_eq!(row("blk.3.ffn_down.weight")["new_type"], "Q4_K");
    assert_eq!(row("blk.0.ffn_down.weight")["new_type"], "Q6_K");
    assert_eq!(row("token_embd.weight")["new_type"], "Q8_0");
    assert_eq!(row("output_norm.weight")["new_type"], "F32");
    assert!(row("output_norm.weight")["rel_rms_error"].is_null());
    let on_disk = std::fs::metadata(path).unwrap().len();
    assert_eq!(r["totals"]["output_file_bytes"], on_disk);

    // inspect agrees on every tensor's type and size.
    let i = inspect(path);
    assert_eq!(
        i["architecture"]["num_hidden_layers"], 30,
        "{}",
        i["architecture"]
    );
    let tensors = i["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), r["tensors"].as_array().unwrap().len());
    for t in r["tensors"].as_array().unwrap() {
        let it = tensors.iter().find(|x| x["name"] == t["name"]).unwrap();
        assert_eq!(it["dtype"], t["new_type"], "{}", t["name"]);
        assert_eq!(it["bytes"], t["new_bytes"], "{}", t["name"]);
    }
}

#[test]
fn outputs_generate_the_same_answer_as_the_source() {
    let Some(m) = made() else { return };
    for p in [&m.q8.0, &m.q4km.0] {
        let text = greedy(p);
        assert!(
            text.trim_start().starts_with("Paris"),
            "{}: {text:?}",
            p.display()
        );
    }
}

/// Perplexity over one 512-token window (8-bit activations, as `generate` runs).
/// Margins: Q8_0's step is 1/16 of Q4_1's, so requantizing the Q4_1 source to it adds
/// well under a tenth of the noise the source already has: perplexity within 2%.
/// Q4_K_M stores most of this model in Q5_0 (rows of 576 do not fit 256-value
/// k-quant blocks), whose step is about half of Q4_1's, on top of the source's rounding:
/// within 10%, and never better than Q8_0 by more than Q8_0's own margin.
#[test]
fn perplexity_stays_within_stated_margins_of_the_source() {
    let Some(m) = made() else { return };
    let src = perplexity(&m.source);
    let q8 = perplexity(&m.q8.0);
    let q4 = perplexity(&m.q4km.0);
    assert!((q8 / src - 1.0).abs() < 0.02, "q8_0 {q8} vs source {src}");
    assert!((q4 / src - 1.0).abs() < 0.10, "q4_k_m {q4} vs source {src}");
    assert!(q4 > q8 * 0.98, "q4_k_m {q4} vs q8_0 {q8}");
}

#[test]
fn json_shape() {
    let Some(m) = made() else { return };
    let mut v = m.q8.1.clone();
    v["input"] = "[input]".into();
    v["output"] = "[output]".into();
    v["seconds"] = "[seconds]".into();
    // Errors are measured floats: pin their presence, not their digits.
    for t in v["tensors"].as_array_mut().unwrap() {
        if t["rel_rms_error"].is_f64() {
            t["rel_rms_error"] = "[float]".into();
        }
    }
    v["totals"]["worst_rel_rms_error"] = "[float]".into();
    v["totals"]["bits_per_weight"] = "[float]".into();
    v["totals"]["worst_tensor"] = "[name]".into();
    let n = v["tensors"].as_array().unwrap().len();
    v["tensors"].as_array_mut().unwrap().truncate(3);
    v["tensors"]
        .as_array_mut()
        .unwrap()
        .push(format!("[{} more]", n - 3).into());
    insta::assert_json_snapshot!("quantize_smollm2_q8_0_json", v);
}

#[test]
fn refuses_unknown_type_output_onto_input_and_non_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let text = text_file();
    let out = dir.path().join("o.gguf");
    dh().arg("quantize")
        .arg(&text)
        .arg("-o")
        .arg(&out)
        .args(["--type", "q4_k_x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'q4_k_x'"))
        .stderr(predicate::str::contains("q4_k_m"));
    dh().arg("quantize")
        .arg(&text)
        .arg("-o")
        .arg(&out)
        .args(["--type", "q8_0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pride-and-prejudice-ch1.txt"))
        .stderr(predicate::str::contains("not a GGUF file"));
    // Output onto the input: refused before anything is written; the input survives.
    let copy = dir.path().join("m.gguf");
    std::fs::copy(&text, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    dh().arg("quantize")
        .arg(&copy)
        .arg("-o")
        .arg(&copy)
        .args(["--type", "q8_0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("m.gguf"));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no output or temp file left");
}

#[test]
fn refuses_a_truncated_gguf_naming_it() {
    let Some(m) = made() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&m.source).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    dh().arg("quantize")
        .arg(&cut)
        .arg("-o")
        .arg(dir.path().join("o.gguf"))
        .args(["--type", "q8_0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cut.gguf"))
        .stderr(predicate::str::contains("past the end"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no output or temp file left");
}
