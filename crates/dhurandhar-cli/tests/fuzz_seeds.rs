//! Replays the fuzzing seeds kept in `fuzz/seeds/<target>/` (the minimised corpora of
//! the cargo-fuzz runs, plus any input that once crashed a target) through the very
//! functions the fuzz targets call (`fuzz/checks.rs`), so a regression shows up in the
//! normal test run without cargo-fuzz or a nightly toolchain. See docs/reliability.md.

#[path = "../../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// A fuzz target's body.
type Check = fn(&[u8]);

#[test]
fn fuzz_seeds_replay_cleanly() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let targets: [(&str, Check); 6] = [
        ("gguf_header", checks::gguf_header),
        ("safetensors_header", checks::safetensors_header),
        ("config_json", checks::config_json),
        ("yaml_profiles", checks::yaml_profiles),
        ("pack_index", checks::pack_index),
        ("pack_reader", checks::pack_reader),
    ];
    let mut total = 0;
    for (target, check) in targets {
        let dir = seeds.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            // A panic here names the seed: rerun it with the fuzz target to debug.
            eprintln!("{}", f.display());
            check(&bytes);
        }
        total += files.len();
    }
    eprintln!("{total} seeds replayed");
}
