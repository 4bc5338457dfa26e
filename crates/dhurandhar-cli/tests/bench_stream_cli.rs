//! `bench-stream` on the SmolLM2 fixture under a memory cgroup capped at half its
//! weights: the streamed runs — from the GGUF and from a `.dhp` pack of it — must finish
//! inside the cap (exit 0, no OOM kill; the group charges its RSS and page cache) and
//! stream their layers; the mapped run is there to compare against. Speeds are printed by the command, not asserted. Where memory
//! groups cannot be made (not root, no cgroup v1) the command must refuse with the
//! reason, and the test says so.

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

fn fixture() -> Option<PathBuf> {
    dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)
}

#[test]
fn streamed_weights_run_inside_a_cap_of_half_the_weights() {
    let Some(model) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("m.dhp");
    let packed = Command::cargo_bin("dhurandhar")
        .unwrap()
        .arg("pack")
        .arg(&model)
        .arg("-o")
        .arg(&pack)
        .output()
        .unwrap();
    assert!(packed.status.success());
    let out = Command::cargo_bin("dhurandhar")
        .unwrap()
        .args([
            "bench-stream",
            "--capped-only",
            "--tokens",
            "8",
            "--prompt",
            "4",
        ])
        .args(["--threads", "2", "--json", "--model"])
        .arg(&model)
        .arg("--pack")
        .arg(&pack)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Err(why) = dhurandhar_profile::cgroup::MemoryCap::available() {
        eprintln!("skipping the capped runs: {why}");
        assert!(!out.status.success());
        assert!(stderr.contains("/sys/fs/cgroup/memory"), "{stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = r["file_bytes"].as_u64().unwrap();
    assert!(r["cold_read_bytes_per_s"].as_f64().unwrap() > 0.0);
    let runs = r["runs"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|x| x["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["mmap", "stream", "stream from .dhp"]);
    for run in runs {
        assert_eq!(run["cap_bytes"].as_u64(), Some(file / 2), "{run}");
    }
    for stream in &runs[1..] {
        check_stream(stream, file);
    }
}

fn check_stream(stream: &Value, file: u64) {
    assert_eq!(stream["exit_code"], 0, "{stream}");
    assert!(stream["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let cg = &stream["cgroup"];
    assert_eq!(cg["oom_kills"], 0, "{stream}");
    assert!(cg["max_usage_bytes"].as_u64().unwrap() > 0, "{stream}");
    // Half the weights cannot all be pinned: layers stream, and the bound follows.
    let per_token = stream["bytes_read_per_token"].as_f64().unwrap();
    assert!(per_token > file as f64 / 4.0, "{stream}");
    let fraction = stream["bound_fraction"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction.is_finite(), "{stream}");
    assert!(stream["traffic"]["io_wait_share"].as_f64().unwrap() <= 1.0);
}

#[test]
fn a_missing_model_is_named() {
    let out = Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["bench-stream", "--model", "/nonexistent/model.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/model.gguf"), "{stderr}");
}
