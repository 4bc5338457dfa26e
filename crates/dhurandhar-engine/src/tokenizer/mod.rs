//! The tokenizer a GGUF file describes, reproducing llama.cpp's token ids.
//!
//! Three vocabulary models are supported (`tokenizer.ggml.model`):
//! - `llama`: SentencePiece-style merging by piece score with `<0xXX>` byte fallback,
//!   spaces written as `▁` and a leading space added to text (Llama 2, Phi-3, Gemma 3);
//! - `gpt2`: byte-level BPE by merge rank after the pre-tokenizer named in
//!   `tokenizer.ggml.pre` (Llama 3, Qwen 2, SmolLM, StarCoder, GPT-2, …; see
//!   [`pretok::SUPPORTED_PRE`]);
//! - `gemma4`: BPE by merge rank on raw UTF-8 with `▁` spaces and `<0xXX>` bytes.
//!
//! Anything else — another model, or a pre-tokenizer name not in the list — is
//! refused with the list of what is supported, never mapped to a near default.
//!
//! Why hand-written rather than an HF `tokenizers` object built from the GGUF
//! vocabulary (mistral.rs's approach): the reference is llama.cpp's ids, and
//! llama.cpp does not run HF's algorithms. Its SentencePiece path is a greedy
//! score-ordered merge, not the Unigram Viterbi search an HF `Unigram` model runs, so
//! the two disagree on some words; its pre-tokenizers are named patterns applied in
//! sequence (with user-defined tokens split out first) that a GGUF names but does
//! not spell, so they would have to be re-encoded here either way; and the HF crate's
//! look-ahead patterns need `onig` (C) or `fancy-regex`, with a large build on the
//! shared cores. The pieces here are small (merge loops in [`bpe`] and [`spm`],
//! patterns in [`pretok`]) and are checked case by case against llama.cpp's own
//! vocabulary test files.

pub mod bpe;
pub mod chat;
pub mod pretok;
pub mod spm;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use regex::Regex;

use crate::EngineError;
pub use chat::ChatMessage;
use dhurandhar_checkpoint::GgufTokenizer;
pub use pretok::{PreSpec, PreTokenizer, SUPPORTED_PRE};

/// The `tokenizer.ggml.model` values this tokenizer implements.
pub const SUPPORTED_MODELS: &[&str] = &["llama", "gpt2", "gemma4"];

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: u8 = 1;
const TYPE_UNKNOWN: u8 = 2;
const TYPE_CONTROL: u8 = 3;
const TYPE_USER_DEFINED: u8 = 4;
const TYPE_UNUSED: u8 = 5;
const TYPE_BYTE: u8 = 6;

/// How plain text becomes ids.
#[derive(Debug, Clone)]
enum Algo {
    /// SentencePiece-style merging by score.
    Spm { add_space_prefix: bool },
    /// BPE by rank; `byte_level` maps bytes to GPT-2's printable characters,
    /// otherwise (Gemma 4) spaces become `▁` and bytes fall back to `<0xXX>`.
    Bpe {
        splitter: pretok::Splitter,
        byte_level: bool,
        ignore_merges: bool,
    },
}

/// A tokenizer built from a GGUF vocabulary.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    algo: Algo,
    tokens: Vec<String>,
    /// Text → id; on duplicate texts the last id wins, as in llama.cpp.
    ids: HashMap<String, u32>,
    types: Vec<u8>,
    scores: Vec<f32>,
    /// (left, right) → (rank, merged id).
    merges: bpe::MergeMap,
    /// The token standing for each byte: GPT-2's byte character, or `<0xXX>`.
    byte_token: [Option<u32>; 256],
    /// SentencePiece: characters that occur in some token next to a different
    /// character. Any other character only ever merges with copies of itself, so the
    /// text is cut around its runs and each part merged alone — same result, and a
    /// long text does not become one heap of a million candidate pairs.
    spm_mixed: HashSet<char, BuildHasherDefault<bpe::PairHasher>>,
    /// Decoded bytes of every token (control tokens: their text, shown on request).
    pieces: Vec<Box<[u8]>>,
    byte_to_char: [char; 256],
    /// Control, unknown and user-defined tokens, longest first (matched literally
    /// when special tokens are parsed).
    specials_all: Option<Regex>,
    /// User-defined tokens only: matched literally even when specials are not parsed.
    specials_user: Option<Regex>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    /// The GGUF's `tokenizer.chat_template` (see [`Tokenizer::apply_chat_template`]).
    pub chat_template: Option<String>,
}

/// GPT-2's reversible byte → printable-unicode map.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('?');
            n += 1;
            c
        };
    }
    map
}

/// `<0xAB>` → 0xAB.
fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn byte_token_text(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// A literal-alternation matcher for `texts`, longest first (so the longest special
/// token wins where several start at the same place).
fn literal_matcher(mut texts: Vec<&str>) -> Result<Option<Regex>, EngineError> {
    if texts.is_empty() {
        return Ok(None);
    }
    texts.sort_by_key(|t| std::cmp::Reverse(t.len()));
    texts.dedup();
    let pattern = texts
        .iter()
        .map(|t| regex::escape(t))
        .collect::<Vec<_>>()
        .join("|");
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 28)
        .build()
        .map(Some)
        .map_err(|e| EngineError::Tokenizer(format!("special tokens do not compile: {e}")))
}

/// Which vocabulary model a GGUF names, checked against [`SUPPORTED_MODELS`].
fn unsupported_model(other: Option<&str>) -> String {
    format!(
        "tokenizer model {} (tokenizer.ggml.model) is not supported; supported: {}",
        other.map_or("(absent)".to_string(), |m| format!("\"{m}\"")),
        SUPPORTED_MODELS.join(", ")
    )
}

impl Tokenizer {
    /// Build the tokenizer a GGUF file describes (`origin` names the file in errors).
    ///
    /// A missing `tokenizer.ggml.pre` means llama.cpp's `default` pre-tokenizer (that
    /// is what the key's absence stands for); an unknown one is an error that lists
    /// [`SUPPORTED_PRE`].
    pub fn from_gguf(tk: GgufTokenizer, origin: &str) -> Result<Self, EngineError> {
        let meta_err = |message: String| EngineError::Model {
            path: origin.to_string(),
            message,
        };
        let tokens = tk
            .tokens
            .ok_or_else(|| meta_err("missing the tokenizer's token list".into()))?;
        let types = tk.token_types;
        let mut t = match tk.model.as_deref() {
            Some("llama") => {
                let scores = tk.scores.unwrap_or_default();
                Tokenizer::spm(tokens, scores, types, tk.add_space_prefix.unwrap_or(true))
                    .map_err(|e| meta_err(e.to_string()))?
                    .with_add_bos(tk.add_bos_token.unwrap_or(true))
            }
            Some(model @ ("gpt2" | "gemma4")) => {
                let merges = tk
                    .merges
                    .ok_or_else(|| meta_err("missing the tokenizer's merges".into()))?;
                let pre_name = match (model, tk.pre.as_deref()) {
                    ("gemma4", None) => "gemma4",
                    (_, None) => "default",
                    (_, Some(p)) => p,
                };
                let spec = pretok::lookup(pre_name).ok_or_else(|| {
                    meta_err(format!(
                        "pre-tokenizer \"{pre_name}\" (tokenizer.ggml.pre) is not supported; supported: {}",
                        pretok::supported_names()
                    ))
                })?;
                if (model == "gemma4") != (spec.kind == PreTokenizer::Gemma4) {
                    return Err(meta_err(format!(
                        "pre-tokenizer \"{pre_name}\" does not go with tokenizer model \"{model}\""
                    )));
                }
                Tokenizer::bpe(tokens, &merges, types, spec)
                    .map_err(|e| meta_err(e.to_string()))?
                    .with_add_bos(tk.add_bos_token.unwrap_or(spec.add_bos))
            }
            other => return Err(meta_err(unsupported_model(other))),
        };
        t.bos = tk.bos_token_id;
        t.eos = tk.eos_token_id;
        t.unk = tk.unk_token_id;
        t.chat_template = tk.chat_template;
        if t.add_bos && t.bos.is_none() {
            t.add_bos = false;
        }
        Ok(t)
    }

    fn with_add_bos(mut self, add: bool) -> Self {
        self.add_bos = add;
        self
    }

    /// A SentencePiece-style tokenizer from pieces, their scores and token types.
    pub fn spm(
        tokens: Vec<String>,
        scores: Vec<f32>,
        token_types: Option<Vec<i64>>,
        add_space_prefix: bool,
    ) -> Result<Self, EngineError> {
        if !scores.is_empty() && scores.len() != tokens.len() {
            return Err(EngineError::Tokenizer(format!(
                "{} scores for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        Self::build(
            Algo::Spm { add_space_prefix },
            tokens,
            scores,
            &[],
            token_types,
        )
    }

    /// A BPE tokenizer from tokens, merges ("a b", rank = index) and token types.
    pub fn bpe(
        tokens: Vec<String>,
        merges: &[String],
        token_types: Option<Vec<i64>>,
        pre: &PreSpec,
    ) -> Result<Self, EngineError> {
        let algo = Algo::Bpe {
            splitter: pretok::Splitter::new(pre.kind),
            byte_level: pre.kind != PreTokenizer::Gemma4,
            ignore_merges: pre.ignore_merges,
        };
        Self::build(algo, tokens, Vec::new(), merges, token_types)
    }

    fn build(
        algo: Algo,
        tokens: Vec<String>,
        scores: Vec<f32>,
        merges: &[String],
        token_types: Option<Vec<i64>>,
    ) -> Result<Self, EngineError> {
        if tokens.len() > u32::MAX as usize {
            return Err(EngineError::Tokenizer("too many tokens".into()));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.insert(t.clone(), i as u32);
        }
        let types: Vec<u8> = (0..tokens.len())
            .map(|i| {
                token_types
                    .as_ref()
                    .and_then(|tt| tt.get(i))
                    .map_or(TYPE_NORMAL, |&t| u8::try_from(t).unwrap_or(TYPE_NORMAL))
            })
            .collect();
        let mut merge_map = bpe::MergeMap::default();
        merge_map.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // Split at the first space after the first byte (a merge's left side may
            // itself start with a space in raw-UTF-8 vocabularies).
            let first = m.chars().next().map_or(0, char::len_utf8);
            let Some(p) = m[first..].find(' ').map(|p| p + first) else {
                return Err(EngineError::Tokenizer(format!(
                    "merge {rank} `{m}` has no space"
                )));
            };
            let (a, b) = (&m[..p], &m[p + 1..]);
            let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) else {
                continue; // merge of tokens outside the vocabulary: never applicable
            };
            let Some(&im) = ids.get(&format!("{a}{b}")) else {
                continue;
            };
            merge_map
                .entry(bpe::pair(ia, ib))
                .or_insert((rank as u32, im));
        }
        let byte_to_char = bytes_to_unicode();
        let byte_level = matches!(
            algo,
            Algo::Bpe {
                byte_level: true,
                ..
            }
        );
        let mut byte_token = [None; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            *slot = if byte_level {
                ids.get(byte_to_char[b].to_string().as_str()).copied()
            } else {
                ids.get(byte_token_text(b as u8).as_str())
                    .copied()
                    .or_else(|| {
                        // SentencePiece vocabularies without byte pieces: the character.
                        (b < 128)
                            .then(|| ids.get((b as u8 as char).to_string().as_str()).copied())
                            .flatten()
                    })
            };
        }
        let char_to_byte: HashMap<char, u8> = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let pieces = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                let bytes: Vec<u8> = match ty {
                    TYPE_BYTE => parse_byte_token(t)
                        .map(|b| vec![b])
                        .unwrap_or_else(|| t.as_bytes().to_vec()),
                    TYPE_NORMAL if byte_level => {
                        let mut v = Vec::with_capacity(t.len());
                        for c in t.chars() {
                            match char_to_byte.get(&c) {
                                Some(&b) => v.push(b),
                                None => {
                                    let mut buf = [0u8; 4];
                                    v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                            }
                        }
                        v
                    }
                    TYPE_NORMAL => t.replace('▁', " ").into_bytes(),
                    _ => t.as_bytes().to_vec(),
                };
                bytes.into_boxed_slice()
            })
            .collect();
        let mut spm_mixed = HashSet::default();
        if matches!(algo, Algo::Spm { .. }) {
            for t in &tokens {
                let mut chars = t.chars();
                if let Some(first) = chars.next() {
                    if chars.any(|c| c != first) {
                        spm_mixed.extend(t.chars());
                    }
                }
            }
        }
        let special_texts = |want: &[u8]| -> Vec<&str> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(t, ty)| want.contains(ty) && !t.is_empty())
                .map(|(t, _)| t.as_str())
                .collect()
        };
        let specials_all = literal_matcher(special_texts(&[
            TYPE_CONTROL,
            TYPE_UNKNOWN,
            TYPE_USER_DEFINED,
        ]))?;
        let specials_user = literal_matcher(special_texts(&[TYPE_USER_DEFINED]))?;
        Ok(Tokenizer {
            algo,
            tokens,
            ids,
            types,
            scores,
            merges: merge_map,
            byte_token,
            spm_mixed,
            pieces,
            byte_to_char,
            specials_all,
            specials_user,
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
            chat_template: None,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token string as stored (byte-level unicode form).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|s| s.as_str())
    }

    /// Id of an exact token string.
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// Encode a prompt: BOS first when the model adds one, special tokens written
    /// literally in the text (`<|im_start|>`) recognised as themselves.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, true, true)
    }

    /// Encode with llama.cpp's two switches: `add_special` (BOS when the model adds
    /// one) and `parse_special` (control tokens written in the text are matched;
    /// user-defined tokens always are).
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let matcher = if parse_special {
            &self.specials_all
        } else {
            &self.specials_user
        };
        // A leading space goes before text that starts the input or follows a special
        // token (SentencePiece models only).
        let mut after_special = true;
        let mut last = 0;
        let plain = |s: &str, after_special: bool, out: &mut Vec<u32>| {
            self.encode_plain(s, after_special, out)
        };
        if let Some(m) = matcher {
            for hit in m.find_iter(text) {
                if hit.start() > last {
                    plain(&text[last..hit.start()], after_special, &mut out);
                }
                if let Some(&id) = self.ids.get(hit.as_str()) {
                    out.push(id);
                }
                after_special = true;
                last = hit.end();
            }
        }
        if last < text.len() {
            plain(&text[last..], after_special, &mut out);
        }
        out
    }

    fn push_bytes(&self, bytes: &[u8], out: &mut Vec<u32>) {
        for &b in bytes {
            if let Some(id) = self.byte_token[b as usize].or(self.unk) {
                out.push(id);
            }
        }
    }

    fn encode_plain(&self, text: &str, after_special: bool, out: &mut Vec<u32>) {
        match &self.algo {
            Algo::Spm { add_space_prefix } => {
                let mut s = String::with_capacity(text.len() + 3);
                if *add_space_prefix && after_special {
                    s.push('▁');
                }
                for c in text.chars() {
                    s.push(if c == ' ' { '▁' } else { c });
                }
                let mut start = 0;
                let mut prev: Option<char> = None;
                let run = |a: usize, b: usize, out: &mut Vec<u32>| {
                    let part = &s[a..b];
                    spm::tokenize(part, &self.ids, &self.scores, |id, x, y| match id {
                        Some(id) => out.push(id),
                        None => self.push_bytes(&part.as_bytes()[x..y], out),
                    });
                };
                for (i, c) in s.char_indices() {
                    if let Some(p) = prev {
                        if p != c && !(self.spm_mixed.contains(&p) && self.spm_mixed.contains(&c)) {
                            run(start, i, out);
                            start = i;
                        }
                    }
                    prev = Some(c);
                }
                run(start, s.len(), out);
            }
            Algo::Bpe {
                splitter,
                byte_level,
                ignore_merges,
            } => {
                let escaped;
                let text = if *byte_level {
                    text
                } else {
                    escaped = text.replace(' ', "▁");
                    &escaped
                };
                let mut scratch = bpe::Scratch::default();
                let mut word = String::new();
                let mut buf = [0u8; 4];
                for (a, b) in splitter.split(text) {
                    let piece = &text[a..b];
                    if *byte_level {
                        if *ignore_merges {
                            word.clear();
                            word.extend(piece.bytes().map(|x| self.byte_to_char[x as usize]));
                            if let Some(&id) = self.ids.get(&word) {
                                out.push(id);
                                continue;
                            }
                        }
                        let syms = piece.bytes().enumerate().map(|(i, x)| {
                            (
                                self.byte_token[x as usize].unwrap_or(bpe::UNKNOWN),
                                i,
                                i + 1,
                            )
                        });
                        bpe::merge(syms, &self.merges, &mut scratch, |id, s, e| {
                            if id == bpe::UNKNOWN {
                                self.push_bytes(&piece.as_bytes()[s..e], out);
                            } else {
                                out.push(id);
                            }
                        });
                    } else {
                        if *ignore_merges || piece.bytes().all(|x| x == b'\n') {
                            if let Some(&id) = self.ids.get(piece) {
                                out.push(id);
                                continue;
                            }
                        }
                        let syms = piece.char_indices().map(|(i, c)| {
                            let id = self
                                .ids
                                .get(&*c.encode_utf8(&mut buf))
                                .copied()
                                .unwrap_or(bpe::UNKNOWN);
                            (id, i, i + c.len_utf8())
                        });
                        bpe::merge(syms, &self.merges, &mut scratch, |id, s, e| {
                            if id == bpe::UNKNOWN {
                                self.push_bytes(&piece.as_bytes()[s..e], out);
                            } else {
                                out.push(id);
                            }
                        });
                    }
                }
            }
        }
    }

    /// Raw bytes of one token; control tokens render as nothing unless `show_special`.
    pub fn token_bytes(&self, id: u32, show_special: bool) -> Vec<u8> {
        let i = id as usize;
        let Some(p) = self.pieces.get(i) else {
            return Vec::new();
        };
        match self.types[i] {
            TYPE_CONTROL | TYPE_UNKNOWN | TYPE_UNUSED if !show_special => Vec::new(),
            _ => p.to_vec(),
        }
    }

    /// Decode a token sequence to text (invalid UTF-8 replaced). For SentencePiece
    /// models the space the encoder put before the text is taken off again, so
    /// `decode(encode_with(x, false, false)) == x`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut strip = matches!(
            self.algo,
            Algo::Spm {
                add_space_prefix: true
            }
        );
        for &id in ids {
            let piece = self.token_bytes(id, false);
            if piece.is_empty() {
                continue;
            }
            let normal = self.types.get(id as usize) == Some(&TYPE_NORMAL);
            if strip && normal && piece[0] == b' ' {
                bytes.extend_from_slice(&piece[1..]);
            } else {
                bytes.extend_from_slice(&piece);
            }
            strip = false;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token bytes into complete UTF-8 text pieces: a character split
/// across byte-fallback tokens (`<0xE2>` `<0x96>` `<0x81>`) comes out whole once its
/// last byte arrives.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Add bytes; return all complete text so far (invalid sequences replaced), keeping
    /// an unfinished character for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Valid by construction: the prefix `from_utf8` vouched for.
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &rest[valid + bad..];
                        }
                        None => {
                            rest = &rest[valid..];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let n = self.pending.len();
        self.pending.drain(..n - keep);
        out
    }

    /// Whatever is left, lossily.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let m = bytes_to_unicode();
        let mut tokens: Vec<String> = m.iter().map(|c| c.to_string()).collect();
        for t in ["he", "ll", "llo", "hello", "Ġw", "Ġwo", "<|im_start|>"] {
            tokens.push(t.to_string());
        }
        let merges: Vec<String> = ["h e", "l l", "ll o", "he llo", "Ġ w", "Ġw o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut types = vec![1i64; tokens.len()];
        *types.last_mut().unwrap() = TYPE_CONTROL as i64;
        Tokenizer::bpe(
            tokens,
            &merges,
            Some(types),
            pretok::lookup("smollm").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b'A' as usize], 'A');
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn bpe_merges_by_rank_and_round_trips() {
        let t = toy();
        let ids = t.encode("hello wo");
        let strs: Vec<&str> = ids.iter().map(|&i| t.token_str(i).unwrap()).collect();
        assert_eq!(strs, ["hello", "Ġwo"]);
        assert_eq!(t.decode(&ids), "hello wo");
        let ids = t.encode("<|im_start|>héllo 123");
        assert_eq!(t.token_str(ids[0]), Some("<|im_start|>"));
        assert_eq!(t.decode(&ids), "héllo 123");
        // Not parsing specials: the control token's text is plain text.
        let ids = t.encode_with("<|im_start|>", false, false);
        assert!(ids.len() > 1);
        // Digits are split one by one and the space stays its own piece.
        let digits: Vec<&str> = t
            .encode(" 12")
            .iter()
            .map(|&i| t.token_str(i).unwrap())
            .collect();
        assert_eq!(digits, ["Ġ", "1", "2"]);
    }

    /// A SentencePiece vocabulary: bytes, a few pieces with scores, one control token.
    fn toy_spm() -> Tokenizer {
        let mut tokens = vec!["<unk>".to_string(), "<s>".to_string()];
        let mut types = vec![TYPE_UNKNOWN as i64, TYPE_CONTROL as i64];
        let mut scores = vec![0.0, 0.0];
        for b in 0..=255u8 {
            tokens.push(byte_token_text(b));
            types.push(TYPE_BYTE as i64);
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("i", -2.0),
            ("▁h", -3.0),
            ("▁hi", -1.5),
        ] {
            tokens.push(t.to_string());
            types.push(TYPE_NORMAL as i64);
            scores.push(s);
        }
        let mut t = Tokenizer::spm(tokens, scores, Some(types), true).unwrap();
        t.bos = Some(1);
        t.add_bos = true;
        t
    }

    #[test]
    fn spm_prefixes_a_space_and_falls_back_to_bytes() {
        let t = toy_spm();
        let ids = t.encode("hi é");
        let strs: Vec<&str> = ids.iter().map(|&i| t.token_str(i).unwrap()).collect();
        assert_eq!(strs, ["<s>", "▁hi", "▁", "<0xC3>", "<0xA9>"]);
        assert_eq!(t.decode(&ids), "hi é");
        let mut s = Utf8Stream::default();
        let streamed: String = ids
            .iter()
            .map(|&i| s.push(&t.token_bytes(i, false)))
            .collect();
        assert_eq!(streamed + &s.finish(), " hi é");
    }

    #[test]
    fn utf8_stream_holds_partial_sequences() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..]), "é");
        // An invalid byte does not swallow the start of the next character.
        assert_eq!(s.push(&[0xFF, e[0]]), "\u{FFFD}");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn unknown_models_and_pre_tokenizers_are_refused_with_the_list() {
        let tk = GgufTokenizer {
            model: Some("bert".into()),
            tokens: Some(vec!["a".into()]),
            ..Default::default()
        };
        let e = Tokenizer::from_gguf(tk, "m.gguf").unwrap_err().to_string();
        assert!(
            e.contains("m.gguf") && e.contains("\"bert\"") && e.contains("llama, gpt2, gemma4"),
            "{e}"
        );
        let tk = GgufTokenizer {
            model: Some("gpt2".into()),
            pre: Some("made-up".into()),
            tokens: Some(vec!["a".into()]),
            merges: Some(vec![]),
            ..Default::default()
        };
        let e = Tokenizer::from_gguf(tk, "m.gguf").unwrap_err().to_string();
        assert!(
            e.contains("\"made-up\"") && e.contains(&pretok::supported_names()),
            "{e}"
        );
    }

    #[test]
    fn gguf_defaults_follow_llama_cpp() {
        let base = GgufTokenizer {
            tokens: Some(vec!["a".into(), "<s>".into()]),
            bos_token_id: Some(1),
            merges: Some(vec![]),
            ..Default::default()
        };
        // SentencePiece adds BOS unless the file says otherwise.
        let spm = GgufTokenizer {
            model: Some("llama".into()),
            ..base.clone()
        };
        assert!(Tokenizer::from_gguf(spm.clone(), "m").unwrap().add_bos);
        let no_bos = GgufTokenizer {
            add_bos_token: Some(false),
            ..spm
        };
        assert!(!Tokenizer::from_gguf(no_bos, "m").unwrap().add_bos);
        // Llama 3's pre-tokenizer adds BOS; GPT-2's and an absent one ("default") do not.
        for (pre, bos) in [
            (Some("llama-bpe"), true),
            (Some("gpt-2"), false),
            (None, false),
        ] {
            let tk = GgufTokenizer {
                model: Some("gpt2".into()),
                pre: pre.map(str::to_string),
                ..base.clone()
            };
            assert_eq!(
                Tokenizer::from_gguf(tk, "m").unwrap().add_bos,
                bos,
                "{pre:?}"
            );
        }
        // The gemma4 model takes only the gemma4 pre-tokenizer.
        let mixed = GgufTokenizer {
            model: Some("gemma4".into()),
            pre: Some("qwen2".into()),
            ..base
        };
        assert!(Tokenizer::from_gguf(mixed, "m").is_err());
    }

    proptest::proptest! {
        #[test]
        fn encode_decode_round_trips(text in "\\PC{0,40}") {
            let t = toy();
            proptest::prop_assert_eq!(t.decode(&t.encode(&text)), text.replace("<|im_start|>", ""));
        }

        #[test]
        fn spm_round_trips(text in "\\PC{0,40}") {
            let t = toy_spm();
            proptest::prop_assert_eq!(t.decode(&t.encode_with(&text, false, false)), text);
        }
    }
}
