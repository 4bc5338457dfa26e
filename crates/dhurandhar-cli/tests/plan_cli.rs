//! End-to-end tests of `analyze`, `models`, `devices` and the `dhurandhar-analyze-ple`
//! alias: snapshots of the table and JSON, and every bad-input case.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/profiles")
}

fn stdout_of(args: &[&str]) -> String {
    let out = dh().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_of(args)).unwrap()
}

/// Write `text` to a fresh temp file named `name`; keep the dir alive with the path.
fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = dh().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks `{n}`:\n{err}");
    }
}

const VALID: &str = "name: tiny\nfamily: test\nparam_count_b: 0.1\nnum_hidden_layers: 4\nhidden_size: 256\nintermediate_size: 512\nvocab_size: 1000\nnum_attention_heads: 4\nnum_key_value_heads: 2\nhead_dim: 64\n";

// ------------------------------------------------------------------ snapshots

#[test]
fn default_analyze_table_snapshot() {
    insta::assert_snapshot!("analyze_default", stdout_of(&["analyze"]));
}

#[test]
fn analyze_json_snapshot() {
    let v = json_of(&[
        "analyze",
        "--model",
        "qwen2.5-0.5b",
        "--context-tokens",
        "8192",
        "--weight-format",
        "q4_0",
        "--device",
        "low_tier_mobile_emmc",
        "--json",
    ]);
    insta::assert_json_snapshot!("analyze_qwen_json", v);
}

#[test]
fn models_table_snapshot() {
    insta::assert_snapshot!("models_table", stdout_of(&["models"]));
}

#[test]
fn devices_table_snapshot() {
    insta::assert_snapshot!("devices_table", stdout_of(&["devices"]));
}

// ------------------------------------------------------------------ JSON contract

#[test]
fn analyze_json_contract() {
    let v = json_of(&["analyze", "--json"]);
    for k in [
        "model",
        "context_tokens",
        "weight_format",
        "kv_bits",
        "components",
        "totals",
        "devices",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["model"]["name"], "gemma4-e2b");
    assert_eq!(v["model"]["num_hidden_layers"], 35);
    let names: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "decoder_weights",
        "ple",
        "token_embeddings",
        "kv_cache",
        "vision_encoder",
        "audio_encoder",
        "activations",
        "runtime_overhead",
    ] {
        assert!(names.contains(&n), "component {n} missing from {names:?}");
    }
    for c in v["components"].as_array().unwrap() {
        assert!(c["bytes"].is_u64() && c["note"].is_string());
    }
    assert!(v["totals"]["resident_bytes"].is_u64());
    assert!(v["totals"]["ple_mmap_bytes"].as_u64() < v["totals"]["resident_bytes"].as_u64());
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 5);
    for d in devs {
        for k in [
            "slug",
            "name",
            "mode",
            "headroom_bytes",
            "decode_tps_ceiling",
            "notes",
        ] {
            assert!(d.get(k).is_some(), "device lacks {k}");
        }
        assert!(["resident", "mmap", "stream", "infeasible"].contains(&d["mode"].as_str().unwrap()));
    }
}

#[test]
fn moe_and_ssm_components_appear() {
    let v = json_of(&["analyze", "-m", "zaya1-8b", "-d", "laptop_nvme", "--json"]);
    let names: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"experts") && names.contains(&"ssm_state"),
        "{names:?}"
    );
    let v = json_of(&[
        "analyze",
        "-m",
        "mixtral-8x7b",
        "-d",
        "laptop_nvme",
        "--json",
    ]);
    assert!(v["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "lm_head"));
}

#[test]
fn json_out_writes_the_same_document() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("out.json");
    let table = stdout_of(&[
        "analyze",
        "-m",
        "llama-3.2-1b",
        "--json-out",
        f.to_str().unwrap(),
    ]);
    assert!(table.contains("llama-3.2-1b") && table.contains("JSON written to"));
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    let from_stdout = json_of(&["analyze", "-m", "llama-3.2-1b", "--json"]);
    assert_eq!(from_file, from_stdout);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn json_out_to_missing_dir_fails_cleanly() {
    fails_with(
        &["analyze", "--json-out", "/nonexistent-dir/x/out.json"],
        &["/nonexistent-dir/x"],
    );
}

#[test]
fn models_and_devices_json() {
    let m = json_of(&["models", "--json"]);
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 13);
    let q3 = models.iter().find(|x| x["name"] == "qwen2.5-3b").unwrap();
    assert_eq!(q3["num_key_value_heads"], 2);
    assert!(q3["source"].as_str().unwrap().contains("huggingface.co"));
    let d = json_of(&["devices", "--json"]);
    assert_eq!(d["devices"].as_array().unwrap().len(), 5);
    assert_eq!(d["budget_presets"].as_array().unwrap().len(), 4);
    let q40 = d["weight_formats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "q4_0")
        .unwrap();
    assert_eq!(q40["bits_per_weight"], 4.5);
    assert_eq!(d["schema_version"], 2);
    let phone = &d["devices"][0];
    assert_eq!(phone["memory_bandwidth_gbps"], 68.3);
    assert!(phone["source"].as_str().unwrap().contains("LPDDR5X"));
}

#[test]
fn devices_show_prints_the_sources() {
    let y = stdout_of(&["devices", "--show", "laptop_nvme"]);
    assert!(
        y.contains("memory_bandwidth_gbps: 89.6") && y.contains("estimate"),
        "{y}"
    );
    let (_d, p) = temp_file("mine.yaml", &y.replace("slug: laptop_nvme\n", ""));
    let v = json_of(&[
        "analyze",
        "-m",
        "qwen2.5-0.5b",
        "-d",
        p.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["devices"][0]["slug"], "mine");
    assert_eq!(v["devices"][0]["binding_bound"], "memory_bandwidth");
    fails_with(&["devices", "--show", "laptop"], &["laptop_nvme"]);
}

#[test]
fn analyze_shows_the_binding_bound_and_never_go_below_target() {
    let v = json_of(&["analyze", "-d", "high_end_mobile_ufs4", "--json"]);
    assert_eq!(v["schema_version"], 3);
    let d = &v["devices"][0];
    // The number: ~57 tok/s from RAM bandwidth, not 489,111 from flash.
    let c = d["decode_tps_ceiling"].as_f64().unwrap();
    assert!(c > 50.0 && c < 65.0, "{c}");
    assert_eq!(d["binding_bound"], "memory_bandwidth");
    let text = stdout_of(&[
        "analyze",
        "-d",
        "high_end_mobile_ufs4",
        "--target-decode-tps",
        "60",
    ]);
    assert!(text.contains("NO-GO high_end_mobile_ufs4"), "{text}");
    assert!(!text.contains("reads 0 MiB"), "{text}");
}

#[test]
fn old_device_profile_leaves_speed_unchecked() {
    let (_d, p) = temp_file(
        "old.yaml",
        "name: old phone\nram_budget_mb: 4096\nflash_read_gbps: 2\n",
    );
    let text = stdout_of(&["analyze", "-m", "qwen2.5-0.5b", "-d", p.to_str().unwrap()]);
    assert!(
        text.contains("speed unknown") && text.contains("unchecked"),
        "{text}"
    );
}

#[test]
fn host_device_needs_a_probe_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dh()
        .env("DHURANDHAR_CACHE", dir.path())
        .args(["analyze", "-d", "host"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host") && err.contains("probe"), "{err}");
    // A quick probe writes the host device, which analyze then uses.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = dh()
        .env("DHURANDHAR_CACHE", dir.path())
        .args(["devices", "--probe", "--quick", "--json", "--probe-dir"])
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device"]["slug"], "host");
    assert!(v["memory"]["triad_gbps"].as_f64().unwrap() > 0.0);
    let out = dh()
        .env("DHURANDHAR_CACHE", dir.path())
        .args(["analyze", "-m", "qwen2.5-0.5b", "-d", "host", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["devices"][0]["slug"], "host");
    assert_eq!(v["devices"][0]["unchecked_bounds"], serde_json::json!([]));
    // Min-context floor is an option with a clear error.
    fails_with(
        &["analyze", "--min-context-tokens", "0"],
        &["minimum context tokens"],
    );
}

#[test]
fn models_show_prints_a_loadable_profile() {
    let y = stdout_of(&["models", "--show", "llama-3.2-1b"]);
    let (_d, p) = temp_file("copy.yaml", &y);
    let v = json_of(&[
        "analyze",
        "-m",
        p.to_str().unwrap(),
        "-d",
        "laptop_nvme",
        "--json",
    ]);
    assert_eq!(v["model"]["name"], "llama-3.2-1b");
}

// ------------------------------------------------------------------ profiles and devices

#[test]
fn example_profiles_load() {
    let phi = examples().join("phi3_mini.yaml");
    let hybrid = examples().join("moe_mamba_hybrid.yaml");
    let pixel = examples().join("pixel_10_pro.yaml");
    let v = json_of(&[
        "analyze",
        "-m",
        phi.to_str().unwrap(),
        "-c",
        "4096",
        "-d",
        pixel.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["model"]["name"], "phi-3-mini-4k-instruct");
    assert_eq!(v["devices"][0]["slug"], "pixel_10_pro");
    assert_eq!(v["devices"][0]["ram_budget_bytes"], 3072u64 * 1024 * 1024);
    let kv_bytes = |extra: &[&str]| {
        let mut args = vec![
            "analyze",
            "-m",
            hybrid.to_str().unwrap(),
            "-d",
            "laptop_nvme",
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = json_of(&args);
        v["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kv_cache")
            .unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    // 16 attention layers only: 16 x 32768 x (2*2*128) x 0.5 B at a flat 4 bits.
    assert_eq!(kv_bytes(&["--kv-bits", "4"]), 134_217_728u64);
    // The default codec, turbo-mse at 4 bits, stores 64 B of codes + a 2 B norm per
    // 128-value vector: 16 x 32768 x (2*2) x 66 B.
    assert_eq!(kv_bytes(&[]), 138_412_032u64);
}

#[test]
fn kv_codec_is_charged_at_its_encoded_bytes() {
    // The worked example, equal to `dhurandhar kv bench` for the same codec.
    let v = json_of(&[
        "analyze",
        "-m",
        "qwen2.5-0.5b",
        "--kv-codec",
        "turbo-mse",
        "--kv-bits",
        "4",
        "-d",
        "laptop_nvme",
        "--json",
    ]);
    let kv = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kv_cache")
        .unwrap();
    assert_eq!(kv["bytes"], 106_954_752u64);
    assert_eq!(v["kv"]["codec"], "turbo-mse");
    assert_eq!(v["kv"]["bits_per_value"], 4.25);
    assert_eq!(v["kv"]["what_if"], false);
    let bench = json_of(&["kv", "bench", "-m", "qwen2.5-0.5b", "--json"]);
    assert_eq!(bench["footprint"]["compressed_bytes"], kv["bytes"]);
    // Plain --kv-bits is a what-if, and the text says so.
    let text = stdout_of(&[
        "analyze",
        "-m",
        "qwen2.5-0.5b",
        "-k",
        "3",
        "-d",
        "laptop_nvme",
    ]);
    assert!(text.contains("KV 3 bits (what-if)") && text.contains("note: KV is a what-if"));
    fails_with(
        &["analyze", "--kv-codec", "turbo-msx"],
        &["unknown codec", "turbo-mse"],
    );
    fails_with(
        &["analyze", "--kv-codec", "turbo-mse", "-k", "3.5"],
        &["kv_bits", "whole bits"],
    );
}

#[test]
fn ad_hoc_device_from_flags() {
    let v = json_of(&[
        "analyze",
        "--ram-mb",
        "3072",
        "--flash-gbps",
        "2.0",
        "--json",
    ]);
    let devs = v["devices"].as_array().unwrap();
    // Only the ad-hoc device when no --device is given alongside.
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0]["slug"], "custom");
    assert_eq!(devs[0]["ram_budget_bytes"], 3072u64 * 1024 * 1024);
}

#[test]
fn python_alias_accepts_the_old_flags() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.json");
    Command::cargo_bin("dhurandhar-analyze-ple")
        .unwrap()
        .args([
            "--model",
            "gemma4-e2b",
            "--context-tokens",
            "32768",
            "--quant-bits",
            "4",
            "--kv-bits",
            "4",
            "--keep-audio",
            "--device",
            "high_end_mobile_ufs4",
            "--target-decode-tps",
            "15",
            "--json-out",
            f.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("high_end_mobile_ufs4"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    assert_eq!(v["weight_format"]["name"], "4bit");
    assert_eq!(v["strip_audio"], false);
}

#[test]
fn quant_bits_and_weight_format_agree_on_order() {
    let total = |args: &[&str]| {
        let mut a = vec!["analyze", "-d", "laptop_nvme", "--json"];
        a.extend_from_slice(args);
        json_of(&a)["totals"]["resident_bytes"].as_u64().unwrap()
    };
    let q4 = total(&["-w", "q4_0"]);
    let q8 = total(&["-w", "q8_0"]);
    let bf = total(&["-w", "bf16"]);
    assert!(q4 < q8 && q8 < bf);
    assert!(total(&["--quant-bits", "4"]) < q4);
}

// ------------------------------------------------------------------ bad input

#[test]
fn unknown_slug_suggests_nearest() {
    fails_with(
        &["analyze", "-m", "gemma4-e3b"],
        &["unknown model", "did you mean", "gemma4-e2b"],
    );
    fails_with(&["analyze", "-m", "qwen2.5-3"], &["qwen2.5-3b"]);
}

#[test]
fn missing_yaml_field_names_file_and_field() {
    let text = VALID.replace("hidden_size: 256\n", "");
    let (_d, p) = temp_file("m.yaml", &text);
    fails_with(
        &["analyze", "-m", p.to_str().unwrap()],
        &["m.yaml", "hidden_size"],
    );
}

#[test]
fn mistyped_yaml_field_names_file_line_and_field() {
    let text = VALID.replace("head_dim: 64", "head_dimm: 64");
    let (_d, p) = temp_file("m.yaml", &text);
    fails_with(
        &["analyze", "-m", p.to_str().unwrap()],
        &["m.yaml", "head_dimm", "line 10", "did you mean `head_dim`"],
    );
}

#[test]
fn zero_and_negative_sizes_are_refused() {
    let (_d, p) = temp_file(
        "z.yaml",
        &VALID.replace("hidden_size: 256", "hidden_size: 0"),
    );
    fails_with(
        &["analyze", "-m", p.to_str().unwrap()],
        &["z.yaml", "hidden_size", "greater than zero"],
    );
    let (_d2, p2) = temp_file(
        "n.yaml",
        &VALID.replace("hidden_size: 256", "hidden_size: -256"),
    );
    fails_with(
        &["analyze", "-m", p2.to_str().unwrap()],
        &["n.yaml", "hidden_size"],
    );
    let (_d3, p3) = temp_file(
        "p.yaml",
        &VALID.replace("param_count_b: 0.1", "param_count_b: -1"),
    );
    fails_with(
        &["analyze", "-m", p3.to_str().unwrap()],
        &["p.yaml", "param_count_b"],
    );
}

#[test]
fn kv_heads_must_divide_heads() {
    let (_d, p) = temp_file(
        "g.yaml",
        &VALID.replace("num_key_value_heads: 2", "num_key_value_heads: 3"),
    );
    fails_with(
        &["analyze", "-m", p.to_str().unwrap()],
        &["num_key_value_heads", "must divide"],
    );
}

#[test]
fn malformed_and_missing_yaml() {
    let (_d, p) = temp_file("bad.yaml", "name: [unclosed\n");
    fails_with(&["analyze", "-m", p.to_str().unwrap()], &["bad.yaml"]);
    fails_with(
        &["analyze", "-m", "/no/such/model.yaml"],
        &["/no/such/model.yaml"],
    );
}

#[test]
fn context_beyond_max_warns_but_computes() {
    dh().args([
        "analyze",
        "-m",
        "qwen2.5-0.5b",
        "-c",
        "100000",
        "-d",
        "laptop_nvme",
        "--json",
    ])
    .assert()
    .success()
    .stderr(predicate::str::contains("warning").and(predicate::str::contains("32768")))
    .stdout(predicate::str::contains("\"context_tokens\": 100000"));
}

#[test]
fn bad_numbers_are_refused() {
    fails_with(&["analyze", "-c", "0"], &["context tokens"]);
    fails_with(&["analyze", "-k", "0"], &["kv bits"]);
    fails_with(&["analyze", "-k", "-1"], &["kv bits"]);
    fails_with(&["analyze", "--quant-bits", "0"], &["quant bits"]);
    fails_with(&["analyze", "--target-decode-tps", "0"], &["target decode"]);
    fails_with(
        &["analyze", "-w", "q4_o"],
        &["unknown weight format", "q4_0"],
    );
    fails_with(
        &["analyze", "-w", "q4_0", "--quant-bits", "4"],
        &["cannot be used with"],
    );
}

#[test]
fn device_without_ram_is_refused() {
    fails_with(
        &["analyze", "--ram-mb", "0", "--flash-gbps", "2"],
        &["ram_budget_mb"],
    );
    fails_with(
        &["analyze", "--ram-mb", "-5", "--flash-gbps", "2"],
        &["ram_budget_mb"],
    );
    fails_with(
        &["analyze", "--ram-mb", "1024", "--flash-gbps", "0"],
        &["flash_read_gbps"],
    );
    let (_d, p) = temp_file(
        "dev.yaml",
        "name: broken\nram_budget_mb: 0\nflash_read_gbps: 2\n",
    );
    fails_with(
        &["analyze", "-d", p.to_str().unwrap()],
        &["dev.yaml", "ram_budget_mb"],
    );
    let (_d2, p2) = temp_file(
        "dev2.yaml",
        "name: x\nram_budget: 100\nflash_read_gbps: 2\n",
    );
    fails_with(
        &["analyze", "-d", p2.to_str().unwrap()],
        &["dev2.yaml", "ram_budget"],
    );
    fails_with(
        &["analyze", "-d", "laptop_nvm"],
        &["unknown device", "laptop_nvme"],
    );
}

// ------------------------------------------------------------------ real checkpoint

#[test]
fn gguf_checkpoint_gives_exact_weight_bytes() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let v = json_of(&[
        "analyze",
        "-m",
        p.to_str().unwrap(),
        "-c",
        "2048",
        "-d",
        "laptop_nvme",
        "--json",
    ]);
    assert_eq!(v["weights_source"], "checkpoint");
    assert_eq!(v["weight_format"]["applied"], false);
    let comps = v["components"].as_array().unwrap();
    let get = |n: &str| comps.iter().find(|c| c["name"] == n).unwrap();
    assert_eq!(get("decoder_weights")["exact"], true);
    assert_eq!(get("kv_cache")["exact"], false);
    // The weight components add up to the checkpoint's own total.
    let cw = &v["checkpoint_weights"];
    let ckpt_total: u64 = [
        "token_embeddings",
        "ple",
        "decoder_layers",
        "experts",
        "lm_head",
        "other",
    ]
    .iter()
    .map(|k| cw[*k].as_u64().unwrap())
    .sum();
    let planned: u64 = ["decoder_weights", "ple", "token_embeddings"]
        .iter()
        .map(|n| get(n)["bytes"].as_u64().unwrap())
        .sum::<u64>()
        + comps
            .iter()
            .filter(|c| c["name"] == "lm_head" || c["name"] == "experts")
            .map(|c| c["bytes"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(planned, ckpt_total);
    // The weights are a real fraction of the file.
    let file = std::fs::metadata(&p).unwrap().len();
    assert!(
        planned <= file && planned as f64 > 0.9 * file as f64,
        "{planned} vs {file}"
    );
}
