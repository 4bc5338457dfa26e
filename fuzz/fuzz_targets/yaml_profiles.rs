//! Model and device YAML profiles on arbitrary text: Ok (a validated profile) or Err,
//! never a panic, a hang or an allocation the text cannot justify.
#![no_main]

use dhurandhar_model::ModelArchitecture;
use dhurandhar_plan::DeviceProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(arch) = ModelArchitecture::from_yaml_str(text, "fuzz/model.yaml") {
        // A validated profile must yield its layer table and a KV size without panicking.
        if arch.num_hidden_layers <= 4096 {
            let _ = arch.kv_cache_bytes(1024, 16.0);
        }
    }
    let _ = DeviceProfile::from_yaml_str(text, "fuzz/device.yaml", "fuzz");
});
