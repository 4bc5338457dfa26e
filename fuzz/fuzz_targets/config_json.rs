//! config.json → architecture on arbitrary text: Ok (a validated architecture whose
//! layer table can be built) or Err, never a panic.
#![no_main]

use dhurandhar_checkpoint::arch_from_config_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(arch) = arch_from_config_json(text, "fuzz/config.json") {
            // Bounded by the contract's validation, so this stays cheap.
            if arch.num_hidden_layers <= 4096 {
                let _ = arch.kv_cache_bytes(1024, 16.0);
            }
        }
    }
});
