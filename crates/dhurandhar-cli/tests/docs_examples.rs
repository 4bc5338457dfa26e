//! The console examples of the README and `docs/*.md` run here, so no documented output
//! can go stale.
//!
//! Every ```` ```console ```` block in those files is a test: `$ cmd` lines run the
//! binaries of this crate and the lines that follow are the expected stdout + stderr,
//! where `[..]` stands for any text within a line and a line `...` for any number of
//! lines (timings, machine-dependent figures). Output recorded once on a named machine
//! (timings, runs on files the repository does not ship) lives in ```` ```text ````
//! blocks, which are not run.
//!
//! After a change of output, regenerate the blocks in place (redactions that still
//! match are kept):
//!
//! ```text
//! TRYCMD=overwrite cargo test --release -p dhurandhar-cli --test docs_examples
//! ```
//!
//! The commands run in a scratch directory that looks like the repository root for the
//! paths the examples use (`data/`, `examples/`, `.cache/fixtures/`), so a command that
//! writes a file cannot touch the checkout. Pages whose examples read the real-model
//! fixtures are skipped when the fixtures are not fetched (required in CI, like the
//! other real-model tests).

use std::path::{Path, PathBuf};

/// Pages whose console examples need no fixture.
const PAGES: &[&str] = &[
    "README.md",
    "docs/plan.md",
    "docs/kv.md",
    "docs/python-tool-compat.md",
    "docs/measure.md",
];

/// Pages whose console examples read `.cache/fixtures/*` (the fixtures from
/// `scripts/fetch_fixtures.py`).
const FIXTURE_PAGES: &[&str] = &[
    "docs/checkpoints.md",
    "docs/run.md",
    "docs/weights.md",
    "docs/lora.md",
];

/// The binaries the examples may call, by the name they are called with.
const BINS: &[(&str, &str)] = &[
    ("dhurandhar", env!("CARGO_BIN_EXE_dhurandhar")),
    (
        "dhurandhar-analyze-ple",
        env!("CARGO_BIN_EXE_dhurandhar-analyze-ple"),
    ),
    (
        "dhurandhar-benchmark-kv",
        env!("CARGO_BIN_EXE_dhurandhar-benchmark-kv"),
    ),
    (
        "dhurandhar-compare-codecs",
        env!("CARGO_BIN_EXE_dhurandhar-compare-codecs"),
    ),
    (
        "dhurandhar-profile-mmap",
        env!("CARGO_BIN_EXE_dhurandhar-profile-mmap"),
    ),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", at.display(), target.display()));
}

/// A scratch working directory with the repository paths the examples read.
fn scratch_root(root: &Path, with_fixtures: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("scratch dir");
    link(&root.join("data"), &dir.path().join("data"));
    link(&root.join("examples"), &dir.path().join("examples"));
    if with_fixtures {
        std::fs::create_dir(dir.path().join(".cache")).unwrap();
        link(
            &dhurandhar_testkit::fixtures_dir()
                .canonicalize()
                .expect("fixtures dir"),
            &dir.path().join(".cache/fixtures"),
        );
        // The malformed files of docs/checkpoints.md: two cuts of the SmolLM2 GGUF and junk.
        let gguf = std::fs::read(
            dhurandhar_testkit::fixtures_dir().join(dhurandhar_testkit::SMOLLM2_GGUF),
        )
        .expect("read the SmolLM2 fixture");
        std::fs::write(dir.path().join("cut.gguf"), &gguf[..4096]).unwrap();
        std::fs::write(dir.path().join("cut2.gguf"), &gguf[..1_800_000]).unwrap();
        std::fs::write(dir.path().join("junk.gguf"), b"hello world, not gguf").unwrap();
    }
    dir
}

#[test]
fn docs_console_examples() {
    let root = repo_root();
    // `fixture` panics under DHURANDHAR_REQUIRE_FIXTURES=1 when one is missing.
    let with_fixtures = [
        dhurandhar_testkit::SMOLLM2_GGUF,
        dhurandhar_testkit::MINILM_SAFETENSORS,
    ]
    .iter()
    .all(|name| dhurandhar_testkit::fixture(name).is_some());

    let scratch = scratch_root(&root, with_fixtures);
    // trycmd runs each command in the test process's working directory; this test
    // binary holds this one test, so changing it affects nothing else.
    std::env::set_current_dir(scratch.path()).expect("enter scratch dir");

    let cases = trycmd::TestCases::new();
    cases
        .register_bins(BINS.iter().map(|&(name, path)| (name, PathBuf::from(path))))
        .env("NO_COLOR", "1")
        .env(
            "DHURANDHAR_CACHE",
            scratch.path().join("cache").display().to_string(),
        );
    for page in PAGES {
        cases.case(root.join(page));
    }
    if with_fixtures {
        for page in FIXTURE_PAGES {
            cases.case(root.join(page));
        }
    }
    cases.run();
}
