//! Locating the real-model fixtures (never committed; fetched by
//! `scripts/fetch_fixtures.py`, which `scripts/test.sh` runs first), and the comparison
//! against llama.cpp goldens ([`llama_cpp`]).

use std::path::PathBuf;

pub mod llama_cpp;

/// The SmolLM2-135M-Instruct Q4_1 GGUF (llama architecture, Apache-2.0).
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// all-MiniLM-L6-v2 float32 safetensors (MIT).
pub const MINILM_SAFETENSORS: &str = "all-MiniLM-L6-v2.safetensors";

/// Directory holding the fixtures: `$DHURANDHAR_FIXTURES`, else `<workspace>/.cache/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("DHURANDHAR_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fixtures"),
    }
}

/// Path of fixture `name`, or `None` when it has not been fetched.
///
/// With `DHURANDHAR_REQUIRE_FIXTURES=1` (set by `scripts/test.sh`, so in CI) a missing
/// fixture panics instead: the real-model tests must not silently skip there.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = fixtures_dir().join(name);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("DHURANDHAR_REQUIRE_FIXTURES").as_deref() == Ok("1") {
        panic!(
            "fixture {} missing; run `python3 scripts/fetch_fixtures.py`",
            p.display()
        );
    }
    eprintln!(
        "skipping: fixture {} not fetched (run scripts/fetch_fixtures.py)",
        p.display()
    );
    None
}
