//! The `.dhp` header, footer and JSON index parser on bytes held in memory (no file
//! per run, so it runs far faster than `pack_reader`): Ok (a validated index whose
//! chunks all lie inside the data region) or Err, never a panic.
#![no_main]

use dhurandhar_pack::format::{parse_index, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = parse_index(data, std::path::Path::new("fuzz.dhp")) {
        for t in &index.tensors {
            for c in &t.chunks {
                assert!(c.offset() >= HEADER_LEN as u64);
                assert!(c.offset() + c.len() <= data.len() as u64);
            }
        }
    }
});
