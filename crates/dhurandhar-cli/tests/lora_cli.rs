//! `dhurandhar lora init` and `lora dry-run` end to end: the template round trip, the
//! dry run on a built-in model (snapshot), on the real SmolLM2 GGUF (the base charged at
//! the file's own bytes) and the refusals.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

fn json(cmd: &mut Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

#[test]
fn init_writes_a_job_that_dry_runs_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.yaml");
    dh().args(["lora", "init", "-o"])
        .arg(&job)
        .assert()
        .success()
        .stderr(predicate::str::contains("lora dry-run --config"));
    let v = json(
        dh().args(["lora", "dry-run", "--json", "--config"])
            .arg(&job),
    );
    assert_eq!(v["model"], "gemma4-e2b");
    assert_eq!(v["job"]["lora"]["r"], 16);
    dh().args(["lora", "init", "-o"])
        .arg(&job)
        .assert()
        .failure()
        .stderr(predicate::str::contains("exists").and(predicate::str::contains("--force")));
    dh().args(["lora", "init", "--force", "-o"])
        .arg(&job)
        .assert()
        .success();
    dh().args(["lora", "init", "-o", "-"])
        .assert()
        .success()
        .stdout(predicate::str::contains("target_modules:"));
}

#[test]
fn dry_run_json_on_a_built_in_model() {
    let mut v = json(dh().args([
        "lora",
        "dry-run",
        "-m",
        "qwen2.5-0.5b",
        "--r",
        "8",
        "--max-seq-length",
        "1024",
        "--batch-size",
        "2",
        "--json",
    ]));
    // The echoed job is the defaults with the overrides; the snapshot is the estimate.
    assert_eq!(v["job"]["training"]["max_seq_length"], 1024);
    let e = v["estimate"].take();
    insta::assert_json_snapshot!("lora_dry_run_qwen05_r8", e);
}

#[test]
fn dry_run_on_the_real_gguf_charges_its_bytes() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let v = json(dh().args(["lora", "dry-run", "--json", "-m"]).arg(&p));
    assert_eq!(v["base_format"], "checkpoint");
    assert_eq!(v["base_weights_source"], "checkpoint");
    let inspect = json(dh().args(["inspect", "--json"]).arg(&p));
    let base = v["estimate"]["memory"]["base_weights"].as_u64().unwrap();
    let tensors: u64 = inspect["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(base, tensors, "the frozen base is the file's tensor bytes");
    // 30 layers × r 16 × (q 576+576, k/v 576+192 each, o 576+576, FFN 3 × (576+1536)).
    let per_layer = 16 * (1152 + 768 + 768 + 1152 + 3 * 2112);
    assert_eq!(v["estimate"]["trainable_params"], 30 * per_layer);
}

#[test]
fn bad_jobs_are_refused_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.yaml");
    std::fs::write(&job, "lora:\n  r: 0\n").unwrap();
    dh().args(["lora", "dry-run", "-m", "qwen2.5-0.5b", "--config"])
        .arg(&job)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.yaml").and(predicate::str::contains("lora.r")));
    std::fs::write(&job, "training:\n  learning_rat: 1\n").unwrap();
    dh().args(["lora", "dry-run", "--config"])
        .arg(&job)
        .assert()
        .failure()
        .stderr(predicate::str::contains("learning_rat"));
    dh().args(["lora", "dry-run", "-m", "no-such-model"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown model"));
    dh().args(["lora", "dry-run", "-m", "qwen2.5-0.5b", "--r", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("lora.r"));
    dh().args(["lora", "dry-run", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.yaml"));
}
