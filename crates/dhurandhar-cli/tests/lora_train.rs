//! `dhurandhar lora train` end to end on the tiny random-weight llama: a short run that
//! checkpoints, a resumed run that repeats the uninterrupted one's loss curve and final
//! adapter bit for bit, the trained adapter used by `generate --adapter` and by
//! `lora merge` with the same tokens, and the refusals.

use std::path::{Path, PathBuf};

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

/// Paragraphs of the shipped Pride and Prejudice chapter as `text` lines.
fn dataset(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("data/eval/pride-and-prejudice-ch1.txt")).unwrap();
    let lines: Vec<String> = text
        .split("\n\n")
        .filter(|p| p.trim().len() > 40)
        .map(|p| serde_json::json!({ "text": p.trim() }).to_string())
        .collect();
    let path = dir.join("train.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn job(dir: &Path, base: &Path, data: &Path, out: &str) -> PathBuf {
    let yaml = format!(
        "base_model: {}\ndataset: {}\nvalidation_fraction: 0.2\noutput_dir: {}\n\
         lora:\n  r: 4\n  alpha: 8\n  dropout: 0.1\n  target_modules: [q_proj, v_proj, down_proj]\n\
         training:\n  max_seq_length: 24\n  batch_size: 2\n  gradient_accumulation_steps: 2\n  \
         learning_rate: 0.01\n  max_steps: 6\n  warmup_ratio: 0.2\n  logging_steps: 1\n  \
         eval_steps: 3\n  save_steps: 3\n  save_total_limit: 1\n  seed: 3\n",
        base.display(),
        data.display(),
        dir.join(out).display()
    );
    let path = dir.join(format!("{out}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn losses(v: &Value) -> Vec<f64> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn trains_checkpoints_resumes_and_the_adapter_runs() {
    let Some(base) = dhurandhar_testkit::tiny_model("llama") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());

    let a = job(dir.path(), &base, &data, "a");
    let full = json(
        dh().args(["lora", "train", "--json", "-t", "2", "--config"])
            .arg(&a),
    );
    assert_eq!(full["steps"], 6);
    assert_eq!(full["history"].as_array().unwrap().len(), 6);
    let steps: Vec<u64> = full["eval"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 3, 6]);
    let out_a = dir.path().join("a");
    assert!(out_a.join("adapter_config.json").is_file());
    assert!(out_a.join("adapter_model.safetensors").is_file());
    // save_total_limit 1: the one checkpoint kept (the last step writes the adapter).
    assert!(out_a.join("checkpoint-3/optimizer.safetensors").is_file());

    // The same job interrupted after its checkpoint: resuming repeats steps 4-6.
    let b = job(dir.path(), &base, &data, "b");
    json(dh().args(["lora", "train", "--json", "--config"]).arg(&b));
    let out_b = dir.path().join("b");
    std::fs::remove_file(out_b.join("adapter_model.safetensors")).unwrap();
    let resumed = json(
        dh().args(["lora", "train", "--json", "--resume", "--config"])
            .arg(&b),
    );
    assert_eq!(resumed["start_step"], 3);
    assert_eq!(resumed["steps"], 3);
    assert_eq!(losses(&resumed), losses(&full), "the resumed curve differs");
    assert_eq!(
        std::fs::read(out_a.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(out_b.join("adapter_model.safetensors")).unwrap()
    );

    // The trained adapter at run time and merged into the base give the same tokens.
    let gen = |extra: &[&str], model: &Path| -> String {
        let mut c = dh();
        c.args(["generate", "--json", "--f32-activations", "--threads", "1"])
            .args(["--max-tokens", "12", "--prompt", "It is a truth", "--model"])
            .arg(model)
            .args(extra);
        json(&mut c)["text"].as_str().unwrap().to_string()
    };
    let merged = dir.path().join("merged.gguf");
    dh().args(["lora", "merge"])
        .arg(&base)
        .arg("--adapter")
        .arg(&out_a)
        .arg("-o")
        .arg(&merged)
        .assert()
        .success();
    let adapter = out_a.display().to_string();
    assert_eq!(gen(&["--adapter", &adapter], &base), gen(&[], &merged));
    assert_ne!(
        gen(&[], &base),
        gen(&[], &merged),
        "the adapter changed nothing"
    );
}

#[test]
fn refusals_name_the_problem() {
    let Some(base) = dhurandhar_testkit::tiny_model("llama") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let fail = |job: &Path, what: &str| {
        dh().args(["lora", "train", "--config"])
            .arg(job)
            .assert()
            .failure()
            .stderr(predicate::str::contains(what));
    };
    fail(&dir.path().join("missing.yaml"), "missing.yaml");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
    fail(&job(dir.path(), &base, &bad, "x"), "bad.jsonl:2");

    fail(
        &job(dir.path(), &dir.path().join("nope.gguf"), &data, "y"),
        "nope.gguf",
    );

    let j = job(dir.path(), &base, &data, "z");
    dh().args(["lora", "train", "--resume", "--config"])
        .arg(&j)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no checkpoint"));

    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "trainin:\n  max_steps: 1\n").unwrap();
    fail(&typo, "trainin");
}
