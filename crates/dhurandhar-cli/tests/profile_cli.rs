//! End-to-end tests of `dhurandhar mmap-profile` and its alias `dhurandhar-profile-mmap`.
//! Test files are a few MiB in the target dir (a real disk, so eviction can work).

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn profile(cache: &Path) -> Command {
    let mut c = Command::cargo_bin("dhurandhar").unwrap();
    c.arg("mmap-profile").arg("--cache-dir").arg(cache).args([
        "--scale",
        "0.001",
        "--warmup-tokens",
        "5",
    ]);
    c
}

fn json(c: &mut Command) -> Value {
    let out = c
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn default_patterns_cold_and_warm_with_verified_eviction() {
    let dir = tmp();
    let v = json(profile(dir.path()).args(["--num-tokens", "200", "--target-tps", "1"]));
    let results = v["results"].as_array().unwrap();
    let got: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["pattern"].as_str().unwrap().to_string(),
                r["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["sequential_prefill", "random_decode", "random_scatter"]
        .iter()
        .flat_map(|p| ["cold", "warm"].map(|m| (p.to_string(), m.to_string())))
        .collect();
    assert_eq!(got, want);
    for r in results {
        for k in ["tokens_per_s", "mb_per_s", "p50_us", "p99_us", "p999_us"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k} in {r}");
        }
        assert!(r["p50_us"].as_f64() <= r["p99_us"].as_f64());
        let before = r["resident_fraction_before"].as_f64().unwrap();
        if cfg!(target_os = "linux") && r["mode"] == "cold" {
            assert_eq!(r["eviction"], "evicted", "{r}");
            assert!(before < 0.05, "cold run started {before} cached");
        }
        if r["mode"] == "warm" {
            assert!(before > 0.99, "{r}");
        }
    }
    assert_eq!(v["source"]["table"], "per_layer_embedding");
    // One 4-bit slice of 256 PLE values per layer; the full table is every vocab row.
    let s = &v["source"];
    assert_eq!(s["slice_bytes"], 128);
    let bpt = s["bytes_per_token"].as_u64().unwrap();
    assert_eq!(bpt, 128 * s["slices"].as_u64().unwrap());
    assert_eq!(s["full_table_bytes"].as_u64().unwrap() % bpt, 0);
    assert_eq!(
        s["length"].as_u64().unwrap(),
        bpt * s["rows"].as_u64().unwrap()
    );
    let mem = &v["memory"];
    for k in ["peak_rss_bytes", "rss_anon_bytes", "rss_file_bytes"] {
        assert!(mem[k].as_u64().unwrap() > 0, "{k}");
    }
    assert_eq!(mem["budgets"][0]["budget"]["name"], "int4_aggressive");
    // The full 4-bit E2B PLE table (~1 GiB) fits the 1536 MiB int4 budget.
    assert_eq!(mem["budgets"][0]["weights_only"], "PASS");
    assert_eq!(v["verdict"]["verdict"], "PASS");
    assert_eq!(v["verdict"]["pattern"], "random_decode");
    assert_eq!(v["verdict"]["mode"], "cold");
}

#[test]
fn test_file_is_created_once_then_reused() {
    let dir = tmp();
    let run = || {
        json(profile(dir.path()).args([
            "--num-tokens",
            "20",
            "--warm-only",
            "--patterns",
            "random_decode",
        ]))
    };
    assert_eq!(run()["source"]["file"], "created");
    assert_eq!(run()["source"]["file"], "reused");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["mmap_profile.bin"]);
}

#[test]
fn warm_only_runs_no_cold_pass_and_caps_the_verdict() {
    let dir = tmp();
    let v = json(profile(dir.path()).args(["--num-tokens", "50", "--warm-only"]));
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 3);
    assert!(rs
        .iter()
        .all(|r| r["mode"] == "warm" && r["eviction"].is_null()));
    // Warm numbers alone never PASS: they are page-cache numbers.
    assert_eq!(v["verdict"]["verdict"], "WARN");
    assert_eq!(v["verdict"]["mode"], "warm");
}

#[test]
fn impossible_target_fails() {
    let dir = tmp();
    let v = json(profile(dir.path()).args([
        "--num-tokens",
        "50",
        "--patterns",
        "random_decode",
        "--target-tps",
        "1e12",
    ]));
    assert_eq!(v["verdict"]["verdict"], "FAIL");
}

#[test]
fn advice_experiments_and_memory_probe() {
    let dir = tmp();
    let v = json(profile(dir.path()).args([
        "--num-tokens",
        "50",
        "--patterns",
        "random_decode",
        "--advice",
        "normal,random,willneed",
        "--measure-memory",
        "--resident-mb",
        "16",
        "--budget",
        "int2_extreme,100",
    ]));
    let adv: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["advice"].as_str().unwrap())
        .collect();
    assert_eq!(
        adv,
        ["normal", "normal", "random", "random", "willneed", "willneed"]
    );
    let probe = &v["memory"]["probe"];
    assert_eq!(probe["placeholder_bytes"], 16 << 20);
    assert!(probe["samples"].as_u64().unwrap() >= 2);
    let b = v["memory"]["budgets"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[1]["budget"]["name"], "custom_100mb");
    // A ~1 GiB table + 16 MiB does not fit 100 MiB.
    assert_eq!(b[1]["weights_only"], "FAIL");
}

#[test]
fn model_without_ple_profiles_its_token_embedding() {
    let dir = tmp();
    let v = json(profile(dir.path()).args([
        "--model",
        "qwen2.5-0.5b",
        "--bits",
        "8",
        "--num-tokens",
        "20",
        "--warm-only",
    ]));
    assert_eq!(v["source"]["table"], "token_embedding");
    assert_eq!(v["source"]["bytes_per_token"], 896);
    assert!(v["source"]["note"]
        .as_str()
        .unwrap()
        .contains("token-embedding"));
}

#[test]
fn real_tensor_of_a_gguf() {
    let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let v = json(
        Command::cargo_bin("dhurandhar")
            .unwrap()
            .args([
                "mmap-profile",
                "--num-tokens",
                "100",
                "--tensor",
                "token_embd.weight",
            ])
            .arg("--file")
            .arg(&gguf),
    );
    let s = &v["source"];
    assert_eq!(s["kind"], "checkpoint");
    // 49,152 token rows of 576 values; this file stores the embedding as Q8_0
    // (18 blocks of 34 bytes per row).
    assert_eq!(s["rows"], 49_152);
    assert_eq!(s["bytes_per_token"], 612);
    assert_eq!(s["length"], 49_152 * 612);
    // random_scatter reads each row as 12 pieces of 51 bytes from 12 random places, so it
    // must fault in more pages than random_decode.
    assert_eq!(s["slices"], 12);
    let rs = v["results"].as_array().unwrap();
    let faults = |p: &str| {
        rs.iter()
            .find(|r| r["pattern"] == p && r["mode"] == "cold")
            .map(|r| r["resident_fraction_after"].as_f64().unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "no cold {p} result: the fixture's pages could not be dropped \
                     (another process holding it mapped?); notes: {}",
                    v["verdict"]
                )
            })
    };
    assert!(faults("random_scatter") > 2.0 * faults("random_decode"));
    assert_eq!(v["results"].as_array().unwrap().len(), 6);
}

#[test]
fn table_output_has_the_python_columns_and_the_gate() {
    let dir = tmp();
    profile(dir.path())
        .args(["--num-tokens", "20", "--patterns", "random_decode"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("tok/s")
                .and(predicate::str::contains("p50 µs"))
                .and(predicate::str::contains("p99 µs"))
                .and(predicate::str::contains("Mmap gate (target 15 tok/s"))
                .and(predicate::str::contains("not device flash")),
        );
}

#[test]
fn alias_binary_accepts_the_python_flags() {
    let dir = tmp();
    let out = Command::cargo_bin("dhurandhar-profile-mmap")
        .unwrap()
        .arg("--cache-dir")
        .arg(dir.path())
        .args([
            "--scale",
            "0.001",
            "--num-tokens",
            "30",
            "--target-tps",
            "15",
            "--measure-memory",
            "--warm-only",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    assert!(v["memory"]["probe"].is_object());
}

#[test]
fn json_shape_snapshot() {
    let dir = tmp();
    let mut v = json(profile(dir.path()).args(["--num-tokens", "20", "--target-tps", "1"]));
    redact(&mut v, "");
    insta::assert_json_snapshot!("mmap_profile_json_shape", v);
}

/// Replace measurements (numbers, paths, free text) with placeholders, keeping every key
/// and every enumerated value so the snapshot pins the contract, not the timings.
fn redact(v: &mut Value, key: &str) {
    match v {
        Value::Number(_) => {
            // Only what the command line fixes; table sizes come from the model registry.
            let keep = [
                "schema_version",
                "slice_bytes",
                "tokens",
                "num_tokens",
                "warmup_tokens",
                "bits",
                "scale",
                "target_tps",
                "warn_margin",
                "offset",
            ];
            if !keep.contains(&key) {
                *v = Value::String("<number>".into());
            }
        }
        Value::String(_) if ["path", "reason", "os", "arch", "source"].contains(&key) => {
            *v = Value::String(format!("<{key}>"));
        }
        // How many latency buckets a run fills depends on its timings: keep one.
        Value::Array(a) if key == "buckets" => {
            a.truncate(1);
            a.iter_mut().for_each(|x| redact(x, key));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, key)),
        Value::Object(o) => o.iter_mut().for_each(|(k, x)| redact(x, k)),
        _ => {}
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tmp();
    let err = |args: &[&str], needle: &str| {
        profile(dir.path())
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(needle));
    };
    for (scale, needle) in [
        ("0", "invalid scale 0"),
        ("1000", "invalid scale 1000"),
        ("nan", "invalid scale"),
    ] {
        Command::cargo_bin("dhurandhar")
            .unwrap()
            .args(["mmap-profile", "--scale", scale])
            .arg("--cache-dir")
            .arg(dir.path())
            .assert()
            .failure()
            .stderr(predicate::str::contains(needle));
    }
    err(&["--target-tps", "0"], "--target-tps");
    err(&["--num-tokens", "0"], "--num-tokens");
    err(&["--budget", "int3_magic"], "unknown budget `int3_magic`");
    err(&["--model", "no-such-model"], "unknown model");
    // A cache dir below a regular file can never be created, even as root.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["mmap-profile", "--scale", "0.001"])
        .arg("--cache-dir")
        .arg(file.join("cache"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("not writable"));
    // --tensor without --file is a usage error (exit 2).
    Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["mmap-profile", "--tensor", "x"])
        .assert()
        .code(2);
    // A region past the end of a file.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![7u8; 10_000]).unwrap();
    Command::cargo_bin("dhurandhar")
        .unwrap()
        .args([
            "mmap-profile",
            "--offset",
            "4096",
            "--length",
            "8192",
            "--file",
        ])
        .arg(&small)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("beyond the end of the file")
                .and(predicate::str::contains("small.bin")),
        );
    // No leftover temporaries from any of the failures.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn unknown_tensor_is_named() {
    let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["mmap-profile", "--tensor", "no.such.tensor", "--file"])
        .arg(&gguf)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no.such.tensor"));
}

#[test]
fn raw_region_of_a_file() {
    let dir = tmp();
    let f = dir.path().join("raw.bin");
    std::fs::write(&f, vec![3u8; 1 << 20]).unwrap();
    let v = json(
        Command::cargo_bin("dhurandhar")
            .unwrap()
            .args([
                "mmap-profile",
                "--offset",
                "100",
                "--length",
                "500000",
                "--row-bytes",
                "1000",
                "--num-tokens",
                "50",
                "--file",
            ])
            .arg(&f),
    );
    assert_eq!(v["source"]["rows"], 500);
    assert_eq!(v["source"]["offset"], 100);
    assert_eq!(v["source"]["slices"], 10); // 1000-byte rows -> 10 pieces of 100 bytes
    Command::cargo_bin("dhurandhar")
        .unwrap()
        .args([
            "mmap-profile",
            "--offset",
            "0",
            "--length",
            "1000",
            "--row-bytes",
            "1000",
            "--slices",
            "7",
            "--file",
        ])
        .arg(&f)
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not divide"));
}

#[test]
fn output_to_a_closed_pipe_is_not_a_panic() {
    // `dhurandhar mmap-profile ... | head -c 10`: the reader is gone before anything is
    // written, so every write fails with EPIPE.
    let dir = tmp();
    for json in [false, true] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dhurandhar"));
        c.arg("mmap-profile").arg("--cache-dir").arg(dir.path());
        c.args(["--scale", "0.001", "--num-tokens", "20", "--warm-only"]);
        if json {
            c.arg("--json");
        }
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "json={json}: {err}");
        assert!(out.status.success(), "json={json}: {:?} {err}", out.status);
    }
}
