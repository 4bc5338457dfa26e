//! Training data for `lora train`: JSONL lines holding `text` or chat `messages`,
//! tokenized by the base model's own tokenizer and chat template, then packed into
//! fixed-length sequences.
//!
//! Plain text trains on every token. Chat data trains on the assistant's turns only:
//! the conversation is rendered by the GGUF's template, the spans each assistant turn
//! adds (its text and the template's end-of-turn marker) are found by rendering the
//! conversation up to that turn, and only their tokens count in the loss.

use std::io::{BufRead, Read};
use std::path::Path;

use dhurandhar_engine::tokenizer::chat::ChatMessage;
use dhurandhar_engine::Tokenizer;
use serde::Deserialize;

use crate::{Error, Result};

/// Largest line read from a dataset (one example).
const MAX_LINE_BYTES: usize = 16 << 20;

/// One example as tokens, and whether each token is a training target (1) or context
/// only (0) when the model predicts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub targets: Vec<f32>,
}

/// A packed training sequence: the model reads `tokens` and is scored on predicting
/// `labels[t]` (the next token) where `weights[t]` is 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub labels: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Sequence {
    /// Tokens the loss counts.
    pub fn target_tokens(&self) -> usize {
        self.weights.iter().filter(|&&w| w != 0.0).count()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
}

/// Read and tokenize every line of the JSONL file at `path`. Errors name the file and
/// the line.
pub fn read_examples(path: &Path, tok: &Tokenizer) -> Result<Vec<Example>> {
    let bad = |line: usize, why: String| {
        Error::invalid("dataset", format!("{}:{line}: {why}", path.display()))
    };
    let f = dhurandhar_io::open_regular(path)?;
    let mut reader = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        line_no += 1;
        let n = std::io::Read::by_ref(&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| dhurandhar_io::IoError::os(path, e))?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(bad(line_no, format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        let text =
            std::str::from_utf8(&buf).map_err(|e| bad(line_no, format!("not UTF-8: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(text).map_err(|e| bad(line_no, e.to_string()))?;
        let ex = match (l.text, l.messages) {
            (Some(t), None) => text_example(tok, &t),
            (None, Some(m)) => chat_example(tok, &m).map_err(|e| bad(line_no, e))?,
            _ => {
                return Err(bad(
                    line_no,
                    "each line needs exactly one of `text` or `messages`".into(),
                ))
            }
        };
        if ex.tokens.len() >= 2 {
            out.push(ex);
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "dataset",
            format!("{}: no example of two tokens or more", path.display()),
        ));
    }
    Ok(out)
}

/// Plain text: BOS (when the model adds one), the text, EOS; every token but BOS a target.
fn text_example(tok: &Tokenizer, text: &str) -> Example {
    let mut tokens = tok.encode_with(text, true, false);
    tokens.extend(tok.eos);
    let mut targets = vec![1f32; tokens.len()];
    if tok.add_bos && tok.bos.is_some() {
        targets[0] = 0.0;
    }
    Example { tokens, targets }
}

/// A conversation by the model's chat template, the assistant's spans as targets.
fn chat_example(tok: &Tokenizer, msgs: &[ChatMessage]) -> std::result::Result<Example, String> {
    let render = |m: &[ChatMessage], open: bool| -> std::result::Result<String, String> {
        tok.apply_chat_template(m, open)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "chat `messages` need a chat template, and the model has none".into())
    };
    if msgs.is_empty() {
        return Err("`messages` is empty".into());
    }
    let full = render(msgs, false)?;
    // Character spans of the assistant's turns in `full`.
    let mut spans = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let start = render(&msgs[..i], true)?;
        let end = render(&msgs[..=i], false)?;
        if !end.starts_with(&start) || !full.starts_with(&end) {
            return Err(format!(
                "the chat template does not render message {} as an extension of the ones \
                 before it, so its tokens cannot be told apart",
                i + 1
            ));
        }
        spans.push((start.len(), end.len()));
    }
    if spans.is_empty() {
        return Err("the conversation has no `assistant` message to train on".into());
    }
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    let mut at = 0;
    let mut piece = |text: &str, target: bool, first: bool| {
        let ids = tok.encode_with(text, first, true);
        targets.extend(std::iter::repeat_n(
            if target { 1f32 } else { 0.0 },
            ids.len(),
        ));
        tokens.extend(ids);
    };
    for (s, e) in spans {
        if s > at || at == 0 {
            piece(&full[at..s], false, at == 0);
        }
        piece(&full[s..e], true, false);
        at = e;
    }
    if at < full.len() {
        piece(&full[at..], false, false);
    }
    Ok(Example { tokens, targets })
}

/// Concatenate `examples` and cut the stream into sequences of `len` tokens, each
/// scored on the next token; a sequence's labels run one token into the next, so every
/// token after the first is predicted exactly once. Attention is not reset between
/// examples (packing as TRL does by default).
pub fn pack(examples: &[Example], len: usize) -> Vec<Sequence> {
    let len = len.max(1);
    let total: usize = examples.iter().map(|e| e.tokens.len()).sum();
    let mut tokens = Vec::with_capacity(total);
    let mut targets = Vec::with_capacity(total);
    for e in examples {
        tokens.extend_from_slice(&e.tokens);
        targets.extend_from_slice(&e.targets);
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < tokens.len() {
        let end = (start + len + 1).min(tokens.len());
        let s = Sequence {
            tokens: tokens[start..end - 1].to_vec(),
            labels: tokens[start + 1..end].to_vec(),
            weights: targets[start + 1..end].to_vec(),
        };
        if s.target_tokens() > 0 {
            out.push(s);
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(tokens: Vec<u32>, targets: Vec<f32>) -> Example {
        Example { tokens, targets }
    }

    #[test]
    fn packing_predicts_each_token_once() {
        let e = [
            ex((0..7).collect(), vec![0., 1., 1., 1., 1., 1., 1.]),
            ex(vec![7, 8, 9], vec![1.; 3]),
        ];
        let p = pack(&e, 4);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].tokens, vec![0, 1, 2, 3]);
        assert_eq!(p[0].labels, vec![1, 2, 3, 4]);
        assert_eq!(p[1].tokens, vec![4, 5, 6, 7]);
        assert_eq!(p[2].tokens, vec![8]);
        assert_eq!(p[2].labels, vec![9]);
        let labels: Vec<u32> = p.iter().flat_map(|s| s.labels.clone()).collect();
        assert_eq!(labels, (1..10).collect::<Vec<_>>());
        // A sequence with no target is dropped.
        assert!(pack(&[ex(vec![1, 2, 3], vec![0.; 3])], 2).is_empty());
    }
}

#[cfg(test)]
mod chat_tests {
    use super::*;
    use dhurandhar_engine::Model;

    /// On the SmolLM2 fixture's ChatML template: only the assistant turns (with the
    /// template's end-of-turn marker) are targets, and the pieces tokenize to the whole
    /// conversation.
    #[test]
    fn chat_targets_are_the_assistant_turns() {
        let Some(path) = dhurandhar_testkit::fixture("SmolLM2-135M-Instruct.Q4_1.gguf") else {
            return;
        };
        let model = Model::open(&path).unwrap();
        let tok = &model.tokenizer;
        let m = |r: &str, c: &str| ChatMessage::new(r, c);
        let msgs = [
            m("user", "Who is Hamlet?"),
            m("assistant", "The Prince of Denmark."),
            m("user", "And Ophelia?"),
            m("assistant", "Polonius's daughter."),
        ];
        let ex = chat_example(tok, &msgs).unwrap();
        let targets: Vec<u32> = ex
            .tokens
            .iter()
            .zip(&ex.targets)
            .filter(|(_, &w)| w == 1.0)
            .map(|(&t, _)| t)
            .collect();
        let shown: Vec<u8> = targets
            .iter()
            .flat_map(|&t| tok.token_bytes(t, true))
            .collect();
        assert_eq!(
            String::from_utf8(shown).unwrap(),
            "The Prince of Denmark.<|im_end|>\nPolonius's daughter.<|im_end|>\n"
        );
        let whole = tok.apply_chat_template(&msgs, false).unwrap().unwrap();
        assert_eq!(tok.decode(&ex.tokens), tok.decode(&tok.encode(&whole)));
        assert!(chat_example(tok, &msgs[..1])
            .unwrap_err()
            .contains("no `assistant`"));
    }
}
