//! Where the forward pass gets its weights from: the weight store behind a
//! [`crate::Model`].
//!
//! - [`WeightMode::Mmap`]: the file is memory-mapped and the kernel pages it (zero
//!   copies, the default).
//! - [`WeightMode::Resident`]: the file is read into RAM once (no map).
//! - [`WeightMode::Stream`]: only the norms stay in RAM; each layer's matrices, and the
//!   output head in chunks of rows, are read with `pread` into a bounded pool of
//!   buffers by a prefetch thread that reads ahead of the computation in the order it
//!   asks for them (the head only for passes that compute logits). Leftover budget pins
//!   the first layers, then the head, so the bytes read per token fall as the budget
//!   grows. Nothing maps the file in this mode.
//!
//! The pool is sized by [`plan_pool`] from a RAM budget minus the KV cache, the
//! activations and the measured fixed overhead.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use memmap2::Mmap;
use serde::Serialize;

use crate::experts::ExpertCache;
use crate::EngineError;

/// How the engine holds the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightMode {
    /// Memory-map the file; the kernel pages weights in and out.
    #[default]
    Mmap,
    /// Read the whole file into RAM. On x86 the matrices of the types
    /// [`crate::interleave`] supports are then interleaved by eight rows in place: same
    /// bytes, faster kernels.
    Resident,
    /// Stream layers from the file through a bounded pool under a RAM budget.
    Stream,
}

impl WeightMode {
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::Mmap => "mmap",
            WeightMode::Resident => "resident",
            WeightMode::Stream => "stream",
        }
    }
}

impl std::str::FromStr for WeightMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmap" => Ok(WeightMode::Mmap),
            "resident" => Ok(WeightMode::Resident),
            "stream" => Ok(WeightMode::Stream),
            other => Err(format!(
                "unknown weight mode `{other}` (expected mmap, resident or stream)"
            )),
        }
    }
}

/// What a budget has to hold besides the streamed layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetInputs {
    /// The RAM budget in bytes.
    pub budget: u64,
    /// The KV cache at the planned context.
    pub kv_bytes: u64,
    /// Activation buffers of one forward pass.
    pub activation_bytes: u64,
    /// Weights kept in RAM whatever the budget (output head, norms).
    pub resident_bytes: u64,
    /// The process's measured footprint besides the above (code, tokenizer, heap), plus
    /// what the run will add: its growth reserve and, streaming from a `.dhp` pack, the
    /// reading threads' decode buffers.
    pub fixed_bytes: u64,
    /// Stored bytes of each layer's matrices, in layer order.
    pub layer_bytes: Vec<u64>,
    /// Stored bytes of each chunk of the output head (streamed after the layers).
    pub head_chunk_bytes: Vec<u64>,
    /// Mixture-of-experts models: what their expert cache needs (`None`: no experts).
    pub experts: Option<ExpertBudget>,
}

/// The expert cache's part of a budget: experts are read on demand, when the router
/// picks them, into a cache of their own (not the layer pool's buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertBudget {
    /// Stored bytes of every expert of every layer.
    pub total_bytes: u64,
    /// The least cache that works: the experts one token uses in a layer, plus one
    /// being read ahead ([`expert_cache_minimum`]).
    pub min_bytes: u64,
    /// A cache size the caller asked for; otherwise what the budget leaves once the
    /// dense layers and the head are pinned.
    pub requested: Option<u64>,
}

/// The least expert cache that lets a layer compute: the `used` experts a token is
/// routed to, plus one read ahead, at the largest expert's size.
pub fn expert_cache_minimum(largest_expert: u64, used: usize) -> u64 {
    largest_expert * (used as u64 + 1)
}

/// How a budget is spent: the layer pool, its window, and the pinned layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorePlan {
    /// `None`: no budget was given (the minimum window, nothing pinned).
    pub budget_bytes: Option<u64>,
    pub kv_bytes: u64,
    pub activation_bytes: u64,
    pub resident_bytes: u64,
    pub fixed_bytes: u64,
    /// Bytes for layer buffers: the budget minus everything above.
    pub pool_bytes: u64,
    /// Of the pool, the bytes the buffers take: the window's slots (each the largest
    /// item) and the pinned items. The rest of the pool stays unused.
    pub buffer_bytes: u64,
    /// Layer buffers the prefetch thread cycles through (0 when every layer is pinned).
    pub window_slots: usize,
    /// Layers `0..pinned_layers` are read once and kept.
    pub pinned_layers: usize,
    /// The output head's chunks, and how many of them are pinned (only once every layer
    /// is: a pinned layer saves its read on every pass, a pinned head chunk only on
    /// passes that compute logits).
    pub head_chunks: usize,
    pub pinned_head_chunks: usize,
    /// Weight bytes read from the file per forward pass that computes logits (the
    /// dense layers and head; experts are read as the router picks them, so theirs are
    /// counted as they happen, not planned).
    pub streamed_bytes_per_pass: u64,
    /// Bytes the mixture-of-experts cache may hold (0 without experts).
    pub expert_cache_bytes: u64,
    /// Stored bytes of every expert (0 without experts): the cache holds this share.
    pub expert_bytes: u64,
}

impl StorePlan {
    /// Items read once and kept: the pinned layers, then the pinned head chunks.
    pub(crate) fn pinned_items(&self) -> usize {
        self.pinned_layers + self.pinned_head_chunks
    }
}

/// Buffers in the streaming window: one computed while the next is read.
pub const WINDOW_SLOTS: usize = 2;

/// Size the pool from a budget: pool = budget − KV − activations − resident − fixed.
/// The window takes [`WINDOW_SLOTS`] buffers of the largest item (layer or head chunk);
/// what is left pins the first layers, then the head's chunks. When everything fits,
/// all is pinned and nothing streams. A budget that cannot hold the minimum (the window
/// + the rest) is refused with the breakdown.
pub fn plan_pool(inp: &BudgetInputs) -> Result<StorePlan, String> {
    let items: Vec<u64> = inp
        .layer_bytes
        .iter()
        .chain(&inp.head_chunk_bytes)
        .copied()
        .collect();
    let largest = items.iter().copied().max().unwrap_or(0);
    let total: u64 = items.iter().sum();
    let window = WINDOW_SLOTS as u64 * largest;
    let others = inp.kv_bytes + inp.activation_bytes + inp.resident_bytes + inp.fixed_bytes;
    // The expert cache's floor: what the caller asked for, never below the minimum, never
    // above every expert.
    let expert_floor = inp.experts.map_or(0, |e| {
        e.requested
            .unwrap_or(e.min_bytes)
            .max(e.min_bytes)
            .min(e.total_bytes)
    });
    let minimum = others + window.min(total) + expert_floor;
    if inp.budget < minimum {
        let experts = if expert_floor > 0 {
            format!(" + expert cache {}", mib(expert_floor))
        } else {
            String::new()
        };
        return Err(format!(
            "a RAM budget of {} cannot hold the minimum of {} for streaming: KV cache {} + activations {} + resident weights (norms) {} + fixed overhead {} + two layer buffers {}{experts}",
            mib(inp.budget),
            mib(minimum),
            mib(inp.kv_bytes),
            mib(inp.activation_bytes),
            mib(inp.resident_bytes),
            mib(inp.fixed_bytes),
            mib(window.min(total)),
        ));
    }
    let pool = inp.budget - others;
    // Dense layers before experts: a pinned layer saves its read on every pass, a cached
    // expert only on the passes that route to it.
    let dense_room = pool - expert_floor;
    let (slots, pinned, left) = if total <= dense_room {
        (0, items.len(), dense_room - total)
    } else {
        let mut left = dense_room - window;
        let mut pinned = 0;
        for &b in &items {
            if b > left {
                break;
            }
            left -= b;
            pinned += 1;
        }
        (WINDOW_SLOTS, pinned, left)
    };
    let expert_cache_bytes = match inp.experts {
        // What pinning left over grows the cache, up to every expert.
        Some(e) if e.requested.is_none() => (expert_floor + left).min(e.total_bytes),
        _ => expert_floor,
    };
    let n_layers = inp.layer_bytes.len();
    let buffer_bytes = slots as u64 * largest + items[..pinned].iter().sum::<u64>();
    Ok(StorePlan {
        budget_bytes: Some(inp.budget),
        kv_bytes: inp.kv_bytes,
        activation_bytes: inp.activation_bytes,
        resident_bytes: inp.resident_bytes,
        fixed_bytes: inp.fixed_bytes,
        pool_bytes: pool,
        buffer_bytes,
        window_slots: slots,
        pinned_layers: pinned.min(n_layers),
        head_chunks: inp.head_chunk_bytes.len(),
        pinned_head_chunks: pinned.saturating_sub(n_layers),
        streamed_bytes_per_pass: items[pinned..].iter().sum(),
        expert_cache_bytes,
        expert_bytes: inp.experts.map_or(0, |e| e.total_bytes),
    })
}

/// `12.3 MiB`, for messages (the engine has no units module).
/// A zeroed buffer of `len` bytes for resident weights: its pages are untouched until
/// written, and advised onto transparent huge pages first (Linux; a resident model is
/// read in full every token, and on 4 KiB pages that cost a TLB miss per page: resident
/// decode of the SmolLM2 fixture ran 1.3-1.4x faster on huge pages on one thread). The
/// device probe builds its resident-layout matrices with it, so it times what a resident
/// run meets.
pub fn resident_buffer(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    dhurandhar_profile::sys::advise_huge_pages(&mut bytes);
    bytes
}

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Alignment of every streamed read: file offset, length and buffer address, as
/// `O_DIRECT` requires (4 KiB covers the logical block size of common devices).
pub(crate) const ALIGN: usize = 4096;

/// One read of an item: `len` bytes at `file_offset` into its buffer at `local`, all
/// multiples of [`ALIGN`]; at least `need` bytes must exist (the last read of a file
/// may run past its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub file_offset: u64,
    pub len: usize,
    pub local: usize,
    pub need: usize,
}

/// Bytes of the buffer an item's reads fill (they are laid out back to back).
pub(crate) fn buffer_len(reads: &[Extent]) -> usize {
    reads.iter().map(|e| e.local + e.len).max().unwrap_or(0)
}

/// Reads closer than this are merged into one (reading the gap costs less than a
/// second request).
const MERGE_GAP: u64 = 64 * 1024;

/// Plan the reads of one item from its tensors' `(file offset, bytes)`: aligned reads,
/// neighbours merged, laid out back to back in the buffer. Returns the reads and each
/// tensor's offset inside the buffer (in the input order).
pub(crate) fn plan_reads(tensors: &[(u64, usize)]) -> (Vec<Extent>, Vec<usize>) {
    let a = ALIGN as u64;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].0);
    let mut reads: Vec<Extent> = Vec::new();
    let mut locals = vec![0; tensors.len()];
    for i in order {
        let (off, len) = tensors[i];
        let start = off / a * a;
        let end = off + len as u64;
        match reads.last_mut() {
            Some(r) if start <= r.file_offset + r.len as u64 + MERGE_GAP => {
                let new_end = end.max(r.file_offset + r.need as u64);
                r.need = (new_end - r.file_offset) as usize;
                r.len = r.need.div_ceil(ALIGN) * ALIGN;
            }
            _ => {
                let local = reads.last().map_or(0, |r| r.local + r.len);
                let need = (end - start) as usize;
                reads.push(Extent {
                    file_offset: start,
                    len: need.div_ceil(ALIGN) * ALIGN,
                    local,
                    need,
                });
            }
        }
        let r = reads.last().expect("just pushed or extended");
        locals[i] = r.local + (off - r.file_offset) as usize;
    }
    (reads, locals)
}

/// A buffer whose start is [`ALIGN`]-aligned (`O_DIRECT` reads into it), in an
/// anonymous mapping of its own: dropped, its pages go back to the OS at once, whichever
/// thread drops it. From the heap that depends on the allocator: glibc keeps freed
/// blocks in the freeing thread's arena and raises its mmap threshold after the first
/// large free, and expert buffers are allocated on one thread and freed on another.
/// Heap buffers once peaked at 132 MiB under a 120 MiB budget (`moe-bench`, two runs);
/// later runs of the same build stayed at 114 MiB, so the cause is not pinned down, but
/// with mappings the RSS no longer depends on it.
pub(crate) struct AlignedBuf {
    mem: BufMem,
    len: usize,
}

enum BufMem {
    /// Page-aligned by the kernel.
    Anon(memmap2::MmapMut),
    /// Small buffers (below [`MAP_AT_LEAST`]), or where mapping failed: over-allocated
    /// and aligned by hand.
    Heap(Vec<u8>, usize),
}

/// Buffers smaller than this (an embedding row, read once per token) stay on the heap:
/// a mapping per token would add two system calls and a page fault to the decode loop,
/// and blocks this small are reused by the allocator, not left behind.
const MAP_AT_LEAST: usize = 64 << 10;

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let mapped = (len >= MAP_AT_LEAST)
            .then(|| memmap2::MmapMut::map_anon(len).ok())
            .flatten();
        let mem = match mapped {
            Some(m) => BufMem::Anon(m),
            None => {
                let raw = vec![0u8; len + ALIGN];
                let start = raw.as_ptr().align_offset(ALIGN);
                BufMem::Heap(raw, start)
            }
        };
        AlignedBuf { mem, len }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.mem {
            BufMem::Anon(m) => &m[..self.len],
            BufMem::Heap(v, start) => &v[*start..*start + self.len],
        }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.mem {
            BufMem::Anon(m) => &mut m[..self.len],
            BufMem::Heap(v, start) => &mut v[*start..*start + self.len],
        }
    }
}

/// Where streamed weights are read from.
pub(crate) enum Source {
    /// The GGUF file, opened with `O_DIRECT` where the file system allows (reads bypass
    /// the page cache, so a memory cgroup charges nothing for them); otherwise buffered,
    /// and each read's pages are dropped once read.
    File { file: File, direct: bool },
    /// A `.dhp` pack of the GGUF: each read fetches the chunks under it with `pread`
    /// (`O_DIRECT` where the file system allows; otherwise buffered, their pages dropped
    /// once read), then checks and decodes them on the reading thread.
    Pack(Box<dhurandhar_pack::GgufPackReader>),
}

thread_local! {
    /// Blob and chunk buffers of pack reads on this thread.
    static PACK_SCRATCH: std::cell::RefCell<dhurandhar_pack::ReadScratch> =
        std::cell::RefCell::default();
}

impl Source {
    /// The GGUF file; with `direct`, reopened with `O_DIRECT` if a probe read works.
    pub(crate) fn file(file: File, direct: Option<&std::path::Path>, len: u64) -> Source {
        match direct.and_then(|p| open_direct(p, len)) {
            Some(d) => Source::File {
                file: d,
                direct: true,
            },
            None => Source::File {
                file,
                direct: false,
            },
        }
    }

    /// Whether reads bypass the page cache (`O_DIRECT`).
    pub(crate) fn direct(&self) -> bool {
        match self {
            Source::File { direct, .. } => *direct,
            Source::Pack(p) => p.direct_io(),
        }
    }

    /// Plan an item's reads from its tensors' `(GGUF offset, bytes)` (see [`plan_reads`]).
    /// A pack reads each tensor exactly: rounding out to aligned blocks would decode
    /// whole chunks of the neighbours for a few bytes.
    pub(crate) fn plan(&self, tensors: &[(u64, usize)]) -> (Vec<Extent>, Vec<usize>) {
        match self {
            Source::File { .. } => plan_reads(tensors),
            Source::Pack(_) => plan_exact(tensors),
        }
    }

    /// Rows of `row_bytes` that a read of the tensor at `offset` should be cut into
    /// multiples of: a pack's chunk of rows (cut elsewhere, the chunks at both ends would
    /// be read and decoded twice); 1 from a GGUF.
    pub(crate) fn row_granule(&self, offset: u64, row_bytes: usize) -> usize {
        match self {
            Source::File { .. } => 1,
            Source::Pack(p) => p
                .chunk_bytes_at(offset)
                .map_or(1, |c| (c as usize / row_bytes.max(1)).max(1)),
        }
    }

    /// Heap a reading thread keeps between reads: a pack's blob, partly used chunk and
    /// decoded plane buffers (each up to the largest chunk); nothing for a GGUF.
    pub(crate) fn scratch_bytes(&self) -> u64 {
        match self {
            Source::File { .. } => 0,
            Source::Pack(p) => 3 * p.max_chunk_bytes(),
        }
    }

    /// Read every extent of an item into its place in `buf`, counted, and drop what was
    /// read from the page cache (buffered reads).
    pub(crate) fn read_into(
        &self,
        extents: &[Extent],
        buf: &mut AlignedBuf,
        counters: &Counters,
    ) -> Result<(), std::io::Error> {
        match self {
            Source::File { file, direct } => {
                fill(file, extents, buf, counters)?;
                if !direct {
                    drop_cached(file, extents);
                }
                Ok(())
            }
            Source::Pack(p) => PACK_SCRATCH.with(|s| {
                let scratch = &mut s.borrow_mut();
                for e in extents {
                    let dst = &mut buf.bytes_mut()[e.local..e.local + e.need];
                    // Carried whole through the I/O error (see `read_error`).
                    let c = p
                        .read(e.file_offset, dst, scratch)
                        .map_err(std::io::Error::other)?;
                    counters
                        .bytes_read
                        .fetch_add(c.bytes_read, Ordering::Relaxed);
                    counters.read_ns.fetch_add(c.read_ns, Ordering::Relaxed);
                    counters.decode_ns.fetch_add(c.decode_ns, Ordering::Relaxed);
                    if !p.direct_io() {
                        let span = Extent {
                            file_offset: c.span.0,
                            len: (c.span.1 - c.span.0) as usize,
                            local: 0,
                            need: 0,
                        };
                        drop_cached(p.file(), &[span]);
                    }
                }
                Ok(())
            }),
        }
    }
}

/// The error of a failed streamed read of `origin`: a pack's own error (which names the
/// file, tensor and chunk) when a pack read failed, else the I/O error with the path.
pub(crate) fn read_error(origin: &str, e: std::io::Error) -> EngineError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<dhurandhar_pack::PackError>())
    {
        if let Some(Ok(pack)) = e
            .into_inner()
            .map(|inner| inner.downcast::<dhurandhar_pack::PackError>())
        {
            return EngineError::Pack(*pack);
        }
        return EngineError::Invalid(format!("{origin}: a pack read failed"));
    }
    EngineError::Io {
        path: origin.to_string(),
        source: e,
    }
}

/// One exact read per tensor, laid out back to back in the buffer at 64-byte steps
/// (the kernels' widest load); returns the reads and each tensor's buffer offset.
pub(crate) fn plan_exact(tensors: &[(u64, usize)]) -> (Vec<Extent>, Vec<usize>) {
    let mut at = 0;
    let mut reads = Vec::with_capacity(tensors.len());
    let mut locals = Vec::with_capacity(tensors.len());
    for &(off, len) in tensors {
        locals.push(at);
        reads.push(Extent {
            file_offset: off,
            len: len.div_ceil(64) * 64,
            local: at,
            need: len,
        });
        at += len.div_ceil(64) * 64;
    }
    (reads, locals)
}

/// Where the weights live.
pub(crate) enum WeightStore {
    Mmap(Mmap),
    Resident(Vec<u8>),
    Stream(Box<Streamer>),
}

/// The streaming store: the file, the layout of each streamed item, and (once planned)
/// the pool.
///
/// Items are the layers in order, then the output head cut into chunks of rows no
/// larger than the largest layer, so one pool of equal buffers serves both and the head
/// needs no RAM of its own under a small budget.
pub(crate) struct Streamer {
    source: Arc<Source>,
    origin: String,
    items: Arc<Vec<Vec<Extent>>>,
    item_bytes: Vec<usize>,
    n_layers: usize,
    counters: Arc<Counters>,
    runtime: OnceLock<Runtime>,
    /// Mixture-of-experts models: the expert cache, sized when the stream starts.
    experts: Option<ExpertCache>,
    /// A cache size asked for before the start (else the plan's).
    expert_request: Mutex<Option<u64>>,
    /// Each layer item's matrices: a pinned layer's are interleaved once read, as
    /// resident weights are (x86).
    layer_matrices: Vec<Vec<PinnedMatrix>>,
}

/// A matrix of a layer item: where it sits in the item's buffer and its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PinnedMatrix {
    pub(crate) local: usize,
    pub(crate) len: usize,
    pub(crate) qtype: crate::quant::GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// What the store has read and waited for, since loading.
#[derive(Default)]
pub(crate) struct Counters {
    bytes_read: AtomicU64,
    /// Nanoseconds the prefetch thread spent in `pread`.
    read_ns: AtomicU64,
    /// Nanoseconds spent decoding pack chunks (streams from a `.dhp`).
    decode_ns: AtomicU64,
    /// Nanoseconds the computation spent blocked waiting for an item.
    pub(crate) wait_ns: AtomicU64,
}

/// Weight traffic of a streamed model since loading (see [`crate::Model::stream_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StreamStats {
    /// Weight bytes read from the file (pinned items, streamed items, embedding rows).
    pub bytes_read: u64,
    /// Seconds spent reading them: the store's achieved read bandwidth is
    /// `bytes_read / read_seconds`.
    pub read_seconds: f64,
    /// Seconds the forward pass waited for an item that was not read yet (I/O the
    /// prefetch did not hide).
    pub wait_seconds: f64,
    /// Seconds spent decoding what was read (streams from a `.dhp` pack; 0 from a GGUF).
    pub decode_seconds: f64,
    /// Mixture-of-experts models: the expert cache's counters (their reads are in the
    /// totals above too).
    pub experts: Option<crate::experts::ExpertStats>,
}

impl StreamStats {
    /// What happened between `earlier` and `self` (two readings of one model).
    pub fn since(&self, earlier: &StreamStats) -> StreamStats {
        StreamStats {
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            read_seconds: (self.read_seconds - earlier.read_seconds).max(0.0),
            wait_seconds: (self.wait_seconds - earlier.wait_seconds).max(0.0),
            decode_seconds: (self.decode_seconds - earlier.decode_seconds).max(0.0),
            experts: match (&self.experts, &earlier.experts) {
                (Some(a), Some(b)) => Some(a.since(b)),
                (a, _) => *a,
            },
        }
    }
}

/// A message from the prefetch thread: a filled item buffer, or why reading failed.
type Filled = Result<(usize, AlignedBuf), std::io::Error>;

struct Runtime {
    plan: StorePlan,
    /// Items `0..plan.pinned_items()`, and whether the item's matrices were interleaved.
    pinned: Vec<(AlignedBuf, bool)>,
    /// `None` when every item is pinned.
    flow: Option<Flow>,
}

/// The channels to the prefetch thread and the consumer's view of what it asked for.
struct Flow {
    requests: Sender<usize>,
    free: Sender<AlignedBuf>,
    consumer: Mutex<Consumer>,
}

struct Consumer {
    ready: Receiver<Filled>,
    /// Items requested and not yet received, in request order.
    pending: VecDeque<usize>,
    /// Whether the current pass computes logits (reads the head).
    want_head: bool,
}

/// One layer's weights for the duration of its computation.
pub(crate) enum LayerView<'a> {
    /// Tensors at their file offsets (map or resident copy).
    File(&'a [u8]),
    /// Tensors at their packed offsets in a pinned buffer.
    Packed(&'a [u8]),
    /// A pinned layer whose matrices were interleaved by eight rows when read, where
    /// [`crate::interleave::fits`] (the same tensors as a resident model's).
    Interleaved(&'a [u8]),
    /// A streamed buffer, returned to the pool when dropped.
    Slot(SlotGuard<'a>),
}

pub(crate) struct SlotGuard<'a> {
    buf: Option<AlignedBuf>,
    free: &'a Sender<AlignedBuf>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        // The prefetch thread may have stopped (after a read error); then the buffer is
        // simply freed.
        if let Some(b) = self.buf.take() {
            let _ = self.free.send(b);
        }
    }
}

impl LayerView<'_> {
    /// Whether the interleavable matrices of this view are interleaved.
    pub(crate) fn interleaved(&self) -> bool {
        matches!(self, LayerView::Interleaved(_))
    }

    /// The bytes of one tensor: at `file_offset` in a whole-file view, at `local` in a
    /// layer buffer.
    #[inline]
    pub(crate) fn get(&self, file_offset: usize, local: usize, len: usize) -> &[u8] {
        match self {
            LayerView::File(d) => &d[file_offset..file_offset + len],
            LayerView::Packed(d) | LayerView::Interleaved(d) => &d[local..local + len],
            LayerView::Slot(g) => match &g.buf {
                Some(b) => &b.bytes()[local..local + len],
                None => &[],
            },
        }
    }
}

impl Streamer {
    /// `items`: the reads of each layer (from [`Source::plan`]), then of each chunk of
    /// the output head; `expert_reads`: per layer, per expert.
    pub(crate) fn new(
        source: Source,
        origin: &str,
        items: Vec<Vec<Extent>>,
        expert_reads: Vec<Vec<Vec<Extent>>>,
        layer_matrices: Vec<Vec<PinnedMatrix>>,
    ) -> Result<Streamer, EngineError> {
        let n_layers = expert_reads.len();
        let item_bytes = items.iter().map(|l| buffer_len(l)).collect();
        let source = Arc::new(source);
        let counters = Arc::<Counters>::default();
        let experts = expert_reads
            .iter()
            .any(|l| !l.is_empty())
            .then(|| ExpertCache::new(source.clone(), origin, counters.clone(), expert_reads));
        Ok(Streamer {
            source,
            origin: origin.to_string(),
            items: Arc::new(items),
            item_bytes,
            n_layers,
            counters,
            runtime: OnceLock::new(),
            experts,
            expert_request: Mutex::new(None),
            layer_matrices,
        })
    }

    /// Stored bytes of each expert, by layer (empty for dense layers and dense models).
    pub(crate) fn expert_bytes(&self) -> Vec<Vec<usize>> {
        self.experts
            .as_ref()
            .map_or_else(Vec::new, ExpertCache::expert_bytes)
    }

    /// Ask for an expert cache of `bytes`; as with the budget, the stream's first start
    /// decides, and a request after it changes nothing.
    pub(crate) fn request_expert_cache(&self, bytes: Option<u64>) {
        *self
            .expert_request
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = bytes;
    }

    pub(crate) fn requested_expert_cache(&self) -> Option<u64> {
        *self
            .expert_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Read predicted and routed experts ahead (on by default).
    pub(crate) fn set_expert_prefetch(&self, on: bool) {
        if let Some(c) = &self.experts {
            c.set_prefetch(on);
        }
    }

    /// Which expert makes room for another.
    pub(crate) fn set_expert_eviction(&self, e: crate::experts::Eviction) {
        if let Some(c) = &self.experts {
            c.set_eviction(e);
        }
    }

    /// The expert cache, once the stream has started (MoE models).
    pub(crate) fn experts(&self) -> Option<&ExpertCache> {
        self.runtime.get().and(self.experts.as_ref())
    }

    /// Heap the threads that read weights keep for it (the prefetch thread, the caller's
    /// embedding-row and pinned reads, the expert cache's reader).
    pub(crate) fn read_scratch_bytes(&self) -> u64 {
        let readers = if self.experts.is_some() { 3 } else { 2 };
        readers * self.source.scratch_bytes()
    }

    /// Bytes of each item: the layers, then the head's chunks.
    pub(crate) fn item_bytes(&self) -> &[usize] {
        &self.item_bytes
    }

    pub(crate) fn stats(&self) -> StreamStats {
        let c = &self.counters;
        StreamStats {
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            read_seconds: c.read_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            wait_seconds: c.wait_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            decode_seconds: c.decode_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            experts: self.experts().map(|e| e.stats()),
        }
    }

    pub(crate) fn plan(&self) -> Option<&StorePlan> {
        self.runtime.get().map(|r| &r.plan)
    }

    /// Whether reads bypass the page cache (`O_DIRECT`).
    pub(crate) fn direct(&self) -> bool {
        self.source.direct()
    }

    /// Read `out.len()` bytes at `offset` (an embedding row), counted. Through an
    /// aligned bounce buffer, as `O_DIRECT` needs.
    pub(crate) fn read_at(&self, out: &mut [u8], offset: u64) -> Result<(), EngineError> {
        let (reads, locals) = self.source.plan(&[(offset, out.len())]);
        let mut buf = AlignedBuf::new(buffer_len(&reads));
        self.source
            .read_into(&reads, &mut buf, &self.counters)
            .map_err(|e| read_error(&self.origin, e))?;
        out.copy_from_slice(&buf.bytes()[locals[0]..locals[0] + out.len()]);
        Ok(())
    }

    /// Read the pinned items and start the prefetch thread, once; later calls return
    /// the plan already in force.
    pub(crate) fn start(&self, plan: StorePlan) -> Result<&StorePlan, EngineError> {
        if let Some(r) = self.runtime.get() {
            return Ok(&r.plan);
        }
        let mut pinned = Vec::with_capacity(plan.pinned_items());
        let interleave = crate::kernels::simd().avx2();
        for li in 0..plan.pinned_items() {
            let mut buf = AlignedBuf::new(self.item_bytes[li]);
            self.source
                .read_into(&self.items[li], &mut buf, &self.counters)
                .map_err(|e| read_error(&self.origin, e))?;
            // A pinned layer is read once and kept: interleave it as a resident one.
            let mats = self.layer_matrices.get(li).filter(|_| interleave);
            for m in mats.into_iter().flatten() {
                let bytes = &mut buf.bytes_mut()[m.local..m.local + m.len];
                crate::interleave::interleave_if_fits(m.qtype, m.rows, m.cols, bytes)?;
            }
            pinned.push((buf, mats.is_some()));
        }
        let flow = if plan.pinned_items() < self.items.len() {
            let largest = self.item_bytes.iter().copied().max().unwrap_or(0);
            let (ready_tx, ready_rx) = channel::<Filled>();
            let (free_tx, free_rx) = channel::<AlignedBuf>();
            let (req_tx, req_rx) = channel::<usize>();
            for _ in 0..plan.window_slots.max(1) {
                let _ = free_tx.send(AlignedBuf::new(largest));
            }
            let (source, items, counters) = (
                self.source.clone(),
                self.items.clone(),
                self.counters.clone(),
            );
            std::thread::Builder::new()
                .name("dhurandhar-prefetch".into())
                .spawn(move || {
                    // Reads items in the order the computation asked for them, each into
                    // a free buffer; ends when the store is dropped (channels close).
                    while let (Ok(i), Ok(mut buf)) = (req_rx.recv(), free_rx.recv()) {
                        let r = source
                            .read_into(&items[i], &mut buf, &counters)
                            .map(|_| (i, buf));
                        let failed = r.is_err();
                        if ready_tx.send(r).is_err() || failed {
                            break;
                        }
                    }
                })
                .map_err(|e| EngineError::Invalid(format!("prefetch thread: {e}")))?;
            let flow = Flow {
                requests: req_tx,
                free: free_tx,
                consumer: Mutex::new(Consumer {
                    ready: ready_rx,
                    pending: VecDeque::new(),
                    want_head: false,
                }),
            };
            // The first pass's layers are asked for at once: the thread reads ahead as
            // far as the free buffers allow.
            let first = plan.pinned_layers.min(self.n_layers);
            flow.request(&mut flow.lock(), first..self.n_layers);
            Some(flow)
        } else {
            None
        };
        if let Some(c) = &self.experts {
            c.set_capacity(plan.expert_cache_bytes);
        }
        let _ = self.runtime.set(Runtime { plan, pinned, flow });
        Ok(&self.runtime.get().expect("just set").plan)
    }

    /// A forward pass begins; `logits`: whether it reads the head. When no layer
    /// streams, the head's chunks are asked for now, so they are read while the pinned
    /// layers compute.
    pub(crate) fn begin_pass(&self, logits: bool) {
        let Some(rt) = self.runtime.get() else { return };
        let Some(flow) = &rt.flow else { return };
        let mut c = flow.lock();
        c.want_head = logits;
        if logits && rt.plan.pinned_layers >= self.n_layers {
            flow.request(&mut c, rt.plan.pinned_items()..self.items.len());
        }
    }

    /// Item `li`'s weights (a layer, or for `li ≥ n_layers` a chunk of the head); blocks
    /// until the prefetch thread has read it.
    pub(crate) fn layer(&self, li: usize) -> Result<LayerView<'_>, EngineError> {
        let rt = self
            .runtime
            .get()
            .ok_or_else(|| EngineError::Invalid("the weight stream was not started".into()))?;
        if let Some((p, interleaved)) = rt.pinned.get(li) {
            return Ok(if *interleaved {
                LayerView::Interleaved(p.bytes())
            } else {
                LayerView::Packed(p.bytes())
            });
        }
        let Some(flow) = &rt.flow else {
            return Err(EngineError::Invalid(format!(
                "item {li} is not in the stream"
            )));
        };
        if li >= self.items.len() {
            return Err(EngineError::Invalid(format!("no stream item {li}")));
        }
        let mut c = flow.lock();
        if !c.pending.contains(&li) {
            // Out of step (a pass that stopped early, or a caller reading items out of
            // order): ask for the rest of `li`'s run from here.
            let end = if li < self.n_layers {
                self.n_layers
            } else {
                self.items.len()
            };
            flow.request(&mut c, li..end);
        }
        let waited = Instant::now();
        // Items asked for before `li` and never used (a pass that stopped early) are
        // received and handed back until `li` comes.
        while let Some(want) = c.pending.pop_front() {
            let msg = c.ready.recv().map_err(|_| {
                EngineError::Invalid(format!("{}: the weight stream stopped", self.origin))
            })?;
            let (got, buf) = msg.map_err(|e| read_error(&self.origin, e))?;
            debug_assert_eq!(got, want);
            if got != li {
                let _ = flow.free.send(buf);
                continue;
            }
            self.counters
                .wait_ns
                .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
            // The last layer is handed out: ask for the head (when this pass computes
            // logits), then for the next pass's layers, so reading never idles.
            if li + 1 == self.n_layers {
                if c.want_head {
                    let head = self.n_layers + rt.plan.pinned_head_chunks;
                    flow.request(&mut c, head..self.items.len());
                }
                flow.request(&mut c, rt.plan.pinned_layers..self.n_layers);
            }
            return Ok(LayerView::Slot(SlotGuard {
                buf: Some(buf),
                free: &flow.free,
            }));
        }
        Err(EngineError::Invalid(format!(
            "{}: item {li} never arrived from the weight stream",
            self.origin
        )))
    }
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Consumer> {
        self.consumer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask the prefetch thread for `items`, in order.
    fn request(&self, c: &mut Consumer, items: std::ops::Range<usize>) {
        for i in items {
            // A closed channel means the thread stopped after an error, which the next
            // receive reports.
            let _ = self.requests.send(i);
            c.pending.push_back(i);
        }
    }
}

impl Counters {
    fn count(&self, bytes: usize, since: Instant) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        self.read_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Read every extent of a layer into its place in `buf`.
pub(crate) fn fill(
    file: &File,
    extents: &[Extent],
    buf: &mut AlignedBuf,
    counters: &Counters,
) -> Result<(), std::io::Error> {
    for e in extents {
        let t = Instant::now();
        let dst = &mut buf.bytes_mut()[e.local..e.local + e.len];
        // Whole aligned blocks; the file may end inside the last one.
        let mut got = 0;
        while got < e.len {
            match file.read_at(&mut dst[got..], e.file_offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if got < e.need {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends {} bytes into a read of {} at offset {}",
                    got, e.need, e.file_offset
                ),
            ));
        }
        counters.count(got, t);
    }
    Ok(())
}

/// The file reopened with `O_DIRECT`, if the file system takes it and an aligned read
/// of its start works (tmpfs and some others refuse direct I/O).
fn open_direct(path: &std::path::Path, len: u64) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let probe = Extent {
        file_offset: 0,
        len: ALIGN,
        local: 0,
        need: ALIGN.min(usize::try_from(len).ok()?),
    };
    let mut buf = AlignedBuf::new(ALIGN);
    fill(&f, &[probe], &mut buf, &Counters::default()).ok()?;
    Some(f)
}

/// Drop a streamed layer's pages from the page cache once read: they are read again
/// next token anyway, and cached they would count against the budget (a memory cgroup
/// charges the page cache to the process) and crowd out what does fit.
fn drop_cached(file: &File, extents: &[Extent]) {
    use std::os::unix::io::AsRawFd;
    for e in extents {
        let (Ok(off), Ok(len)) = (
            libc::off_t::try_from(e.file_offset),
            libc::off_t::try_from(e.len),
        ) else {
            continue;
        };
        // SAFETY: a plain syscall on a descriptor this store owns; advice only, so a
        // failure changes nothing but the page cache's contents.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(budget: u64) -> BudgetInputs {
        BudgetInputs {
            budget,
            kv_bytes: 100,
            activation_bytes: 50,
            resident_bytes: 30,
            fixed_bytes: 20,
            layer_bytes: vec![40; 5],
            head_chunk_bytes: Vec::new(),
            experts: None,
        }
    }

    #[test]
    fn pool_is_budget_minus_the_rest_and_pins_what_the_window_leaves() {
        // Others = 200; window = 2 × 40 = 80; five layers of 40 = 200.
        let p = plan_pool(&inputs(280)).unwrap();
        assert_eq!(p.pool_bytes, 80);
        assert_eq!((p.window_slots, p.pinned_layers), (2, 0));
        assert_eq!(p.streamed_bytes_per_pass, 200);
        let p = plan_pool(&inputs(359)).unwrap();
        assert_eq!((p.window_slots, p.pinned_layers), (2, 1));
        assert_eq!(p.streamed_bytes_per_pass, 160);
        let p = plan_pool(&inputs(360)).unwrap();
        assert_eq!((p.window_slots, p.pinned_layers), (2, 2));
        assert_eq!(p.streamed_bytes_per_pass, 120);
    }

    #[test]
    fn bytes_read_per_pass_never_grow_with_the_budget() {
        let mut last = u64::MAX;
        for b in 280..500 {
            let p = plan_pool(&inputs(b)).unwrap();
            assert!(p.streamed_bytes_per_pass <= last);
            let held = p.window_slots as u64 * 40 + p.pinned_layers as u64 * 40;
            assert!(held <= p.pool_bytes, "{p:?}");
            last = p.streamed_bytes_per_pass;
        }
    }

    #[test]
    fn a_budget_holding_every_layer_pins_all_and_streams_nothing() {
        let p = plan_pool(&inputs(399)).unwrap();
        assert_eq!((p.window_slots, p.pinned_layers), (2, 2));
        let p = plan_pool(&inputs(400)).unwrap();
        assert_eq!((p.window_slots, p.pinned_layers), (0, 5));
        assert_eq!(p.streamed_bytes_per_pass, 0);
    }

    #[test]
    fn a_budget_below_the_minimum_is_refused_with_the_breakdown() {
        let e = plan_pool(&inputs(279)).unwrap_err();
        for part in [
            "KV cache",
            "activations",
            "resident weights",
            "fixed overhead",
            "two layer buffers",
        ] {
            assert!(e.contains(part), "{e}");
        }
        // A budget of zero is refused, not wrapped.
        assert!(plan_pool(&inputs(0)).is_err());
    }

    #[test]
    fn the_head_is_pinned_only_after_every_layer() {
        let mut inp = inputs(0);
        inp.head_chunk_bytes = vec![40; 4];
        // Others 200 + window 80 + five layers 200 + one head chunk 40 (of 360 in all).
        inp.budget = 520;
        let p = plan_pool(&inp).unwrap();
        assert_eq!(
            (p.pinned_layers, p.pinned_head_chunks, p.head_chunks),
            (5, 1, 4)
        );
        assert_eq!(p.streamed_bytes_per_pass, 120);
        // A budget short of that pins no head chunk, and streams all of them.
        inp.budget = 519;
        let p = plan_pool(&inp).unwrap();
        assert_eq!((p.pinned_layers, p.pinned_head_chunks), (5, 0));
        assert_eq!(p.streamed_bytes_per_pass, 160);
        // Everything fits: nothing streams.
        inp.budget = 560;
        let p = plan_pool(&inp).unwrap();
        assert_eq!((p.window_slots, p.pinned_head_chunks), (0, 4));
        assert_eq!(p.streamed_bytes_per_pass, 0);
    }

    #[test]
    fn experts_get_their_minimum_then_what_pinning_the_dense_layers_leaves() {
        let mut inp = inputs(0);
        // Experts of 30 bytes, 2 used: minimum (2 + 1) × 30 = 90; 600 in all.
        inp.experts = Some(ExpertBudget {
            total_bytes: 600,
            min_bytes: expert_cache_minimum(30, 2),
            requested: None,
        });
        // Others 200 + window 80 + experts 90 = 370 is the least.
        let e = plan_pool(&BudgetInputs {
            budget: 369,
            ..inp.clone()
        })
        .unwrap_err();
        assert!(
            e.contains("expert cache 0.0 MiB") && e.contains("two layer buffers"),
            "{e}"
        );
        let p = plan_pool(&BudgetInputs {
            budget: 370,
            ..inp.clone()
        })
        .unwrap();
        assert_eq!((p.expert_cache_bytes, p.pinned_layers), (90, 0));
        // 100 more pins two dense layers (80) first; the 20 left grow the cache.
        let p = plan_pool(&BudgetInputs {
            budget: 470,
            ..inp.clone()
        })
        .unwrap();
        assert_eq!((p.pinned_layers, p.expert_cache_bytes), (2, 110));
        // Every dense layer pinned (no window) and every expert cached: 200 + 200 + 600.
        let p = plan_pool(&BudgetInputs {
            budget: 1000,
            ..inp.clone()
        })
        .unwrap();
        assert_eq!(
            (p.window_slots, p.pinned_layers, p.expert_cache_bytes),
            (0, 5, 600)
        );
        // More budget never caches more than every expert.
        let p = plan_pool(&BudgetInputs {
            budget: 5000,
            ..inp.clone()
        })
        .unwrap();
        assert_eq!(p.expert_cache_bytes, 600);
        // A requested size is kept (raised to the minimum), and the budget must hold it.
        let want = |r: u64, budget: u64| {
            let mut i = inp.clone();
            i.budget = budget;
            i.experts.as_mut().unwrap().requested = Some(r);
            plan_pool(&i)
        };
        assert_eq!(want(10, 5000).unwrap().expert_cache_bytes, 90);
        assert_eq!(want(300, 5000).unwrap().expert_cache_bytes, 300);
        assert!(want(300, 579).is_err());
        assert_eq!(want(300, 580).unwrap().pinned_layers, 0);
    }

    #[test]
    fn reads_are_aligned_merged_and_hold_every_tensor() {
        // Two neighbours (merged), one far away (its own read), given out of order.
        let tensors = [(10_000u64, 5_000usize), (1_000_000, 100), (100, 9_000)];
        let (reads, locals) = plan_reads(&tensors);
        assert_eq!(reads.len(), 2, "{reads:?}");
        for r in &reads {
            assert_eq!(r.file_offset % ALIGN as u64, 0);
            assert_eq!((r.len % ALIGN, r.local % ALIGN), (0, 0));
            assert!(r.need <= r.len);
        }
        // Each tensor's bytes sit at its local offset: the read that covers it maps
        // file offset `off` to `local`.
        for (&(off, len), &local) in tensors.iter().zip(&locals) {
            let r = reads
                .iter()
                .find(|r| r.local <= local && local + len <= r.local + r.need)
                .unwrap();
            assert_eq!(off - r.file_offset, (local - r.local) as u64);
        }
        assert_eq!(reads[1].local, reads[0].local + reads[0].len);
    }

    #[test]
    fn weight_modes_parse() {
        for m in [WeightMode::Mmap, WeightMode::Resident, WeightMode::Stream] {
            assert_eq!(m.name().parse::<WeightMode>().unwrap(), m);
        }
        assert!("disk".parse::<WeightMode>().is_err());
    }
}
