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
    // Without a job file: the same defaults on the default model.
    let bare = json(dh().args(["lora", "dry-run", "--json"]));
    assert_eq!(bare["estimate"], v["estimate"]);
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

/// A PEFT adapter written here, independently of the tool's own writer: HF key names,
/// `lora_A` `r × in`, `lora_B` `out × r`, f32, seeded values. SmolLM2-135M shapes.
fn write_peft(dir: &std::path::Path, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let r = 4;
    // (module, parent, in, out) on every one of the 30 layers.
    let shapes = [
        ("q_proj", "self_attn", 576, 576),
        ("v_proj", "self_attn", 576, 192),
        ("down_proj", "mlp", 1536, 576),
    ];
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in 0..30 {
        for (m, parent, fin, fout) in shapes {
            let stem = format!("base_model.model.model.layers.{layer}.{parent}.{m}");
            for (half, rows, cols) in [("lora_A", r, fin), ("lora_B", fout, r)] {
                let v: Vec<u8> = (0..rows * cols)
                    .flat_map(|_| (rng.gen_range(-1.0f32..1.0) * 0.05).to_le_bytes())
                    .collect();
                owned.push((format!("{stem}.{half}.weight"), vec![rows, cols], v));
            }
        }
    }
    write_peft_files(
        dir,
        &owned,
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
            "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "lora_dropout": 0.05,
            "bias": "none", "task_type": "CAUSAL_LM", "fan_in_fan_out": false}"#,
    );
}

/// A PEFT directory: `(name, shape, f32 bytes)` tensors and the config's JSON text.
fn write_peft_files(
    dir: &std::path::Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    config: &str,
) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
}

fn greedy_text(model: &std::path::Path, adapters: &[&str]) -> String {
    let mut c = dh();
    c.args(["generate", "--json", "--f32-activations", "--threads", "1"])
        .args([
            "--max-tokens",
            "12",
            "--prompt",
            "The capital of France is",
            "--model",
        ])
        .arg(model);
    for a in adapters {
        c.args(["--adapter", a]);
    }
    json(&mut c)["text"].as_str().unwrap().to_string()
}

/// An adapter applied at run time generates what the merged model generates, and
/// changes what the base generates; a weight of 0 is the base.
#[test]
fn adapter_at_run_time_equals_the_merged_model() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    write_peft(&adapter, 7);
    let a = adapter.to_str().unwrap();
    let base = greedy_text(&p, &[]);
    let applied = greedy_text(&p, &[a]);
    eprintln!("base: {base:?}\nwith the adapter: {applied:?}");
    assert_ne!(applied, base, "the adapter must change the output");
    assert_eq!(greedy_text(&p, &[&format!("{a}@0")]), base);

    let merged = dir.path().join("merged.gguf");
    let v = json(
        dh().args(["lora", "merge", "--json", "--adapter", a, "-o"])
            .arg(&merged)
            .arg(&p),
    );
    assert_eq!(v["merged_tensors"], 90);
    assert_eq!(greedy_text(&merged, &[]), applied);
    // `eval --adapter` scores what the merged model scores (f32 activations in both).
    let ppl = |m: &std::path::Path, adapters: &[&str]| -> f64 {
        let mut c = dh();
        c.args([
            "eval",
            "--json",
            "--threads",
            "1",
            "--max-tokens",
            "64",
            "--text-file",
        ])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../data/eval/pride-and-prejudice-ch1.txt"),
        )
        .arg("--model")
        .arg(m);
        for a in adapters {
            c.args(["--adapter", a]);
        }
        json(&mut c)["exact"]["perplexity"].as_f64().unwrap()
    };
    let (with, merged_ppl, without) = (ppl(&p, &[a]), ppl(&merged, &[]), ppl(&p, &[]));
    eprintln!("perplexity: base {without:.4}, adapter {with:.4}, merged {merged_ppl:.4}");
    assert!(
        (with - merged_ppl).abs() < 1e-3 * with,
        "{with} vs {merged_ppl}"
    );
    assert!(
        (with - without).abs() > 1e-2 * without,
        "{with} vs {without}"
    );
    // The merged model has the base's tensors; the 90 adapted ones are now F32.
    let types = |m: &std::path::Path| -> Vec<(String, String)> {
        json(dh().args(["inspect", "--json"]).arg(m))["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["dtype"].to_string(),
                )
            })
            .collect()
    };
    let (before, after) = (types(&p), types(&merged));
    assert_eq!(before.len(), after.len());
    let changed: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| &a.0)
        .collect();
    assert_eq!(changed.len(), 90, "{changed:?}");
    assert!(changed
        .iter()
        .all(|n| n.contains("attn_q") || n.contains("attn_v") || n.contains("ffn_down")));
}

#[test]
fn adapters_that_do_not_fit_are_refused() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gen = |adapter: &std::path::Path| {
        dh().args(["generate", "--max-tokens", "1", "--prompt", "Hi", "--model"])
            .arg(&p)
            .arg("--adapter")
            .arg(adapter)
            .assert()
            .failure()
    };
    gen(&dir.path().join("nope")).stderr(predicate::str::contains("not a directory"));
    let ad = dir.path().join("a");
    write_peft(&ad, 1);
    // Wrong rank in the config.
    let cfg = std::fs::read_to_string(ad.join("adapter_config.json")).unwrap();
    std::fs::write(
        ad.join("adapter_config.json"),
        cfg.replace("\"r\": 4", "\"r\": 8"),
    )
    .unwrap();
    gen(&ad).stderr(predicate::str::contains("rank r = 8"));
    // DoRA is refused by name.
    std::fs::write(
        ad.join("adapter_config.json"),
        cfg.replace("\"bias\"", "\"use_dora\": true, \"bias\""),
    )
    .unwrap();
    gen(&ad).stderr(predicate::str::contains("use_dora"));
    // A truncated weights file names the file.
    std::fs::write(ad.join("adapter_config.json"), &cfg).unwrap();
    let st = std::fs::read(ad.join("adapter_model.safetensors")).unwrap();
    std::fs::write(ad.join("adapter_model.safetensors"), &st[..st.len() / 2]).unwrap();
    gen(&ad).stderr(predicate::str::contains("adapter_model.safetensors"));
}

/// A model with fused Q/K/V (the tiny phi3 of `scripts/make_tiny_models.py`): the engine
/// adapts q_proj after splitting, but merging or exporting by tensor name is refused.
#[test]
fn fused_projections_run_but_do_not_merge() {
    let Some(vocab) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/make_tiny_models.py"))
        .args(["--vocab-from"])
        .arg(&vocab)
        .arg("--out")
        .arg(dir.path())
        .arg("phi3")
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => {
            let require = std::env::var("DHURANDHAR_REQUIRE_FIXTURES").is_ok_and(|v| v == "1");
            assert!(!require, "tiny models cannot be made: {other:?}");
            eprintln!("skipping: tiny models cannot be made: {other:?}");
            return;
        }
    }
    let model = dir.path().join("tiny-phi3.gguf");
    // q_proj of layer 0: hidden 64 -> 4 heads x 16.
    let adapter = dir.path().join("adapter");
    let a: Vec<u8> = (0..2 * 64)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    let b: Vec<u8> = (0..64 * 2)
        .flat_map(|i| (i as f32 * -0.02).to_le_bytes())
        .collect();
    let stem = "base_model.model.model.layers.0.self_attn.q_proj";
    write_peft_files(
        &adapter,
        &[
            (format!("{stem}.lora_A.weight"), vec![2, 64], a),
            (format!("{stem}.lora_B.weight"), vec![64, 2], b),
        ],
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#,
    );
    let a = adapter.to_str().unwrap();
    assert_ne!(greedy_text(&model, &[a]), greedy_text(&model, &[]));
    dh().args(["lora", "merge", "--adapter", a, "-o"])
        .arg(dir.path().join("merged.gguf"))
        .arg(&model)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("blk.0.attn_q.weight").and(predicate::str::contains("fused")),
        );
    assert!(!dir.path().join("merged.gguf").exists());
    dh().args(["lora", "export-gguf", a, "--base"])
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("a.gguf"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("fused"));
}
