//! GGUF packs: a GGUF held whole (header, every quant type's blocks, padding) comes back
//! byte for byte; positioned reads of any range equal the file's bytes; damage is named;
//! a GGUF that a pack could not restore is refused.

use std::path::Path;

use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufValue};
use dhurandhar_pack::{pack_gguf, unpack, GgufPackReader, PackError, PackOptions, PackReader};
use rand::{Rng, SeedableRng};

/// A GGUF with a tensor of each common type (random bytes with skewed scale bytes, as
/// real blocks have), odd sizes so tensors straddle chunks, and 32-byte padding.
fn sample_gguf() -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut b = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("general.name", GgufValue::String("pack test".into()));
    let types = [
        (GgmlType::Q4K, 512, 9),
        (GgmlType::Q6K, 256, 7),
        (GgmlType::Q8_0, 96, 33),
        (GgmlType::Q4_0, 64, 17),
        (GgmlType::Q4_1, 32, 40),
        (GgmlType::Q5_0, 64, 11),
        (GgmlType::Q2K, 256, 3),
        (GgmlType::F16, 24, 5),
        (GgmlType::F32, 13, 1),
        (GgmlType::I32, 7, 1),
    ];
    for (i, (t, row, rows)) in types.into_iter().enumerate() {
        let n = t.tensor_bytes(&[row, rows]).unwrap() as usize;
        let data = (0..n)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    rng.gen_range(0..8)
                } else {
                    rng.gen()
                }
            })
            .collect();
        b = b.tensor(&format!("t{i}.{t}"), &[row, rows], t, data);
    }
    b.to_bytes().unwrap()
}

fn small_chunks() -> PackOptions {
    PackOptions {
        chunk_size: 1024,
        ..Default::default()
    }
}

fn nothing(_: u64) -> bool {
    true
}

fn packed(dir: &Path, opts: &PackOptions) -> (Vec<u8>, std::path::PathBuf) {
    let gguf = sample_gguf();
    let src = dir.join("m.gguf");
    std::fs::write(&src, &gguf).unwrap();
    let out = dir.join("m.dhp");
    pack_gguf(&src, &out, opts, &nothing).unwrap();
    (gguf, out)
}

#[test]
fn a_gguf_pack_unpacks_byte_for_byte_at_every_plane_threshold() {
    for saving in [0.0, 0.02, 0.10, 1.0] {
        let d = tempfile::tempdir().unwrap();
        let opts = PackOptions {
            min_plane_saving: Some(saving),
            ..small_chunks()
        };
        let (gguf, pack) = packed(d.path(), &opts);
        let r = PackReader::open(&pack).unwrap();
        r.verify(true).unwrap();
        let back = d.path().join("back.gguf");
        let rep = unpack(&r, &back, &nothing).unwrap();
        assert_eq!(rep.verified_bit_exact, 10);
        assert_eq!(std::fs::read(&back).unwrap(), gguf, "min saving {saving}");
    }
}

#[test]
fn positioned_reads_of_any_range_equal_the_files_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (gguf, pack) = packed(d.path(), &small_chunks());
    let r = GgufPackReader::open(&pack).unwrap();
    let head = r.gguf_header().unwrap();
    assert_eq!(head, gguf[..head.len()]);
    assert_eq!(r.gguf_len(), gguf.len() as u64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut scratch = Default::default();
    let lo = head.len();
    for _ in 0..300 {
        let a = rng.gen_range(lo..gguf.len());
        let b = rng.gen_range(a..=gguf.len().min(a + 5000));
        let mut out = vec![0xAA; b - a];
        let cost = r.read(a as u64, &mut out, &mut scratch).unwrap();
        assert_eq!(out, gguf[a..b], "bytes {a}..{b}");
        assert!(cost.bytes_read > 0 || out.iter().all(|&x| x == 0));
    }
    // Outside the tensor data: refused, not a panic.
    let mut out = [0u8; 8];
    assert!(r.read(0, &mut out, &mut scratch).is_err());
    assert!(r
        .read(gguf.len() as u64 - 4, &mut out, &mut scratch)
        .is_err());
}

#[test]
fn a_flipped_bit_in_a_chunk_is_named_by_the_positioned_reader() {
    let d = tempfile::tempdir().unwrap();
    let (gguf, pack) = packed(d.path(), &small_chunks());
    let mut bytes = std::fs::read(&pack).unwrap();
    let idx = PackReader::open(&pack).unwrap().index().clone();
    let t = &idx.tensors[1];
    let c = t.chunks[0];
    bytes[(c.offset() + c.len() / 2) as usize] ^= 0x10;
    let bad = d.path().join("bad.dhp");
    std::fs::write(&bad, &bytes).unwrap();
    let r = GgufPackReader::open(&bad).unwrap();
    let off = t.ggml.as_ref().unwrap().offset;
    let mut out = vec![0u8; 64];
    match r.read(off, &mut out, &mut Default::default()) {
        Err(PackError::ChunkChecksum { tensor, chunk, .. }) => {
            assert_eq!((tensor.as_str(), chunk), (t.name.as_str(), 0))
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // Unpacking the damaged pack fails and leaves no output.
    let out = d.path().join("out.gguf");
    assert!(unpack(&PackReader::open(&bad).unwrap(), &out, &nothing).is_err());
    assert!(!out.exists());
    let _ = gguf;
}

#[test]
fn refusals_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let mut gguf = sample_gguf();
    // A byte of padding that is not zero cannot be restored from the pack.
    let src = d.path().join("m.gguf");
    let g = dhurandhar_checkpoint::gguf::GgufFile::parse(&gguf, "m").unwrap();
    let mut spans: Vec<(u64, u64)> = g.tensors.iter().map(|t| (t.offset, t.n_bytes)).collect();
    spans.sort_unstable();
    let gap = spans
        .windows(2)
        .find(|w| w[0].0 + w[0].1 < w[1].0)
        .map(|w| (w[0].0 + w[0].1) as usize)
        .expect("the sample has padding between tensors");
    gguf[gap] = 1;
    std::fs::write(&src, &gguf).unwrap();
    let e = pack_gguf(&src, &d.path().join("x.dhp"), &small_chunks(), &nothing)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("non-zero byte at offset {gap}")) && e.contains("m.gguf"),
        "{e}"
    );
    // Quant-residual is for float checkpoints.
    std::fs::write(&src, sample_gguf()).unwrap();
    let e = pack_gguf(
        &src,
        &d.path().join("x.dhp"),
        &PackOptions {
            mode: dhurandhar_pack::PackMode::QuantResidual(Default::default()),
            ..small_chunks()
        },
        &nothing,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lossless"), "{e}");
    // An output that is the input is refused before any work.
    assert!(pack_gguf(&src, &src, &small_chunks(), &nothing).is_err());
    // A safetensors pack is not a GGUF to stream.
    let st = d.path().join("s.safetensors");
    dhurandhar_pack::write_safetensors(
        &st,
        &[("w".into(), dhurandhar_pack::DType::F32, vec![4], 16)],
        &Default::default(),
        &mut |_, sink| sink(&[0u8; 16]),
    )
    .unwrap();
    let w = dhurandhar_pack::Weights::open(&st).unwrap();
    let sp = d.path().join("s.dhp");
    dhurandhar_pack::pack(&w, &sp, &small_chunks(), &nothing).unwrap();
    let e = GgufPackReader::open(&sp).unwrap_err().to_string();
    assert!(e.contains("not a GGUF"), "{e}");
}

type IndexEdit = dyn Fn(&mut serde_json::Value);

/// Rewrite a pack's index with `edit` and a matching checksum (what a hostile file may do).
fn with_index(pack: &Path, out: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(pack).unwrap();
    let n = bytes.len();
    let off = u64::from_le_bytes(bytes[n - 32..n - 24].try_into().unwrap()) as usize;
    let mut index: serde_json::Value = serde_json::from_slice(&bytes[off..n - 32]).unwrap();
    edit(&mut index);
    let json = serde_json::to_vec(&index).unwrap();
    let mut v = bytes[..off].to_vec();
    v.extend_from_slice(&json);
    v.extend_from_slice(&(off as u64).to_le_bytes());
    v.extend_from_slice(&(json.len() as u64).to_le_bytes());
    v.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&json).to_le_bytes());
    v.extend_from_slice(b"DHPINDEX");
    std::fs::write(out, v).unwrap();
}

#[test]
fn an_index_claiming_more_than_the_pack_holds_is_refused_before_any_allocation() {
    let d = tempfile::tempdir().unwrap();
    let (_, pack) = packed(d.path(), &small_chunks());
    let bad = d.path().join("bad.dhp");
    let cases: [(&str, Box<IndexEdit>); 3] = [
        (
            "padding",
            Box::new(|i| i["gguf"]["file_bytes"] = serde_json::json!(1u64 << 60)),
        ),
        (
            "cannot come from",
            Box::new(|i| {
                i["gguf"]["data_offset"] = serde_json::json!(1u64 << 40);
                i["gguf"]["file_bytes"] = serde_json::json!(1u64 << 41);
            }),
        ),
        (
            "overlap",
            Box::new(|i| {
                let o = i["tensors"][0]["ggml"]["offset"].clone();
                i["tensors"][1]["ggml"]["offset"] = o;
            }),
        ),
    ];
    for (want, edit) in cases {
        with_index(&pack, &bad, edit);
        for e in [
            GgufPackReader::open(&bad).unwrap_err().to_string(),
            PackReader::open(&bad).unwrap_err().to_string(),
        ] {
            assert!(
                e.contains("corrupt index") && e.contains(want),
                "{want}: {e}"
            );
        }
    }
}
