//! Fuzz the .dhp reader: arbitrary bytes must open (or fail) and every tensor must
//! verify / decode (or fail) without panicking or allocating from untrusted lengths.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("dhp-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.dhp");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(reader) = dhurandhar_pack::PackReader::open(&path) else {
        return;
    };
    let _ = reader.verify(true);
    for t in reader.tensors() {
        // Bounded: open() validated raw_bytes against shape; skip huge claims.
        if t.raw_bytes <= 1 << 24 {
            let _ = reader.read_tensor(&t.name);
        }
        if t.quant.is_some() {
            let _ = reader.load_quant(&t.name);
        }
    }
});
