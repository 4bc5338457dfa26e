//! GGUF reader: round trips, exact sizes of every ggml type, and malformed input.

use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufFile, GgufValue};
use dhurandhar_checkpoint::CheckpointError;
use proptest::prelude::*;

fn every_value_type() -> Vec<(&'static str, GgufValue)> {
    use GgufValue::*;
    vec![
        ("t.u8", U8(200)),
        ("t.i8", I8(-5)),
        ("t.u16", U16(60000)),
        ("t.i16", I16(-30000)),
        ("t.u32", U32(4_000_000_000)),
        ("t.i32", I32(-2_000_000_000)),
        ("t.u64", U64(u64::MAX)),
        ("t.i64", I64(i64::MIN)),
        ("t.f32", F32(1.5)),
        ("t.f64", F64(-2.25e300)),
        ("t.bool", Bool(true)),
        ("t.string", String("héllo ✓".into())),
        ("t.empty_string", String(std::string::String::new())),
        ("t.array_u32", Array(vec![U32(1), U32(2), U32(3)])),
        (
            "t.array_str",
            Array(vec![String("a".into()), String("bc".into())]),
        ),
        ("t.array_empty", Array(vec![])),
        (
            "t.array_nested",
            Array(vec![Array(vec![I16(1), I16(-1)]), Array(vec![I16(7)])]),
        ),
    ]
}

fn sample(version: u32, alignment: u64) -> (GgufBuilder, Vec<u8>) {
    let mut b = GgufBuilder::new().version(version).alignment(alignment);
    for (k, v) in every_value_type() {
        b = b.kv(k, v);
    }
    b = b
        .kv("general.architecture", GgufValue::String("llama".into()))
        .tensor_filled("token_embd.weight", &[64, 10], GgmlType::Q8_0)
        .tensor_filled("blk.0.attn_q.weight", &[256, 3], GgmlType::Q4K)
        .tensor_filled("blk.0.attn_norm.weight", &[7], GgmlType::F32)
        .tensor_filled("output_norm.weight", &[5, 1, 1], GgmlType::F16);
    let bytes = b.to_bytes().unwrap();
    (b, bytes)
}

#[test]
fn round_trip_v2_and_v3_with_every_value_type() {
    for (version, alignment) in [(3, 32), (2, 32), (3, 64), (3, 1)] {
        let (_, bytes) = sample(version, alignment);
        let f = GgufFile::parse(&bytes, "mem.gguf").unwrap();
        assert_eq!(f.version, version);
        assert_eq!(f.alignment, alignment);
        assert_eq!(f.data_offset % alignment, 0);
        for (k, v) in every_value_type() {
            assert_eq!(f.get(k), Some(&v), "{k}");
        }
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.get_u64("t.u32"), Some(4_000_000_000));
        assert_eq!(f.get_u64("t.i8"), None, "negative is not a u64");
        assert_eq!(f.get_f32("t.f32"), Some(1.5));
        assert_eq!(f.get_str("t.string"), Some("héllo ✓"));
        f.check_ranges(bytes.len() as u64, "mem.gguf").unwrap();
        let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "token_embd.weight",
                "blk.0.attn_q.weight",
                "blk.0.attn_norm.weight",
                "output_norm.weight"
            ]
        );
        let q = f.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.shape, vec![256, 3]);
        assert_eq!(q.ggml_type, GgmlType::Q4K);
        assert_eq!(q.n_bytes, 3 * 144);
        assert_eq!(q.offset % alignment, 0);
        // Data comes back byte for byte at the absolute offset.
        for t in &f.tensors {
            let data = f.tensor_data(t, &bytes).unwrap();
            assert_eq!(data.len() as u64, t.n_bytes);
            assert!(
                data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                "{}",
                t.name
            );
        }
        assert_eq!(f.tensor("output_norm.weight").unwrap().n_bytes, 10);
    }
}

#[test]
fn open_reads_a_file_and_checks_ranges() {
    let (_, bytes) = sample(3, 32);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors.len(), 4);
    // Drop the last byte: the last tensor now ends past the end of the file.
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = GgufFile::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("m.gguf") && e.contains("output_norm.weight") && e.contains("past the end"),
        "{e}"
    );
}

/// Hand-copied from ggml-common.h: (id, name, elements per block, bytes per block).
const GGML_TABLE: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (31, "Q4_0_4_4", 32, 18),
    (32, "Q4_0_4_8", 32, 18),
    (33, "Q4_0_8_8", 32, 18),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (36, "IQ4_NL_4_4", 32, 18),
    (37, "IQ4_NL_4_8", 32, 18),
    (38, "IQ4_NL_8_8", 32, 18),
    (39, "MXFP4", 32, 17),
];

#[test]
fn every_ggml_type_has_the_ggml_block_layout() {
    assert_eq!(GGML_TABLE.len(), GgmlType::ALL.len());
    for &(id, name, block, bytes) in GGML_TABLE {
        let t = GgmlType::from_u32(id).unwrap_or_else(|| panic!("id {id}"));
        assert_eq!(t.id(), id);
        assert_eq!(t.name(), name, "id {id}");
        assert_eq!(t.block_size(), block, "{name}");
        assert_eq!(t.type_size(), bytes, "{name}");
        // A 2-row tensor of 512 columns: 512/block blocks per row.
        assert_eq!(
            t.tensor_bytes(&[512, 2]),
            Some(2 * 512 / block * bytes),
            "{name}"
        );
    }
    for gone in [4, 5, 40, 1000] {
        assert!(GgmlType::from_u32(gone).is_none(), "{gone}");
    }
    // Row length not a multiple of the block: no size.
    assert_eq!(GgmlType::Q4K.tensor_bytes(&[100, 2]), None);
    assert_eq!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]), None);
    assert!((GgmlType::Q4_1.bits_per_weight() - 5.0).abs() < 1e-12);
}

#[test]
fn every_type_round_trips_through_a_file() {
    let mut b = GgufBuilder::new();
    for t in GgmlType::ALL {
        b = b.tensor_filled(&format!("t.{}", t.name()), &[256, 2], t);
    }
    let bytes = b.to_bytes().unwrap();
    let f = GgufFile::parse(&bytes, "types.gguf").unwrap();
    f.check_ranges(bytes.len() as u64, "types.gguf").unwrap();
    for (t, info) in GgmlType::ALL.iter().zip(&f.tensors) {
        assert_eq!(info.ggml_type, *t);
        assert_eq!(info.n_bytes, 2 * 256 / t.block_size() * t.type_size());
    }
}

/// Every strict prefix of a valid file is refused — by the header parser, or by the
/// range check for prefixes that keep the header but cut the data — and never panics.
#[test]
fn truncation_at_every_offset_is_an_error() {
    let (_, bytes) = sample(3, 32);
    let full = GgufFile::parse(&bytes, "t.gguf").unwrap();
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        match GgufFile::parse(prefix, "t.gguf") {
            Err(e) => {
                let s = e.to_string();
                assert!(s.starts_with("t.gguf: "), "{s}");
                assert!(
                    (cut as u64) < full.data_offset,
                    "header parse failed at {cut}: {s}"
                );
            }
            Ok(f) => {
                assert!(
                    f.check_ranges(cut as u64, "t.gguf").is_err(),
                    "cut {cut} accepted"
                );
            }
        }
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

fn err(bytes: &[u8]) -> String {
    GgufFile::parse(bytes, "bad.gguf").unwrap_err().to_string()
}

#[test]
fn malformed_headers_are_named_errors() {
    let e = err(b"GGML\x03\x00\x00\x00");
    assert!(
        e.contains("bad.gguf") && e.contains("byte 0") && e.contains("bad magic"),
        "{e}"
    );
    let e = err(&header(1, 0, 0));
    assert!(e.contains("version 1"), "{e}");
    let e = err(&header(3u32.swap_bytes(), 0, 0));
    assert!(e.contains("big-endian"), "{e}");
    let e = err(&header(7, 0, 0));
    assert!(e.contains("unknown GGUF version 7"), "{e}");
    // Absurd counts fail before allocating.
    let e = err(&header(3, 1 << 60, 0));
    assert!(e.contains("byte 8") && e.contains("tensor count"), "{e}");
    let e = err(&header(3, 0, u64::MAX));
    assert!(
        e.contains("byte 16") && e.contains("metadata key/value count"),
        "{e}"
    );

    // A key whose length exceeds the file.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let e = err(&b);
    assert!(
        e.contains("byte 24") && e.contains("length of metadata key"),
        "{e}"
    );

    // Bad UTF-8 in a key.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xfe]);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    let e = err(&b);
    assert!(e.contains("byte 32") && e.contains("UTF-8"), "{e}");

    // Unknown value type, huge array, bad bool, deep nesting.
    let kv = |t: u32, payload: &[u8]| {
        let mut b = header(3, 0, 1);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(payload);
        b
    };
    assert!(err(&kv(13, &[0; 8])).contains("unknown metadata value type 13"));
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&(1u64 << 50).to_le_bytes());
    let e = err(&kv(9, &arr));
    assert!(e.contains("array length") && e.contains("`k`"), "{e}");
    assert!(err(&kv(7, &[2])).contains("bool value is 2"));
    let mut deep = Vec::new();
    for _ in 0..6 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    assert!(err(&kv(9, &deep)).contains("nested deeper"));
}

fn one_tensor(n_dims: u32, dims: &[u64], ty: u32, rel: u64, alignment: Option<u32>) -> Vec<u8> {
    let mut out = header(3, 1, alignment.is_some() as u64);
    if let Some(a) = alignment {
        let key = b"general.alignment";
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&a.to_le_bytes());
    }
    out.extend_from_slice(&1u64.to_le_bytes());
    out.push(b'w');
    out.extend_from_slice(&n_dims.to_le_bytes());
    for d in dims {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&rel.to_le_bytes());
    out.resize(out.len() + 4096, 0);
    out
}

#[test]
fn malformed_tensor_infos_are_named_errors() {
    let ok = one_tensor(2, &[32, 2], 8, 0, None);
    let f = GgufFile::parse(&ok, "bad.gguf").unwrap();
    assert_eq!(f.tensors[0].n_bytes, 68);
    let e = err(&one_tensor(5, &[1, 1, 1, 1, 1], 0, 0, None));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = err(&one_tensor(1, &[32], 99, 0, None));
    assert!(
        e.contains("unknown ggml type 99") && e.contains("`w`"),
        "{e}"
    );
    let e = err(&one_tensor(1, &[33], 8, 0, None));
    assert!(e.contains("whole number of Q8_0 blocks"), "{e}");
    let e = err(&one_tensor(1, &[32], 0, 7, None));
    assert!(e.contains("not a multiple of the alignment 32"), "{e}");
    let e = err(&one_tensor(1, &[1 << 63], 0, 0, None));
    assert!(e.contains("negative"), "{e}");
    let e = err(&one_tensor(2, &[1 << 40, 1 << 40], 0, 0, None));
    assert!(e.contains("too large"), "{e}");
    let e = err(&one_tensor(1, &[32], 0, u64::MAX - 31, None));
    assert!(e.contains("overflows"), "{e}");
    let e = err(&one_tensor(1, &[32], 0, 0, Some(3)));
    assert!(e.contains("power of two"), "{e}");
    // Offset far past the end: parse accepts the header, the range check refuses.
    let far = one_tensor(1, &[32], 0, 1 << 30, None);
    let f = GgufFile::parse(&far, "bad.gguf").unwrap();
    let e = f
        .check_ranges(far.len() as u64, "bad.gguf")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("past the end") && e.contains(&format!("byte {}", f.tensors[0].offset)),
        "{e}"
    );
}

#[test]
fn duplicates_are_refused() {
    let b = GgufBuilder::new()
        .kv("a", GgufValue::U8(1))
        .kv("a", GgufValue::U8(2))
        .to_bytes()
        .unwrap();
    assert!(err(&b).contains("duplicate metadata key `a`"));
    let b = GgufBuilder::new()
        .tensor_filled("w", &[4], GgmlType::F32)
        .tensor_filled("w", &[4], GgmlType::F32)
        .to_bytes()
        .unwrap();
    assert!(err(&b).contains("duplicate tensor name `w`"));
}

#[test]
fn errors_are_typed() {
    let e = GgufFile::parse(b"GGU", "x.gguf").unwrap_err();
    assert!(
        matches!(e, CheckpointError::Malformed { offset: 0, .. }),
        "{e:?}"
    );
    let e = GgufFile::parse(&header(1, 0, 0), "x.gguf").unwrap_err();
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{e:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    /// Random bytes after a valid magic and version never panic.
    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = header(3, 0, 0)[..8].to_vec();
        b.extend_from_slice(&tail);
        if let Ok(f) = GgufFile::parse(&b, "r.gguf") {
            let _ = f.check_ranges(b.len() as u64, "r.gguf");
        }
    }

    /// Corrupting any byte of a valid file never panics, and a successful parse only
    /// reports tensors that pass or fail the range check cleanly.
    #[test]
    fn corrupted_files_never_panic(pos in 0usize..2000, val in any::<u8>()) {
        let (_, mut b) = sample(3, 32);
        let i = pos % b.len();
        b[i] = val;
        if let Ok(f) = GgufFile::parse(&b, "c.gguf") {
            if f.check_ranges(b.len() as u64, "c.gguf").is_ok() {
                for t in &f.tensors {
                    prop_assert!(f.tensor_data(t, &b).is_some());
                }
            }
        }
    }
}

#[test]
fn split_gguf_is_one_model() {
    use dhurandhar_checkpoint::{load_model, open_checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let first = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("split.no", GgufValue::U16(0))
        .kv("split.count", GgufValue::U16(2))
        .kv("llama.block_count", GgufValue::U32(1))
        .kv("llama.embedding_length", GgufValue::U32(32))
        .kv("llama.attention.head_count", GgufValue::U32(2))
        .kv("llama.feed_forward_length", GgufValue::U32(64))
        .tensor_filled("token_embd.weight", &[32, 50], GgmlType::F16);
    let second = GgufBuilder::new()
        .kv("split.no", GgufValue::U16(1))
        .kv("split.count", GgufValue::U16(2))
        .tensor_filled("blk.0.attn_q.weight", &[32, 32], GgmlType::Q8_0)
        .tensor_filled("output.weight", &[32, 50], GgmlType::Q8_0);
    let p1 = dir.path().join("m-00001-of-00002.gguf");
    let p2 = dir.path().join("m-00002-of-00002.gguf");
    std::fs::write(&p1, first.to_bytes().unwrap()).unwrap();
    std::fs::write(&p2, second.to_bytes().unwrap()).unwrap();
    let ck = open_checkpoint(&p1).unwrap();
    assert_eq!(ck.tensors.len(), 3);
    assert_eq!(ck.tensors[2].file, p2);
    let (a, b) = load_model(&p1).unwrap();
    assert!(
        !a.embeddings_tied,
        "output.weight lives in the second split"
    );
    assert_eq!(
        (b.token_embeddings, b.decoder_layers, b.lm_head),
        (3200, 1088, 1700)
    );
    let e = load_model(&p2).unwrap_err().to_string();
    assert!(e.contains("split 2 of 2"), "{e}");
    std::fs::remove_file(&p2).unwrap();
    let e = load_model(&p1).unwrap_err().to_string();
    assert!(e.contains("split 2 is missing"), "{e}");
}

/// A header claiming more tensors than any checkpoint has is refused before its table
/// is parsed (the bytes for that many minimal entries are present, so only the cap
/// can refuse it).
#[test]
fn tensor_count_over_the_cap_is_refused() {
    let n = dhurandhar_checkpoint::safetensors::MAX_TENSORS as u64 + 1;
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.resize(bytes.len() + 24 * n as usize, 0);
    let err = dhurandhar_checkpoint::gguf::GgufFile::parse(&bytes, "many.gguf")
        .unwrap_err()
        .to_string();
    assert!(err.contains("many.gguf"), "{err}");
    assert!(err.contains(&format!("tensor count is {n}")), "{err}");
}
