//! Loading a llama/qwen2-family GGUF (weights stay in the memory map) and running it.

use std::borrow::Borrow;
use std::path::Path;

use dhurandhar_checkpoint::gguf::GgufFile;
use dhurandhar_checkpoint::{GgufHyperParams, GgufTokenizer};
use memmap2::Mmap;
use rayon::prelude::*;

use crate::cache::{Capture, KvCache};
use crate::kernels::{matmul, strided_axpys, strided_dots, Acts, QMatrix};
use crate::quant::{computes_with, row_bytes, GgmlType, Q8Acts};
use crate::tokenizer::Tokenizer;
use crate::EngineError;

/// How RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama-arch GGUFs (Q/K rows are permuted at conversion).
    Interleaved,
    /// Split halves `(i, i + d/2)`: qwen2 ("NEOX").
    SplitHalf,
}

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
    pub rope_base: f32,
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    pub tied_embeddings: bool,
}

/// Where a tensor lives in the map.
#[derive(Debug, Clone, Copy)]
struct TensorRef {
    qtype: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    len: usize,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: TensorRef,
    wk: TensorRef,
    wv: TensorRef,
    wo: TensorRef,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: TensorRef,
    up: TensorRef,
    down: TensorRef,
}

/// A loaded model: configuration, tokenizer, and tensor locations inside the map.
pub struct Model {
    map: Mmap,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Sum of the stored bytes of every tensor in the file.
    pub tensor_bytes: u64,
    embd: TensorRef,
    output: TensorRef,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
}

fn meta_err(path: &str, message: impl Into<String>) -> EngineError {
    EngineError::Model {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Model {
    /// Memory-map and load `path`. Anything but a regular file (a FIFO, a device) is
    /// refused before it is opened for reading, so it cannot block or be mapped.
    pub fn open(path: &Path) -> Result<Model, EngineError> {
        let origin = path.display().to_string();
        let file = dhurandhar_io::open_regular(path)?;
        // SAFETY: the map is read-only; a concurrent truncation of the file by another
        // process could fault, as with any mmap-based reader (llama.cpp included).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| EngineError::Io {
            path: origin.clone(),
            source,
        })?;
        let gguf = GgufFile::parse(&map, &origin)?;
        gguf.check_ranges(map.len() as u64, &origin)?;
        Self::from_gguf(map, &gguf, &origin)
    }

    fn from_gguf(map: Mmap, g: &GgufFile, origin: &str) -> Result<Model, EngineError> {
        let hp = GgufHyperParams::read(g, origin)?;
        let arch = hp.architecture.clone();
        let rope_style = match arch.as_str() {
            "llama" | "mistral" => RopeStyle::Interleaved,
            "qwen2" => RopeStyle::SplitHalf,
            other => {
                return Err(meta_err(
                    origin,
                    format!(
                    "architecture `{other}` is not supported by the engine (llama, mistral, qwen2)"
                ),
                ))
            }
        };
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
        let ffn_dim = required("feed-forward length", &hp.feed_forward_length)?;
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
        let rope_dims = match hp.rope_dimension_count {
            Some(d) => size("RoPE dimension count", d)?.min(head_dim),
            None => head_dim,
        };
        let rope_base = hp.rope_freq_base.unwrap_or(10000.0);
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
            let len = row_bytes(qtype, cols)? * rows;
            if t.n_bytes != len as u64 {
                return Err(meta_err(
                    origin,
                    format!("tensor {name} holds {} bytes, expected {len}", t.n_bytes),
                ));
            }
            let offset =
                usize::try_from(t.offset).map_err(|_| meta_err(origin, "offset overflow"))?;
            if offset.checked_add(len).is_none_or(|e| e > map.len()) {
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
            })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, EngineError> {
            let r = tensor(name, 1, n)?;
            let mut out = vec![0f32; n];
            crate::quant::dequantize_row(r.qtype, &map[r.offset..r.offset + r.len], &mut out)?;
            Ok(out)
        };
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
        let embd = tensor("token_embd.weight", vocab_size, dim)?;
        let tied = g.tensor("output.weight").is_none();
        let output = if tied {
            embd
        } else {
            tensor("output.weight", vocab_size, dim)?
        };
        let output_norm = vector("output_norm.weight", dim)?;
        let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            let opt_vec = |s: &str, n: usize| -> Result<Option<Vec<f32>>, EngineError> {
                if g.tensor(&p(s)).is_some() {
                    vector(&p(s), n).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: vector(&p("attn_norm.weight"), dim)?,
                wq: tensor(&p("attn_q.weight"), qd, dim)?,
                wk: tensor(&p("attn_k.weight"), kvd, dim)?,
                wv: tensor(&p("attn_v.weight"), kvd, dim)?,
                wo: tensor(&p("attn_output.weight"), dim, qd)?,
                bq: opt_vec("attn_q.bias", qd)?,
                bk: opt_vec("attn_k.bias", kvd)?,
                bv: opt_vec("attn_v.bias", kvd)?,
                ffn_norm: vector(&p("ffn_norm.weight"), dim)?,
                gate: tensor(&p("ffn_gate.weight"), ffn_dim, dim)?,
                up: tensor(&p("ffn_up.weight"), ffn_dim, dim)?,
                down: tensor(&p("ffn_down.weight"), dim, ffn_dim)?,
            });
        }
        let config = ModelConfig {
            name: hp.name.clone().unwrap_or_default(),
            architecture: arch,
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            context_length,
            rope_base,
            rope_dims,
            rope_style,
            rms_eps,
            tied_embeddings: tied,
        };
        Ok(Model {
            tensor_bytes: g.total_tensor_bytes(),
            map,
            config,
            tokenizer,
            embd,
            output,
            output_norm,
            layers,
        })
    }

    fn mat(&self, t: &TensorRef) -> QMatrix<'_> {
        QMatrix {
            qtype: t.qtype,
            rows: t.rows,
            cols: t.cols,
            data: &self.map[t.offset..t.offset + t.len],
        }
    }

    /// Bytes of f32 K+V cache per token.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.config.n_layers * self.config.n_kv_heads * self.config.head_dim * 2 * 4
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

struct RopeTable {
    inv_freq: Vec<f32>,
}

impl RopeTable {
    fn new(base: f32, dims: usize) -> Self {
        let inv_freq = (0..dims / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / dims as f64) as f32)
            .collect();
        RopeTable { inv_freq }
    }

    /// Rotate one head vector `x` at position `pos`.
    fn apply(&self, x: &mut [f32], pos: usize, style: RopeStyle) {
        let half = self.inv_freq.len();
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let a = pos as f64 * f as f64;
            let (s, c) = (a.sin() as f32, a.cos() as f32);
            let (i0, i1) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::SplitHalf => (i, i + half),
            };
            let (x0, x1) = (x[i0], x[i1]);
            x[i0] = x0 * c - x1 * s;
            x[i1] = x0 * s + x1 * c;
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

/// A sequence being processed: its KV cache and thread pool.
///
/// `M` is how the session holds its model: `&Model` (borrowed, from [`Model::session`])
/// or `Arc<Model>` (owned, so the session can move to another thread and outlive the
/// caller's borrow).
pub struct Session<M: Borrow<Model>> {
    model: M,
    pub cache: KvCache,
    pool: Option<rayon::ThreadPool>,
    rope: RopeTable,
    /// See [`Session::set_f32_activations`].
    f32_activations: bool,
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
                self.q8.quantize_into(x, w.cols);
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
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("thread pool: {e}")))?,
            )
        } else {
            None
        };
        let cache =
            cache.unwrap_or_else(|| KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, None));
        if cache.layers.len() != c.n_layers
            || cache.n_kv_heads != c.n_kv_heads
            || cache.head_dim != c.head_dim
        {
            return Err(EngineError::Shape(
                "KV cache geometry does not match the model".into(),
            ));
        }
        let rope = RopeTable::new(c.rope_base, c.rope_dims);
        Ok(Session {
            model,
            cache,
            pool,
            rope,
            f32_activations: false,
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
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let p0 = self.cache.len;
        let (dim, hd, nh, nkv) = (c.dim, c.head_dim, c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let embd = m.mat(&m.embd);
        let mut x = vec![0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            embd.dequantize_row(tok as usize, &mut x[t * dim..(t + 1) * dim])
                .map_err(|_| {
                    EngineError::Invalid(format!("token id {tok} is outside the vocabulary"))
                })?;
        }
        let mut xn = vec![0f32; n * dim];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut o = vec![0f32; n * dim];
        let mut gate = vec![0f32; n * c.ffn_dim];
        let mut up = vec![0f32; n * c.ffn_dim];
        let mut sc = Scratch {
            q8: Q8Acts::default(),
            q8_ready: false,
            f32_acts: self.f32_activations,
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let group = nh / nkv;

        for (li, l) in m.layers.iter().enumerate() {
            for t in 0..n {
                rmsnorm(
                    &x[t * dim..(t + 1) * dim],
                    &l.attn_norm,
                    c.rms_eps,
                    &mut xn[t * dim..(t + 1) * dim],
                );
            }
            sc.q8_ready = false;
            sc.project(&m.mat(&l.wq), &xn, &mut q, par)?;
            sc.project(&m.mat(&l.wk), &xn, &mut k, par)?;
            sc.project(&m.mat(&l.wv), &xn, &mut v, par)?;
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
            if let Some(cap) = capture.as_deref_mut() {
                cap.layers[li].k_pre_rope.extend_from_slice(&k);
            }
            for t in 0..n {
                for h in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                    self.rope.apply(h, p0 + t, c.rope_style);
                }
                for h in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                    self.rope.apply(h, p0 + t, c.rope_style);
                }
            }
            if let Some(cap) = capture.as_deref_mut() {
                let cl = &mut cap.layers[li];
                cl.q.extend_from_slice(&q);
                cl.k.extend_from_slice(&k);
                cl.v.extend_from_slice(&v);
            }

            // Append to the cache; with a codec, keep the exact tail for the queries
            // whose own token group is still incomplete.
            let (gk, gv) = self.cache.groups(li);
            let lk = &mut self.cache.layers[li];
            let (tail_k0, tail_v0) = (lk.enc_k, lk.enc_v);
            lk.k.extend_from_slice(&k);
            lk.v.extend_from_slice(&v);
            let has_codec = self.cache.codec.is_some();
            let (tail_k, tail_v) = if has_codec {
                (
                    lk.k[tail_k0 * kvd..].to_vec(),
                    lk.v[tail_v0 * kvd..].to_vec(),
                )
            } else {
                (Vec::new(), Vec::new())
            };
            self.cache.encode_complete(li, p0 + n)?;
            let lk = &self.cache.layers[li];

            // Attention: one work item per (token, head).
            let body = |idx: usize, out: &mut [f32]| {
                let (t, h) = (idx / nh, idx % nh);
                let pos = p0 + t;
                let kh = h / group;
                let qv = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                // Keys j < bk come from the cache (decoded if encoded), the rest exact.
                let (bk, bv) = if has_codec {
                    ((pos + 1) / gk * gk, (pos + 1) / gv * gv)
                } else {
                    (pos + 1, pos + 1)
                };
                // Scores over [0, pos]: cached part [0, min(bk, pos+1)), exact tail after.
                let mut s = vec![0f32; pos + 1];
                let ck = bk.min(pos + 1);
                strided_dots(qv, &lk.k, kh * hd, kvd, scale, &mut s[..ck]);
                if ck <= pos {
                    let off = (ck - tail_k0) * kvd + kh * hd;
                    strided_dots(qv, &tail_k, off, kvd, scale, &mut s[ck..]);
                }
                let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for e in s.iter_mut() {
                    *e = (*e - mx).exp();
                    sum += *e;
                }
                let inv = 1.0 / sum;
                for e in s.iter_mut() {
                    *e *= inv;
                }
                out.fill(0.0);
                let cv = bv.min(pos + 1);
                strided_axpys(&s[..cv], &lk.v, kh * hd, kvd, out);
                if cv <= pos {
                    let off = (cv - tail_v0) * kvd + kh * hd;
                    strided_axpys(&s[cv..], &tail_v, off, kvd, out);
                }
            };
            if par {
                att.par_chunks_mut(hd)
                    .enumerate()
                    .for_each(|(i, o)| body(i, o));
            } else {
                att.chunks_mut(hd).enumerate().for_each(|(i, o)| body(i, o));
            }

            sc.q8_ready = false;
            sc.project(&m.mat(&l.wo), &att, &mut o, par)?;
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
            sc.q8_ready = false;
            sc.project(&m.mat(&l.gate), &xn, &mut gate, par)?;
            sc.project(&m.mat(&l.up), &xn, &mut up, par)?;
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            sc.q8_ready = false;
            sc.project(&m.mat(&l.down), &gate, &mut o, par)?;
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
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
        sc.project(&m.mat(&m.output), &h, &mut logits, par)?;
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let t = RopeTable::new(10000.0, 4);
        // inv_freq = [1, 0.01]
        let mut a = [1.0, 0.0, 1.0, 0.0];
        t.apply(&mut a, 1, RopeStyle::Interleaved);
        assert!((a[0] - 1f32.cos()).abs() < 1e-6 && (a[1] - 1f32.sin()).abs() < 1e-6);
        assert!((a[2] - 0.01f32.cos()).abs() < 1e-6 && (a[3] - 0.01f32.sin()).abs() < 1e-6);
        let mut b = [1.0, 1.0, 0.0, 0.0];
        t.apply(&mut b, 1, RopeStyle::SplitHalf);
        assert!((b[0] - 1f32.cos()).abs() < 1e-6 && (b[2] - 1f32.sin()).abs() < 1e-6);
        assert!((b[1] - 0.01f32.cos()).abs() < 1e-6 && (b[3] - 0.01f32.sin()).abs() < 1e-6);
        // Position 0 is the identity; norms are preserved.
        let mut z = [0.3, -0.7, 0.2, 0.9];
        let n0: f32 = z.iter().map(|v| v * v).sum();
        t.apply(&mut z, 0, RopeStyle::Interleaved);
        assert_eq!(z, [0.3, -0.7, 0.2, 0.9]);
        t.apply(&mut z, 17, RopeStyle::Interleaved);
        let n1: f32 = z.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
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
