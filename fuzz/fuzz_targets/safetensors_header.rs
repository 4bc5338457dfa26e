//! safetensors header parser on arbitrary bytes: Ok or Err, never a panic; every
//! accepted tensor lies inside the input.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::safetensors_header(data));
