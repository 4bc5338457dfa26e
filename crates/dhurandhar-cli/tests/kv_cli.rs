//! End-to-end tests of `dhurandhar kv bench|compare|speed` and the Python-named aliases.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

/// Round every float to 6 significant digits so snapshots do not depend on the last
/// ulp of libm's exp/ln on a given platform.
fn rounded(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            let r: f64 = format!("{x:.5e}").parse().unwrap();
            serde_json::json!(r)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, rounded(v))).collect()),
        v => v,
    }
}

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

const E2B_LIKE: &str = r#"
name: e2b-like
family: gemma
param_count_b: 5.1
num_hidden_layers: 35
hidden_size: 1536
intermediate_size: 6144
vocab_size: 262144
num_attention_heads: 8
num_key_value_heads: 1
head_dim: 256
global_head_dim: 512
local_to_global_ratio: 4
sliding_window: 512
shared_kv_last_n_layers: 20
"#;

#[test]
fn compare_json_contract_and_snapshot() {
    let v = json_of(dh().args([
        "kv",
        "compare",
        "--head-dim",
        "64",
        "--num-kv-heads",
        "2",
        "--seq-len",
        "96",
        "--bits",
        "2,4",
        "--codecs",
        "turbo,turbo-mse,q4_0,kivi2",
        "--queries",
        "8",
        "--no-timing",
        "--json",
    ]));
    let rows = v["rows"].as_array().unwrap();
    // q4_0 runs only at its native 4 bits.
    assert_eq!(rows.len(), 7);
    for r in rows {
        for k in [
            "codec",
            "bits",
            "bits_per_value",
            "compression_vs_bf16",
            "nmse",
            "cosine",
            "norm_ratio",
            "ip_bias_slope",
            "attn_rel_err",
            "attn_kl",
        ] {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
        let bpv = r["bits_per_value"].as_f64().unwrap();
        assert!((r["compression_vs_bf16"].as_f64().unwrap() - 16.0 / bpv).abs() < 1e-9);
    }
    // Honest storage: turbo at 2 residual bits stores sign + 2 bits + two f16 per 64.
    assert_eq!(rows[0]["codec"], "turbo");
    assert_eq!(rows[0]["bits_per_value"].as_f64().unwrap(), 3.5);
    let mut v = rounded(v);
    v["config"]["kernel"] = Value::from("[kernel]");
    insta::assert_json_snapshot!("kv_compare_small", v);
}

#[test]
fn compare_table_snapshot() {
    let out = dh()
        .args([
            "kv",
            "compare",
            "--head-dim",
            "96",
            "--num-kv-heads",
            "1",
            "--seq-len",
            "64",
            "--bits",
            "4",
            "--codecs",
            "turbo-mse,oscar,q4_0-rot",
            "--queries",
            "4",
            "--no-timing",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!("kv_compare_table", String::from_utf8(out).unwrap());
}

#[test]
fn bench_counts_shared_layers_and_follows_bits() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("e2b.yaml");
    std::fs::write(&yaml, E2B_LIKE).unwrap();
    let run = |bits: &str| {
        json_of(dh().args([
            "kv",
            "bench",
            "--model",
            yaml.to_str().unwrap(),
            "--seq-len",
            "4096",
            "--codec",
            "turbo",
            "--bits",
            bits,
            "--samples",
            "64",
            "--queries",
            "8",
            "--json",
        ]))
    };
    let a = run("2");
    let b = run("8");
    let fa = &a["footprint"];
    assert_eq!(fa["fresh_layers"], 15);
    assert_eq!(fa["shared_layers"], 20);
    assert!(b["footprint"]["compressed_bytes"].as_u64() > fa["compressed_bytes"].as_u64());
    // Two geometries: sliding (256) and global (512) head_dim.
    assert_eq!(a["quality"].as_array().unwrap().len(), 2);
    let mut a = rounded(a);
    a["origin"] = Value::from("[path]");
    insta::assert_json_snapshot!("kv_bench_e2b_like_turbo2", a);
}

#[test]
fn bench_table_runs_on_builtin_model() {
    dh().args([
        "kv",
        "bench",
        "--seq-len",
        "2048",
        "--samples",
        "32",
        "--queries",
        "4",
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains("baseline (bf16)").and(predicate::str::contains("shared-KV")));
}

#[test]
fn benchmark_kv_alias_keeps_python_flags() {
    let run = |rb: &str| {
        let out = Command::cargo_bin("dhurandhar-benchmark-kv")
            .unwrap()
            .args([
                "--model",
                "gemma4-e2b",
                "--seq-len",
                "4096",
                "--residual-bits",
                rb,
                "--samples",
                "32",
                "--json",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["codec"], "turbo");
        v["footprint"]["compressed_bytes"].as_u64().unwrap()
    };
    // The Python tool printed the same footprint for every residual width.
    assert!(run("2") < run("8"));
}

#[test]
fn compare_codecs_alias_writes_json_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp.json");
    Command::cargo_bin("dhurandhar-compare-codecs")
        .unwrap()
        .args([
            "--head-dim",
            "32",
            "--num-kv-heads",
            "1",
            "--seq-len",
            "64",
            "--bits",
            "4",
            "--json-out",
        ])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("turbo-mse"));
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let codecs: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["codec"].as_str().unwrap())
        .collect();
    assert_eq!(codecs.len(), 9, "{codecs:?}"); // all but q8_0 at 4 bits
    assert!(v["stage1"][0]["ns_per_vector"].as_f64().unwrap() > 0.0);
}

#[test]
fn speed_json_contract() {
    let v = json_of(dh().args([
        "kv",
        "speed",
        "--head-dim",
        "64",
        "--codec",
        "turbo-mse",
        "--bits",
        "4",
        "--threads",
        "1",
        "--vectors",
        "64",
        "--min-seconds",
        "0",
        "--json",
    ]));
    for k in [
        "encode_ns_per_vector",
        "decode_ns_per_vector",
        "memcpy_ns_per_vector",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert_eq!(v["threads"], 1);
    assert_eq!(v["encoded_bytes_per_vector"].as_f64().unwrap(), 34.0);
}

fn npy(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let mut h = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &str) -> Vec<u8> {
    let mut header = format!("{{\"__metadata__\":{meta}");
    let mut off = 0usize;
    let mut data = Vec::new();
    for (name, shape, vals) in tensors {
        let end = off + vals.len() * 4;
        let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{off},{end}]}}",
            dims.join(",")
        );
        for v in vals {
            data.extend_from_slice(&v.to_le_bytes());
        }
        off = end;
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn wave(n: usize, k: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32) * k).sin() + 0.1 * ((i * 7 % 13) as f32))
        .collect()
}

#[test]
fn compare_reads_captured_safetensors_with_gqa_queries() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cap.safetensors");
    let (t, hk, hq, d) = (40, 2, 4, 32);
    let bytes = safetensors(
        &[
            ("layers.0.k", vec![t, hk, d], wave(t * hk * d, 0.37)),
            ("layers.0.v", vec![t, hk, d], wave(t * hk * d, 0.11)),
            ("layers.0.q", vec![t, hq, d], wave(t * hq * d, 0.23)),
            ("layers.0.k_pre_rope", vec![t, hk, d], wave(t * hk * d, 0.5)),
        ],
        "{\"model\":\"test\",\"n_layers\":\"1\"}",
    );
    std::fs::write(&f, bytes).unwrap();
    let v = json_of(dh().args([
        "kv",
        "compare",
        "--data",
        f.to_str().unwrap(),
        "--bits",
        "4",
        "--codecs",
        "turbo-mse,spectral",
        "--no-timing",
        "--json",
    ]));
    let file = &v["config"]["file"];
    assert_eq!(file["heads"], 2);
    assert_eq!(file["head_dim"], 32);
    assert!(file["queries"].as_str().unwrap().contains("captured"));
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert!(v["rows"][0]["worst"]["nmse"]["head"]
        .as_str()
        .unwrap()
        .starts_with("layer 0"));
}

#[test]
fn compare_reads_npy_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.npy");
    std::fs::write(&f, npy(&[33, 2, 16], &wave(33 * 2 * 16, 0.3))).unwrap();
    let v = json_of(dh().args([
        "kv",
        "compare",
        "--data",
        f.to_str().unwrap(),
        "--bits",
        "2",
        "--codecs",
        "kivi2",
        "--no-timing",
        "--json",
    ]));
    // 33 tokens: one KIVI key group of 32 plus one bf16 token, counted.
    let r = &v["rows"][0];
    assert!(r["key_bits_per_value"].as_f64().unwrap() > 3.0);

    let mut bad = wave(4 * 16, 0.3);
    bad[5] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    std::fs::write(&nan, npy(&[4, 16], &bad)).unwrap();
    dh().args([
        "kv",
        "compare",
        "--data",
        nan.to_str().unwrap(),
        "--no-timing",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("nan.npy").and(predicate::str::contains("NaN")));

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a file").unwrap();
    dh().args(["kv", "compare", "--data", junk.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("junk.safetensors"));

    dh().args(["kv", "compare", "--codecs", "turbo-xl"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown codec `turbo-xl`"));
    dh().args([
        "kv",
        "bench",
        "--codec",
        "turbo",
        "--bits",
        "1",
        "--samples",
        "8",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("does not support 1 bits"));
}

/// Sizes are checked before anything is allocated; the error names the option field.
#[test]
fn huge_sizes_are_clear_errors_not_allocations() {
    dh().args([
        "kv",
        "speed",
        "--head-dim",
        "1000000000",
        "--min-seconds",
        "0",
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains(
        "head_dim: 1000000000 is out of range (1..=8192)",
    ));
    dh().args(["kv", "bench", "--samples", "1000000000"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "samples: 1000000000 is out of range (2..=1048576)",
        ));
    // Each count is in range; their product is not.
    dh().args([
        "kv",
        "compare",
        "--seq-len",
        "1000000",
        "--num-kv-heads",
        "1000",
        "--head-dim",
        "8192",
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains(
        "seq_len: 1000000 × 1000 × 8192 values is over the 67108864-value limit",
    ));
    dh().args(["kv", "speed", "--threads", "99999999", "--min-seconds", "0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "threads: 99999999 is out of range",
        ));
}
