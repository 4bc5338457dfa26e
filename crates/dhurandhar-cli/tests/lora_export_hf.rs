//! `dhurandhar lora export-hf` end to end: on a job written by `lora init`, the five
//! files, the `--json` document, the refusal to overwrite without `--force`, and the
//! errors for a missing or invalid job.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

const FILES: [&str; 5] = [
    "train.py",
    "job.yaml",
    "requirements.txt",
    "accelerate_config.yaml",
    "README.md",
];

/// A job from `lora init`, with a rank and a learning rate that are not the defaults.
fn init_job(dir: &std::path::Path) -> std::path::PathBuf {
    let job = dir.join("job.yaml");
    dh().args(["lora", "init", "-o"])
        .arg(&job)
        .assert()
        .success();
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text
        .replace("  r: 16 ", "  r: 12 ")
        .replace("learning_rate: 0.0002", "learning_rate: 0.00015");
    assert!(
        text.contains("  r: 12 ") && text.contains("0.00015"),
        "{text}"
    );
    std::fs::write(&job, text).unwrap();
    job
}

#[test]
fn export_writes_the_training_directory() {
    let dir = tempfile::tempdir().unwrap();
    let job = init_job(dir.path());
    let out = dir.path().join("hf");
    dh().args(["lora", "export-hf", "--config"])
        .arg(&job)
        .arg("-o")
        .arg(&out)
        .args(["--hf-model", "google/gemma-4-E2B-it"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("wrote 5 files to")
                .and(predicate::str::contains(
                    "accelerate launch --config_file accelerate_config.yaml train.py",
                ))
                .and(predicate::str::contains("--adapter"))
                .and(predicate::str::contains("train.py")),
        );
    for f in FILES {
        assert!(out.join(f).is_file(), "{f} is missing");
    }
    // The copied job is the job, read by dhurandhar as well.
    let v = json(
        dh().args(["lora", "dry-run", "--json", "--config"])
            .arg(out.join("job.yaml")),
    );
    assert_eq!(v["job"]["lora"]["r"], 12);
    assert_eq!(v["job"]["training"]["learning_rate"], 0.00015);
    let py = std::fs::read_to_string(out.join("train.py")).unwrap();
    assert!(py.contains("HF_MODEL = \"google/gemma-4-E2B-it\""));
    assert!(py.contains("\"r\": 12") && py.contains("\"learning_rate\": 0.00015"));
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("accelerate launch --config_file accelerate_config.yaml train.py"));
    assert!(readme.contains("dhurandhar generate --model"));
}

fn json(cmd: &mut Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

#[test]
fn json_report_and_overwrite_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let job = init_job(dir.path());
    let out = dir.path().join("hf");
    let run = |extra: &[&str]| {
        let mut c = dh();
        c.args(["lora", "export-hf", "--json", "-c"])
            .arg(&job)
            .arg("--output")
            .arg(&out)
            .args(extra);
        c
    };
    let v = json(&mut run(&[]));
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["output_dir"], out.display().to_string());
    let names: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, FILES);
    for f in v["files"].as_array().unwrap() {
        let len = std::fs::metadata(f["path"].as_str().unwrap())
            .unwrap()
            .len();
        assert_eq!(f["bytes"].as_u64(), Some(len));
    }
    // No --hf-model: a placeholder, and the report says so.
    assert_eq!(v["hf_model_source"], "placeholder");
    assert!(v["hf_model"].as_str().unwrap().starts_with('<'));
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(notes[0].contains("placeholder"), "{notes:?}");
    assert_eq!(v["base_model"], "gemma4-e2b");
    assert_eq!(
        v["launch_command"],
        "accelerate launch --config_file accelerate_config.yaml train.py"
    );
    assert_eq!(v["check_command"], "python train.py --check");
    assert!(v["load_command"]
        .as_str()
        .unwrap()
        .contains("dhurandhar generate --model BASE.gguf --adapter"));
    assert!(v["adapter_dir"]
        .as_str()
        .unwrap()
        .ends_with("outputs/edge-model-lora"));
    assert_eq!(v["pinned"]["trl"], "1.16.0");
    assert_eq!(v["pinned"].as_object().unwrap().len(), 8);

    // Again without --force: refused, the files untouched.
    std::fs::write(out.join("README.md"), "my notes").unwrap();
    run(&[]).assert().failure().stderr(
        predicate::str::contains("already exist")
            .and(predicate::str::contains("README.md"))
            .and(predicate::str::contains("--force")),
    );
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "my notes"
    );
    // With --force: replaced, and nothing else left in the directory.
    let v = json(&mut run(&["--force", "--hf-model", "Qwen/Qwen2.5-0.5B"]));
    assert_eq!(v["hf_model"], "Qwen/Qwen2.5-0.5B");
    assert_eq!(v["hf_model_source"], "given");
    assert_ne!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "my notes"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), FILES.len());
}

#[test]
fn missing_and_invalid_jobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    dh().args(["lora", "export-hf", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .arg("-o")
        .arg(&out)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("missing.yaml").and(predicate::str::contains("No such file")),
        );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "lora:\n  r: 0\n").unwrap();
    dh().args(["lora", "export-hf", "-c"])
        .arg(&bad)
        .arg("-o")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.yaml").and(predicate::str::contains("lora.r")));
    assert!(!out.exists(), "nothing is written for a bad job");
    // The output must be a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    std::fs::write(&bad, "base_model: m.gguf\n").unwrap();
    dh().args(["lora", "export-hf", "-c"])
        .arg(&bad)
        .arg("-o")
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a directory"));
}
