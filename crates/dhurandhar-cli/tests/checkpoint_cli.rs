//! `dhurandhar inspect` end to end: a hand-built GGUF (snapshots), safetensors, the
//! real fixtures, and malformed files.

use std::path::Path;

use assert_cmd::Command;
use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufValue};
use predicates::str::contains;

fn dhurandhar() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

/// A two-layer llama-style GGUF with an untied head and mixed tensor types.
fn tiny_gguf(dir: &Path) -> std::path::PathBuf {
    let u = GgufValue::U32;
    let mut b = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("general.name", GgufValue::String("Tiny Llama".into()))
        .kv("llama.block_count", u(2))
        .kv("llama.embedding_length", u(64))
        .kv("llama.feed_forward_length", u(256))
        .kv("llama.attention.head_count", u(4))
        .kv("llama.attention.head_count_kv", u(2))
        .kv("llama.context_length", u(2048))
        .tensor_filled("token_embd.weight", &[64, 128], GgmlType::Q8_0);
    for i in 0..2 {
        b = b
            .tensor_filled(&format!("blk.{i}.attn_norm.weight"), &[64], GgmlType::F32)
            .tensor_filled(&format!("blk.{i}.attn_q.weight"), &[64, 64], GgmlType::Q4_0)
            .tensor_filled(&format!("blk.{i}.attn_k.weight"), &[64, 32], GgmlType::Q4_0)
            .tensor_filled(&format!("blk.{i}.attn_v.weight"), &[64, 32], GgmlType::Q4_0)
            .tensor_filled(
                &format!("blk.{i}.attn_output.weight"),
                &[64, 64],
                GgmlType::Q4_0,
            )
            .tensor_filled(
                &format!("blk.{i}.ffn_gate.weight"),
                &[256, 64],
                GgmlType::Q4K,
            )
            .tensor_filled(&format!("blk.{i}.ffn_up.weight"), &[256, 64], GgmlType::Q4K)
            .tensor_filled(
                &format!("blk.{i}.ffn_down.weight"),
                &[256, 64],
                GgmlType::Q6K,
            );
    }
    b = b
        .tensor_filled("output_norm.weight", &[64], GgmlType::F32)
        .tensor_filled("output.weight", &[64, 128], GgmlType::Q8_0);
    let p = dir.join("tiny.gguf");
    std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
    p
}

fn stdout_of(args: &[&str]) -> String {
    let out = dhurandhar()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn inspect_gguf_json_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let ps = p.to_str().unwrap();
    let text = stdout_of(&["inspect", ps, "--json"]).replace(ps, "[DIR]/tiny.gguf");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Contract fields.
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 19);
    let total: u64 = tensors.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(v["total_tensor_bytes"].as_u64(), Some(total));
    for t in tensors {
        for k in ["name", "dtype", "shape", "offset", "bytes", "component"] {
            assert!(t.get(k).is_some(), "{k} missing in {t}");
        }
    }
    assert_eq!(v["architecture"]["num_hidden_layers"], 2);
    assert_eq!(v["architecture"]["embeddings_tied"], false);
    // The architecture object grows with the model contract; its key fields are
    // asserted above, the rest of the report is snapshotted.
    let mut v = v;
    v.as_object_mut().unwrap().remove("architecture");
    insta::assert_json_snapshot!("inspect_tiny_gguf_json", v);
}

#[test]
fn inspect_gguf_table_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let ps = p.to_str().unwrap();
    let text = stdout_of(&["inspect", ps]).replace(ps, "[DIR]/tiny.gguf");
    insta::assert_snapshot!("inspect_tiny_gguf_table", text);
    let listed = stdout_of(&["inspect", ps, "--tensors"]);
    assert!(listed.contains("blk.1.ffn_down.weight") && listed.contains("Q6_K"));
}

#[test]
fn inspect_safetensors_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = r#"{"model.embed_tokens.weight":{"dtype":"BF16","shape":[16,8],"data_offsets":[0,256]},"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[256,384]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + 384, 0);
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type":"qwen3","hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1,"head_dim":16,"vocab_size":16}"#,
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["inspect", d.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["total_tensor_bytes"], 384);
    assert_eq!(v["architecture"]["head_dim"], 16);
    assert_eq!(v["architecture"]["embeddings_tied"], true);
    assert_eq!(v["tensors"][0]["component"], "token_embeddings");
    assert_eq!(v["tensors"][1]["offset"], 8 + header.len() as u64 + 256);
}

#[test]
fn inspect_refuses_malformed_files_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..200]).unwrap();
    dhurandhar()
        .args(["inspect", cut.to_str().unwrap()])
        .assert()
        .failure()
        .code(1)
        .stderr(
            contains("cut.gguf")
                .and(contains("at byte"))
                .and(contains("truncated")),
        );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"NOTAGGUFFILE").unwrap();
    dhurandhar()
        .args(["inspect", junk.to_str().unwrap(), "--json"])
        .assert()
        .failure()
        .stderr(contains("bad magic"));
    dhurandhar()
        .args(["inspect", dir.path().join("missing.gguf").to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("missing.gguf"));
}

use predicates::prelude::PredicateBooleanExt;

#[cfg(unix)]
#[test]
fn inspect_refuses_a_fifo_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Before the check this read blocked forever; the timeout turns that into a failure.
    dhurandhar()
        .args(["inspect", fifo.to_str().unwrap()])
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .failure()
        .code(1)
        .stderr(contains("model.gguf").and(contains("not a regular file (a FIFO)")));
}

#[test]
fn inspect_smollm2_fixture() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["inspect", p.to_str().unwrap(), "--json"])).unwrap();
    let a = &v["architecture"];
    assert_eq!(a["family"], "llama");
    assert_eq!(a["num_hidden_layers"], 30);
    assert_eq!(a["hidden_size"], 576);
    assert_eq!(a["num_attention_heads"], 9);
    assert_eq!(a["num_key_value_heads"], 3);
    assert_eq!(a["head_dim"], 64);
    assert_eq!(a["intermediate_size"], 1536);
    assert_eq!(a["vocab_size"], 49152);
    assert_eq!(a["embeddings_tied"], true);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(v["total_tensor_bytes"], 96_576_768);
    let comps: Vec<(String, u64)> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["component"].as_str().unwrap().to_string(),
                c["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    insta::assert_debug_snapshot!("smollm2_components", comps);
}

#[test]
fn inspect_minilm_fixture_lists_tensors_and_says_why_no_architecture() {
    let Some(p) = dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS) else {
        return;
    };
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["inspect", p.to_str().unwrap(), "--json"])).unwrap();
    assert!(v["architecture"].is_null());
    assert!(v["architecture_error"]
        .as_str()
        .unwrap()
        .contains("unsupported architecture: bert"));
    assert_eq!(v["tensors"].as_array().unwrap().len(), 104);
    let text = stdout_of(&["inspect", p.to_str().unwrap()]);
    assert!(text.contains("unsupported architecture: bert") && text.contains("token_embeddings"));
}
