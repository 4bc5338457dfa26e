//! SentencePiece-style merging (`tokenizer.ggml.model = llama`): start from the text's
//! characters and repeatedly merge the adjacent pair whose concatenation is the
//! vocabulary entry with the highest score (leftmost among equal scores), as llama.cpp
//! does. What never becomes a vocabulary entry is emitted as byte tokens.

use std::collections::{BinaryHeap, HashMap};

#[derive(Debug, Clone, Copy)]
struct Sym {
    start: usize,
    end: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// A candidate merge; the heap pops the highest score, then the leftmost.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Merge `text` (spaces already written as `▁`); calls `emit(Some(id), ..)` for each
/// final piece that is a vocabulary entry and `emit(None, start, end)` for one that
/// is not (the caller writes its bytes as byte tokens).
pub fn tokenize(
    text: &str,
    ids: &HashMap<String, u32>,
    scores: &[f32],
    mut emit: impl FnMut(Option<u32>, usize, usize),
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (p, c)) in text.char_indices().enumerate() {
        syms.push(Sym {
            start: p,
            end: p + c.len_utf8(),
            prev: if i == 0 { NONE } else { i - 1 },
            next: i + 1,
        });
    }
    let n = syms.len();
    if n == 0 {
        return;
    }
    syms[n - 1].next = NONE;
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
        if l == NONE || r == NONE {
            return;
        }
        let piece = &text[syms[l].start..syms[r].end];
        if let Some(&id) = ids.get(piece) {
            heap.push(Bigram {
                score: scores.get(id as usize).copied().unwrap_or(0.0),
                left: l,
                right: r,
                len: piece.len(),
            });
        }
    };
    for i in 1..n {
        push(&mut heap, &syms, i - 1, i);
    }
    let len = |s: &Sym| s.end - s.start;
    while let Some(b) = heap.pop() {
        let (l, r) = (syms[b.left], syms[b.right]);
        // Stale: one side was merged away or grew since this pair was queued.
        if len(&l) == 0 || len(&r) == 0 || len(&l) + len(&r) != b.len {
            continue;
        }
        syms[b.left].end = r.end;
        syms[b.right].end = syms[b.right].start; // empty: merged away
        syms[b.left].next = r.next;
        if r.next != NONE {
            syms[r.next].prev = b.left;
        }
        push(&mut heap, &syms, l.prev, b.left);
        push(&mut heap, &syms, b.left, r.next);
    }
    let mut i = 0;
    while i != NONE {
        let s = syms[i];
        emit(ids.get(&text[s.start..s.end]).copied(), s.start, s.end);
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_score_merges_first() {
        let vocab = ["a", "b", "c", "ab", "bc", "abc"];
        let ids: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        // "bc" outranks "ab", and "abc" needs "a"+"bc".
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let mut out = Vec::new();
        tokenize("abcx", &ids, &scores, |id, s, e| out.push((id, s, e)));
        assert_eq!(out, [(Some(5), 0, 3), (None, 3, 4)]);
    }
}
