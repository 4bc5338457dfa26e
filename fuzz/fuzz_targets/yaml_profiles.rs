//! Model and device YAML profiles on arbitrary text: Ok (a validated profile) or Err,
//! never a panic, a hang or an allocation the text cannot justify.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::yaml_profiles(data));
