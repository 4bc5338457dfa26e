//! GGUF header parser on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate beyond what the input can justify.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gguf_header(data));
