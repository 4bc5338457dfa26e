//! Byte-level BPE tokenizer built from a GGUF's own vocabulary and merges
//! (`tokenizer.ggml.model = "gpt2"`).
//!
//! Pre-tokenization reproduces the GPT-2 split pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! by hand (no regex engine), preceded by the individual-digit split that llama.cpp's
//! "smollm" pre-tokenizer applies. Control tokens written literally in the text
//! (`<|im_start|>`) are recognised before the split.

use std::collections::HashMap;

use crate::EngineError;
use dhurandhar_checkpoint::GgufTokenizer;

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined tokens, also matched literally.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Pre-tokenizer variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// Plain GPT-2 pattern.
    Gpt2,
    /// Digits split one by one first (llama.cpp "smollm", "starcoder", "qwen2"-like).
    DigitsThenGpt2,
}

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    merges: HashMap<(u32, u32), (u32, u32)>, // (left, right) -> (rank, merged id)
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    specials: Vec<(String, u32)>, // longest first
    is_control: Vec<bool>,
    pre: PreTokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
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

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}
fn is_number(c: char) -> bool {
    c.is_numeric()
}

/// Split `text` the way the GPT-2 pattern does; returns byte ranges.
fn gpt2_split(text: &str, out: &mut Vec<(usize, usize)>, base: usize) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let pos = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        // Contractions.
        if c == '\'' && i + 1 < n {
            let c1 = chars[i + 1].1;
            let c2 = if i + 2 < n {
                Some(chars[i + 2].1)
            } else {
                None
            };
            let len = match (c1, c2) {
                ('s' | 't' | 'm' | 'd', _) => 2,
                ('r', Some('e')) | ('v', Some('e')) | ('l', Some('l')) => 3,
                _ => 0,
            };
            if len > 0 {
                out.push((base + pos(i), base + pos(i + len)));
                i += len;
                continue;
            }
        }
        // Optional leading space followed by a letter, number or symbol run.
        let j = if c == ' ' && i + 1 < n { i + 1 } else { i };
        let cj = chars[j].1;
        let class = |ch: char| -> u8 {
            if is_letter(ch) {
                1
            } else if is_number(ch) {
                2
            } else if ch.is_whitespace() {
                0
            } else {
                3
            }
        };
        let cls = class(cj);
        if cls != 0 && (j == i + 1 || c != ' ') {
            let mut k = j + 1;
            while k < n && class(chars[k].1) == cls {
                k += 1;
            }
            out.push((base + pos(i), base + pos(k)));
            i = k;
            continue;
        }
        // Whitespace run: `\s+(?!\S)` keeps the last space for the next word.
        let mut k = i;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        if k == i {
            // Not reachable (every non-space char has a class), but never loop forever.
            k = i + 1;
        } else if k < n && k - i >= 2 {
            k -= 1;
        }
        out.push((base + pos(i), base + pos(k)));
        i = k;
    }
}

impl Tokenizer {
    /// Build the tokenizer a GGUF file describes (`origin` names the file in errors).
    pub fn from_gguf(tk: GgufTokenizer, origin: &str) -> Result<Self, EngineError> {
        let meta_err = |message: String| EngineError::Model {
            path: origin.to_string(),
            message,
        };
        match tk.model.as_deref() {
            Some("gpt2") => {}
            other => {
                return Err(meta_err(format!(
                    "tokenizer model {other:?} is not supported (only byte-level BPE \"gpt2\")"
                )))
            }
        }
        let tokens = tk
            .tokens
            .ok_or_else(|| meta_err("missing the tokenizer's token list".into()))?;
        let merges = tk
            .merges
            .ok_or_else(|| meta_err("missing the tokenizer's merges".into()))?;
        let pre = match tk.pre.as_deref() {
            Some("gpt-2") | Some("gpt2") => PreTokenizer::Gpt2,
            _ => PreTokenizer::DigitsThenGpt2,
        };
        let mut tokenizer = Tokenizer::new(tokens, &merges, tk.token_types, pre)?;
        tokenizer.bos = tk.bos_token_id;
        tokenizer.eos = tk.eos_token_id;
        tokenizer.add_bos = tk.add_bos_token.unwrap_or(false);
        Ok(tokenizer)
    }

    /// Build from vocabulary, merges ("a b" strings, rank = index) and token types.
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        token_types: Option<Vec<i64>>,
        pre: PreTokenizer,
    ) -> Result<Self, EngineError> {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(EngineError::Tokenizer(format!(
                    "merge {rank} `{m}` has no space"
                )));
            };
            let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) else {
                continue; // merge of tokens outside the vocabulary: never applicable
            };
            let Some(&im) = ids.get(&format!("{a}{b}")) else {
                continue;
            };
            merge_map.entry((ia, ib)).or_insert((rank as u32, im));
        }
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut is_control = vec![false; tokens.len()];
        let mut specials = Vec::new();
        if let Some(tt) = token_types {
            for (i, &t) in tt.iter().enumerate().take(tokens.len()) {
                if t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED {
                    is_control[i] = t == TOKEN_TYPE_CONTROL;
                    if !tokens[i].is_empty() {
                        specials.push((tokens[i].clone(), i as u32));
                    }
                }
            }
        }
        specials.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Ok(Tokenizer {
            tokens,
            ids,
            merges: merge_map,
            byte_to_char,
            char_to_byte,
            specials,
            is_control,
            pre,
            bos: None,
            eos: None,
            add_bos: false,
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

    /// Encode text (with a BOS token first when `add_bos` is set).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        // Split out literal special tokens first.
        let mut rest = text;
        while !rest.is_empty() {
            let hit = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|p| (p, s.len(), *id)))
                .min_by_key(|&(p, len, _)| (p, usize::MAX - len));
            match hit {
                Some((p, len, id)) => {
                    self.encode_plain(&rest[..p], &mut out);
                    out.push(id);
                    rest = &rest[p + len..];
                }
                None => {
                    self.encode_plain(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut pieces = Vec::new();
        match self.pre {
            PreTokenizer::Gpt2 => gpt2_split(text, &mut pieces, 0),
            PreTokenizer::DigitsThenGpt2 => {
                let mut start = 0;
                for (p, c) in text.char_indices() {
                    if is_number(c) {
                        if start < p {
                            gpt2_split(&text[start..p], &mut pieces, start);
                        }
                        pieces.push((p, p + c.len_utf8()));
                        start = p + c.len_utf8();
                    }
                }
                if start < text.len() {
                    gpt2_split(&text[start..], &mut pieces, start);
                }
            }
        }
        for (a, b) in pieces {
            self.bpe(&text.as_bytes()[a..b], out);
        }
    }

    /// Apply merges to one pre-token.
    fn bpe(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut buf = [0u8; 4];
        for &b in bytes {
            let s = self.byte_to_char[b as usize].encode_utf8(&mut buf);
            match self.ids.get(&*s) {
                Some(&id) => syms.push(id),
                None => return, // vocabulary without this byte: cannot encode it
            }
        }
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[i + 1])) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        out.extend(syms);
    }

    /// Raw bytes of one token; control tokens render as nothing unless `show_special`.
    pub fn token_bytes(&self, id: u32, show_special: bool) -> Vec<u8> {
        let Some(s) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        if self.is_control[id as usize] {
            return if show_special {
                s.as_bytes().to_vec()
            } else {
                Vec::new()
            };
        }
        let mut v = Vec::with_capacity(s.len());
        for c in s.chars() {
            match self.char_to_byte.get(&c) {
                Some(&b) => v.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        v
    }

    /// Decode a token sequence to text (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i, false))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token bytes into complete UTF-8 text pieces.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Add bytes; return the longest valid UTF-8 prefix (invalid sequences replaced).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let s = s.to_string();
                self.pending.clear();
                s
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_none() {
                    // Incomplete sequence at the end: keep it for the next token.
                    let s = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                    self.pending.drain(..valid);
                    s
                } else {
                    let s = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    s
                }
            }
        }
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

    fn split(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        gpt2_split(s, &mut v, 0);
        v.iter().map(|&(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn gpt2_pattern() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("I'm here's"), ["I", "'m", " here", "'s"]);
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split("x, y!?"), ["x", ",", " y", "!?"]);
        assert_eq!(split("end  "), ["end", "  "]);
        assert_eq!(split(" 42 café"), [" 42", " café"]);
        assert_eq!(split("' 'x"), ["'", " '", "x"]);
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
        *types.last_mut().unwrap() = TOKEN_TYPE_CONTROL;
        Tokenizer::new(tokens, &merges, Some(types), PreTokenizer::DigitsThenGpt2).unwrap()
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
        // Digits are split one by one and the space stays its own piece.
        let digits: Vec<&str> = t
            .encode(" 12")
            .iter()
            .map(|&i| t.token_str(i).unwrap())
            .collect();
        assert_eq!(digits, ["Ġ", "1", "2"]);
    }

    #[test]
    fn utf8_stream_holds_partial_sequences() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.finish(), "");
    }

    proptest::proptest! {
        #[test]
        fn encode_decode_round_trips(text in "\\PC{0,40}") {
            let t = toy();
            proptest::prop_assert_eq!(t.decode(&t.encode(&text)), text.replace("<|im_start|>", ""));
        }

        #[test]
        fn split_covers_the_text(text in "\\PC{0,60}") {
            let mut v = Vec::new();
            gpt2_split(&text, &mut v, 0);
            let joined: String = v.iter().map(|&(a, b)| &text[a..b]).collect();
            proptest::prop_assert_eq!(joined, text);
        }
    }
}
