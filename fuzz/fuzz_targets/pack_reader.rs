//! Fuzz the .dhp reader: arbitrary bytes must open (or fail) and every tensor must
//! verify / decode (or fail) without panicking or allocating from untrusted lengths.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::pack_reader(data));
