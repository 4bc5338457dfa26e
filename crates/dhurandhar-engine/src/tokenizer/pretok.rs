//! BPE pre-tokenizers: how text is cut into words before merges run, by the name a
//! GGUF gives in `tokenizer.ggml.pre`.
//!
//! Each pre-tokenizer is a list of patterns applied one after another, as llama.cpp
//! does: every pattern re-splits each piece the previous one produced, and the text
//! between two matches stays a piece of its own. The upstream patterns end in
//! `\s+(?!\S)|\s+` (a whitespace run leaves its last character to the next word);
//! the `regex` crate has no look-ahead, so the run is matched whole and its last
//! character given back when a non-space follows inside the same piece.

use regex::Regex;

/// Pattern families; several `tokenizer.ggml.pre` names share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's "default": punctuation runs, the GPT-2 pattern, digit runs, digit triples.
    Default,
    /// The GPT-2 pattern alone.
    Gpt2,
    /// Single digits split off first, then the GPT-2 pattern (StarCoder, SmolLM, …).
    DigitsThenGpt2,
    /// Llama 3: case-insensitive contractions, numbers in groups of up to three.
    Llama3,
    /// Qwen 2: like Llama 3 with single digits.
    Qwen2,
    /// Qwen 3.5: like Qwen 2 with combining marks kept on their letters.
    Qwen35,
    /// Falcon: punctuation runs, the GPT-2 pattern, ASCII digit triples.
    Falcon,
    /// DeepSeek Coder: newlines, letter runs, punctuation runs, CJK runs, digits.
    DeepseekCoder,
    /// Gemma 4 (SentencePiece-style BPE on raw UTF-8): newline runs only.
    Gemma4,
}

/// One accepted `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, Copy)]
pub struct PreSpec {
    /// The name as written in the GGUF.
    pub name: &'static str,
    /// Its pattern family.
    pub kind: PreTokenizer,
    /// A word that is itself a vocabulary entry is emitted whole, without merging.
    pub ignore_merges: bool,
    /// llama.cpp's default for adding BOS when the GGUF does not say.
    pub add_bos: bool,
}

const fn spec(name: &'static str, kind: PreTokenizer) -> PreSpec {
    PreSpec {
        name,
        kind,
        ignore_merges: false,
        add_bos: false,
    }
}

const fn llama3(name: &'static str) -> PreSpec {
    PreSpec {
        name,
        kind: PreTokenizer::Llama3,
        ignore_merges: true,
        add_bos: true,
    }
}

/// Every supported pre-tokenizer name: the one list error messages quote.
pub const SUPPORTED_PRE: &[PreSpec] = &[
    spec("default", PreTokenizer::Default),
    spec("gpt-2", PreTokenizer::Gpt2),
    spec("phi-2", PreTokenizer::Gpt2),
    spec("mpt", PreTokenizer::Gpt2),
    spec("olmo", PreTokenizer::Gpt2),
    spec("jais", PreTokenizer::Gpt2),
    spec("exaone4", PreTokenizer::Gpt2),
    spec("starcoder", PreTokenizer::DigitsThenGpt2),
    spec("refact", PreTokenizer::DigitsThenGpt2),
    spec("command-r", PreTokenizer::DigitsThenGpt2),
    spec("smollm", PreTokenizer::DigitsThenGpt2),
    spec("codeshell", PreTokenizer::DigitsThenGpt2),
    spec("exaone", PreTokenizer::DigitsThenGpt2),
    spec("minerva-7b", PreTokenizer::DigitsThenGpt2),
    llama3("llama3"),
    llama3("llama-v3"),
    llama3("llama-bpe"),
    llama3("falcon3"),
    llama3("falcon-h1"),
    llama3("pixtral"),
    llama3("lfm2"),
    spec("dbrx", PreTokenizer::Llama3),
    spec("smaug-bpe", PreTokenizer::Llama3),
    spec("qwen2", PreTokenizer::Qwen2),
    spec("deepseek-r1-qwen", PreTokenizer::Qwen2),
    spec("stablelm2", PreTokenizer::Qwen2),
    spec("megrez", PreTokenizer::Qwen2),
    spec("qwen35", PreTokenizer::Qwen35),
    spec("falcon", PreTokenizer::Falcon),
    spec("deepseek-coder", PreTokenizer::DeepseekCoder),
    spec("gemma4", PreTokenizer::Gemma4),
];

/// The spec of a `tokenizer.ggml.pre` name, if supported.
pub fn lookup(name: &str) -> Option<&'static PreSpec> {
    SUPPORTED_PRE.iter().find(|s| s.name == name)
}

/// The supported names, comma-separated, for error messages.
pub fn supported_names() -> String {
    SUPPORTED_PRE
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";
const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

/// One compiled pattern of a pre-tokenizer.
#[derive(Debug, Clone)]
struct Stage {
    re: Regex,
    /// The pattern ends in the whitespace alternative that gives back its last character.
    ws_trim: bool,
    /// The pattern has a `\s*[\r\n]+` alternative before the whitespace one.
    newline_alt: bool,
}

/// A compiled pre-tokenizer.
#[derive(Debug, Clone)]
pub struct Splitter {
    stages: Vec<Stage>,
}

impl Splitter {
    /// Compile the patterns of `kind`.
    pub fn new(kind: PreTokenizer) -> Self {
        let plain = |p: &str| (p.to_string(), false, false);
        let ws = |p: String, nl: bool| (p, true, nl);
        let patterns: Vec<(String, bool, bool)> = match kind {
            PreTokenizer::Default => vec![
                plain(r"[\p{P}\$\+<=>\^~\|]+"),
                ws(GPT2.into(), false),
                plain(r"\p{N}+"),
                plain(r"[0-9][0-9][0-9]"),
            ],
            PreTokenizer::Gpt2 => vec![ws(GPT2.into(), false)],
            PreTokenizer::DigitsThenGpt2 => vec![plain(r"\p{N}"), ws(GPT2.into(), false)],
            PreTokenizer::Llama3 | PreTokenizer::Qwen2 => {
                let digits = if kind == PreTokenizer::Llama3 {
                    r"\p{N}{1,3}"
                } else {
                    r"\p{N}"
                };
                vec![ws(
                    format!(
                        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+"
                    ),
                    true,
                )]
            }
            PreTokenizer::Qwen35 => vec![ws(
                format!(
                    r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}\p{{M}}]+|\p{{N}}| ?[^\s\p{{L}}\p{{M}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+"
                ),
                true,
            )],
            PreTokenizer::Falcon => vec![
                plain(r"[\p{P}\$\+<=>\^~\|`]+"),
                ws(GPT2.into(), false),
                plain(r"[0-9][0-9][0-9]"),
            ],
            PreTokenizer::DeepseekCoder => vec![
                plain(r"[\r\n]"),
                plain(r"\s?\p{L}+"),
                plain(r"\s?\p{P}+"),
                // CJK ideographs, the blocks below them from U+0800, and Hangul.
                plain(r"[\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+"),
                plain(r"\p{N}"),
            ],
            PreTokenizer::Gemma4 => vec![plain(r"[^\n]+|\n+")],
        };
        let stages = patterns
            .into_iter()
            .map(|(p, ws_trim, newline_alt)| Stage {
                // The patterns are constants of this file; a failure is a bug caught by
                // the unit test that compiles every kind.
                re: Regex::new(&p).expect("pre-tokenizer pattern compiles"),
                ws_trim,
                newline_alt,
            })
            .collect();
        Splitter { stages }
    }

    /// Cut `text` into words: byte ranges covering the whole text, in order.
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        let mut next = Vec::new();
        for stage in &self.stages {
            next.clear();
            for &(s, e) in &pieces {
                stage.split_into(text, s, e, &mut next);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces.retain(|&(s, e)| e > s);
        pieces
    }
}

impl Stage {
    fn split_into(&self, text: &str, s: usize, e: usize, out: &mut Vec<(usize, usize)>) {
        let hay = &text[s..e];
        let mut at = 0;
        let mut last = 0;
        while at < hay.len() {
            let Some(m) = self.re.find_at(hay, at) else {
                break;
            };
            let (ms, mut me) = (m.start(), m.end());
            if me == ms {
                // No pattern here matches empty; never loop on one that would.
                at = ms + hay[ms..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            if self.ws_trim && me < hay.len() {
                let m = &hay[ms..me];
                let from_ws_alt = m.chars().all(char::is_whitespace)
                    && !(self.newline_alt && m.ends_with(['\r', '\n']));
                if from_ws_alt {
                    let last_len = m.chars().next_back().map_or(0, char::len_utf8);
                    if me - ms > last_len {
                        me -= last_len;
                    }
                }
            }
            if ms > last {
                out.push((s + last, s + ms));
            }
            out.push((s + ms, s + me));
            last = me;
            at = me;
        }
        if last < hay.len() {
            out.push((s + last, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(kind: PreTokenizer, s: &str) -> Vec<String> {
        Splitter::new(kind)
            .split(s)
            .iter()
            .map(|&(a, b)| s[a..b].to_string())
            .collect()
    }

    #[test]
    fn every_kind_compiles_and_names_are_unique() {
        for s in SUPPORTED_PRE {
            Splitter::new(s.kind);
            assert_eq!(
                SUPPORTED_PRE.iter().filter(|t| t.name == s.name).count(),
                1,
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn gpt2_pattern() {
        let g = |s| split(PreTokenizer::Gpt2, s);
        assert_eq!(g("Hello world"), ["Hello", " world"]);
        assert_eq!(g("I'm here's"), ["I", "'m", " here", "'s"]);
        assert_eq!(g("a  b"), ["a", " ", " b"]);
        assert_eq!(g("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(g("x, y!?"), ["x", ",", " y", "!?"]);
        assert_eq!(g("end  "), ["end", "  "]);
        assert_eq!(g(" 42 café"), [" 42", " café"]);
        assert_eq!(g("' 'x"), ["'", " '", "x"]);
    }

    #[test]
    fn llama3_groups_digits_and_keeps_newline_runs() {
        let l = |s| split(PreTokenizer::Llama3, s);
        assert_eq!(l("1234567"), ["123", "456", "7"]);
        assert_eq!(l("a \n\n  b"), ["a", " \n\n", " ", " b"]);
        assert_eq!(l("I'M"), ["I", "'M"]);
        assert_eq!(split(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
    }

    #[test]
    fn digits_are_split_before_gpt2() {
        assert_eq!(
            split(PreTokenizer::DigitsThenGpt2, " 12ab"),
            [" ", "1", "2", "ab"]
        );
    }

    /// One compiled splitter per pattern family (compiling per case is slow).
    fn all_splitters() -> &'static [Splitter] {
        static ALL: std::sync::OnceLock<Vec<Splitter>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            let mut kinds: Vec<PreTokenizer> = SUPPORTED_PRE.iter().map(|s| s.kind).collect();
            kinds.dedup();
            kinds.into_iter().map(Splitter::new).collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn splits_cover_the_text(text in "\\PC{0,60}") {
            for splitter in all_splitters() {
                let v = splitter.split(&text);
                let joined: String = v.iter().map(|&(a, b)| &text[a..b]).collect();
                proptest::prop_assert_eq!(&joined, &text);
            }
        }
    }
}
