//! Mixture-of-experts layers: routing a token to its experts, and (streamed weights) the
//! cache the experts are read into.
//!
//! A streamed MoE model reads its dense part (attention, shared expert) through the
//! layer pool like any layer, and each routed expert on demand into an expert cache of
//! a fixed byte size; [`Eviction`] says which expert makes room. Reads overlap
//! computation two ways, on a thread of their own: once a layer is routed, its missing
//! experts are read while its cached ones compute (the computing thread takes over the
//! last ones still queued); and when a decoded token leaves layer `i`, layer `i+1`'s
//! router is applied to the hidden state and the likelier half of the experts it picks
//! are read while layer `i+1`'s attention computes (a guess: [`ExpertStats`] say how
//! often it was used).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use crate::arch::ExpertRouting;
use crate::store::{buffer_len, read_error, AlignedBuf, Counters, Extent, Source};
use crate::EngineError;

/// The experts a token goes to and their weights, from the router's logits: softmax over
/// every expert, the `used` largest probabilities kept (ties: the lower index, as a
/// stable sort gives), renormalized to sum to 1 when the architecture says so, then
/// multiplied by `scale` (the file's `expert_weights_scale`; 0 or 1 mean none).
/// `logits` is overwritten with the probabilities.
pub fn route(
    logits: &mut [f32],
    used: usize,
    routing: ExpertRouting,
    scale: f32,
    out: &mut Vec<(usize, f32)>,
) {
    out.clear();
    if logits.is_empty() {
        return;
    }
    crate::kernels::softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    out.extend(order.iter().take(used).map(|&e| (e, logits[e])));
    if routing == ExpertRouting::TopKRenormalized {
        // llama.cpp clamps the sum at the smallest normal f16 before dividing.
        let s = out.iter().map(|&(_, w)| w).sum::<f32>().max(6.103_515_6e-5);
        out.iter_mut().for_each(|(_, w)| *w /= s);
    }
    if scale != 0.0 && scale != 1.0 {
        out.iter_mut().for_each(|(_, w)| *w *= scale);
    }
}

/// Which cached expert makes room for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// The expert whose layer comes again last (the layer just computed first), least
    /// recently used among equals: layers run in a cycle, so once a token's experts
    /// outgrow the cache, LRU evicts exactly the expert needed next.
    #[default]
    NextUse,
    /// Least recently used.
    Lru,
}

impl std::str::FromStr for Eviction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "next-use" => Ok(Eviction::NextUse),
            "lru" => Ok(Eviction::Lru),
            other => Err(format!(
                "unknown expert eviction `{other}` (expected next-use or lru)"
            )),
        }
    }
}

/// How the expert cache did since loading (streamed MoE models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ExpertStats {
    /// Experts the forward pass asked for (one per token, layer and routed expert, with
    /// the tokens of a prefill chunk that share an expert asking once).
    pub lookups: u64,
    /// Found in the cache, read.
    pub hits: u64,
    /// Found being read ahead by the prefetch thread (the wait is in the stream's I/O
    /// wait).
    pub in_flight: u64,
    /// Not in the cache: read on demand by the computing thread.
    pub misses: u64,
    /// Experts the next layer's router predicted and the prefetch thread read.
    pub prefetched: u64,
    /// Of those, how many a pass then used before they were evicted.
    pub prefetch_used: u64,
    /// Predictions not read because the cache had no room that was not in use or
    /// predicted itself.
    pub prefetch_dropped: u64,
    /// Experts evicted to make room.
    pub evictions: u64,
    /// Bytes of experts read (on demand and ahead).
    pub bytes_read: u64,
    /// The cache's size in bytes.
    pub capacity_bytes: u64,
}

impl ExpertStats {
    /// Share of lookups found in the cache, read.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.lookups > 0).then(|| self.hits as f64 / self.lookups as f64)
    }

    /// Share of prefetched experts that were used.
    pub fn prefetch_accuracy(&self) -> Option<f64> {
        (self.prefetched > 0).then(|| self.prefetch_used as f64 / self.prefetched as f64)
    }

    /// What happened between `earlier` and `self` (two readings of one model).
    pub fn since(&self, earlier: &ExpertStats) -> ExpertStats {
        ExpertStats {
            lookups: self.lookups - earlier.lookups,
            hits: self.hits - earlier.hits,
            in_flight: self.in_flight - earlier.in_flight,
            misses: self.misses - earlier.misses,
            prefetched: self.prefetched - earlier.prefetched,
            prefetch_used: self.prefetch_used - earlier.prefetch_used,
            prefetch_dropped: self.prefetch_dropped - earlier.prefetch_dropped,
            evictions: self.evictions - earlier.evictions,
            bytes_read: self.bytes_read - earlier.bytes_read,
            capacity_bytes: self.capacity_bytes,
        }
    }
}

type Key = (usize, usize);
/// A read-ahead request: layer, expert, and whether it is a prediction.
type Ahead = (usize, usize, bool);

enum Slot {
    /// Asked of the prefetch thread, not started: whichever thread gets to it first
    /// reads it (the computing thread takes it over rather than wait). Its bytes are
    /// reserved.
    Queued {
        predicted: bool,
        /// An evicted buffer of the right size to read into, so memory is recycled
        /// rather than freed in one thread's allocator arena and taken from another's.
        buf: Option<AlignedBuf>,
    },
    /// Being read (by the prefetch thread or a computing thread); its bytes are
    /// reserved.
    Loading,
    Ready {
        buf: Arc<AlignedBuf>,
        last_use: u64,
        /// Read ahead and not used yet.
        predicted: bool,
    },
}

struct State {
    capacity: u64,
    eviction: Eviction,
    /// Bytes of every slot, loading or ready.
    used: u64,
    tick: u64,
    slots: HashMap<Key, Slot>,
    stats: ExpertStats,
}

/// A byte-bounded cache of experts read from the file on demand, with a thread that
/// reads predicted experts ahead. See the module documentation.
pub(crate) struct ExpertCache {
    source: Arc<Source>,
    origin: String,
    counters: Arc<Counters>,
    /// The reads of each expert, by layer then expert (empty for dense layers); an
    /// expert's bytes are its buffer's length ([`buffer_len`]).
    reads: Arc<Vec<Vec<Vec<Extent>>>>,
    state: Arc<(Mutex<State>, Condvar)>,
    prefetch_on: AtomicBool,
    ahead: Mutex<Option<Sender<Ahead>>>,
}

impl ExpertCache {
    /// An empty cache over `reads` (per layer, per expert); it holds nothing until
    /// [`ExpertCache::set_capacity`].
    pub(crate) fn new(
        source: Arc<Source>,
        origin: &str,
        counters: Arc<Counters>,
        reads: Vec<Vec<Vec<Extent>>>,
    ) -> ExpertCache {
        ExpertCache {
            source,
            origin: origin.to_string(),
            counters,
            reads: Arc::new(reads),
            state: Arc::new((
                Mutex::new(State {
                    capacity: 0,
                    eviction: Eviction::default(),
                    used: 0,
                    tick: 0,
                    slots: HashMap::new(),
                    stats: ExpertStats::default(),
                }),
                Condvar::new(),
            )),
            prefetch_on: AtomicBool::new(true),
            ahead: Mutex::new(None),
        }
    }

    /// Hold up to `bytes` of experts (the stream's plan decides, when it starts).
    pub(crate) fn set_capacity(&self, bytes: u64) {
        let mut st = lock(&self.state.0);
        st.capacity = bytes;
        st.stats.capacity_bytes = bytes;
    }

    /// Stored bytes of each expert, by layer.
    pub(crate) fn expert_bytes(&self) -> Vec<Vec<usize>> {
        self.reads
            .iter()
            .map(|l| l.iter().map(|r| buffer_len(r)).collect())
            .collect()
    }

    pub(crate) fn stats(&self) -> ExpertStats {
        lock(&self.state.0).stats
    }

    /// Whether predicted experts are read ahead (on by default).
    pub(crate) fn set_prefetch(&self, on: bool) {
        self.prefetch_on.store(on, Ordering::Relaxed);
    }

    /// Whether reads ahead are on.
    pub(crate) fn prefetching(&self) -> bool {
        self.prefetch_on.load(Ordering::Relaxed)
    }

    pub(crate) fn set_eviction(&self, e: Eviction) {
        lock(&self.state.0).eviction = e;
    }

    /// Expert `e` of layer `l`, read now unless cached or being read ahead.
    pub(crate) fn get(&self, l: usize, e: usize) -> Result<Arc<AlignedBuf>, EngineError> {
        let size = self.size(l, e)?;
        let (m, cv) = &*self.state;
        let mut st = lock(m);
        st.stats.lookups += 1;
        let mut waited: Option<Instant> = None;
        loop {
            // Asked of the prefetch thread and not started: read it here while that
            // thread reads another (two reads in flight instead of a wait).
            if let Some((predicted, buf)) = st.claim((l, e)) {
                st.stats.prefetch_used += u64::from(predicted);
                st.stats.misses += 1;
                drop(st);
                return self.finish_read(l, e, size, buf);
            }
            st.tick += 1;
            let tick = st.tick;
            match st.slots.get_mut(&(l, e)) {
                Some(Slot::Ready {
                    buf,
                    last_use,
                    predicted,
                }) => {
                    *last_use = tick;
                    let buf = buf.clone();
                    if std::mem::take(predicted) {
                        st.stats.prefetch_used += 1;
                    }
                    match waited {
                        Some(t) => {
                            st.stats.in_flight += 1;
                            self.counters
                                .wait_ns
                                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        }
                        None => st.stats.hits += 1,
                    }
                    return Ok(buf);
                }
                Some(Slot::Loading | Slot::Queued { .. }) => {
                    waited.get_or_insert_with(Instant::now);
                    st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                None => {
                    // (Also after waiting for a read ahead that failed: read it here.)
                    st.stats.misses += 1;
                    let reuse = loop {
                        if let Some(r) = make_room(&mut st, size, l, self.reads.len(), false) {
                            break r;
                        }
                        // Everything else is in use or being read: wait for a read to
                        // finish, then evict again; with nothing being read, the cache
                        // is too small for what is in use.
                        if !st
                            .slots
                            .values()
                            .any(|s| matches!(s, Slot::Loading | Slot::Queued { .. }))
                        {
                            return Err(EngineError::Budget(format!(
                                "the expert cache of {} bytes cannot hold expert {e} of layer {l} \
                                 ({size} bytes) beside the experts in use",
                                st.capacity
                            )));
                        }
                        st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                    };
                    st.used += size as u64;
                    st.slots.insert((l, e), Slot::Loading);
                    drop(st);
                    return self.finish_read(l, e, size, reuse);
                }
            }
        }
    }

    /// Whether expert `(l, e)` is in the cache, read.
    pub(crate) fn cached(&self, l: usize, e: usize) -> bool {
        matches!(
            lock(&self.state.0).slots.get(&(l, e)),
            Some(Slot::Ready { .. })
        )
    }

    /// Read these experts of layer `l` ahead, on the prefetch thread, where the cache
    /// has room that nothing in use or predicted holds. Already cached experts are left
    /// as they are. `predicted`: a guess from the next layer's router (counted in the
    /// stats), rather than experts the current layer was routed to.
    pub(crate) fn prefetch(
        &self,
        l: usize,
        experts: &[usize],
        predicted: bool,
    ) -> Result<(), EngineError> {
        if !self.prefetching() {
            return Ok(());
        }
        let tx = self.sender()?;
        let (m, _) = &*self.state;
        let mut st = lock(m);
        // The cached ones are about to be used: most recent first, so room for the
        // others is never made by evicting them.
        st.tick += 1;
        let tick = st.tick;
        for &e in experts {
            if let Some(Slot::Ready { last_use, .. }) = st.slots.get_mut(&(l, e)) {
                *last_use = tick;
            }
        }
        if !predicted {
            // Layer `l` was routed: its predictions that missed are ordinary entries now
            // (kept from eviction by other predictions, they would fill the cache).
            for e in 0..self.reads[l].len() {
                if experts.contains(&e) {
                    continue;
                }
                if let Some(Slot::Ready { predicted: p, .. }) = st.slots.get_mut(&(l, e)) {
                    *p = false;
                }
            }
        }
        for &e in experts {
            if st.slots.contains_key(&(l, e)) {
                continue;
            }
            let size = self.size(l, e)?;
            let Some(buf) = make_room(&mut st, size, l, self.reads.len(), true) else {
                if predicted {
                    st.stats.prefetch_dropped += 1;
                }
                continue;
            };
            st.used += size as u64;
            st.slots.insert((l, e), Slot::Queued { predicted, buf });
            if tx.send((l, e, predicted)).is_err() {
                st.slots.remove(&(l, e));
                st.used -= size as u64;
            } else if predicted {
                st.stats.prefetched += 1;
            }
        }
        Ok(())
    }

    /// Read expert `(l, e)`, whose slot this thread set `Loading` with its bytes
    /// reserved, on the computing thread (the time counts as I/O wait), and publish it.
    fn finish_read(
        &self,
        l: usize,
        e: usize,
        size: usize,
        reuse: Option<AlignedBuf>,
    ) -> Result<Arc<AlignedBuf>, EngineError> {
        let started = Instant::now();
        let r = self.read(l, e, reuse);
        self.counters
            .wait_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        publish(&self.state, (l, e), size, r, false)
    }

    fn size(&self, l: usize, e: usize) -> Result<usize, EngineError> {
        self.reads
            .get(l)
            .and_then(|x| x.get(e))
            .map(|r| buffer_len(r))
            .ok_or_else(|| EngineError::Invalid(format!("no expert {e} in layer {l}")))
    }

    /// Read expert `(l, e)` into `reuse` (when its size fits) or a new buffer.
    fn read(
        &self,
        l: usize,
        e: usize,
        reuse: Option<AlignedBuf>,
    ) -> Result<AlignedBuf, EngineError> {
        read_expert(&self.source, &self.reads[l][e], reuse, &self.counters)
            .map_err(|err| read_error(&self.origin, err))
    }

    /// The prefetch thread's queue, started on first use.
    fn sender(&self) -> Result<Sender<Ahead>, EngineError> {
        let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = a.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = channel::<Ahead>();
        let (source, reads, counters, state) = (
            self.source.clone(),
            self.reads.clone(),
            self.counters.clone(),
            self.state.clone(),
        );
        std::thread::Builder::new()
            .name("dhurandhar-experts".into())
            .spawn(move || {
                // Ends when the cache is dropped (the queue closes).
                while let Ok((l, e, predicted)) = rx.recv() {
                    // Taken over by a computing thread meanwhile: nothing to do.
                    let Some((_, reuse)) = lock(&state.0).claim((l, e)) else {
                        continue;
                    };
                    let reads = &reads[l][e];
                    let r = read_expert(&source, reads, reuse, &counters);
                    // A failed read ahead is forgotten: the pass reads the expert itself
                    // if it needs it, and reports the error then.
                    let _ = publish(&state, (l, e), buffer_len(reads), r, predicted);
                }
            })
            .map_err(|e| EngineError::Invalid(format!("expert prefetch thread: {e}")))?;
        *a = Some(tx.clone());
        Ok(tx)
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// Start reading `key` if it is queued and not started: its slot becomes `Loading`;
    /// returns whether it was a prediction and the buffer set aside for it.
    fn claim(&mut self, key: Key) -> Option<(bool, Option<AlignedBuf>)> {
        let slot = self.slots.get_mut(&key)?;
        if !matches!(slot, Slot::Queued { .. }) {
            return None;
        }
        match std::mem::replace(slot, Slot::Loading) {
            Slot::Queued { predicted, buf } => Some((predicted, buf)),
            _ => None,
        }
    }
}

/// The end of a read of `key` (`size` reserved bytes): cached, or on error its slot
/// freed; wakes the threads waiting for it.
fn publish<E>(
    state: &(Mutex<State>, Condvar),
    key: Key,
    size: usize,
    read: Result<AlignedBuf, E>,
    predicted: bool,
) -> Result<Arc<AlignedBuf>, E> {
    let mut st = lock(&state.0);
    let out = match read {
        Ok(buf) => {
            let buf = Arc::new(buf);
            st.stats.bytes_read += size as u64;
            st.tick += 1;
            let last_use = st.tick;
            st.slots.insert(
                key,
                Slot::Ready {
                    buf: buf.clone(),
                    last_use,
                    predicted,
                },
            );
            Ok(buf)
        }
        Err(err) => {
            st.slots.remove(&key);
            st.used -= size as u64;
            Err(err)
        }
    };
    state.1.notify_all();
    out
}

/// Evict least recently used experts (not in use; not predicted and unused when
/// `spare_predicted`) until `size` more bytes fit. Returns an evicted buffer of exactly
/// `size` bytes to reuse when there is one; `None` when not enough can be evicted.
fn make_room(
    st: &mut State,
    size: usize,
    layer: usize,
    layers: usize,
    spare_predicted: bool,
) -> Option<Option<AlignedBuf>> {
    let mut reuse = None;
    let lru = st.eviction == Eviction::Lru;
    while st.used + size as u64 > st.capacity {
        let victim = st
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready {
                    buf,
                    last_use,
                    predicted,
                } if Arc::strong_count(buf) == 1 && !(spare_predicted && *predicted) => {
                    // Layers until this expert's layer comes again (its own layer,
                    // being computed: 0, evicted last).
                    let ahead = if lru {
                        0
                    } else {
                        (k.0 + layers - layer) % layers.max(1)
                    };
                    Some((std::cmp::Reverse(ahead), *last_use, *k))
                }
                _ => None,
            })
            .min()?
            .2;
        if let Some(Slot::Ready { buf, .. }) = st.slots.remove(&victim) {
            let len = buf.bytes().len();
            st.used -= len as u64;
            st.stats.evictions += 1;
            if len == size {
                reuse = Arc::into_inner(buf);
            }
        }
    }
    Some(reuse)
}

fn read_expert(
    source: &Source,
    reads: &[Extent],
    reuse: Option<AlignedBuf>,
    counters: &Counters,
) -> std::io::Result<AlignedBuf> {
    let mut buf = reuse.unwrap_or_else(|| AlignedBuf::new(buffer_len(reads)));
    source.read_into(reads, &mut buf, counters)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan_reads;

    #[test]
    fn routing_keeps_the_largest_probabilities() {
        // Logits ln 1, ln 2, ln 3, ln 4: probabilities 0.1, 0.2, 0.3, 0.4.
        let logits: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let mut out = Vec::new();
        route(&mut logits.clone(), 2, ExpertRouting::TopK, 0.0, &mut out);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), [3, 2]);
        assert!((out[0].1 - 0.4).abs() < 1e-6 && (out[1].1 - 0.3).abs() < 1e-6);
        // Renormalized: 0.4 / 0.7 and 0.3 / 0.7; then a scale of 2.
        route(
            &mut logits.clone(),
            2,
            ExpertRouting::TopKRenormalized,
            2.0,
            &mut out,
        );
        assert!((out[0].1 - 2.0 * 4.0 / 7.0).abs() < 1e-6, "{out:?}");
        assert!((out[1].1 - 2.0 * 3.0 / 7.0).abs() < 1e-6);
        // Ties go to the lower index.
        route(
            &mut [0.0, 1.0, 1.0, 0.0],
            1,
            ExpertRouting::TopK,
            1.0,
            &mut out,
        );
        assert_eq!(out[0].0, 1);
    }

    /// A cache of `capacity` bytes over a file of `layers × experts` experts of `each`
    /// bytes, expert `e` of layer `l` filled with the byte `l × experts + e`.
    fn cache_over(
        path: &std::path::Path,
        layers: usize,
        experts: usize,
        each: usize,
        capacity: u64,
    ) -> ExpertCache {
        let data: Vec<u8> = (0..layers * experts * each)
            .map(|i| (i / each) as u8)
            .collect();
        std::fs::write(path, &data).unwrap();
        let reads = (0..layers)
            .map(|l| {
                (0..experts)
                    .map(|e| plan_reads(&[(((l * experts + e) * each) as u64, each)]).0)
                    .collect()
            })
            .collect();
        let c = ExpertCache::new(
            Arc::new(Source::File {
                file: std::fs::File::open(path).unwrap(),
                direct: false,
            }),
            "test",
            Arc::default(),
            reads,
        );
        c.set_capacity(capacity);
        c
    }

    #[test]
    fn the_cache_serves_each_experts_bytes_and_evicts_the_least_recently_used() {
        let dir = std::env::temp_dir().join(format!("dh-experts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let each = 8192;
        // Room for two experts.
        let c = cache_over(&dir.join("a.bin"), 1, 4, each, 2 * each as u64);
        for e in [0, 1, 0, 2, 0, 1] {
            let b = c.get(0, e).unwrap();
            assert!(b.bytes()[..each].iter().all(|&x| x == e as u8));
        }
        // 0 miss, 1 miss, 0 hit, 2 miss (evicts 1), 0 hit, 1 miss (evicts 2).
        let s = c.stats();
        assert_eq!((s.lookups, s.hits, s.misses, s.evictions), (6, 2, 4, 2));
        assert!(lock(&c.state.0).used <= 2 * each as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn next_use_eviction_keeps_the_expert_whose_layer_comes_next() {
        let dir = std::env::temp_dir().join(format!("dh-experts-n-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let each = 4096;
        for (eviction, kept) in [(Eviction::NextUse, 0), (Eviction::Lru, 1)] {
            // Three layers of one expert each; room for two.
            let c = cache_over(&dir.join("d.bin"), 3, 1, each, 2 * each as u64);
            c.set_eviction(eviction);
            for l in 0..3 {
                c.get(l, 0).unwrap();
            }
            // At layer 2, layer 0 comes next (the next token) and layer 1 last: next-use
            // evicts layer 1; LRU evicts layer 0, the one needed next.
            assert!(c.cached(2, 0) && c.cached(kept, 0), "{eviction:?}");
            assert!(!c.cached(1 - kept, 0), "{eviction:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn experts_asked_ahead_are_read_once_whichever_thread_gets_there_first() {
        let dir = std::env::temp_dir().join(format!("dh-experts-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let each = 4096;
        let c = cache_over(&dir.join("c.bin"), 1, 6, each, 6 * each as u64);
        c.prefetch(0, &[0, 1, 2, 3, 4, 5], false).unwrap();
        // From the back: the computing thread takes queued ones over, or waits for
        // the ones the prefetch thread started.
        for e in (0..6).rev() {
            let b = c.get(0, e).unwrap();
            assert!(b.bytes()[..each].iter().all(|&x| x == e as u8));
        }
        let s = c.stats();
        assert_eq!(s.lookups, s.hits + s.in_flight + s.misses, "{s:?}");
        assert_eq!(
            s.bytes_read,
            6 * each as u64,
            "every expert read exactly once"
        );
        assert_eq!(s.evictions, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prefetched_experts_are_counted_when_used_and_never_overfill() {
        let dir = std::env::temp_dir().join(format!("dh-experts-p-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let each = 4096;
        let c = cache_over(&dir.join("b.bin"), 1, 6, each, 3 * each as u64);
        c.prefetch(0, &[1, 2, 3, 4], true).unwrap();
        // Three fit; the fourth would evict a prediction, so it is dropped. Once read
        // ahead, a lookup is a hit.
        let t = std::time::Instant::now();
        while !c.cached(0, 2) && t.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let b = c.get(0, 2).unwrap();
        assert!(b.bytes()[..each].iter().all(|&x| x == 2));
        drop(b);
        let s = c.stats();
        assert_eq!((s.prefetched, s.prefetch_dropped), (3, 1));
        assert_eq!(s.prefetch_used, 1);
        assert_eq!(s.misses, 0);
        assert_eq!(s.hit_rate(), Some(1.0));
        // Turned off, predictions are ignored.
        c.set_prefetch(false);
        c.prefetch(0, &[5], true).unwrap();
        assert_eq!(c.stats().prefetched, 3);
        assert!(lock(&c.state.0).used <= 3 * each as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
