//! The `.dhp` header, footer and JSON index parser on bytes held in memory (no file
//! per run, so it runs far faster than `pack_reader`): Ok (a validated index whose
//! chunks all lie inside the data region) or Err, never a panic.
//!
//! Each input is tried twice: as a whole file, and as index text wrapped in a valid
//! header and footer with its checksum, so mutations reach the index validation
//! instead of stopping at the checksum.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::pack_index(data));
