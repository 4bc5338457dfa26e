//! The body of every fuzz target, shared by `cargo fuzz` (fuzz_targets/*.rs) and by the
//! seed replay in the normal test run (crates/dhurandhar-cli/tests/fuzz_seeds.rs), so
//! the committed seeds exercise exactly what was fuzzed. Each function must return for
//! any input: Ok or Err from the parser, never a panic, a hang or an unbounded
//! allocation.
#![allow(dead_code)] // each fuzz binary uses one of these functions

use dhurandhar_checkpoint::gguf::GgufFile;
use dhurandhar_checkpoint::safetensors::SafetensorsFile;
use dhurandhar_pack::format::{parse_index, FOOTER_MAGIC, HEADER_LEN, MAGIC, VERSION};

/// GGUF header parser; validated ranges must be sliceable.
pub fn gguf_header(data: &[u8]) {
    if let Ok(f) = GgufFile::parse(data, "fuzz.gguf") {
        if f.check_ranges(data.len() as u64, "fuzz.gguf").is_ok() {
            for t in &f.tensors {
                assert!(f.tensor_data(t, data).is_some());
            }
        }
        let _ = f.architecture();
        let _ = dhurandhar_checkpoint::arch_from_gguf(&f, "fuzz.gguf");
    }
}

/// safetensors header parser; every accepted tensor lies inside the input.
pub fn safetensors_header(data: &[u8]) {
    if let Ok(f) = SafetensorsFile::parse(data, "fuzz.safetensors") {
        for t in f.tensors() {
            assert!(t.offset >= f.data_offset);
            assert!(t.offset + t.n_bytes <= data.len() as u64);
        }
    }
}

/// config.json → architecture; a validated one yields a KV size.
pub fn config_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(arch) = dhurandhar_checkpoint::arch_from_config_json(text, "fuzz/config.json") {
            if arch.num_hidden_layers <= 4096 {
                let _ = arch.kv_cache_bytes(1024, 16.0);
            }
        }
    }
}

/// Model and device YAML profiles.
pub fn yaml_profiles(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(arch) = dhurandhar_model::ModelArchitecture::from_yaml_str(text, "fuzz/model.yaml") {
        if arch.num_hidden_layers <= 4096 {
            let _ = arch.kv_cache_bytes(1024, 16.0);
        }
    }
    let _ = dhurandhar_plan::DeviceProfile::from_yaml_str(text, "fuzz/device.yaml", "fuzz");
}

fn check_pack(file: &[u8]) {
    if let Ok(index) = parse_index(file, std::path::Path::new("fuzz.dhp")) {
        for t in &index.tensors {
            for c in &t.chunks {
                assert!(c.offset() >= HEADER_LEN as u64);
                assert!(c.offset() + c.len() <= file.len() as u64);
            }
        }
    }
}

/// The `.dhp` header/footer/index parser, on the input as a whole file and on the
/// input as index text inside a valid header and checksummed footer (so mutations get
/// past the checksum to the index validation).
pub fn pack_index(data: &[u8]) {
    check_pack(data);
    let mut file = vec![0u8; HEADER_LEN + 64];
    file[..8].copy_from_slice(&MAGIC);
    file[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let at = file.len() as u64;
    file.extend_from_slice(data);
    file.extend_from_slice(&at.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
    file.extend_from_slice(&FOOTER_MAGIC);
    check_pack(&file);
}

/// The whole `.dhp` reader through a file: open, deep verify, read every tensor.
pub fn pack_reader(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("dhp-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.dhp");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(reader) = dhurandhar_pack::PackReader::open(&path) else {
        return;
    };
    let _ = reader.verify(true);
    for t in reader.tensors() {
        if t.raw_bytes <= 1 << 24 {
            let _ = reader.read_tensor(&t.name);
        }
        if t.quant.is_some() {
            let _ = reader.load_quant(&t.name);
        }
    }
}
