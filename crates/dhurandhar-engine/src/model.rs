//! Loading a GGUF of a supported architecture ([`crate::arch::ARCHITECTURES`]; weights
//! stay in the memory map) and running it: one layer loop for every architecture,
//! driven by the architecture's [`ArchSpec`] and a per-layer plan read from the file.

use std::borrow::{Borrow, Cow};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use dhurandhar_checkpoint::gguf::{GgufFile, GgufTensorInfo};
use dhurandhar_checkpoint::{GgufHyperParams, GgufTokenizer};
use dhurandhar_lora::TargetModule;
use memmap2::Mmap;
use rayon::prelude::*;

pub use crate::arch::RopeStyle;
use crate::arch::{Activation, ArchSpec, AttentionScale, ExpertRouting, SlidingLayers};
use crate::cache::{CacheCodec, Capture, HeadRows, KvCache};
use crate::experts::{route, Eviction, ExpertStats};
use crate::kernels::{
    axpy, dot, matmul, softmax, strided_axpys, strided_dots, Acts, Layout, QMatrix,
};
use crate::lora::LoraStack;
use crate::quant::{computes_with, row_bytes, GgmlType, Q8Acts};
use crate::store::{
    buffer_len, expert_cache_minimum, mib, plan_pool, BudgetInputs, ExpertBudget, LayerView,
    PinnedMatrix, Source, StorePlan, StreamStats, Streamer, WeightMode, WeightStore, ALIGN,
    WINDOW_SLOTS,
};
use crate::tokenizer::Tokenizer;
use crate::EngineError;

/// Hyper-parameters for the forward pass, derived from the checkpoint crate's reading of
/// the GGUF ([`GgufHyperParams`]), checked for what this engine computes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub architecture: String,
    pub n_layers: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// RoPE base of full-attention layers (every layer without a sliding window).
    pub rope_base: f32,
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    /// Linear RoPE scaling of full-attention layers: positions are multiplied by this.
    pub rope_position_scale: f32,
    pub rms_eps: f32,
    pub tied_embeddings: bool,
    /// Multiplier of the attention scores (`1/sqrt(head_dim)` for most architectures).
    pub attention_scale: f32,
    /// Tokens a sliding-window layer attends to, when the model has such layers.
    pub sliding_window: Option<usize>,
    /// Layers that attend through the sliding window.
    pub sliding_layers: usize,
    /// RoPE base of the sliding-window layers, when there are any.
    pub rope_base_sliding: Option<f32>,
    /// Logits become `c·tanh(logit / c)` with this `c`, when set.
    pub final_logit_softcap: Option<f32>,
}

/// `t` as a `rows × cols` matrix the engine computes with, checked: its type, its byte
/// count, and that it lies inside the file of `file_len` bytes (the shape is the
/// caller's to check).
fn tensor_at(
    t: &GgufTensorInfo,
    rows: usize,
    cols: usize,
    file_len: usize,
    origin: &str,
) -> Result<TensorRef, EngineError> {
    let name = &t.name;
    let qtype = t.ggml_type;
    if !computes_with(qtype) {
        return Err(meta_err(
            origin,
            format!(
                "tensor {name} has type {} which the engine cannot compute with",
                qtype.name()
            ),
        ));
    }
    let len = row_bytes(qtype, cols)?
        .checked_mul(rows)
        .ok_or_else(|| meta_err(origin, format!("tensor {name} is too large")))?;
    if t.n_bytes != len as u64 {
        return Err(meta_err(
            origin,
            format!("tensor {name} holds {} bytes, expected {len}", t.n_bytes),
        ));
    }
    let offset = usize::try_from(t.offset).map_err(|_| meta_err(origin, "offset overflow"))?;
    if offset.checked_add(len).is_none_or(|e| e > file_len) {
        return Err(meta_err(
            origin,
            format!("tensor {name} runs past the end of the file"),
        ));
    }
    Ok(TensorRef {
        qtype,
        rows,
        cols,
        offset,
        len,
        local: 0,
        layout: Layout::Rows,
    })
}

/// Interleave a resident matrix by eight rows in place where its type and shape allow
/// ([`crate::interleave::fits`]): the x86 kernels then compute eight rows per pass.
/// The bytes stay where they were, so memory and offsets are unchanged.
fn interleave_resident(bytes: &mut [u8], t: &mut TensorRef) -> Result<(), EngineError> {
    let data = &mut bytes[t.offset..t.offset + t.len];
    if t.layout == Layout::Rows
        && crate::interleave::interleave_if_fits(t.qtype, t.rows, t.cols, data)?
    {
        t.layout = Layout::Interleaved8;
    }
    Ok(())
}

/// Where a tensor lives in the map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRef {
    pub(crate) qtype: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    /// Offset inside the layer's buffer when the layer is streamed.
    local: usize,
    /// Rows as stored, or interleaved by eight at load (resident, x86).
    layout: Layout,
}

/// Q/K/V projections: three tensors, or one fused `attn_qkv` whose output rows are
/// `[q | k | v]`.
#[derive(Debug)]
pub(crate) enum Qkv {
    Separate {
        wq: TensorRef,
        wk: TensorRef,
        wv: TensorRef,
    },
    Fused(TensorRef),
}

/// FFN input projections: gate and up, or one fused `ffn_up` whose output rows are
/// `[gate | up]`.
#[derive(Debug)]
pub(crate) enum GateUp {
    Separate { gate: TensorRef, up: TensorRef },
    Fused(TensorRef),
}

/// A layer's feed-forward: one gated MLP, or a mixture of experts.
#[derive(Debug)]
pub(crate) enum Ffn {
    Dense { gate_up: GateUp, down: TensorRef },
    Moe(Box<Moe>),
}

/// A mixture-of-experts feed-forward in llama.cpp's stacked layout: a router
/// (`ffn_gate_inp`) and `ffn_{gate,up,down}_exps` holding every expert's matrix one after
/// the other, plus an optional shared expert.
#[derive(Debug)]
pub(crate) struct Moe {
    /// The router, `n_expert × dim` in f32, always in RAM: a streamed model applies the
    /// next layer's router ahead of time to predict (and read) its experts.
    router: Vec<f32>,
    /// Experts each token is routed to.
    used: usize,
    /// Each expert's `[gate, up, down]`: rows of the stacked tensors (streamed: `local`
    /// is inside the expert's own buffer).
    experts: Vec<[TensorRef; 3]>,
    /// Multiplier of the routing weights (`expert_weights_scale`; 0 or 1: none).
    scale: f32,
    shared: Option<SharedExpert>,
}

/// Qwen-MoE's shared expert: a gated MLP every token goes through, its output scaled by
/// `sigmoid(gate_inp · x)`.
#[derive(Debug)]
struct SharedExpert {
    gate_inp: Vec<f32>,
    gate: TensorRef,
    up: TensorRef,
    down: TensorRef,
}

/// One layer's tensors and its place in the plan.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) qkv: Qkv,
    pub(crate) bq: Option<Vec<f32>>,
    pub(crate) bk: Option<Vec<f32>>,
    pub(crate) bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k (`head_dim` each), for QK-norm models.
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
    pub(crate) wo: TensorRef,
    /// RMSNorm on the attention output before the residual add (Gemma).
    pub(crate) post_attn_norm: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) ffn: Ffn,
    /// RMSNorm on the FFN output before the residual add (Gemma).
    pub(crate) post_ffn_norm: Option<Vec<f32>>,
    /// `Some(w)`: attends to the last `w` positions and caches only those.
    pub(crate) window: Option<usize>,
    /// Index into [`Model::ropes`].
    pub(crate) rope: usize,
}

impl Layer {
    /// The layer's matrices (what a streamed layer reads), in a fixed order.
    fn mats_mut(&mut self) -> Vec<&mut TensorRef> {
        let mut v = Vec::with_capacity(7);
        match &mut self.qkv {
            Qkv::Separate { wq, wk, wv } => v.extend([wq, wk, wv]),
            Qkv::Fused(w) => v.push(w),
        }
        v.push(&mut self.wo);
        match &mut self.ffn {
            Ffn::Dense { gate_up, down } => {
                match gate_up {
                    GateUp::Separate { gate, up } => v.extend([gate, up]),
                    GateUp::Fused(w) => v.push(w),
                }
                v.push(down);
            }
            // Routed experts are read on their own (the expert cache); the shared one
            // belongs to the layer.
            Ffn::Moe(m) => {
                if let Some(sh) = &mut m.shared {
                    v.extend([&mut sh.gate, &mut sh.up, &mut sh.down]);
                }
            }
        }
        v
    }
}

/// One RoPE variant of a model (full-attention layers, sliding layers).
#[derive(Debug, Clone)]
pub(crate) struct RopeParams {
    base: f32,
    position_scale: f32,
    /// Per-pair frequency divisors (`rope_freqs.weight`, Llama 3 scaling).
    freq_factors: Option<Vec<f32>>,
}

/// A loaded model: configuration, tokenizer, and tensor locations inside the file.
pub struct Model {
    pub(crate) store: WeightStore,
    mode: WeightMode,
    /// Streamed: the head's chunks as `(first row, end row, offset in the buffer)`.
    head_chunks: Vec<(usize, usize, usize)>,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Sum of the stored bytes of every tensor in the file.
    pub tensor_bytes: u64,
    pub(crate) spec: &'static ArchSpec,
    pub(crate) embd: TensorRef,
    pub(crate) output: TensorRef,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) ropes: Vec<RopeParams>,
}

fn meta_err(path: &str, message: impl Into<String>) -> EngineError {
    EngineError::Model {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The file while a model loads: mapped, read whole, or read piece by piece (from the
/// GGUF, or decoded from a `.dhp` pack of it).
enum Backing {
    Map(Mmap),
    Bytes(Vec<u8>),
    File(File, u64, std::path::PathBuf),
    Pack(Box<dhurandhar_pack::GgufPackReader>),
}

impl Backing {
    /// Length of the GGUF.
    fn len(&self) -> usize {
        match self {
            Backing::Map(m) => m.len(),
            Backing::Bytes(v) => v.len(),
            Backing::File(_, n, _) => usize::try_from(*n).unwrap_or(usize::MAX),
            Backing::Pack(p) => usize::try_from(p.gguf_len()).unwrap_or(usize::MAX),
        }
    }

    fn read(&self, offset: usize, len: usize, origin: &str) -> Result<Cow<'_, [u8]>, EngineError> {
        match self {
            Backing::Map(m) => Ok(Cow::Borrowed(&m[offset..offset + len])),
            Backing::Bytes(v) => Ok(Cow::Borrowed(&v[offset..offset + len])),
            Backing::File(f, _, _) => {
                let mut b = vec![0u8; len];
                f.read_exact_at(&mut b, offset as u64)
                    .map_err(|source| io_err(origin, source))?;
                Ok(Cow::Owned(b))
            }
            Backing::Pack(p) => {
                let mut b = vec![0u8; len];
                p.read(offset as u64, &mut b, &mut Default::default())?;
                Ok(Cow::Owned(b))
            }
        }
    }
}

/// The GGUF a `.dhp` pack holds, for `mode`: decoded whole into RAM (resident) or kept
/// as the pack to read from (stream). A pack's tensors are compressed, so it cannot be
/// memory-mapped and computed on in place.
fn open_pack(
    path: &Path,
    mode: WeightMode,
    direct_io: bool,
) -> Result<(Backing, GgufFile), EngineError> {
    let origin = path.display().to_string();
    let mut pack = dhurandhar_pack::GgufPackReader::open(path)?;
    let header = pack.gguf_header()?;
    let gguf = GgufFile::parse(&header, &origin)?;
    let backing = match mode {
        WeightMode::Mmap => {
            return Err(meta_err(
                &origin,
                "a .dhp pack holds compressed tensors and cannot be memory-mapped: load it resident or stream it",
            ))
        }
        WeightMode::Resident => {
            let len = usize::try_from(pack.gguf_len())
                .map_err(|_| meta_err(&origin, "file too large"))?;
            let mut bytes = crate::store::resident_buffer(len.max(header.len()));
            let at = header.len();
            bytes[..at].copy_from_slice(&header);
            pack.read(at as u64, &mut bytes[at..], &mut Default::default())?;
            Backing::Bytes(bytes)
        }
        WeightMode::Stream => {
            if direct_io {
                pack.use_direct_io();
            }
            Backing::Pack(Box::new(pack))
        }
    };
    Ok((backing, gguf))
}

fn io_err(origin: &str, source: std::io::Error) -> EngineError {
    EngineError::Io {
        path: origin.to_string(),
        source,
    }
}

/// Parse the GGUF header from a bounded read of the file's start, growing the read until
/// the header fits (the header is metadata and the tokenizer, not the weights).
fn read_header(file: &File, file_len: u64, origin: &str) -> Result<GgufFile, EngineError> {
    let mut want = (4u64 << 20).min(file_len);
    loop {
        let mut buf = vec![0u8; want as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(|source| io_err(origin, source))?;
        match GgufFile::parse(&buf, origin) {
            Ok(g) => return Ok(g),
            Err(e) if want >= file_len => return Err(e.into()),
            Err(_) => want = (want * 2).min(file_len),
        }
    }
}

/// Room a budget keeps for what a run adds that the plan does not itemize: code pages
/// first touched by the forward pass, the passes' small temporaries, the prefetch
/// thread's stack, and per extra compute thread its stack and allocator arena. On the
/// SmolLM2 fixture with a 4-token prompt the RSS grew 0.9 MiB past the itemized plan on
/// one thread and 1.8 MiB on two; without this room a memory group the size of the
/// budget evicts the running code and kills the run.
pub fn run_growth_reserve(threads: usize) -> u64 {
    (2 << 20) + threads.saturating_sub(1) as u64 * (1 << 20)
}

/// Hand the heap pages that parsing the header freed back to the OS. glibc keeps them
/// otherwise (its trim threshold grows with the large buffers loading frees), so the
/// process would hold megabytes it no longer uses and its RSS after loading would
/// overstate the runtime's footprint that the planner is given.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Model {
    /// Memory-map and load `path` ([`WeightMode::Mmap`]).
    pub fn open(path: &Path) -> Result<Model, EngineError> {
        Self::open_with(path, WeightMode::Mmap)
    }

    /// Load `path` with its weights held as `mode` says. Anything but a regular file (a
    /// FIFO, a device) is refused before it is opened for reading, so it cannot block or
    /// be mapped. A streamed model starts reading once [`Model::start_stream`] sizes its
    /// pool (or, failing that, at the first forward pass with the minimum window).
    pub fn open_with(path: &Path, mode: WeightMode) -> Result<Model, EngineError> {
        Self::open_with_io(path, mode, true)
    }

    /// [`Model::open_with`], choosing how streamed weights are read: `direct_io` tries
    /// `O_DIRECT` (falling back to buffered reads where the file system refuses it);
    /// `false` reads through the page cache and drops each item's pages once read.
    pub fn open_with_io(
        path: &Path,
        mode: WeightMode,
        direct_io: bool,
    ) -> Result<Model, EngineError> {
        let origin = path.display().to_string();
        let file = dhurandhar_io::open_regular(path)?;
        let (backing, gguf) = match mode {
            _ if dhurandhar_pack::is_pack(&file) => open_pack(path, mode, direct_io)?,
            WeightMode::Mmap => {
                // SAFETY: the map is read-only; a concurrent truncation of the file by
                // another process could fault, as with any mmap-based reader.
                let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(&origin, e))?;
                let gguf = GgufFile::parse(&map, &origin)?;
                (Backing::Map(map), gguf)
            }
            WeightMode::Resident => {
                let len = file.metadata().map_err(|e| io_err(&origin, e))?.len();
                let mut bytes = crate::store::resident_buffer(
                    usize::try_from(len).map_err(|_| meta_err(&origin, "file too large"))?,
                );
                file.read_exact_at(&mut bytes, 0)
                    .map_err(|e| io_err(&origin, e))?;
                let gguf = GgufFile::parse(&bytes, &origin)?;
                (Backing::Bytes(bytes), gguf)
            }
            WeightMode::Stream => {
                let len = file.metadata().map_err(|e| io_err(&origin, e))?.len();
                let gguf = read_header(&file, len, &origin)?;
                (Backing::File(file, len, path.to_path_buf()), gguf)
            }
        };
        gguf.check_ranges(backing.len() as u64, &origin)?;
        let model = Self::from_gguf(backing, &gguf, &origin, mode, direct_io)?;
        drop(gguf);
        release_freed_heap();
        Ok(model)
    }

    fn from_gguf(
        backing: Backing,
        g: &GgufFile,
        origin: &str,
        mode: WeightMode,
        direct_io: bool,
    ) -> Result<Model, EngineError> {
        let hp = GgufHyperParams::read(g, origin)?;
        let arch = hp.architecture.clone();
        let spec = crate::arch::lookup(&arch).map_err(|m| meta_err(origin, m))?;
        // The engine needs every size positive, bounded, and the same on every layer.
        let size = |what: &str, n: u64| -> Result<usize, EngineError> {
            usize::try_from(n)
                .ok()
                .filter(|&n| n > 0 && n < (1 << 24))
                .ok_or_else(|| meta_err(origin, format!("{what} {n} is out of range")))
        };
        let uniform = |what: &str, per_layer: &[u64]| -> Result<usize, EngineError> {
            match per_layer.first() {
                Some(&f) if per_layer.iter().all(|&x| x == f) => size(what, f),
                _ => Err(meta_err(
                    origin,
                    format!("the {what} differs between layers, which the engine does not support"),
                )),
            }
        };
        let required = |what: &str, v: &Option<Vec<u64>>| -> Result<usize, EngineError> {
            let v = v
                .as_deref()
                .ok_or_else(|| meta_err(origin, format!("missing the {what} ({arch})")))?;
            uniform(what, v)
        };
        let n_layers = size("block count", hp.block_count)?;
        let dim = size("embedding length", hp.embedding_length)?;
        let n_heads = required("attention head count", &hp.head_count)?;
        let n_kv_heads = match &hp.head_count_kv {
            Some(v) => uniform("KV head count", v)?,
            None => n_heads,
        };
        // Dense layers need it; expert layers take their widths from their tensors.
        let ffn_key = match &hp.feed_forward_length {
            Some(v) => Some(uniform("feed-forward length", v)?),
            None => None,
        };
        let head_dim = match hp.key_length {
            Some(d) => size("key length", d)?,
            None => dim / n_heads,
        };
        if n_heads % n_kv_heads != 0 || head_dim % 2 != 0 {
            return Err(meta_err(
                origin,
                format!("{n_heads} heads / {n_kv_heads} KV heads / head_dim {head_dim} is not a valid GQA layout"),
            ));
        }
        if let Some(v) = hp.value_length.filter(|&v| v as usize != head_dim) {
            return Err(meta_err(
                origin,
                format!("value head size {v} differs from the key head size {head_dim}, which the engine does not support"),
            ));
        }
        let rope_dims = match hp.rope_dimension_count {
            Some(d) => size("RoPE dimension count", d)?.min(head_dim),
            None => head_dim,
        };
        let rope_base = hp.rope_freq_base.unwrap_or(10000.0);
        // Linear scaling stretches positions; any other scheme changes the frequencies
        // in ways this engine does not compute, so it is refused rather than ignored.
        let rope_position_scale = match (hp.rope_scaling_type.as_deref(), hp.rope_scaling_factor) {
            (_, None) => 1.0,
            (_, Some(f)) if f == 0.0 || f == 1.0 => 1.0,
            (Some("none"), _) => 1.0,
            (None | Some("linear"), Some(f)) if f.is_finite() && f > 0.0 => 1.0 / f,
            (t, Some(f)) => {
                return Err(meta_err(
                    origin,
                    format!(
                        "RoPE scaling `{}` with factor {f} is not supported by the engine (linear only)",
                        t.unwrap_or("linear")
                    ),
                ))
            }
        };
        let rms_eps = hp.rms_epsilon.unwrap_or(1e-5);
        let context_length = hp
            .context_length
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(2048);

        let tokenizer = Tokenizer::from_gguf(GgufTokenizer::read(g), origin)?;

        // Tensors.
        let tensor = |name: &str, rows: usize, cols: usize| -> Result<TensorRef, EngineError> {
            let t = g
                .tensor(name)
                .ok_or_else(|| meta_err(origin, format!("missing tensor {name}")))?;
            let want: Vec<u64> = if rows == 1 {
                vec![cols as u64]
            } else {
                vec![cols as u64, rows as u64]
            };
            if t.shape != want {
                return Err(meta_err(
                    origin,
                    format!("tensor {name} has shape {:?}, expected {want:?}", t.shape),
                ));
            }
            tensor_at(t, rows, cols, backing.len(), origin)
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, EngineError> {
            let r = tensor(name, 1, n)?;
            let mut out = vec![0f32; n];
            let bytes = backing.read(r.offset, r.len, origin)?;
            crate::quant::dequantize_row(r.qtype, &bytes, &mut out)?;
            Ok(out)
        };
        // Tensors that change the computation in ways the loop does not implement: refuse
        // rather than silently skip them.
        for (name, what) in [
            ("blk.0.attn_output.bias", "an attention output bias"),
            ("blk.0.ffn_gate_inp.bias", "a router bias"),
            ("blk.0.exp_probs_b.bias", "an expert selection bias"),
            (
                "blk.0.ffn_gate.0.weight",
                "experts stored one tensor each (convert it again with a current llama.cpp)",
            ),
            ("rope_factors_long.weight", "LongRoPE frequency factors"),
            (
                "blk.0.rope_factors_long.weight",
                "LongRoPE frequency factors",
            ),
            ("output_norm.bias", "a LayerNorm bias"),
        ] {
            if g.tensor(name).is_some() {
                return Err(meta_err(
                    origin,
                    format!("{arch} with {what} (tensor {name}) is not supported by the engine"),
                ));
            }
        }
        let embd_t = g
            .tensor("token_embd.weight")
            .ok_or_else(|| meta_err(origin, "missing tensor token_embd.weight"))?;
        let vocab_size = embd_t.shape.get(1).copied().unwrap_or(0) as usize;
        if vocab_size == 0 || vocab_size != tokenizer.vocab_size() {
            return Err(meta_err(
                origin,
                format!(
                    "token_embd has {vocab_size} rows but the tokenizer has {} tokens",
                    tokenizer.vocab_size()
                ),
            ));
        }
        let mut embd = tensor("token_embd.weight", vocab_size, dim)?;
        let tied = g.tensor("output.weight").is_none();
        let mut output = if tied {
            embd
        } else {
            tensor("output.weight", vocab_size, dim)?
        };
        let output_norm = vector("output_norm.weight", dim)?;
        let freq_factors = match (g.tensor("rope_freqs.weight").is_some(), spec.rope_freq_factors) {
            (false, _) => None,
            (true, true) => Some(vector("rope_freqs.weight", rope_dims / 2)?),
            (true, false) => {
                return Err(meta_err(
                    origin,
                    format!("{arch} with RoPE frequency factors (tensor rope_freqs.weight) is not supported by the engine"),
                ))
            }
        };

        // Which layers slide, from the planner's classification of the same file (one
        // reading of the window pattern for plan and engine), and their RoPE.
        let mut ropes = vec![RopeParams {
            base: rope_base,
            position_scale: rope_position_scale,
            freq_factors,
        }];
        let mut windows = vec![None; n_layers];
        let mut rope_base_sliding = None;
        let sliding_window = hp.sliding_window.filter(|&w| w > 0);
        if let (SlidingLayers::Interleaved { local_rope_base }, Some(w)) =
            (spec.sliding, sliding_window)
        {
            let w = size("sliding window", w)?;
            let planned = dhurandhar_checkpoint::arch_from_gguf(g, origin)?.layers();
            if planned.len() != n_layers {
                return Err(meta_err(
                    origin,
                    "layer plan does not match the block count",
                ));
            }
            for (slot, l) in windows.iter_mut().zip(&planned) {
                if l.kv != dhurandhar_model::KvSource::Fresh {
                    return Err(meta_err(
                        origin,
                        format!("layer {} reads another layer's KV cache, which the engine does not support yet", l.index),
                    ));
                }
                *slot = l.window.map(|_| w);
            }
            if windows.iter().any(Option::is_some) {
                let base = hp.rope_freq_base_swa.unwrap_or(local_rope_base);
                rope_base_sliding = Some(base);
                ropes.push(RopeParams {
                    base,
                    position_scale: 1.0,
                    freq_factors: None,
                });
            }
        }

        if g.tensor("blk.0.ffn_gate_inp.weight").is_some() {
            if spec.experts == ExpertRouting::None {
                return Err(meta_err(
                    origin,
                    format!("{arch} with mixture-of-experts layers (tensor blk.0.ffn_gate_inp.weight) is not supported by the engine"),
                ));
            }
            // llama.cpp's gating ids: 1 is softmax, the only one these architectures use.
            if let Some(f) = hp.expert_gating_func.filter(|&f| f != 1) {
                return Err(meta_err(
                    origin,
                    format!("expert gating function {f} (`{arch}.expert_gating_func`) is not supported by the engine (softmax only)"),
                ));
            }
        }
        let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
        // A stacked expert tensor: shape `[cols, rows, n_expert]`, split into one
        // matrix per expert.
        let stacked = |name: &str,
                       n_expert: usize,
                       rows: usize,
                       cols: usize|
         -> Result<Vec<TensorRef>, EngineError> {
            let t = g
                .tensor(name)
                .ok_or_else(|| meta_err(origin, format!("missing tensor {name}")))?;
            let want = vec![cols as u64, rows as u64, n_expert as u64];
            if t.shape != want {
                return Err(meta_err(
                    origin,
                    format!("tensor {name} has shape {:?}, expected {want:?}", t.shape),
                ));
            }
            let whole = tensor_at(t, n_expert * rows, cols, backing.len(), origin)?;
            let each = whole.len / n_expert;
            Ok((0..n_expert)
                .map(|e| TensorRef {
                    rows,
                    offset: whole.offset + e * each,
                    len: each,
                    ..whole
                })
                .collect())
        };
        let dims_of = |name: &str| -> Vec<u64> {
            g.tensor(name).map(|t| t.shape.clone()).unwrap_or_default()
        };
        let mut ffn_widest = 0usize;
        let mut layers = Vec::with_capacity(n_layers);
        for (i, &window) in windows.iter().enumerate() {
            let p = |s: &str| format!("blk.{i}.{s}");
            let has = |s: &str| g.tensor(&p(s)).is_some();
            let opt_vec = |s: &str, n: usize| -> Result<Option<Vec<f32>>, EngineError> {
                if has(s) {
                    vector(&p(s), n).map(Some)
                } else {
                    Ok(None)
                }
            };
            let req_vec = |on: bool, s: &str, n: usize| -> Result<Option<Vec<f32>>, EngineError> {
                if on {
                    vector(&p(s), n).map(Some)
                } else {
                    Ok(None)
                }
            };
            let qkv = if spec.fused_projections && has("attn_qkv.weight") {
                Qkv::Fused(tensor(&p("attn_qkv.weight"), qd + 2 * kvd, dim)?)
            } else {
                Qkv::Separate {
                    wq: tensor(&p("attn_q.weight"), qd, dim)?,
                    wk: tensor(&p("attn_k.weight"), kvd, dim)?,
                    wv: tensor(&p("attn_v.weight"), kvd, dim)?,
                }
            };
            let ffn = if has("ffn_gate_inp.weight") {
                let n_expert = hp.expert_count.filter(|&e| e > 0).ok_or_else(|| {
                    meta_err(
                        origin,
                        format!("layer {i} has a router but `{arch}.expert_count` is missing"),
                    )
                })?;
                let n_expert = size("expert count", n_expert)?;
                let used = size("expert used count", hp.expert_used_count.unwrap_or(0))?;
                if used > n_expert {
                    return Err(meta_err(
                        origin,
                        format!("{used} experts used per token of {n_expert}"),
                    ));
                }
                let ef = size(
                    "expert feed-forward length",
                    dims_of(&p("ffn_gate_exps.weight"))
                        .get(1)
                        .copied()
                        .unwrap_or(0),
                )?;
                let router_t = tensor(&p("ffn_gate_inp.weight"), n_expert, dim)?;
                let mut router = vec![0f32; n_expert * dim];
                let bytes = backing.read(router_t.offset, router_t.len, origin)?;
                crate::quant::dequantize_row(router_t.qtype, &bytes, &mut router)?;
                let gates = stacked(&p("ffn_gate_exps.weight"), n_expert, ef, dim)?;
                let ups = stacked(&p("ffn_up_exps.weight"), n_expert, ef, dim)?;
                let downs = stacked(&p("ffn_down_exps.weight"), n_expert, dim, ef)?;
                let shared = if has("ffn_gate_inp_shexp.weight") {
                    let sf = size(
                        "shared expert feed-forward length",
                        dims_of(&p("ffn_gate_shexp.weight"))
                            .get(1)
                            .copied()
                            .unwrap_or(0),
                    )?;
                    ffn_widest = ffn_widest.max(sf);
                    Some(SharedExpert {
                        gate_inp: vector(&p("ffn_gate_inp_shexp.weight"), dim)?,
                        gate: tensor(&p("ffn_gate_shexp.weight"), sf, dim)?,
                        up: tensor(&p("ffn_up_shexp.weight"), sf, dim)?,
                        down: tensor(&p("ffn_down_shexp.weight"), dim, sf)?,
                    })
                } else {
                    None
                };
                ffn_widest = ffn_widest.max(ef);
                Ffn::Moe(Box::new(Moe {
                    router,
                    used,
                    experts: (0..n_expert)
                        .map(|e| [gates[e], ups[e], downs[e]])
                        .collect(),
                    scale: hp.expert_weights_scale.unwrap_or(0.0),
                    shared,
                }))
            } else {
                let ffn_dim = ffn_key.ok_or_else(|| {
                    meta_err(origin, format!("missing the feed-forward length ({arch})"))
                })?;
                ffn_widest = ffn_widest.max(ffn_dim);
                let gate_up = if spec.fused_projections && !has("ffn_gate.weight") {
                    GateUp::Fused(tensor(&p("ffn_up.weight"), 2 * ffn_dim, dim)?)
                } else {
                    GateUp::Separate {
                        gate: tensor(&p("ffn_gate.weight"), ffn_dim, dim)?,
                        up: tensor(&p("ffn_up.weight"), ffn_dim, dim)?,
                    }
                };
                Ffn::Dense {
                    gate_up,
                    down: tensor(&p("ffn_down.weight"), dim, ffn_dim)?,
                }
            };
            layers.push(Layer {
                attn_norm: vector(&p("attn_norm.weight"), dim)?,
                qkv,
                bq: opt_vec("attn_q.bias", qd)?,
                bk: opt_vec("attn_k.bias", kvd)?,
                bv: opt_vec("attn_v.bias", kvd)?,
                q_norm: req_vec(spec.qk_norm, "attn_q_norm.weight", head_dim)?,
                k_norm: req_vec(spec.qk_norm, "attn_k_norm.weight", head_dim)?,
                wo: tensor(&p("attn_output.weight"), dim, qd)?,
                post_attn_norm: req_vec(spec.sandwich_norms, "post_attention_norm.weight", dim)?,
                ffn_norm: vector(&p("ffn_norm.weight"), dim)?,
                ffn,
                post_ffn_norm: req_vec(spec.sandwich_norms, "post_ffw_norm.weight", dim)?,
                window,
                rope: usize::from(window.is_some()),
            });
        }
        let moe_layers = layers
            .iter()
            .filter(|l| matches!(l.ffn, Ffn::Moe(_)))
            .count();
        if moe_layers > 0 && moe_layers < layers.len() {
            return Err(meta_err(
                origin,
                format!(
                    "{moe_layers} of {} layers are mixture-of-experts and the rest dense, which the engine does not support",
                    layers.len()
                ),
            ));
        }
        let attention_scale = match spec.attention_scale {
            AttentionScale::Gemma3 if n_layers == 62 => 1.0 / ((dim / n_heads) as f32).sqrt(),
            AttentionScale::HeadDim | AttentionScale::Gemma3 => 1.0 / (head_dim as f32).sqrt(),
        };
        let sliding_layers = windows.iter().filter(|w| w.is_some()).count();
        let config = ModelConfig {
            name: hp.name.clone().unwrap_or_default(),
            architecture: arch,
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: ffn_widest,
            vocab_size,
            context_length,
            rope_base,
            rope_dims,
            rope_style: spec.rope_style,
            rope_position_scale,
            rms_eps,
            tied_embeddings: tied,
            attention_scale,
            sliding_window: sliding_window
                .filter(|_| sliding_layers > 0)
                .map(|w| w as usize),
            sliding_layers,
            rope_base_sliding,
            final_logit_softcap: hp
                .final_logit_softcapping
                .filter(|&c| spec.final_logit_softcap && c > 0.0),
        };
        // Streamed: each chunk of the head's rows and its offset in its buffer.
        let mut head_chunks_at = Vec::new();
        // The header, tokenizer and norms of a streamed model were read through the page
        // cache: drop those pages, so the only memory the weights take is the pool's
        // (advice; a failure leaves them to the kernel).
        enum Held {
            Store(WeightStore),
            Stream(Source),
        }
        let held = match backing {
            Backing::Map(m) => Held::Store(WeightStore::Mmap(m)),
            Backing::Bytes(mut v) => {
                if crate::kernels::simd().avx2() {
                    for t in layers.iter_mut().flat_map(Layer::mats_mut) {
                        interleave_resident(&mut v, t)?;
                    }
                    // The head; a tied embedding is the same bytes, and its row lookups
                    // gather from the groups.
                    interleave_resident(&mut v, &mut output)?;
                    if tied {
                        embd.layout = output.layout;
                    }
                }
                Held::Store(WeightStore::Resident(v))
            }
            Backing::File(f, len, path) => {
                let _ = dhurandhar_profile::sys::evict(&f, 0, len);
                Held::Stream(Source::file(f, direct_io.then_some(path.as_path()), len))
            }
            Backing::Pack(p) => {
                let len = p.file().metadata().map_or(0, |m| m.len());
                let _ = dhurandhar_profile::sys::evict(p.file(), 0, len);
                Held::Stream(Source::Pack(p))
            }
        };
        let store = match held {
            Held::Store(store) => store,
            Held::Stream(source) => {
                let mut items = Vec::with_capacity(layers.len());
                let mut expert_reads = Vec::with_capacity(layers.len());
                // Each item (a layer's dense part, an expert) is read into a buffer of its
                // own: its tensors get their offsets there.
                let plan_item = |mats: Vec<&mut TensorRef>| {
                    let spans: Vec<(u64, usize)> =
                        mats.iter().map(|t| (t.offset as u64, t.len)).collect();
                    let (reads, locals) = source.plan(&spans);
                    for (t, local) in mats.into_iter().zip(locals) {
                        t.local = local;
                    }
                    reads
                };
                for l in &mut layers {
                    items.push(plan_item(l.mats_mut()));
                    expert_reads.push(match &mut l.ffn {
                        Ffn::Moe(m) => m
                            .experts
                            .iter_mut()
                            .map(|ex| plan_item(ex.iter_mut().collect()))
                            .collect(),
                        Ffn::Dense { .. } => Vec::new(),
                    });
                }
                let largest = items.iter().map(|l| buffer_len(l)).max().unwrap_or(0);
                let rb = output.len / output.rows;
                let granule = source.row_granule(output.offset as u64, rb);
                for (r0, r1) in head_chunks(&output, largest.saturating_sub(2 * ALIGN), granule) {
                    let (reads, locals) =
                        source.plan(&[((output.offset + r0 * rb) as u64, (r1 - r0) * rb)]);
                    head_chunks_at.push((r0, r1, locals[0]));
                    items.push(reads);
                }
                let layer_matrices = layers
                    .iter_mut()
                    .map(|l| {
                        l.mats_mut()
                            .into_iter()
                            .map(|t| PinnedMatrix {
                                local: t.local,
                                len: t.len,
                                qtype: t.qtype,
                                rows: t.rows,
                                cols: t.cols,
                            })
                            .collect()
                    })
                    .collect();
                WeightStore::Stream(Box::new(Streamer::new(
                    source,
                    origin,
                    items,
                    expert_reads,
                    layer_matrices,
                )?))
            }
        };
        Ok(Model {
            tensor_bytes: g.total_tensor_bytes(),
            store,
            mode,
            head_chunks: head_chunks_at,
            config,
            tokenizer,
            spec,
            embd,
            output,
            output_norm,
            layers,
            ropes,
        })
    }

    /// Tensor `t` of the layer held by `v`.
    #[inline]
    pub(crate) fn mat<'a>(&self, v: &'a LayerView<'_>, t: &TensorRef) -> QMatrix<'a> {
        QMatrix {
            qtype: t.qtype,
            rows: t.rows,
            cols: t.cols,
            data: v.get(t.offset, t.local, t.len),
            // A pinned streamed layer was interleaved when read (the same test).
            layout: if v.interleaved() && crate::interleave::fits(t.qtype, t.rows, t.cols) {
                Layout::Interleaved8
            } else {
                t.layout
            },
        }
    }

    /// A forward pass begins (streamed models: start the minimum pool if no budget
    /// started one, and say whether this pass reads the head).
    fn begin_pass(&self, logits: bool) -> Result<(), EngineError> {
        if let WeightStore::Stream(s) = &self.store {
            if s.plan().is_none() {
                s.start(self.minimal_plan(s))?;
            }
            s.begin_pass(logits);
        }
        Ok(())
    }

    /// Layer `li`'s weights, held until the view is dropped (streamed: blocks until the
    /// prefetch thread has read it).
    pub(crate) fn layer_view(&self, li: usize) -> Result<LayerView<'_>, EngineError> {
        match &self.store {
            WeightStore::Mmap(m) => Ok(LayerView::File(m)),
            WeightStore::Resident(v) => Ok(LayerView::File(v)),
            WeightStore::Stream(s) => {
                if s.plan().is_none() {
                    s.start(self.minimal_plan(s))?;
                }
                s.layer(li)
            }
        }
    }

    /// The logits of the `n` normed hidden states in `h` into `logits` (`n × vocab`). A
    /// streamed head arrives in chunks of rows from the pool, each multiplied as it
    /// comes.
    fn head_logits(
        &self,
        sc: &mut Scratch,
        h: &[f32],
        logits: &mut [f32],
        par: bool,
    ) -> Result<(), EngineError> {
        let t = &self.output;
        let data = match &self.store {
            WeightStore::Mmap(m) => &m[t.offset..t.offset + t.len],
            WeightStore::Resident(v) => &v[t.offset..t.offset + t.len],
            WeightStore::Stream(s) => {
                let n = h.len() / t.cols;
                let rb = t.len / t.rows;
                let mut part = Vec::new();
                for (j, &(r0, r1, local)) in self.head_chunks.iter().enumerate() {
                    let view = s.layer(self.layers.len() + j)?;
                    let w = QMatrix {
                        qtype: t.qtype,
                        rows: r1 - r0,
                        cols: t.cols,
                        data: view.get(t.offset + r0 * rb, local, (r1 - r0) * rb),
                        layout: Layout::Rows,
                    };
                    part.resize(n * (r1 - r0), 0.0);
                    sc.project(&w, h, &mut part, par)?;
                    for (dst, src) in logits.chunks_mut(t.rows).zip(part.chunks(r1 - r0)) {
                        dst[r0..r1].copy_from_slice(src);
                    }
                }
                return Ok(());
            }
        };
        let w = QMatrix {
            qtype: t.qtype,
            rows: t.rows,
            cols: t.cols,
            data,
            layout: t.layout,
        };
        sc.project(&w, h, logits, par)
    }

    /// Dequantize token `tok`'s embedding row into `out`; a streamed model reads just
    /// that row from the file.
    pub(crate) fn embed(&self, tok: u32, out: &mut [f32]) -> Result<(), EngineError> {
        let bad = || EngineError::Invalid(format!("token id {tok} is outside the vocabulary"));
        let t = &self.embd;
        match &self.store {
            WeightStore::Stream(s) => {
                if tok as usize >= t.rows {
                    return Err(bad());
                }
                let rb = t.len / t.rows;
                if let Some((view, at)) = self.pinned_head_row(s, tok as usize)? {
                    return crate::quant::dequantize_row(t.qtype, view.get(0, at, rb), out);
                }
                let mut row = vec![0u8; rb];
                s.read_at(&mut row, (t.offset + tok as usize * rb) as u64)?;
                crate::quant::dequantize_row(t.qtype, &row, out)
            }
            WeightStore::Mmap(_) | WeightStore::Resident(_) => self
                .mat(&self.layer_view(0)?, t)
                .dequantize_row(tok as usize, out)
                .map_err(|_| bad()),
        }
    }

    /// A tied embedding row that sits in a pinned chunk of the head: its view and offset
    /// there, so it needs no read.
    fn pinned_head_row<'a>(
        &self,
        s: &'a Streamer,
        tok: usize,
    ) -> Result<Option<(LayerView<'a>, usize)>, EngineError> {
        let Some(plan) = s.plan().filter(|_| self.config.tied_embeddings) else {
            return Ok(None);
        };
        let chunk = self
            .head_chunks
            .iter()
            .position(|&(r0, r1, _)| (r0..r1).contains(&tok));
        match chunk {
            Some(j) if plan.pinned_layers == self.layers.len() && j < plan.pinned_head_chunks => {
                let (r0, _, local) = self.head_chunks[j];
                let rb = self.output.len / self.output.rows;
                Ok(Some((
                    s.layer(self.layers.len() + j)?,
                    local + (tok - r0) * rb,
                )))
            }
            _ => Ok(None),
        }
    }

    /// The stream's plan when no budget was given: the minimum window, nothing pinned.
    fn minimal_plan(&self, s: &Streamer) -> StorePlan {
        let items = s.item_bytes();
        let window = WINDOW_SLOTS as u64 * items.iter().copied().max().unwrap_or(0) as u64;
        let experts = self.expert_budget(s);
        StorePlan {
            budget_bytes: None,
            kv_bytes: 0,
            activation_bytes: 0,
            resident_bytes: self.resident_bytes(),
            fixed_bytes: 0,
            pool_bytes: window,
            buffer_bytes: window,
            window_slots: WINDOW_SLOTS,
            pinned_layers: 0,
            head_chunks: items.len() - self.layers.len(),
            pinned_head_chunks: 0,
            streamed_bytes_per_pass: items.iter().map(|&b| b as u64).sum(),
            expert_cache_bytes: experts.map_or(0, |e| {
                e.requested
                    .unwrap_or(e.min_bytes)
                    .max(e.min_bytes)
                    .min(e.total_bytes)
            }),
            expert_bytes: experts.map_or(0, |e| e.total_bytes),
        }
    }

    /// A streamed MoE model's expert cache needs (`None` for dense models).
    fn expert_budget(&self, s: &Streamer) -> Option<ExpertBudget> {
        let bytes = s.expert_bytes();
        let largest = bytes.iter().flatten().copied().max()? as u64;
        let used = self
            .layers
            .iter()
            .filter_map(|l| match &l.ffn {
                Ffn::Moe(m) => Some(m.used),
                Ffn::Dense { .. } => None,
            })
            .max()
            .unwrap_or(1);
        Some(ExpertBudget {
            total_bytes: bytes.iter().flatten().map(|&b| b as u64).sum(),
            min_bytes: expert_cache_minimum(largest, used),
            requested: s.requested_expert_cache(),
        })
    }

    /// Weights held in RAM whatever the mode: norms, biases, routers and shared-expert
    /// gates (f32).
    fn resident_bytes(&self) -> u64 {
        let vecs: usize = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.bq,
                    &l.bk,
                    &l.bv,
                    &l.q_norm,
                    &l.k_norm,
                    &l.post_attn_norm,
                    &l.post_ffn_norm,
                ]
                .iter()
                .map(|v| v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
                    + l.attn_norm.len()
                    + l.ffn_norm.len()
                    + match &l.ffn {
                        Ffn::Moe(m) => {
                            m.router.len() + m.shared.as_ref().map_or(0, |s| s.gate_inp.len())
                        }
                        Ffn::Dense { .. } => 0,
                    }
            })
            .sum::<usize>()
            + self.output_norm.len();
        (vecs * 4) as u64
    }

    /// Bytes of the buffers one forward pass over `chunk` tokens allocates (activations,
    /// 8-bit activation copies, logits for `logit_rows` tokens).
    pub fn activation_bytes(&self, chunk: usize, logit_rows: usize) -> u64 {
        let c = &self.config;
        let (qd, kvd) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let widest = c.dim.max(qd).max(c.ffn_dim);
        let fused = (qd + 2 * kvd).max(2 * c.ffn_dim);
        let per_token = 3 * c.dim + 2 * qd + 2 * kvd + 2 * c.ffn_dim + fused + widest;
        (4 * (chunk * per_token + logit_rows * (c.vocab_size + c.dim))) as u64
    }

    /// Copies of layer `li`'s matrices as the forward pass sees them (a check that every
    /// weight mode serves the same bytes). Streamed: consumes that layer from the stream.
    pub fn layer_tensors(&self, li: usize) -> Result<Vec<Vec<u8>>, EngineError> {
        let l = self
            .layers
            .get(li)
            .ok_or_else(|| EngineError::Invalid(format!("no layer {li}")))?;
        let v = self.layer_view(li)?;
        let mut mats = Vec::new();
        match &l.qkv {
            Qkv::Separate { wq, wk, wv } => mats.extend([wq, wk, wv]),
            Qkv::Fused(w) => mats.push(w),
        }
        mats.push(&l.wo);
        match &l.ffn {
            Ffn::Dense { gate_up, down } => {
                match gate_up {
                    GateUp::Separate { gate, up } => mats.extend([gate, up]),
                    GateUp::Fused(w) => mats.push(w),
                }
                mats.push(down);
            }
            Ffn::Moe(m) => {
                if let Some(sh) = &m.shared {
                    mats.extend([&sh.gate, &sh.up, &sh.down]);
                }
            }
        }
        Ok(mats
            .iter()
            .map(|t| {
                let m = self.mat(&v, t);
                (0..m.rows).flat_map(|r| m.row(r).into_owned()).collect()
            })
            .collect())
    }

    /// How the weights are held.
    pub fn weight_mode(&self) -> WeightMode {
        self.mode
    }

    /// Weight bytes that loading put in this process's RSS: every tensor (resident), the
    /// f32 norms and biases (streamed: the layers come later), the pages of the file
    /// mapped so far (mapped; the rest fault in on use). RSS after loading minus this is
    /// the runtime's own footprint (binary, tokenizer, metadata).
    pub fn loaded_weight_bytes(&self) -> u64 {
        match &self.store {
            WeightStore::Mmap(m) => {
                dhurandhar_profile::sys::mapped_rss_bytes(m.as_ptr(), m.len()).unwrap_or(0)
            }
            WeightStore::Resident(_) => self.tensor_bytes,
            WeightStore::Stream(_) => self.resident_bytes(),
        }
    }

    /// The share of the weight bytes a pass finds in RAM (the weight store's hit rate):
    /// 1 when resident; mapped, the share of the file's pages in the page cache now
    /// (`mincore`); streamed, the pinned items' bytes over all the bytes a logits pass
    /// reads. `None` while a streamed model has no pool yet or `mincore` fails.
    pub fn weight_cache_hit(&self) -> Option<f64> {
        match &self.store {
            WeightStore::Mmap(m) => dhurandhar_profile::sys::resident_fraction(m.as_ptr(), m.len()),
            WeightStore::Resident(_) => Some(1.0),
            WeightStore::Stream(s) => {
                let plan = s.plan()?;
                let total: u64 = s.item_bytes().iter().map(|&b| b as u64).sum();
                (total > 0).then(|| 1.0 - plan.streamed_bytes_per_pass as f64 / total as f64)
            }
        }
    }

    /// Weight bytes read from the file since loading (streamed models; 0 otherwise).
    pub fn weight_bytes_read(&self) -> u64 {
        self.stream_stats().bytes_read
    }

    /// What streaming has read, and how long reading and waiting for reads took, since
    /// loading (zeros unless streamed).
    pub fn stream_stats(&self) -> StreamStats {
        match &self.store {
            WeightStore::Stream(s) => s.stats(),
            _ => StreamStats::default(),
        }
    }

    /// Streamed models: whether reads bypass the page cache (`O_DIRECT`); `None`
    /// otherwise.
    pub fn direct_io(&self) -> Option<bool> {
        match &self.store {
            WeightStore::Stream(s) => Some(s.direct()),
            _ => None,
        }
    }

    /// The stream's plan once started (streamed models).
    pub fn stream_plan(&self) -> Option<StorePlan> {
        match &self.store {
            WeightStore::Stream(s) => s.plan().cloned(),
            _ => None,
        }
    }

    /// Streamed MoE models: an expert cache of `bytes` (at least the minimum a layer
    /// needs) instead of what the RAM budget leaves once the dense layers are pinned.
    /// Like the budget, it counts at the stream's first start; other models ignore it.
    pub fn set_expert_cache(&self, bytes: Option<u64>) {
        if let WeightStore::Stream(s) = &self.store {
            s.request_expert_cache(bytes);
        }
    }

    /// Streamed MoE models: whether experts are read ahead — those a layer was routed
    /// to while it computes the cached ones, and those the next layer's router predicts
    /// from the current hidden state (on by default; off, every miss is read when the
    /// computation needs it).
    pub fn set_expert_prefetch(&self, on: bool) {
        if let WeightStore::Stream(s) = &self.store {
            s.set_expert_prefetch(on);
        }
    }

    /// Streamed MoE models: which cached expert makes room for another
    /// ([`Eviction::NextUse`] by default).
    pub fn set_expert_eviction(&self, e: Eviction) {
        if let WeightStore::Stream(s) = &self.store {
            s.set_expert_eviction(e);
        }
    }

    /// The expert cache's counters since loading (streamed MoE models, once started).
    pub fn expert_stats(&self) -> Option<ExpertStats> {
        match &self.store {
            WeightStore::Stream(s) => s.experts().map(|c| c.stats()),
            _ => None,
        }
    }

    /// Streamed MoE models: read ahead the experts layer `li`'s router picks for the
    /// hidden state `x` (one token; the input of layer `li`).
    fn read_ahead_experts(&self, li: usize, x: &[f32]) -> Result<(), EngineError> {
        // Only a streamed MoE model has a cache to read into: no router runs otherwise.
        let WeightStore::Stream(s) = &self.store else {
            return Ok(());
        };
        let Some(c) = s.experts().filter(|c| c.prefetching()) else {
            return Ok(());
        };
        let Some(mut next) = self.predict_experts(li, x) else {
            return Ok(());
        };
        // The likelier half: reading every prediction read more bytes than it saved and
        // was slower than none; half was the fastest of one, half and all (docs/run.md).
        next.truncate(next.len().div_ceil(2));
        c.prefetch(li, &next, true)
    }

    /// The experts layer `li`'s router picks for the hidden state `x` (one token), or
    /// `None` when layer `li` has none.
    fn predict_experts(&self, li: usize, x: &[f32]) -> Option<Vec<usize>> {
        let l = self.layers.get(li)?;
        let Ffn::Moe(m) = &l.ffn else { return None };
        let mut xn = vec![0f32; x.len()];
        rmsnorm(x, &l.ffn_norm, self.config.rms_eps, &mut xn);
        let mut probs: Vec<f32> = m
            .router
            .chunks_exact(x.len())
            .map(|r| dot(r, &xn))
            .collect();
        let mut picks = Vec::new();
        route(&mut probs, m.used, self.spec.experts, m.scale, &mut picks);
        Some(picks.into_iter().map(|(e, _)| e).collect())
    }

    /// Layer `li`'s mixture of experts on the `n` normed tokens `xn` into `out`
    /// (`n × dim`).
    #[allow(clippy::too_many_arguments)]
    fn moe_ffn(
        &self,
        li: usize,
        moe: &Moe,
        lw: &LayerView<'_>,
        xn: &[f32],
        out: &mut [f32],
        sc: &mut Scratch,
        par: bool,
    ) -> Result<(), EngineError> {
        let dim = self.config.dim;
        let n_expert = moe.experts.len();
        // Route every token; group the tokens by expert.
        let mut probs = vec![0f32; n_expert];
        let mut picks = Vec::new();
        let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n_expert];
        for (t, xt) in xn.chunks_exact(dim).enumerate() {
            for (p, r) in probs.iter_mut().zip(moe.router.chunks_exact(dim)) {
                *p = dot(r, xt);
            }
            route(
                &mut probs,
                moe.used,
                self.spec.experts,
                moe.scale,
                &mut picks,
            );
            for &(e, w) in &picks {
                routed[e].push((t, w));
            }
        }
        let mut wanted: Vec<usize> = (0..n_expert).filter(|&e| !routed[e].is_empty()).collect();
        let cache = match &self.store {
            WeightStore::Stream(s) => s.experts(),
            _ => None,
        };
        if let Some(c) = cache {
            // Read the misses ahead while the cached experts compute (the next layer's
            // likely experts were asked for when the previous layer ended).
            c.prefetch(li, &wanted, false)?;
            // Cached experts first; the missing ones from the back, so this thread
            // reads (or waits for) the last asked-for while the prefetch thread reads
            // from the front.
            let (mut ready, mut missing): (Vec<usize>, Vec<usize>) =
                wanted.iter().partition(|&&e| c.cached(li, e));
            missing.reverse();
            ready.append(&mut missing);
            wanted = ready;
        }
        out.fill(0.0);
        let (mut xs, mut g, mut u, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in wanted {
            let toks = &routed[e];
            xs.clear();
            for &(t, _) in toks {
                xs.extend_from_slice(&xn[t * dim..(t + 1) * dim]);
            }
            // Streamed: the expert's own buffer, held until its three products are done.
            let held = cache.map(|c| c.get(li, e)).transpose()?;
            let packed;
            let view = match &held {
                Some(b) => {
                    packed = LayerView::Packed(b.bytes());
                    &packed
                }
                None => lw,
            };
            let [wg, wu, wd] = &moe.experts[e];
            self.gated_mlp(view, [wg, wu, wd], &xs, [&mut g, &mut u, &mut d], sc, par)?;
            for (i, &(t, w)) in toks.iter().enumerate() {
                axpy(
                    w,
                    &d[i * dim..(i + 1) * dim],
                    &mut out[t * dim..(t + 1) * dim],
                );
            }
        }
        if let Some(sh) = &moe.shared {
            self.gated_mlp(
                lw,
                [&sh.gate, &sh.up, &sh.down],
                xn,
                [&mut g, &mut u, &mut d],
                sc,
                par,
            )?;
            for (t, xt) in xn.chunks_exact(dim).enumerate() {
                let gate = 1.0 / (1.0 + (-dot(&sh.gate_inp, xt)).exp());
                axpy(
                    gate,
                    &d[t * dim..(t + 1) * dim],
                    &mut out[t * dim..(t + 1) * dim],
                );
            }
        }
        Ok(())
    }

    /// `down · act(gate · x) ⊙ (up · x)` for the rows of `x`, into `bufs[2]` (`bufs[0..2]`
    /// are scratch), with the architecture's activation.
    fn gated_mlp(
        &self,
        view: &LayerView<'_>,
        [wg, wu, wd]: [&TensorRef; 3],
        x: &[f32],
        [g, u, d]: [&mut Vec<f32>; 3],
        sc: &mut Scratch,
        par: bool,
    ) -> Result<(), EngineError> {
        let rows = x.len() / wg.cols;
        g.resize(rows * wg.rows, 0.0);
        u.resize(rows * wu.rows, 0.0);
        d.resize(rows * wd.rows, 0.0);
        sc.q8_ready = false;
        sc.project(&self.mat(view, wg), x, g, par)?;
        sc.project(&self.mat(view, wu), x, u, par)?;
        activate(self.spec.activation, g, u);
        sc.q8_ready = false;
        sc.project(&self.mat(view, wd), g, d, par)
    }

    /// What a budget of `budget` bytes must hold besides the streamed layers, for a run
    /// of `context` tokens in chunks of `chunk`, `logit_rows` logits per pass (the inputs
    /// of [`plan_pool`]); the fixed overhead is the process's resident set now, less the
    /// resident weights, plus [`run_growth_reserve`] for `threads` compute threads. `None`
    /// unless the model streams and a budget is given.
    pub fn budget_inputs(
        &self,
        budget: Option<u64>,
        context: usize,
        chunk: usize,
        logit_rows: usize,
        threads: usize,
    ) -> Option<BudgetInputs> {
        let (WeightStore::Stream(s), Some(budget)) = (&self.store, budget) else {
            return None;
        };
        let resident = self.resident_bytes();
        let rss = dhurandhar_profile::MemorySnapshot::current()
            .rss_bytes
            .unwrap_or(0);
        Some(BudgetInputs {
            budget,
            kv_bytes: self.kv_bytes(context) as u64,
            activation_bytes: self.activation_bytes(chunk.max(1), logit_rows),
            resident_bytes: resident,
            fixed_bytes: rss.saturating_sub(resident)
                + run_growth_reserve(threads)
                + s.read_scratch_bytes(),
            layer_bytes: s.item_bytes()[..self.layers.len()]
                .iter()
                .map(|&b| b as u64)
                .collect(),
            head_chunk_bytes: s.item_bytes()[self.layers.len()..]
                .iter()
                .map(|&b| b as u64)
                .collect(),
            experts: self.expert_budget(s),
        })
    }

    /// Size a streamed model's layer pool from `budget` (bytes) for a run of `context`
    /// tokens in chunks of `chunk` with logits for `logit_rows` tokens per pass on
    /// `threads` compute threads, read the layers it pins and start the prefetch thread.
    /// Refuses a budget that cannot hold the minimum, with the breakdown.
    /// Without a budget the window is the minimum and nothing is pinned. Mapped and
    /// resident models return `None`. The first call decides; later calls return its plan,
    /// or refuse a budgeted run whose KV cache is larger than the one that plan holds
    /// (the process would outgrow its budget by the difference).
    pub fn start_stream(
        &self,
        budget: Option<u64>,
        context: usize,
        chunk: usize,
        logit_rows: usize,
        threads: usize,
    ) -> Result<Option<StorePlan>, EngineError> {
        let WeightStore::Stream(s) = &self.store else {
            return Ok(None);
        };
        if let Some(p) = s.plan() {
            let kv = self.kv_bytes(context) as u64;
            if p.budget_bytes.is_some() && kv > p.kv_bytes {
                return Err(EngineError::Budget(format!(
                    "this run's context of {context} tokens needs {} of KV cache, but the \
                     streamed model's pool was sized within its RAM budget for {}; load the \
                     model again (a new budget or a shorter conversation)",
                    mib(kv),
                    mib(p.kv_bytes)
                )));
            }
            return Ok(Some(p.clone()));
        }
        let plan = match self.budget_inputs(budget, context, chunk, logit_rows, threads) {
            None => self.minimal_plan(s),
            Some(inputs) => plan_pool(&inputs).map_err(EngineError::Budget)?,
        };
        Ok(Some(s.start(plan)?.clone()))
    }

    /// Bytes of f32 K+V cache per token of a full-attention layer stack (an upper bound
    /// per token; sliding layers stop growing at their window, see [`Model::kv_bytes`]).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.config.n_layers * self.config.n_kv_heads * self.config.head_dim * 2 * 4
    }

    /// Bytes of f32 K+V the cache holds after `context` tokens: every layer keeps
    /// `min(context, window)` positions (the whole context without a window), as the
    /// planner charges them.
    pub fn kv_bytes(&self, context: usize) -> usize {
        let per_pos = self.config.n_kv_heads * self.config.head_dim * 2 * 4;
        self.layers
            .iter()
            .map(|l| l.window.map_or(context, |w| context.min(w)) * per_pos)
            .sum()
    }

    /// The architecture's row of [`crate::arch::ARCHITECTURES`].
    pub fn spec(&self) -> &'static ArchSpec {
        self.spec
    }

    /// Per-layer sliding windows (`None`: full attention).
    pub fn layer_windows(&self) -> Vec<Option<usize>> {
        self.layers.iter().map(|l| l.window).collect()
    }

    /// An empty KV cache shaped for this model (sliding layers as ring buffers), with
    /// `codec` applied to every layer. Codecs are not supported on sliding-window layers
    /// yet.
    pub fn new_cache(&self, codec: Option<CacheCodec>) -> Result<KvCache, EngineError> {
        let c = &self.config;
        let mut cache = KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, codec);
        cache.set_windows(&self.layer_windows())?;
        Ok(cache)
    }

    /// A new inference session borrowing this model, with `threads` worker threads
    /// (1 = run on this thread). For a session that owns the model (another thread, a
    /// long-lived generator), use [`Session::new`] with an `Arc<Model>`.
    pub fn session(
        &self,
        threads: usize,
        cache: Option<KvCache>,
    ) -> Result<Session<&Model>, EngineError> {
        Session::new(self, threads, cache)
    }
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only for the last token (generation).
    Last,
    /// For every token of the chunk (evaluation).
    All,
    /// None (KV capture).
    None,
}

pub(crate) struct RopeTable {
    inv_freq: Vec<f32>,
    /// Linear scaling: positions are multiplied by this before rotating.
    position_scale: f64,
    style: RopeStyle,
}

impl RopeTable {
    fn new(base: f32, dims: usize, style: RopeStyle) -> Self {
        let inv_freq = (0..dims / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / dims as f64) as f32)
            .collect();
        RopeTable {
            inv_freq,
            position_scale: 1.0,
            style,
        }
    }

    pub(crate) fn from_params(p: &RopeParams, dims: usize, style: RopeStyle) -> Self {
        let mut t = RopeTable::new(p.base, dims, style);
        t.position_scale = p.position_scale as f64;
        if let Some(f) = &p.freq_factors {
            for (v, d) in t.inv_freq.iter_mut().zip(f) {
                *v /= d;
            }
        }
        t
    }

    /// Rotate every `head_dim`-wide head of each of `rows` (one token's Q and K rows) at
    /// `pos`, or by the opposite angle when `inverse` (the transpose of the rotation:
    /// RoPE's backward). The sines and cosines are computed once for all the heads.
    pub(crate) fn rotate_heads(
        &self,
        rows: [&mut [f32]; 2],
        head_dim: usize,
        pos: usize,
        inverse: bool,
    ) {
        const STACK: usize = 256;
        let half = self.inv_freq.len();
        let (mut stack, mut heap) = ([(0f32, 0f32); STACK], Vec::new());
        let sc = if half <= STACK {
            &mut stack[..half]
        } else {
            heap.resize(half, (0f32, 0f32));
            &mut heap[..]
        };
        let p = pos as f64 * self.position_scale;
        for (v, &f) in sc.iter_mut().zip(&self.inv_freq) {
            let a = p * f as f64;
            let s = a.sin() as f32;
            *v = (if inverse { -s } else { s }, a.cos() as f32);
        }
        for row in rows {
            for x in row.chunks_exact_mut(head_dim) {
                for (i, &(s, c)) in sc.iter().enumerate() {
                    let (i0, i1) = match self.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::SplitHalf => (i, i + half),
                    };
                    let (x0, x1) = (x[i0], x[i1]);
                    x[i0] = x0 * c - x1 * s;
                    x[i1] = x0 * s + x1 * c;
                }
            }
        }
    }
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v * r * g;
    }
}

/// RMSNorm every `w.len()`-wide row of `buf` in place (QK-norm per head, post-norms).
fn rmsnorm_rows(buf: &mut [f32], w: &[f32], eps: f32) {
    for row in buf.chunks_exact_mut(w.len()) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * r * g;
        }
    }
}

/// `gate ← act(gate) ⊙ up`, the gated feed-forward's activation; split across the
/// current rayon pool when `parallel` and the chunk is large (prefill).
fn activate_with(act: Activation, gate: &mut [f32], up: &[f32], parallel: bool) {
    const PAR_VALUES: usize = 1 << 15;
    if parallel && gate.len() >= PAR_VALUES {
        gate.par_chunks_mut(PAR_VALUES / 4)
            .zip(up.par_chunks(PAR_VALUES / 4))
            .for_each(|(g, u)| activate(act, g, u));
    } else {
        activate(act, gate, up)
    }
}

/// `gate ← act(gate) ⊙ up`, the gated feed-forward's activation.
fn activate(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::Silu => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
        Activation::GeluTanh => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = gelu_tanh(*g) * u;
            }
        }
    }
}

/// GELU, tanh approximation (what Gemma's `gelu_pytorch_tanh` computes).
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// Split rows of `width = a + b + c` values into three buffers of rows `a`, `b`, `c`.
fn split_rows(src: &[f32], outs: [(&mut [f32], usize); 3]) {
    let width: usize = outs.iter().map(|o| o.1).sum();
    let [(x, a), (y, b), (z, c)] = outs;
    for (t, row) in src.chunks_exact(width).enumerate() {
        x[t * a..(t + 1) * a].copy_from_slice(&row[..a]);
        y[t * b..(t + 1) * b].copy_from_slice(&row[a..a + b]);
        z[t * c..(t + 1) * c].copy_from_slice(&row[a + b..]);
    }
}

/// Which cached positions each query attends over, in index space of the key buffer.
#[derive(Clone, Copy)]
enum Span {
    /// Every position up to the query's own (`buf[j]` is position `j`).
    Causal,
    /// The last `w` positions up to the query's own; `buf[j]` is position `base + j`.
    Window { base: usize, w: usize },
    /// Every entry of the buffer (a single query over a ring buffer: its slots are
    /// exactly the positions in its window, in some order, which softmax ignores).
    All { len: usize },
}

/// A sequence being processed: its KV cache and thread pool.
///
/// `M` is how the session holds its model: `&Model` (borrowed, from [`Model::session`])
/// or `Arc<Model>` (owned, so the session can move to another thread and outlive the
/// caller's borrow).
pub struct Session<M: Borrow<Model>> {
    model: M,
    pub cache: KvCache,
    pool: Option<rayon::ThreadPool>,
    /// One table per [`Model::ropes`] entry.
    ropes: Vec<RopeTable>,
    /// See [`Session::set_f32_activations`].
    f32_activations: bool,
    /// See [`Session::set_adapters`].
    adapters: Option<Arc<LoraStack>>,
}

/// Scratch for one chunk.
struct Scratch {
    q8: Q8Acts,
    q8_ready: bool,
    /// Multiply in f32 instead of quantizing activations to 8 bits.
    f32_acts: bool,
}

impl Scratch {
    fn project(
        &mut self,
        w: &QMatrix<'_>,
        x: &[f32],
        out: &mut [f32],
        par: bool,
    ) -> Result<(), EngineError> {
        if w.uses_q8() && !self.f32_acts {
            if !self.q8_ready {
                self.q8.quantize_with(x, w.cols, par);
                self.q8_ready = true;
            }
            matmul(w, &Acts::Q8(&self.q8), out, par)
        } else {
            matmul(w, &Acts::F32(x), out, par)
        }
    }
}

impl<M: Borrow<Model> + Send> Session<M> {
    /// A new session over `model` with `threads` worker threads (1 = run on this
    /// thread) and an empty KV cache unless `cache` is given.
    pub fn new(model: M, threads: usize, cache: Option<KvCache>) -> Result<Self, EngineError> {
        let c = &model.borrow().config;
        let pool = if threads > 1 {
            // The forward pass runs on a pool thread: with an arena of its own, what it
            // allocates reuses none of the main heap's free space.
            dhurandhar_profile::sys::single_malloc_arena();
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("thread pool: {e}")))?,
            )
        } else {
            None
        };
        let mut cache =
            cache.unwrap_or_else(|| KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, None));
        if cache.layers.len() != c.n_layers
            || cache.n_kv_heads != c.n_kv_heads
            || cache.head_dim != c.head_dim
        {
            return Err(EngineError::Shape(
                "KV cache geometry does not match the model".into(),
            ));
        }
        cache.set_windows(&model.borrow().layer_windows())?;
        let ropes = model
            .borrow()
            .ropes
            .iter()
            .map(|p| RopeTable::from_params(p, c.rope_dims, c.rope_style))
            .collect();
        Ok(Session {
            model,
            cache,
            pool,
            ropes,
            f32_activations: false,
            adapters: None,
        })
    }

    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    /// Multiply quantized weights by f32 activations instead of 8-bit ones (llama.cpp's
    /// scheme, the default). Slower, but free of activation rounding: with 8-bit
    /// activations a 1e-6 relative change anywhere flips roundings that compound over
    /// the layers, which hides small effects such as a good KV codec's error.
    pub fn set_f32_activations(&mut self, on: bool) {
        self.f32_activations = on;
    }

    /// Apply these LoRA adapters from the next pass on (`None`: the base alone). The
    /// base is untouched, so a session can change adapters between requests; the KV
    /// cache holds what earlier passes computed with the adapters they had.
    pub fn set_adapters(&mut self, stack: Option<Arc<LoraStack>>) -> Result<(), EngineError> {
        if let Some(s) = &stack {
            let m = self.model.borrow();
            let layers = m.config.n_layers;
            if s.n_layers() != layers {
                return Err(EngineError::Shape(format!(
                    "the adapters were built for {} layers, the model has {layers}",
                    s.n_layers()
                )));
            }
            // An expert layer has no single gate/up/down projection to adapt: refuse
            // rather than drop the adapter's MLP part.
            for (li, l) in m.layers.iter().enumerate() {
                let mlp = [TargetModule::Gate, TargetModule::Up, TargetModule::Down];
                if matches!(l.ffn, Ffn::Moe(_)) && mlp.iter().any(|&t| s.targets(li, t)) {
                    return Err(EngineError::Shape(format!(
                        "the adapters change the MLP of layer {li}, a mixture-of-experts \
                         layer, which the engine does not adapt (attention modules only)"
                    )));
                }
            }
        }
        self.adapters = stack;
        Ok(())
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.cache.len
    }

    /// Feed a prompt in chunks of `chunk` tokens; returns the last token's logits.
    pub fn prefill(&mut self, tokens: &[u32], chunk: usize) -> Result<Vec<f32>, EngineError> {
        let mut last = Vec::new();
        let pieces: Vec<&[u32]> = tokens.chunks(chunk.max(1)).collect();
        for (i, p) in pieces.iter().enumerate() {
            let which = if i + 1 == pieces.len() {
                Logits::Last
            } else {
                Logits::None
            };
            last = self.forward(p, which, None)?;
        }
        Ok(last)
    }

    /// Run `tokens` (appended after the cached ones) and return logits as requested
    /// (`Last`: `vocab` values; `All`: `tokens.len() × vocab`). With `capture`, the
    /// chunk's Q/K/V are appended to it.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        which: Logits,
        capture: Option<&mut Capture>,
    ) -> Result<Vec<f32>, EngineError> {
        match self.pool.take() {
            Some(pool) => {
                let r = pool.install(|| self.forward_inner(tokens, which, capture, true));
                self.pool = Some(pool);
                r
            }
            None => self.forward_inner(tokens, which, capture, false),
        }
    }

    fn forward_inner(
        &mut self,
        tokens: &[u32],
        which: Logits,
        mut capture: Option<&mut Capture>,
        par: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let m: &Model = self.model.borrow();
        let c = &m.config;
        let spec = m.spec;
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let p0 = self.cache.len;
        let (dim, hd, nh, nkv) = (c.dim, c.head_dim, c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        m.begin_pass(!matches!(which, Logits::None))?;
        let mut x = vec![0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            m.embed(tok, &mut x[t * dim..(t + 1) * dim])?;
        }
        if spec.scale_embeddings {
            let s = (dim as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        let mut xn = vec![0f32; n * dim];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut o = vec![0f32; n * dim];
        let mut gate = vec![0f32; n * c.ffn_dim];
        let mut up = vec![0f32; n * c.ffn_dim];
        let mut fused = Vec::new();
        let mut sc = Scratch {
            q8: Q8Acts::default(),
            q8_ready: false,
            f32_acts: self.f32_activations,
        };
        let scale = c.attention_scale;
        let group = nh / nkv;
        let lora = self.adapters.as_deref();

        for (li, l) in m.layers.iter().enumerate() {
            let lw = m.layer_view(li)?;
            for t in 0..n {
                rmsnorm(
                    &x[t * dim..(t + 1) * dim],
                    &l.attn_norm,
                    c.rms_eps,
                    &mut xn[t * dim..(t + 1) * dim],
                );
            }
            sc.q8_ready = false;
            match &l.qkv {
                Qkv::Separate { wq, wk, wv } => {
                    sc.project(&m.mat(&lw, wq), &xn, &mut q, par)?;
                    sc.project(&m.mat(&lw, wk), &xn, &mut k, par)?;
                    sc.project(&m.mat(&lw, wv), &xn, &mut v, par)?;
                }
                Qkv::Fused(w) => {
                    fused.resize(n * w.rows, 0.0);
                    sc.project(&m.mat(&lw, w), &xn, &mut fused, par)?;
                    split_rows(&fused, [(&mut q, qd), (&mut k, kvd), (&mut v, kvd)]);
                }
            }
            if let Some(s) = lora {
                s.apply(li, TargetModule::Q, &xn, &mut q, n);
                s.apply(li, TargetModule::K, &xn, &mut k, n);
                s.apply(li, TargetModule::V, &xn, &mut v, n);
            }
            for (buf, b, w) in [
                (&mut q, &l.bq, qd),
                (&mut k, &l.bk, kvd),
                (&mut v, &l.bv, kvd),
            ] {
                if let Some(b) = b {
                    for row in buf.chunks_exact_mut(w) {
                        for (y, bb) in row.iter_mut().zip(b) {
                            *y += bb;
                        }
                    }
                }
            }
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                rmsnorm_rows(&mut q, qn, c.rms_eps);
                rmsnorm_rows(&mut k, kn, c.rms_eps);
            }
            if let Some(cap) = capture.as_deref_mut() {
                cap.layers[li].k_pre_rope.extend_from_slice(&k);
            }
            let rope = &self.ropes[l.rope];
            for t in 0..n {
                let rows = [&mut q[t * qd..(t + 1) * qd], &mut k[t * kvd..(t + 1) * kvd]];
                rope.rotate_heads(rows, hd, p0 + t, false);
            }
            if let Some(cap) = capture.as_deref_mut() {
                let cl = &mut cap.layers[li];
                cl.q.extend_from_slice(&q);
                cl.k.extend_from_slice(&k);
                cl.v.extend_from_slice(&v);
            }

            // Append to the cache. Full-attention layers grow; with a codec they keep the
            // exact tail for the queries whose own token group is still incomplete.
            // Sliding layers keep a ring of their window: a chunk of several tokens
            // attends over a contiguous copy of the positions it needs (read before the
            // ring is overwritten), a single token over the ring itself.
            let (gk, gv) = self.cache.groups(li);
            let has_codec = self.cache.codec.is_some();
            let mut tail = None;
            let (mut tail_k0, mut tail_v0) = (0, 0);
            let mut hist = None;
            let span = match l.window {
                None => {
                    let lk = &mut self.cache.layers[li];
                    (tail_k0, tail_v0) = (lk.enc_k, lk.enc_v);
                    let end = p0 + n;
                    for t in 0..n {
                        lk.k.put(p0 + t, &k[t * kvd..(t + 1) * kvd]);
                        lk.v.put(p0 + t, &v[t * kvd..(t + 1) * kvd]);
                    }
                    if has_codec {
                        tail = Some((lk.k.copy_range(tail_k0, end), lk.v.copy_range(tail_v0, end)));
                    }
                    self.cache.encode_complete(li, end)?;
                    Span::Causal
                }
                Some(w) => {
                    let ring = &mut self.cache.layers[li];
                    let span = if n == 1 {
                        Span::All {
                            len: (p0 + 1).min(w),
                        }
                    } else {
                        let old = p0.min(w - 1);
                        let mut hk = HeadRows::new(nkv, hd);
                        let mut hv = HeadRows::new(nkv, hd);
                        hk.reserve_exact(old + n);
                        hv.reserve_exact(old + n);
                        for (i, pos) in (p0 - old..p0).enumerate() {
                            hk.put_from(i, &ring.k, pos % w);
                            hv.put_from(i, &ring.v, pos % w);
                        }
                        for t in 0..n {
                            hk.put(old + t, &k[t * kvd..(t + 1) * kvd]);
                            hv.put(old + t, &v[t * kvd..(t + 1) * kvd]);
                        }
                        hist = Some((hk, hv));
                        Span::Window { base: p0 - old, w }
                    };
                    let end = p0 + n;
                    // Exactly one window of room, never more.
                    for buf in [&mut ring.k, &mut ring.v] {
                        buf.reserve_exact(w);
                        buf.extend_to(end.min(w));
                    }
                    for pos in end.saturating_sub(w).max(p0)..end {
                        let src = (pos - p0) * kvd;
                        ring.k.put(pos % w, &k[src..src + kvd]);
                        ring.v.put(pos % w, &v[src..src + kvd]);
                    }
                    span
                }
            };
            let lk = &self.cache.layers[li];
            let (kbuf, vbuf) = match &hist {
                Some((hk, hv)) => (hk, hv),
                None => (&lk.k, &lk.v),
            };

            // Attention: one work item per (token, KV head), covering the `group` query
            // heads that share it, so each K/V row is read once for all of them.
            let body = |idx: usize, out: &mut [f32]| {
                let (t, kh) = (idx / nkv, idx % nkv);
                let pos = p0 + t;
                let qs = &q[t * qd + kh * group * hd..t * qd + (kh + 1) * group * hd];
                // Buffer entries [lo, hi) are attended; with a codec, entries below
                // bk (bv) come from the cache (decoded), the rest from the exact tail.
                let (lo, hi) = match span {
                    Span::Causal => (0, pos + 1),
                    Span::Window { base, w } => {
                        ((pos + 1).saturating_sub(w).max(base) - base, pos + 1 - base)
                    }
                    Span::All { len } => (0, len),
                };
                let (bk, bv) = if has_codec {
                    ((pos + 1) / gk * gk, (pos + 1) / gv * gv)
                } else {
                    (hi, hi)
                };
                // Scores of the group's heads, one row of `len` per head.
                let len = hi - lo;
                let mut s = vec![0f32; group * len];
                let ck = bk.min(hi);
                strided_dots(qs, kbuf.head(kh, lo), scale, ck - lo, &mut s, len);
                if let (true, Some((tk, _))) = (ck < hi, &tail) {
                    let keys = tk.head(kh, ck - tail_k0);
                    strided_dots(qs, keys, scale, hi - ck, &mut s[ck - lo..], len);
                }
                s.chunks_exact_mut(len.max(1)).for_each(softmax);
                out.fill(0.0);
                let cv = bv.min(hi);
                strided_axpys(&s, len, cv - lo, vbuf.head(kh, lo), out);
                if let (true, Some((_, tv))) = (cv < hi, &tail) {
                    let values = tv.head(kh, cv - tail_v0);
                    strided_axpys(&s[cv - lo..], len, hi - cv, values, out);
                }
            };
            if par {
                att.par_chunks_mut(group * hd)
                    .enumerate()
                    .for_each(|(i, o)| body(i, o));
            } else {
                att.chunks_mut(group * hd)
                    .enumerate()
                    .for_each(|(i, o)| body(i, o));
            }

            sc.q8_ready = false;
            sc.project(&m.mat(&lw, &l.wo), &att, &mut o, par)?;
            if let Some(s) = lora {
                s.apply(li, TargetModule::O, &att, &mut o, n);
            }
            if let Some(w) = &l.post_attn_norm {
                rmsnorm_rows(&mut o, w, c.rms_eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            for t in 0..n {
                rmsnorm(
                    &x[t * dim..(t + 1) * dim],
                    &l.ffn_norm,
                    c.rms_eps,
                    &mut xn[t * dim..(t + 1) * dim],
                );
            }
            match &l.ffn {
                Ffn::Dense { gate_up, down } => {
                    sc.q8_ready = false;
                    match gate_up {
                        GateUp::Separate { gate: wg, up: wu } => {
                            sc.project(&m.mat(&lw, wg), &xn, &mut gate, par)?;
                            sc.project(&m.mat(&lw, wu), &xn, &mut up, par)?;
                        }
                        GateUp::Fused(w) => {
                            fused.resize(n * w.rows, 0.0);
                            sc.project(&m.mat(&lw, w), &xn, &mut fused, par)?;
                            let f = c.ffn_dim;
                            for (t, row) in fused.chunks_exact(2 * f).enumerate() {
                                gate[t * f..(t + 1) * f].copy_from_slice(&row[..f]);
                                up[t * f..(t + 1) * f].copy_from_slice(&row[f..]);
                            }
                        }
                    }
                    if let Some(s) = lora {
                        s.apply(li, TargetModule::Gate, &xn, &mut gate, n);
                        s.apply(li, TargetModule::Up, &xn, &mut up, n);
                    }
                    activate_with(spec.activation, &mut gate, &up, par);
                    sc.q8_ready = false;
                    sc.project(&m.mat(&lw, down), &gate, &mut o, par)?;
                    if let Some(s) = lora {
                        s.apply(li, TargetModule::Down, &gate, &mut o, n);
                    }
                }
                Ffn::Moe(moe) => m.moe_ffn(li, moe, &lw, &xn, &mut o, &mut sc, par)?,
            }
            drop(lw);
            if let Some(w) = &l.post_ffn_norm {
                rmsnorm_rows(&mut o, w, c.rms_eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            if n == 1 {
                m.read_ahead_experts(li + 1, &x)?;
            }
        }
        self.cache.len += n;
        if let Some(cap) = capture {
            cap.n_tokens += n;
        }

        let rows: Vec<usize> = match which {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
        };
        let mut h = vec![0f32; rows.len() * dim];
        for (i, &t) in rows.iter().enumerate() {
            rmsnorm(
                &x[t * dim..(t + 1) * dim],
                &m.output_norm,
                c.rms_eps,
                &mut h[i * dim..(i + 1) * dim],
            );
        }
        let mut logits = vec![0f32; rows.len() * c.vocab_size];
        sc.q8_ready = false;
        m.head_logits(&mut sc, &h, &mut logits, par)?;
        if let Some(cap) = c.final_logit_softcap {
            logits.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        Ok(logits)
    }
}

/// One decoded token's vector work in a dense layer: everything but its matmuls and its
/// attention, done by the functions the forward pass calls — two RMSNorms, the 8-bit
/// quantization of each matmul input (the QKV input once, then the attention output,
/// the FFN input and the activated FFN), RoPE on the query and key heads, the gated
/// activation and two residual adds. The device probe times it: on a small model it is
/// a tenth of a token, and neither a matvec nor an attention rate covers it.
pub struct LayerVectorWork {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    norm: Vec<f32>,
    rope: RopeTable,
    head_dim: usize,
    acts: Q8Acts,
}

impl LayerVectorWork {
    /// Buffers of a layer `dim` wide with `heads` query and `kv_heads` key heads of
    /// `head_dim` and an FFN `ffn` wide (every width a multiple of 32, as 8-bit
    /// quantization needs); the values are arbitrary but finite.
    pub fn new(dim: usize, ffn: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        let fill = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        LayerVectorWork {
            x: fill(dim, 1),
            xn: vec![0.0; dim],
            q: fill(heads * head_dim, 2),
            k: fill(kv_heads * head_dim, 3),
            o: fill(dim, 4),
            gate: fill(ffn, 5),
            up: fill(ffn, 6),
            norm: fill(dim, 7),
            rope: RopeTable::new(10000.0, head_dim, RopeStyle::SplitHalf),
            head_dim,
            acts: Q8Acts::default(),
        }
    }

    /// The layer's vector work for the token at `pos`, on this thread (a decode step
    /// does it serially: its vectors are too short to split).
    pub fn run(&mut self, pos: usize) {
        let dim = self.x.len();
        rmsnorm(&self.x, &self.norm, 1e-6, &mut self.xn);
        self.acts.quantize_into(&self.xn, dim);
        self.rope
            .rotate_heads([&mut self.q, &mut self.k], self.head_dim, pos, false);
        self.acts.quantize_into(&self.q, self.q.len());
        for (a, b) in self.x.iter_mut().zip(&self.o) {
            *a += b;
        }
        rmsnorm(&self.x, &self.norm, 1e-6, &mut self.xn);
        self.acts.quantize_into(&self.xn, dim);
        // Restore the gate each time so repeated runs see the same values, not a
        // product that shrinks into subnormals (a copy of one FFN-wide row, as the
        // forward pass makes when gate and up are fused).
        let ffn = self.gate.len();
        self.gate.copy_from_slice(&self.up);
        activate(Activation::Silu, &mut self.gate, &self.up);
        self.acts.quantize_into(&self.gate, ffn);
        for (a, b) in self.x.iter_mut().zip(&self.o) {
            *a += b;
        }
    }
}

/// Row ranges of the output head's chunks when it streams: as many rows as fit in
/// `room` bytes (at least one), so the pool's buffers serve layers and head alike.
fn head_chunks(t: &TensorRef, room: usize, granule: usize) -> Vec<(usize, usize)> {
    let rb = (t.len / t.rows).max(1);
    let g = granule.max(1);
    let per = (room / rb / g).max(1) * g;
    (0..t.rows)
        .step_by(per)
        .map(|r0| (r0, (r0 + per).min(t.rows)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_vector_work_stays_finite_and_normal_when_repeated() {
        // The probe times thousands of runs: values must not drift into subnormals
        // (slow) or overflow.
        let mut w = LayerVectorWork::new(256, 512, 4, 2, 64);
        for pos in 0..5000 {
            w.run(pos);
        }
        for v in [&w.x, &w.xn, &w.gate, &w.q, &w.k] {
            assert!(v
                .iter()
                .all(|x| x.is_finite() && (*x == 0.0 || x.is_normal())));
        }
        assert!(
            w.xn.iter().any(|x| x.abs() > 0.1),
            "normalized rows stay O(1)"
        );
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let t = RopeTable::new(10000.0, 4, RopeStyle::Interleaved);
        let s = RopeTable::new(10000.0, 4, RopeStyle::SplitHalf);
        // inv_freq = [1, 0.01]
        let mut a = [1.0, 0.0, 1.0, 0.0];
        t.rotate_heads([&mut a, &mut []], 4, 1, false);
        assert!((a[0] - 1f32.cos()).abs() < 1e-6 && (a[1] - 1f32.sin()).abs() < 1e-6);
        assert!((a[2] - 0.01f32.cos()).abs() < 1e-6 && (a[3] - 0.01f32.sin()).abs() < 1e-6);
        let mut b = [1.0, 1.0, 0.0, 0.0];
        s.rotate_heads([&mut b, &mut []], 4, 1, false);
        assert!((b[0] - 1f32.cos()).abs() < 1e-6 && (b[2] - 1f32.sin()).abs() < 1e-6);
        assert!((b[1] - 0.01f32.cos()).abs() < 1e-6 && (b[3] - 0.01f32.sin()).abs() < 1e-6);
        // Position 0 is the identity; norms are preserved.
        let mut z = [0.3, -0.7, 0.2, 0.9];
        let n0: f32 = z.iter().map(|v| v * v).sum();
        t.rotate_heads([&mut z, &mut []], 4, 0, false);
        assert_eq!(z, [0.3, -0.7, 0.2, 0.9]);
        t.rotate_heads([&mut z, &mut []], 4, 17, false);
        let n1: f32 = z.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
    }

    #[test]
    fn every_head_of_both_rows_rotates_as_one_head_would() {
        let t = RopeTable::new(10000.0, 4, RopeStyle::SplitHalf);
        let orig_q: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let orig_k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.3).cos()).collect();
        let (mut q, mut k) = (orig_q.clone(), orig_k.clone());
        t.rotate_heads([&mut q, &mut k], 4, 9, false);
        for (rotated, orig) in [(&q, &orig_q), (&k, &orig_k)] {
            for (h, o) in rotated.chunks(4).zip(orig.chunks(4)) {
                let mut one = o.to_vec();
                t.rotate_heads([&mut one, &mut []], 4, 9, false);
                assert_eq!(h, &one[..]);
            }
        }
        t.rotate_heads([&mut q, &mut k], 4, 9, true);
        for (a, b) in q.iter().chain(&k).zip(orig_q.iter().chain(&orig_k)) {
            assert!((a - b).abs() < 1e-6, "inverse: {a} vs {b}");
        }
    }

    #[test]
    fn rmsnorm_unit_rms() {
        let x = [3.0, -4.0];
        let mut out = [0.0; 2];
        rmsnorm(&x, &[1.0, 2.0], 0.0, &mut out);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] + 8.0 / r).abs() < 1e-6);
    }
}
