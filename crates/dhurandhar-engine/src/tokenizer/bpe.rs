//! Rank-ordered BPE merging of one pre-tokenized word.
//!
//! The lowest-ranked adjacent pair merges first, the leftmost among equal ranks (the
//! order llama.cpp uses); a heap keeps long words (whitespace runs, base64) linear-log
//! rather than quadratic. Symbols are vocabulary ids; a character that is not in the
//! vocabulary never merges and falls back to byte tokens.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Id of a symbol that is not a vocabulary entry.
pub const UNKNOWN: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Sym {
    id: u32,
    /// Byte range in the word (for the byte fallback of unknown symbols).
    start: usize,
    end: usize,
    prev: usize,
    next: usize,
    alive: bool,
}

const NONE: usize = usize::MAX;

/// Reusable buffers for [`merge`].
#[derive(Debug, Default)]
pub struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, usize, usize, u32, u32)>>,
}

/// Merge `initial` symbols (id and byte range each) by `merges`
/// ((left, right) → (rank, merged id)); calls `emit` on each final symbol in order.
pub fn merge(
    initial: impl Iterator<Item = (u32, usize, usize)>,
    merges: &HashMap<(u32, u32), (u32, u32)>,
    scratch: &mut Scratch,
    mut emit: impl FnMut(u32, usize, usize),
) {
    let syms = &mut scratch.syms;
    syms.clear();
    for (i, (id, start, end)) in initial.enumerate() {
        syms.push(Sym {
            id,
            start,
            end,
            prev: if i == 0 { NONE } else { i - 1 },
            next: i + 1,
            alive: true,
        });
    }
    let n = syms.len();
    if n == 0 {
        return;
    }
    syms[n - 1].next = NONE;
    let heap = &mut scratch.heap;
    heap.clear();
    let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
        if l == NONE || r == NONE {
            return;
        }
        let (a, b) = (syms[l].id, syms[r].id);
        if a == UNKNOWN || b == UNKNOWN {
            return;
        }
        if let Some(&(rank, _)) = merges.get(&(a, b)) {
            heap.push(Reverse((rank, l, r, a, b)));
        }
    };
    for i in 1..n {
        push(heap, syms, i - 1, i);
    }
    while let Some(Reverse((_, l, r, a, b))) = heap.pop() {
        // Stale entries: either side already merged into something else.
        if !syms[l].alive || !syms[r].alive || syms[l].next != r {
            continue;
        }
        if syms[l].id != a || syms[r].id != b {
            continue;
        }
        let Some(&(_, merged)) = merges.get(&(a, b)) else {
            continue;
        };
        syms[l].id = merged;
        syms[l].end = syms[r].end;
        syms[r].alive = false;
        let after = syms[r].next;
        syms[l].next = after;
        if after != NONE {
            syms[after].prev = l;
        }
        let before = syms[l].prev;
        push(heap, syms, before, l);
        push(heap, syms, l, after);
    }
    let mut i = 0;
    while i != NONE {
        let s = syms[i];
        emit(s.id, s.start, s.end);
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_rank_then_leftmost() {
        // ids: a=0 b=1 ab=2 bb=3 ; merges: (b,b) rank 0, (a,b) rank 1
        let merges: HashMap<(u32, u32), (u32, u32)> =
            [((1, 1), (0, 3)), ((0, 1), (1, 2))].into_iter().collect();
        let mut out = Vec::new();
        let word = [0u32, 1, 1, 1];
        merge(
            word.iter().enumerate().map(|(i, &id)| (id, i, i + 1)),
            &merges,
            &mut Scratch::default(),
            |id, s, e| out.push((id, s, e)),
        );
        // "abbb": b b (rank 0) merges at the leftmost place first → a, bb, b.
        assert_eq!(out, [(0, 0, 1), (3, 1, 3), (1, 3, 4)]);
    }
}
