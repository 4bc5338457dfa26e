//! safetensors reader: round trips, sharded checkpoints, malformed input.

use std::path::Path;

use dhurandhar_checkpoint::safetensors::{SafetensorsFile, ShardedSafetensors};
use dhurandhar_checkpoint::{load_model, locate_tensor, open_checkpoint, Component};
use dhurandhar_checkpoint::{DType, TensorSource, Weights};
use proptest::prelude::*;

/// A safetensors file with tensors laid out back to back (data = byte index % 251).
fn st_bytes(tensors: &[(&str, &str, &[u64])], metadata: Option<&str>) -> Vec<u8> {
    let mut entries = Vec::new();
    if let Some(m) = metadata {
        entries.push(format!("\"__metadata__\":{m}"));
    }
    let mut off = 0u64;
    for (name, dtype, shape) in tensors {
        let bits = DType::from_name(dtype).unwrap().bits();
        let n = shape.iter().product::<u64>() * bits / 8;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            dims.join(","),
            off + n
        ));
        off += n;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend((0..off).map(|i| (i % 251) as u8));
    out
}

fn small() -> Vec<u8> {
    st_bytes(
        &[
            ("model.embed_tokens.weight", "BF16", &[10, 4]),
            ("model.layers.0.self_attn.q_proj.weight", "F32", &[4, 4]),
            ("model.norm.weight", "F16", &[4]),
            ("lm_head.weight", "F8_E4M3", &[10, 4]),
            ("packed", "F4", &[3, 2]),
        ],
        Some("{\"format\":\"pt\"}"),
    )
}

#[test]
fn round_trip() {
    let b = small();
    let f = SafetensorsFile::parse(&b, "m.safetensors").unwrap();
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    // Sorted by offset, i.e. file order.
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
            "packed"
        ]
    );
    let q = f.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(
        (q.dtype, q.shape.clone(), q.n_bytes),
        (DType::F32, vec![4, 4], 64)
    );
    assert_eq!(q.offset, f.data_offset + 80);
    assert_eq!(f.tensor("packed").unwrap().n_bytes, 3);
    assert_eq!(f.data_offset + f.total_tensor_bytes(), b.len() as u64);
    assert_eq!(&b[q.offset as usize..][..4], &[80, 81, 82, 83]);
}

#[test]
fn open_locate_and_components() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    std::fs::write(&p, small()).unwrap();
    let f = SafetensorsFile::open(&p).unwrap();
    let t = f.tensor("model.norm.weight").unwrap();
    assert_eq!(
        locate_tensor(&p, "model.norm.weight").unwrap(),
        (t.offset, 8)
    );
    let e = locate_tensor(&p, "nope").unwrap_err().to_string();
    assert!(
        e.contains("m.safetensors") && e.contains("no tensor named `nope`"),
        "{e}"
    );
    let ck = open_checkpoint(&p).unwrap();
    let c = ck.component_bytes();
    assert_eq!(c.token_embeddings, 80);
    assert_eq!(c.decoder_layers, 64);
    assert_eq!(c.lm_head, 40);
    assert_eq!(c.other, 8 + 3);
    assert_eq!(c.total(), f.total_tensor_bytes());
    // No config.json beside it: the architecture cannot be inferred, clearly.
    let e = load_model(&p).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
}

fn err(b: &[u8]) -> String {
    SafetensorsFile::parse(b, "bad.safetensors")
        .unwrap_err()
        .to_string()
}

fn with_header(h: &str, data: usize) -> Vec<u8> {
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

#[test]
fn malformed_files_are_named_errors() {
    let e = err(&[1, 2, 3]);
    assert!(
        e.contains("bad.safetensors") && e.contains("byte 0") && e.contains("truncated"),
        "{e}"
    );
    let e = err(&u64::MAX.to_le_bytes());
    assert!(e.contains("exceeds"), "{e}");
    let mut b = 100u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(err(&b).contains("only 2 bytes follow"));
    assert!(err(&with_header("{\"a\":", 0)).contains("not valid JSON"));
    assert!(err(&with_header("[]", 0)).contains("not a JSON object"));
    let mut bad_utf8 = 2u64.to_le_bytes().to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    assert!(err(&bad_utf8).contains("UTF-8"));
    let t = |body: &str, data: usize| err(&with_header(&format!("{{\"w\":{body}}}"), data));
    assert!(
        t(r#"{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}"#, 1).contains("unknown dtype `Q9`")
    );
    assert!(
        t(r#"{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#, 8).contains("should take 8 bytes")
    );
    assert!(t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, 3).contains("outside"));
    assert!(t(r#"{"dtype":"F32","shape":[1],"data_offsets":[4,0]}"#, 8).contains("outside"));
    assert!(t(r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#, 8).contains("shape entry"));
    assert!(t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#, 8).contains("data_offsets"));
    assert!(t(
        r#"{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}"#,
        8
    )
    .contains("impossible"));
    assert!(t(r#"{"dtype":"F4","shape":[3],"data_offsets":[0,2]}"#, 8).contains("impossible"));
    let overlap = with_header(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        8,
    );
    assert!(err(&overlap).contains("overlap"));
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let b = small();
    for cut in 0..b.len() {
        let e = SafetensorsFile::parse(&b[..cut], "t.safetensors");
        assert!(e.is_err(), "prefix of {cut} bytes accepted");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

const LLAMA_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
  "max_position_embeddings": 64, "tie_word_embeddings": false
}"#;

/// config.json + two shards + index = one model with exact component bytes.
#[test]
fn sharded_directory_is_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shard1 = st_bytes(
        &[
            ("model.embed_tokens.weight", "F32", &[10, 8]),
            ("model.layers.0.self_attn.q_proj.weight", "F32", &[8, 8]),
            ("model.layers.0.self_attn.k_proj.weight", "F32", &[4, 8]),
        ],
        None,
    );
    let shard2 = st_bytes(
        &[
            ("model.layers.1.self_attn.q_proj.weight", "BF16", &[8, 8]),
            ("model.norm.weight", "F32", &[8]),
            ("lm_head.weight", "BF16", &[10, 8]),
        ],
        None,
    );
    write(d, "model-00001-of-00002.safetensors", &shard1);
    write(d, "model-00002-of-00002.safetensors", &shard2);
    write(d, "config.json", LLAMA_CONFIG.as_bytes());
    let index = r#"{"metadata": {"total_size": 1000}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.self_attn.k_proj.weight": "model-00001-of-00002.safetensors",
        "model.layers.1.self_attn.q_proj.weight": "model-00002-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}"#;
    write(d, "model.safetensors.index.json", index.as_bytes());

    let s = ShardedSafetensors::open(&d.join("model.safetensors.index.json")).unwrap();
    assert_eq!(s.shards.len(), 2);
    assert_eq!(s.tensors().count(), 6);
    assert_eq!(s.total_tensor_bytes(), 320 + 256 + 128 + 128 + 32 + 160);

    for p in [
        d.to_path_buf(),
        d.join("config.json"),
        d.join("model.safetensors.index.json"),
    ] {
        let (arch, bytes) = load_model(&p).unwrap();
        assert_eq!(arch.num_hidden_layers, 2, "{}", p.display());
        assert!(!arch.embeddings_tied);
        assert_eq!(bytes.token_embeddings, 320);
        assert_eq!(bytes.decoder_layers, 256 + 128 + 128);
        assert_eq!(bytes.lm_head, 160);
        assert_eq!(bytes.other, 32);
        // Parameters from the tensors: 80 + 64 + 32 + 64 + 8 + 80.
        assert!(
            (arch.param_count_b - 328e-9).abs() < 1e-15,
            "{}",
            arch.param_count_b
        );
        let bits = (320 + 256 + 128 + 128 + 32 + 160) as f64 * 8.0 / 328.0;
        assert!((arch.weight_dtype_bits - bits).abs() < 1e-9);
    }
    let ck = open_checkpoint(d).unwrap();
    assert!(ck.tensors.iter().any(|t| t.component == Component::LmHead));

    // An index naming a tensor its shard lacks is refused.
    let bad = index.replace(
        "\"model.norm.weight\": \"model-00002",
        "\"model.nope\": \"model-00002",
    );
    write(d, "model.safetensors.index.json", bad.as_bytes());
    let e = load_model(d).unwrap_err().to_string();
    assert!(e.contains("model.nope"), "{e}");
    // So is one escaping the directory.
    write(
        d,
        "model.safetensors.index.json",
        br#"{"weight_map": {"a": "../x.safetensors"}}"#,
    );
    assert!(load_model(d).unwrap_err().to_string().contains("outside"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_files_never_panic(pos in 0usize..4096, val in any::<u8>()) {
        let mut b = small();
        let i = pos % b.len();
        b[i] = val;
        if let Ok(f) = SafetensorsFile::parse(&b, "c.safetensors") {
            for t in f.tensors() {
                prop_assert!(t.offset + t.n_bytes <= b.len() as u64);
            }
        }
    }
}

#[test]
fn gaps_and_trailing_bytes_are_named() {
    let two = |second: u64, data: usize| {
        err(&with_header(
            &format!(
                r#"{{"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"b":{{"dtype":"F32","shape":[1],"data_offsets":[{second},{}]}}}}"#,
                second + 4
            ),
            data,
        ))
    };
    let e = two(8, 12);
    assert!(e.contains("4 unused bytes before tensor `b`"), "{e}");
    let e = two(4, 12);
    assert!(e.contains("4 bytes after the last tensor"), "{e}");
}

#[test]
fn weights_read_tensor_bytes_single_and_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let b = small();
    std::fs::write(&p, &b).unwrap();
    let w = Weights::open(&p).unwrap();
    assert_eq!(w.metadata.get("format").map(String::as_str), Some("pt"));
    let list = w.list_tensors();
    assert_eq!(list.len(), 5);
    let q = &list[1];
    assert_eq!(
        (q.name.as_str(), q.dtype, q.shape.clone(), q.n_bytes),
        (
            "model.layers.0.self_attn.q_proj.weight",
            DType::F32,
            vec![4, 4],
            64
        )
    );
    let mut buf = vec![0u8; 64];
    w.read_tensor_into(&q.name, &mut buf).unwrap();
    assert_eq!(&buf[..4], &[80, 81, 82, 83]);
    let e = w
        .read_tensor_into(&q.name, &mut [0u8; 3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m.safetensors") && e.contains("q_proj") && e.contains("64 needed"),
        "{e}"
    );
    let e = w
        .read_tensor_into("nope", &mut buf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tensor named `nope`"), "{e}");
    assert_eq!(w.input_files(), [p.as_path(), p.as_path()]);

    // Sharded: one name space over both shards, bytes from the right file.
    let d = dir.path().join("sharded");
    std::fs::create_dir(&d).unwrap();
    write(
        &d,
        "a.safetensors",
        &st_bytes(&[("x", "F32", &[2]), ("y", "BF16", &[3])], None),
    );
    write(&d, "b.safetensors", &st_bytes(&[("z", "U8", &[5])], None));
    write(
        &d,
        "model.safetensors.index.json",
        br#"{"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}"#,
    );
    let w = Weights::open(&d).unwrap();
    let names: Vec<_> = w.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "z"]);
    let mut z = vec![0u8; 5];
    w.read_tensor_into("z", &mut z).unwrap();
    assert_eq!(z, [0, 1, 2, 3, 4]);
    assert_eq!(w.input_files().len(), 3);
    assert!(w.file_of(w.get("z").unwrap()).ends_with("b.safetensors"));
    // A directory with neither layout says what it expected.
    let e = Weights::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors.index.json"), "{e}");
}
