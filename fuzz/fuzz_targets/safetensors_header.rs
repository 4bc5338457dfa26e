//! safetensors header parser on arbitrary bytes: Ok or Err, never a panic; every
//! accepted tensor lies inside the input.
#![no_main]

use dhurandhar_checkpoint::safetensors::SafetensorsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = SafetensorsFile::parse(data, "fuzz.safetensors") {
        for t in f.tensors() {
            assert!(t.offset >= f.data_offset);
            assert!(t.offset + t.n_bytes <= data.len() as u64);
        }
    }
});
