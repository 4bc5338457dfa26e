//! Locating the real-model fixtures (never committed; fetched by
//! `scripts/fetch_fixtures.py`, which `scripts/test.sh` runs first), making the tiny
//! random-weight models of every architecture ([`tiny_models`]), and the comparison
//! against llama.cpp goldens ([`llama_cpp`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

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
    if require() {
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

fn require() -> bool {
    std::env::var("DHURANDHAR_REQUIRE_FIXTURES").as_deref() == Ok("1")
}

/// The tiny models' directory and `(name, sha256)` of each file (`tiny-<name>.gguf`).
pub type TinyModels = (PathBuf, Vec<(String, String)>);

/// The tiny random-weight models of `scripts/make_tiny_models.py` (one per architecture,
/// the SmolLM2 fixture's vocabulary), made once per test binary into
/// `<workspace>/.cache/tiny-models`; `None` (after printing why) when they cannot be
/// made here — python3 or its `gguf` package missing — which panics under
/// `DHURANDHAR_REQUIRE_FIXTURES=1`.
pub fn tiny_models() -> Option<&'static TinyModels> {
    static MODELS: OnceLock<Option<TinyModels>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let (dir, out) = make_tiny_models(&[], "the tiny models")?;
            let shas = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let (path, sha) = l.rsplit_once(' ')?;
                    let stem = Path::new(path).file_stem()?.to_str()?;
                    Some((
                        stem.trim_start_matches("tiny-").to_string(),
                        sha.to_string(),
                    ))
                })
                .collect();
            Some((dir, shas))
        })
        .as_ref()
}

/// Run `scripts/make_tiny_models.py` (the SmolLM2 fixture's vocabulary, `args` naming
/// the models; none: the default set) into `<workspace>/.cache/tiny-models`: that
/// directory and the script's output (`path sha256` per file), or `None` as for
/// [`python_script`].
fn make_tiny_models(args: &[&str], what: &str) -> Option<(PathBuf, Output)> {
    let vocab = fixture(SMOLLM2_GGUF)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join(".cache/tiny-models");
    let out = python_script(
        Command::new("python3")
            .arg(root.join("scripts/make_tiny_models.py"))
            .arg("--vocab-from")
            .arg(&vocab)
            .arg("--out")
            .arg(&dir)
            .args(args),
        what,
    )?;
    Some((dir, out))
}

/// Run one of the repository's Python scripts that need the `gguf` package (they exit
/// with status 3 when it cannot be imported): its output, or `None` (after printing why
/// `what` is skipped) when Python or the package is missing here — which panics under
/// `DHURANDHAR_REQUIRE_FIXTURES=1`. Any other failure panics with the script's stderr.
pub fn python_script(cmd: &mut Command, what: &str) -> Option<Output> {
    let reason = match cmd.output() {
        Err(e) => format!("python3 cannot run: {e}"),
        Ok(o) if o.status.code() == Some(3) => {
            String::from_utf8_lossy(&o.stderr).trim().to_string()
        }
        Ok(o) if !o.status.success() => {
            panic!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr))
        }
        Ok(o) => return Some(o),
    };
    if require() {
        panic!("DHURANDHAR_REQUIRE_FIXTURES=1 but {what} cannot be made: {reason}");
    }
    eprintln!("skipping {what}: {reason}");
    None
}

/// The MoE benchmark model of `scripts/make_tiny_models.py` (`moe-bench`: Qwen3-MoE
/// layout, 8 layers of 32 experts of width 512, Q8_0, 238 MiB — experts large enough
/// that the allocator's handling of their buffers shows in the RSS), made once per test
/// binary into `<workspace>/.cache/tiny-models`; `None` as for [`tiny_models`].
pub fn moe_bench_model() -> Option<PathBuf> {
    static MODEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let (dir, _) = make_tiny_models(&["moe-bench"], "the MoE benchmark model")?;
            Some(dir.join("tiny-moe-bench.gguf"))
        })
        .clone()
}

/// Path of tiny model `name` (`llama`, `qwen2moe`, …; see [`tiny_models`]).
pub fn tiny_model(name: &str) -> Option<PathBuf> {
    let (dir, _) = tiny_models()?;
    Some(dir.join(format!("tiny-{name}.gguf")))
}
