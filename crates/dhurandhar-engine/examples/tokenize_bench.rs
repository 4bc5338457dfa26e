//! Encode speed of the GGUF tokenizer against the hand-written byte-level BPE it
//! replaced (kept below, verbatim apart from trimming, as the baseline), on ~1 MB of
//! text (the eval chapter and the multilingual golden, repeated).
//!
//! `cargo run --release -p dhurandhar-engine --example tokenize_bench -- SMOLLM2.gguf [OTHER_VOCAB.gguf ...]`
//!
//! Prints MB/s for each and the new/old ratio on the first (byte-level BPE) file;
//! other vocabularies (SentencePiece, Llama 3, …) have no baseline and print MB/s only.

use std::path::Path;
use std::time::Instant;

use dhurandhar_checkpoint::gguf::GgufFile;
use dhurandhar_checkpoint::GgufTokenizer;
use dhurandhar_engine::Tokenizer;

fn text() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut unit = std::fs::read_to_string(root.join("data/eval/pride-and-prejudice-ch1.txt"))
        .expect("eval text");
    unit.push_str(
        &std::fs::read_to_string(root.join("scripts/goldens/tokenizer-multilingual.txt"))
            .expect("multilingual text"),
    );
    let mut t = String::with_capacity(1 << 20);
    while t.len() < 1 << 20 {
        t.push_str(&unit);
    }
    t
}

/// Best of three runs, in seconds.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = f();
    for _ in 0..3 {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: tokenize_bench SMOLLM2.gguf [OTHER_VOCAB.gguf ...]".into());
    }
    let text = text();
    let mb = text.len() as f64 / 1e6;
    println!("text: {} bytes", text.len());
    for (i, f) in files.iter().enumerate() {
        let g = GgufFile::open(Path::new(f))?;
        let tk = GgufTokenizer::read(&g);
        let new = Tokenizer::from_gguf(tk.clone(), f)?;
        let (t_new, ids_new) = time(|| new.encode_with(&text, false, true));
        println!("{f}: new {:.1} MB/s ({} tokens)", mb / t_new, ids_new.len());
        if i == 0 {
            let old = baseline::Tokenizer::new(
                tk.tokens.clone().ok_or("no tokens")?,
                &tk.merges.clone().ok_or("no merges (not byte-level BPE?)")?,
                tk.token_types.clone(),
                baseline::PreTokenizer::DigitsThenGpt2,
            )?;
            let (t_old, ids_old) = time(|| old.encode(&text));
            println!(
                "{f}: old {:.1} MB/s; new/old speed {:.2}x; same ids: {}",
                mb / t_old,
                t_old / t_new,
                ids_old == ids_new
            );
        }
    }
    Ok(())
}

/// The tokenizer before SentencePiece and named pre-tokenizers (commit eb0698b).
mod baseline {
    use std::collections::HashMap;

    /// Pre-tokenizer variant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[allow(dead_code)] // the bench uses the SmolLM2 variant only
    pub enum PreTokenizer {
        Gpt2,
        DigitsThenGpt2,
    }

    const TOKEN_TYPE_CONTROL: i64 = 3;
    const TOKEN_TYPE_USER_DEFINED: i64 = 4;

    #[allow(dead_code)]
    pub struct Tokenizer {
        tokens: Vec<String>,
        ids: HashMap<String, u32>,
        merges: HashMap<(u32, u32), (u32, u32)>,
        byte_to_char: [char; 256],
        char_to_byte: HashMap<char, u8>,
        specials: Vec<(String, u32)>,
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
        /// Build from vocabulary, merges ("a b" strings, rank = index) and token types.
        pub fn new(
            tokens: Vec<String>,
            merges: &[String],
            token_types: Option<Vec<i64>>,
            pre: PreTokenizer,
        ) -> Result<Self, String> {
            let mut ids = HashMap::with_capacity(tokens.len());
            for (i, t) in tokens.iter().enumerate() {
                ids.entry(t.clone()).or_insert(i as u32);
            }
            let mut merge_map = HashMap::with_capacity(merges.len());
            for (rank, m) in merges.iter().enumerate() {
                let Some((a, b)) = m.split_once(' ') else {
                    return Err(format!("merge {rank} `{m}` has no space"));
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
    }
}
