//! config.json → architecture on arbitrary text: Ok (a validated architecture whose
//! layer table can be built) or Err, never a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_json(data));
