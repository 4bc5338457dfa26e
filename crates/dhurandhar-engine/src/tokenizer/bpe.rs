//! Rank-ordered BPE merging of one pre-tokenized word.
//!
//! The lowest-ranked adjacent pair merges first, the leftmost among equal ranks (the
//! order llama.cpp uses); a heap keeps long words (whitespace runs, base64) linear-log
//! rather than quadratic. Symbols are vocabulary ids; a character that is not in the
//! vocabulary never merges and falls back to byte tokens.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Id of a symbol that is not a vocabulary entry.
pub const UNKNOWN: u32 = u32::MAX;

/// Multiplicative hash for the `(left, right)` id pairs: SipHash dominated encode time.
#[derive(Debug, Default, Clone, Copy)]
pub struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let v = (self.0 ^ x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = v ^ (v >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `(left << 32 | right)` → (rank, merged id).
pub type MergeMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

/// The key of pair `(a, b)` in a [`MergeMap`].
pub fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

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

/// (rank, left, right, left id, right id, merged id): ordered by rank, then leftmost.
type HeapEntry = (u32, usize, usize, u32, u32, u32);

/// Words up to this many symbols merge by rescanning a rank array (cheaper than a heap
/// for the short words that are nearly all of a text).
const SCAN_MAX: usize = 48;

/// Reusable buffers for [`merge`].
#[derive(Debug, Default)]
pub struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<HeapEntry>>,
    ranks: Vec<(u32, u32)>,
}

fn lookup(merges: &MergeMap, a: u32, b: u32) -> Option<(u32, u32)> {
    if a == UNKNOWN || b == UNKNOWN {
        return None;
    }
    merges.get(&pair(a, b)).copied()
}

/// Merge `initial` symbols (id and byte range each) by `merges`; calls `emit` on each
/// final symbol in order.
pub fn merge(
    initial: impl Iterator<Item = (u32, usize, usize)>,
    merges: &MergeMap,
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
    if n <= SCAN_MAX {
        merge_scan(syms, merges, &mut scratch.ranks);
    } else {
        merge_heap(syms, merges, &mut scratch.heap);
    }
    let mut i = 0;
    while i != NONE {
        let s = syms[i];
        emit(s.id, s.start, s.end);
        i = s.next;
    }
}

/// Short words: `ranks[i]` is the merge of live symbol `i` with its successor.
fn merge_scan(syms: &mut [Sym], merges: &MergeMap, ranks: &mut Vec<(u32, u32)>) {
    const NO: (u32, u32) = (u32::MAX, UNKNOWN);
    ranks.clear();
    ranks.extend(
        syms.windows(2)
            .map(|w| lookup(merges, w[0].id, w[1].id).unwrap_or(NO)),
    );
    ranks.push(NO);
    loop {
        // Lowest rank, leftmost on ties (a strict `<` keeps the first).
        let mut best = NONE;
        let mut best_rank = u32::MAX;
        let mut i = 0;
        while i != NONE {
            if ranks[i].0 < best_rank {
                best_rank = ranks[i].0;
                best = i;
            }
            i = syms[i].next;
        }
        if best == NONE {
            break;
        }
        let r = syms[best].next;
        syms[best].id = ranks[best].1;
        syms[best].end = syms[r].end;
        syms[r].alive = false;
        let after = syms[r].next;
        syms[best].next = after;
        if after != NONE {
            syms[after].prev = best;
        }
        ranks[best] = if after == NONE {
            NO
        } else {
            lookup(merges, syms[best].id, syms[after].id).unwrap_or(NO)
        };
        let before = syms[best].prev;
        if before != NONE {
            ranks[before] = lookup(merges, syms[before].id, syms[best].id).unwrap_or(NO);
        }
    }
}

/// Long words: a heap of candidate pairs, stale entries skipped when popped.
fn merge_heap(syms: &mut [Sym], merges: &MergeMap, heap: &mut BinaryHeap<Reverse<HeapEntry>>) {
    heap.clear();
    let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
        if l == NONE || r == NONE {
            return;
        }
        if let Some((rank, merged)) = lookup(merges, syms[l].id, syms[r].id) {
            heap.push(Reverse((rank, l, r, syms[l].id, syms[r].id, merged)));
        }
    };
    for i in 1..syms.len() {
        push(heap, syms, i - 1, i);
    }
    while let Some(Reverse((_, l, r, a, b, merged))) = heap.pop() {
        // Stale entries: either side already merged into something else.
        if !syms[l].alive
            || !syms[r].alive
            || syms[l].next != r
            || syms[l].id != a
            || syms[r].id != b
        {
            continue;
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_rank_then_leftmost() {
        // ids: a=0 b=1 ab=2 bb=3 ; merges: (b,b) rank 0, (a,b) rank 1
        let merges: MergeMap = [(pair(1, 1), (0, 3)), (pair(0, 1), (1, 2))]
            .into_iter()
            .collect();
        // "abbb": b b (rank 0) merges at the leftmost place first → a, bb, b; the
        // same on the heap path (a long word of repeats).
        let run = |word: &[u32]| {
            let mut out = Vec::new();
            merge(
                word.iter().enumerate().map(|(i, &id)| (id, i, i + 1)),
                &merges,
                &mut Scratch::default(),
                |id, s, e| out.push((id, s, e)),
            );
            out
        };
        assert_eq!(run(&[0, 1, 1, 1]), [(0, 0, 1), (3, 1, 3), (1, 3, 4)]);
        let mut long = vec![0u32];
        long.extend(std::iter::repeat_n(1, 2 * SCAN_MAX + 1));
        let out = run(&long);
        assert_eq!(out.len(), SCAN_MAX + 2);
        assert_eq!(out[0], (0, 0, 1));
        assert!(out[1..out.len() - 1]
            .iter()
            .all(|&(id, s, e)| id == 3 && e == s + 2));
        assert_eq!(*out.last().unwrap(), (1, long.len() - 1, long.len()));
    }

    proptest::proptest! {
        /// The heap (long words) and the rescan (short words) merge alike.
        #[test]
        fn heap_and_scan_agree(word in proptest::collection::vec(0u32..3, 1..40)) {
            // ids 0..3 letters; merges build 3..8 from pairs, some overlapping.
            let merges: MergeMap = [
                (pair(0, 1), (0, 3)),
                (pair(1, 2), (1, 4)),
                (pair(3, 2), (2, 5)),
                (pair(0, 4), (3, 6)),
                (pair(2, 2), (4, 7)),
                (pair(7, 7), (5, 8)),
            ]
            .into_iter()
            .collect();
            let mut syms = Vec::new();
            let mut runs = Vec::new();
            for heap in [false, true] {
                syms.clear();
                for (i, &id) in word.iter().enumerate() {
                    syms.push(Sym { id, start: i, end: i + 1, prev: if i == 0 { NONE } else { i - 1 }, next: if i + 1 == word.len() { NONE } else { i + 1 }, alive: true });
                }
                if heap {
                    merge_heap(&mut syms, &merges, &mut BinaryHeap::new());
                } else {
                    merge_scan(&mut syms, &merges, &mut Vec::new());
                }
                let mut out = Vec::new();
                let mut i = if syms.is_empty() { NONE } else { 0 };
                while i != NONE {
                    out.push((syms[i].id, syms[i].start, syms[i].end));
                    i = syms[i].next;
                }
                runs.push(out);
            }
            proptest::prop_assert_eq!(&runs[0], &runs[1]);
        }
    }
}
