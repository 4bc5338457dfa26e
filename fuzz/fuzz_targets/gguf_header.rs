//! GGUF header parser on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate beyond what the input can justify.
#![no_main]

use dhurandhar_checkpoint::arch_from_gguf;
use dhurandhar_checkpoint::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::parse(data, "fuzz.gguf") {
        if f.check_ranges(data.len() as u64, "fuzz.gguf").is_ok() {
            for t in &f.tensors {
                // Validated ranges must be sliceable.
                assert!(f.tensor_data(t, data).is_some());
            }
        }
        let _ = f.architecture();
        // Architecture inference over whatever metadata survived parsing.
        let _ = arch_from_gguf(&f, "fuzz.gguf");
    }
});
