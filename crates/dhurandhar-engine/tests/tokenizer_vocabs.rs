//! Token ids against llama.cpp's own tokenizer tests: for each vocabulary-only GGUF
//! llama.cpp ships (`models/ggml-vocab-NAME.gguf`), every input of `.gguf.inp` must
//! encode to exactly the ids in `.gguf.out` (as `test-tokenizer-0` runs them: no BOS,
//! special tokens not parsed), and decode back to the input wherever llama.cpp's ids
//! do. Vocabularies we do not support must be refused with the supported list.
//! The files come from `scripts/fetch_fixtures.py` (skipped with a reason when absent).

use std::path::{Path, PathBuf};

use dhurandhar_checkpoint::gguf::GgufFile;
use dhurandhar_checkpoint::GgufTokenizer;
use dhurandhar_engine::{EngineError, Tokenizer};

fn vocab(name: &str) -> Option<PathBuf> {
    dhurandhar_testkit::fixture(&format!("llama-vocab/ggml-vocab-{name}.gguf"))
}

fn load(path: &Path) -> Result<Tokenizer, EngineError> {
    let g = GgufFile::open(path)?;
    Tokenizer::from_gguf(GgufTokenizer::read(&g), &path.display().to_string())
}

/// The cases of `NAME.gguf.inp` / `.out`: inputs separated by a marker line, one
/// line of space-separated ids per input.
fn cases(path: &Path) -> Vec<(String, Vec<u32>)> {
    let with = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        std::fs::read_to_string(PathBuf::from(p)).expect("test file next to the vocab")
    };
    let inp = with(".inp");
    let out = with(".out");
    // As test-tokenizer-0 reads it: a separator at the very end opens no new case.
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<&str> = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(&rest[..i]);
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest);
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "{}", path.display());
    inputs
        .into_iter()
        .map(str::to_string)
        .zip(outputs)
        .collect()
}

fn check(name: &str) {
    let Some(path) = vocab(name) else { return };
    let t = load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases = cases(&path);
    let mut failures = Vec::new();
    let mut round_trips = 0;
    for (text, want) in &cases {
        let got = t.encode_with(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}: ours {got:?} vs llama.cpp {want:?}"));
            continue;
        }
        // llama.cpp's own ids decode to the input: ours must round-trip too.
        if t.decode(want) == *text {
            round_trips += 1;
            assert_eq!(t.decode(&got), *text);
        }
    }
    eprintln!(
        "{name}: {}/{} cases equal llama.cpp ({round_trips} round-trip)",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $test() { check($name); } )*
    };
}

vocab_tests! {
    llama_spm => "llama-spm",
    phi_3 => "phi-3",
    gemma_4 => "gemma-4",
    llama_bpe => "llama-bpe",
    qwen2 => "qwen2",
    qwen35 => "qwen35",
    gpt_2 => "gpt-2",
    mpt => "mpt",
    starcoder => "starcoder",
    refact => "refact",
    command_r => "command-r",
    falcon => "falcon",
    deepseek_coder => "deepseek-coder",
}

#[test]
fn unsupported_pre_tokenizer_is_refused_with_the_list() {
    let Some(path) = vocab("deepseek-llm") else {
        return;
    };
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("ggml-vocab-deepseek-llm.gguf"), "{e}");
    assert!(e.contains("\"deepseek-llm\""), "{e}");
    assert!(
        e.contains(&dhurandhar_engine::tokenizer::pretok::supported_names()),
        "{e}"
    );
}

#[test]
fn unsupported_tokenizer_model_is_refused_with_the_list() {
    let Some(path) = vocab("bert-bge") else {
        return;
    };
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("\"bert\""), "{e}");
    assert!(
        e.contains(&dhurandhar_engine::tokenizer::SUPPORTED_MODELS.join(", ")),
        "{e}"
    );
}
