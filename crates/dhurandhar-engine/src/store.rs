//! Where the forward pass gets its weights from: the weight store behind a
//! [`crate::Model`].
//!
//! - [`WeightMode::Mmap`]: the file is memory-mapped and the kernel pages it (zero
//!   copies, the default).
//! - [`WeightMode::Resident`]: the file is read into RAM once (no map).
//! - [`WeightMode::Stream`]: only the output head and the norms stay in RAM; each
//!   layer's matrices are read with `pread` into a bounded pool of layer buffers by a
//!   prefetch thread that runs one layer ahead of the computation. Leftover budget pins
//!   the first layers, so the bytes read per token fall as the budget grows. Nothing maps
//!   the file in this mode.
//!
//! The pool is sized by [`plan_pool`] from a RAM budget minus the KV cache, the
//! activations and the measured fixed overhead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::Mmap;
use serde::Serialize;

use crate::EngineError;

/// How the engine holds the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightMode {
    /// Memory-map the file; the kernel pages weights in and out.
    #[default]
    Mmap,
    /// Read the whole file into RAM.
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
    /// The process's measured footprint besides the above (code, tokenizer, heap).
    pub fixed_bytes: u64,
    /// Stored bytes of each layer's matrices, in layer order.
    pub layer_bytes: Vec<u64>,
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
    /// Layer buffers the prefetch thread cycles through (0 when every layer is pinned).
    pub window_slots: usize,
    /// Layers `0..pinned_layers` are read once and kept.
    pub pinned_layers: usize,
    /// Layer bytes read from the file per forward pass.
    pub streamed_bytes_per_pass: u64,
}

/// Buffers in the streaming window: one computed while the next is read.
pub const WINDOW_SLOTS: usize = 2;

/// Size the layer pool from a budget: pool = budget − KV − activations − resident −
/// fixed. The window takes [`WINDOW_SLOTS`] buffers of the largest layer; what is left
/// pins the first layers. When every layer fits, all are pinned and nothing streams.
/// A budget that cannot hold the minimum (two layers + the rest) is refused with the
/// breakdown.
pub fn plan_pool(inp: &BudgetInputs) -> Result<StorePlan, String> {
    let largest = inp.layer_bytes.iter().copied().max().unwrap_or(0);
    let total: u64 = inp.layer_bytes.iter().sum();
    let window = WINDOW_SLOTS as u64 * largest;
    let others = inp.kv_bytes + inp.activation_bytes + inp.resident_bytes + inp.fixed_bytes;
    let minimum = others + window.min(total);
    if inp.budget < minimum {
        return Err(format!(
            "a RAM budget of {} cannot hold the minimum of {} for streaming: KV cache {} + activations {} + resident weights (output head, norms) {} + fixed overhead {} + two layer buffers {}",
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
    let (slots, pinned) = if total <= pool {
        (0, inp.layer_bytes.len())
    } else {
        let mut left = pool - window;
        let mut pinned = 0;
        for &b in &inp.layer_bytes {
            if b > left {
                break;
            }
            left -= b;
            pinned += 1;
        }
        (WINDOW_SLOTS, pinned)
    };
    Ok(StorePlan {
        budget_bytes: Some(inp.budget),
        kv_bytes: inp.kv_bytes,
        activation_bytes: inp.activation_bytes,
        resident_bytes: inp.resident_bytes,
        fixed_bytes: inp.fixed_bytes,
        pool_bytes: pool,
        window_slots: slots,
        pinned_layers: pinned,
        streamed_bytes_per_pass: inp.layer_bytes[pinned..].iter().sum(),
    })
}

/// `12.3 MiB`, for messages (the engine has no units module).
fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// One matrix of a layer: where it is in the file and where in the layer's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extent {
    pub file_offset: u64,
    pub len: usize,
    pub local: usize,
}

/// Where the weights live.
pub(crate) enum WeightStore {
    Mmap(Mmap),
    Resident(Vec<u8>),
    Stream(Box<Streamer>),
}

/// The streaming store: the file, each layer's layout, and (once planned) the pool.
pub(crate) struct Streamer {
    file: Arc<File>,
    origin: String,
    layers: Arc<Vec<Vec<Extent>>>,
    layer_bytes: Vec<usize>,
    bytes_read: Arc<AtomicU64>,
    runtime: OnceLock<Runtime>,
}

/// A message from the prefetch thread: a filled layer buffer, or why reading failed.
type Filled = Result<(usize, Vec<u8>), std::io::Error>;

struct Runtime {
    plan: StorePlan,
    /// Layers `0..plan.pinned_layers`.
    pinned: Vec<Vec<u8>>,
    ready: Option<Mutex<Receiver<Filled>>>,
    free: Option<Sender<Vec<u8>>>,
}

/// One layer's weights for the duration of its computation.
pub(crate) enum LayerView<'a> {
    /// Tensors at their file offsets (map or resident copy).
    File(&'a [u8]),
    /// Tensors at their packed offsets in a pinned buffer.
    Packed(&'a [u8]),
    /// A streamed buffer, returned to the pool when dropped.
    Slot(SlotGuard<'a>),
}

pub(crate) struct SlotGuard<'a> {
    buf: Vec<u8>,
    free: &'a Sender<Vec<u8>>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        // The prefetch thread may have stopped (after a read error); then the buffer is
        // simply freed.
        let _ = self.free.send(std::mem::take(&mut self.buf));
    }
}

impl LayerView<'_> {
    /// The bytes of one tensor: at `file_offset` in a whole-file view, at `local` in a
    /// layer buffer.
    #[inline]
    pub(crate) fn get(&self, file_offset: usize, local: usize, len: usize) -> &[u8] {
        match self {
            LayerView::File(d) => &d[file_offset..file_offset + len],
            LayerView::Packed(d) => &d[local..local + len],
            LayerView::Slot(g) => &g.buf[local..local + len],
        }
    }
}

impl Streamer {
    pub(crate) fn new(
        file: File,
        origin: &str,
        layers: Vec<Vec<Extent>>,
    ) -> Result<Streamer, EngineError> {
        let layer_bytes = layers
            .iter()
            .map(|l| l.iter().map(|e| e.local + e.len).max().unwrap_or(0))
            .collect();
        Ok(Streamer {
            file: Arc::new(file),
            origin: origin.to_string(),
            layers: Arc::new(layers),
            layer_bytes,
            bytes_read: Arc::new(AtomicU64::new(0)),
            runtime: OnceLock::new(),
        })
    }

    pub(crate) fn layer_bytes(&self) -> &[usize] {
        &self.layer_bytes
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub(crate) fn plan(&self) -> Option<&StorePlan> {
        self.runtime.get().map(|r| &r.plan)
    }

    /// Read `buf.len()` bytes at `offset`, counted.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), EngineError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| EngineError::Io {
                path: self.origin.clone(),
                source,
            })?;
        self.bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Read the pinned layers and start the prefetch thread, once; later calls return
    /// the plan already in force.
    pub(crate) fn start(&self, plan: StorePlan) -> Result<&StorePlan, EngineError> {
        if let Some(r) = self.runtime.get() {
            return Ok(&r.plan);
        }
        let mut pinned = Vec::with_capacity(plan.pinned_layers);
        for li in 0..plan.pinned_layers {
            let mut buf = vec![0u8; self.layer_bytes[li]];
            fill(&self.file, &self.layers[li], &mut buf, &self.bytes_read).map_err(|source| {
                EngineError::Io {
                    path: self.origin.clone(),
                    source,
                }
            })?;
            pinned.push(buf);
        }
        let n = self.layers.len();
        let (ready, free) = if plan.pinned_layers < n {
            let largest = self.layer_bytes.iter().copied().max().unwrap_or(0);
            let (ready_tx, ready_rx) = channel::<Filled>();
            let (free_tx, free_rx) = channel::<Vec<u8>>();
            for _ in 0..plan.window_slots.max(1) {
                let _ = free_tx.send(vec![0u8; largest]);
            }
            let (file, layers, counter) = (
                self.file.clone(),
                self.layers.clone(),
                self.bytes_read.clone(),
            );
            let first = plan.pinned_layers;
            std::thread::Builder::new()
                .name("dhurandhar-prefetch".into())
                .spawn(move || {
                    // Ends when the store is dropped (both channels close).
                    let mut li = first;
                    while let Ok(mut buf) = free_rx.recv() {
                        let r = fill(&file, &layers[li], &mut buf, &counter).map(|_| (li, buf));
                        drop_cached(&file, &layers[li]);
                        let failed = r.is_err();
                        if ready_tx.send(r).is_err() || failed {
                            break;
                        }
                        li = if li + 1 == layers.len() {
                            first
                        } else {
                            li + 1
                        };
                    }
                })
                .map_err(|e| EngineError::Invalid(format!("prefetch thread: {e}")))?;
            (Some(Mutex::new(ready_rx)), Some(free_tx))
        } else {
            (None, None)
        };
        let _ = self.runtime.set(Runtime {
            plan,
            pinned,
            ready,
            free,
        });
        Ok(&self.runtime.get().expect("just set").plan)
    }

    /// Layer `li`'s weights; blocks until the prefetch thread has read it.
    pub(crate) fn layer(&self, li: usize) -> Result<LayerView<'_>, EngineError> {
        let rt = self
            .runtime
            .get()
            .ok_or_else(|| EngineError::Invalid("the weight stream was not started".into()))?;
        if let Some(p) = rt.pinned.get(li) {
            return Ok(LayerView::Packed(p));
        }
        let (Some(ready), Some(free)) = (&rt.ready, &rt.free) else {
            return Err(EngineError::Invalid(format!(
                "layer {li} is not in the stream"
            )));
        };
        let rx = ready.lock().unwrap_or_else(|e| e.into_inner());
        // The thread reads layers in cycle order; a pass that stopped early (an error)
        // leaves buffers of other layers queued, which are handed back until `li` comes.
        for _ in 0..=self.layers.len() {
            let msg = rx.recv().map_err(|_| {
                EngineError::Invalid(format!("{}: the weight stream stopped", self.origin))
            })?;
            let (got, buf) = msg.map_err(|source| EngineError::Io {
                path: self.origin.clone(),
                source,
            })?;
            if got == li {
                return Ok(LayerView::Slot(SlotGuard { buf, free }));
            }
            let _ = free.send(buf);
        }
        Err(EngineError::Invalid(format!(
            "{}: layer {li} never arrived from the weight stream",
            self.origin
        )))
    }
}

/// Read every extent of a layer into its place in `buf`.
fn fill(
    file: &File,
    extents: &[Extent],
    buf: &mut [u8],
    counter: &AtomicU64,
) -> Result<(), std::io::Error> {
    for e in extents {
        file.read_exact_at(&mut buf[e.local..e.local + e.len], e.file_offset)?;
        counter.fetch_add(e.len as u64, Ordering::Relaxed);
    }
    Ok(())
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

/// Lay out tensors of `lens` bytes back to back, each at a 64-byte boundary; returns
/// their offsets.
pub(crate) fn pack_offsets(lens: &[usize]) -> Vec<usize> {
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            let o = at;
            at = (at + l).div_ceil(64) * 64;
            o
        })
        .collect()
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
    fn packed_offsets_are_aligned_and_disjoint() {
        assert_eq!(pack_offsets(&[10, 64, 1, 0, 5]), vec![0, 64, 128, 192, 192]);
    }

    #[test]
    fn weight_modes_parse() {
        for m in [WeightMode::Mmap, WeightMode::Resident, WeightMode::Stream] {
            assert_eq!(m.name().parse::<WeightMode>().unwrap(), m);
        }
        assert!("disk".parse::<WeightMode>().is_err());
    }
}
