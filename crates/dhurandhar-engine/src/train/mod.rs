//! LoRA training on the CPU: the base stays frozen in its stored (quantized) format —
//! QLoRA's idea — and only the adapter's `A`/`B` matrices learn.
//!
//! The forward pass is the engine's, in f32 activations over the whole sequence; the
//! backward carries the loss's gradient through every layer (through the frozen
//! projections as `dy·W`, dequantized a block of rows at a time, never the whole
//! model) and keeps gradients only for the LoRA pairs. With gradient checkpointing each
//! layer keeps just its input during the forward pass and recomputes the rest in the
//! backward. Optimisation is AdamW on the summed gradients of an optimizer step,
//! divided by the step's target tokens, clipped to a global norm.
//!
//! Runs for the dense architectures of [`crate::arch`] (Q/K/V and gate/up separate or
//! fused, biases, QK-norm, post-norms, sliding windows, soft-capped logits); a
//! mixture-of-experts model or a streamed weight store is refused.

pub(crate) mod ops;

use std::collections::BTreeMap;
use std::sync::Arc;

use dhurandhar_lora::{gguf_tensor_name, Adapter, LoraPair, TargetModule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::QMatrix;
use crate::lora::projection_shape;
use crate::model::{Ffn, GateUp, Layer, Qkv, RopeTable};
use crate::store::{LayerView, WeightStore};
use crate::{EngineError, Model};
use ops::PairRef;

/// What the trainer needs of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub r: usize,
    pub alpha: f32,
    /// Dropout on each adapter's input (training passes only).
    pub dropout: f32,
    pub targets: Vec<TargetModule>,
    pub weight_decay: f32,
    /// Global gradient-norm clip (0: none). Hugging Face's default is 1.
    pub max_grad_norm: f32,
    /// Keep only layer inputs in the forward pass; recompute each layer in the backward.
    pub checkpointing: bool,
    /// Seeds the adapters' initial `A` (Kaiming-uniform, as PEFT); `B` starts at zero.
    pub seed: u64,
    pub threads: usize,
}

/// AdamW's constants (PyTorch's defaults).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// One trainable pair with its gradient and Adam moments.
#[derive(Debug, Clone)]
struct Param {
    layer: usize,
    module: TargetModule,
    fin: usize,
    fout: usize,
    /// `r × in` (PEFT's `lora_A`).
    a: Vec<f32>,
    /// `r × out` (PEFT's `lora_B`, transposed).
    bt: Vec<f32>,
    ga: Vec<f32>,
    gbt: Vec<f32>,
    ma: Vec<f32>,
    va: Vec<f32>,
    mbt: Vec<f32>,
    vbt: Vec<f32>,
}

/// Names of a pair's tensors in [`Trainer::state`], in [`Param::tensors`] order.
const STATE_SUFFIXES: [&str; 6] = ["a", "bt", "m_a", "v_a", "m_bt", "v_bt"];

impl Param {
    fn tensors(&self) -> [&Vec<f32>; 6] {
        [&self.a, &self.bt, &self.ma, &self.va, &self.mbt, &self.vbt]
    }

    fn tensors_mut(&mut self) -> [&mut Vec<f32>; 6] {
        [
            &mut self.a,
            &mut self.bt,
            &mut self.ma,
            &mut self.va,
            &mut self.mbt,
            &mut self.vbt,
        ]
    }
}

/// Loss over a set of tokens: the sum of their cross-entropies and how many there were.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
    pub sum: f64,
    pub tokens: usize,
}

impl LossSum {
    /// Mean loss per token (NaN for none).
    pub fn mean(&self) -> f64 {
        self.sum / self.tokens as f64
    }

    pub fn add(&mut self, o: LossSum) {
        self.sum += o.sum;
        self.tokens += o.tokens;
    }
}

/// An adapter's `A·x` and the key its dropout mask was drawn from (its input is the
/// projection's, kept once in [`Acts1`]; the dropped-out copy is drawn again).
type Kept = (Vec<f32>, Option<u64>);

/// What one layer's forward pass keeps for its backward.
struct Acts1 {
    x: Vec<f32>,
    /// The projections' inputs: attention norm, attention context, FFN norm, gated
    /// activation.
    xn1: Vec<f32>,
    att: Vec<f32>,
    xn2: Vec<f32>,
    act: Vec<f32>,
    /// `1/rms` of each row at the three norms (attention input, FFN input) and, where
    /// the model has them, the post-norms and QK-norms.
    r1: Vec<f32>,
    /// Q/K after projection and bias, before QK-norm (kept only for QK-norm models).
    q_raw: Vec<f32>,
    k_raw: Vec<f32>,
    rq: Vec<f32>,
    rk: Vec<f32>,
    /// After QK-norm and RoPE: what attention saw.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The attention and FFN outputs before their post-norms (kept only where the
    /// model has them).
    o_raw: Vec<f32>,
    ro: Vec<f32>,
    x2: Vec<f32>,
    r2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    d_raw: Vec<f32>,
    rd: Vec<f32>,
    /// Per target module: the adapter's (dropped-out) input and `A·x`.
    lora: [Option<Kept>; 7],
}

/// A LoRA trainer over one loaded model.
pub struct Trainer<'m> {
    model: &'m Model,
    opts: TrainOptions,
    scale: f32,
    params: Vec<Param>,
    /// `index[layer][module]`: position in `params`.
    index: Vec<[Option<usize>; 7]>,
    ropes: Vec<RopeTable>,
    pool: Arc<rayon::ThreadPool>,
    step: u64,
}

/// Why `model` cannot be trained here, if it cannot.
fn check_model(model: &Model) -> Result<(), EngineError> {
    if matches!(model.store, WeightStore::Stream(_)) {
        return Err(EngineError::Invalid(
            "training reads the base mapped or resident, not streamed: drop the RAM budget".into(),
        ));
    }
    if model.layers.iter().any(|l| matches!(l.ffn, Ffn::Moe(_))) {
        return Err(EngineError::Invalid(format!(
            "`{}` is a mixture-of-experts model; LoRA training covers dense models only",
            model.config.architecture
        )));
    }
    Ok(())
}

impl<'m> Trainer<'m> {
    /// Fresh adapters on `opts.targets` of every layer: `A` Kaiming-uniform
    /// (bound `1/√in`, PEFT's default), `B` zero, so training starts at the base model.
    pub fn new(model: &'m Model, opts: TrainOptions) -> Result<Self, EngineError> {
        check_model(model)?;
        if opts.r == 0 || opts.targets.is_empty() {
            return Err(EngineError::Invalid(
                "LoRA training needs a rank above 0 and at least one target module".into(),
            ));
        }
        if !(0.0..1.0).contains(&opts.dropout) {
            return Err(EngineError::Invalid(format!(
                "dropout must be in [0, 1), got {}",
                opts.dropout
            )));
        }
        // One heap for all threads: the passes free on the calling thread buffers that
        // rayon's workers allocated, and on the SmolLM2 fixture (sequence 256, two threads)
        // the peak RSS varied from 242 to 270 MiB between identical runs with an arena per
        // thread, and was 241 MiB every time with one, at the same speed (62–67 against
        // 62–63 tokens/s). A fixed `M_MMAP_THRESHOLD` of 128 KiB gave 233 MiB but cost 30%
        // of the speed in page faults.
        dhurandhar_profile::sys::single_malloc_arena();
        let c = &model.config;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut params = Vec::new();
        let mut index = vec![[None; 7]; c.n_layers];
        for (li, slots) in index.iter_mut().enumerate() {
            for &m in &opts.targets {
                if slots[m.index()].is_some() {
                    continue;
                }
                let (fin, fout) = projection_shape(c, m);
                let bound = 1.0 / (fin as f32).sqrt();
                let a: Vec<f32> = (0..opts.r * fin)
                    .map(|_| rng.gen_range(-bound..bound))
                    .collect();
                let zeros = |n: usize| vec![0f32; n];
                slots[m.index()] = Some(params.len());
                params.push(Param {
                    layer: li,
                    module: m,
                    fin,
                    fout,
                    a,
                    bt: zeros(opts.r * fout),
                    ga: zeros(opts.r * fin),
                    gbt: zeros(opts.r * fout),
                    ma: zeros(opts.r * fin),
                    va: zeros(opts.r * fin),
                    mbt: zeros(opts.r * fout),
                    vbt: zeros(opts.r * fout),
                });
            }
        }
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(opts.threads.max(1))
                .build()
                .map_err(|e| EngineError::Invalid(format!("thread pool: {e}")))?,
        );
        let ropes = model
            .ropes
            .iter()
            .map(|p| RopeTable::from_params(p, c.rope_dims, c.rope_style))
            .collect();
        Ok(Trainer {
            model,
            scale: opts.alpha / opts.r as f32,
            opts,
            params,
            index,
            ropes,
            pool,
            step: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Trainable parameters (every `A` and `B`).
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.a.len() + p.bt.len()).sum()
    }

    /// Forward and backward over one sequence, adding the gradients of
    /// `Σ_t weight[t] · CE(logits(tokens[..=t]), labels[t])` to the accumulated ones.
    /// `dropout_key` draws this sequence's dropout masks (use a distinct key per
    /// sequence; the same key gives the same masks).
    pub fn accumulate(
        &mut self,
        tokens: &[u32],
        labels: &[u32],
        weights: &[f32],
        dropout_key: u64,
    ) -> Result<LossSum, EngineError> {
        let pool = Arc::clone(&self.pool);
        pool.install(|| self.pass(tokens, labels, weights, Some(dropout_key)))
    }

    /// The loss over one sequence without dropout or gradients (validation).
    pub fn loss(
        &mut self,
        tokens: &[u32],
        labels: &[u32],
        weights: &[f32],
    ) -> Result<LossSum, EngineError> {
        let pool = Arc::clone(&self.pool);
        pool.install(|| self.pass(tokens, labels, weights, None))
    }

    /// One AdamW step at learning rate `lr` on the accumulated gradients, taken as the
    /// mean over `tokens` target tokens; clears them. Returns the gradient norm before
    /// clipping.
    pub fn optimizer_step(&mut self, lr: f32, tokens: usize) -> f32 {
        let inv = 1.0 / tokens.max(1) as f32;
        let norm = self
            .params
            .iter()
            .flat_map(|p| p.ga.iter().chain(&p.gbt))
            .map(|g| (g * inv) as f64 * (g * inv) as f64)
            .sum::<f64>()
            .sqrt() as f32;
        let clip = if self.opts.max_grad_norm > 0.0 && norm > self.opts.max_grad_norm {
            self.opts.max_grad_norm / norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        let wd = self.opts.weight_decay;
        for p in &mut self.params {
            for (w, g, m, v) in [
                (&mut p.a, &mut p.ga, &mut p.ma, &mut p.va),
                (&mut p.bt, &mut p.gbt, &mut p.mbt, &mut p.vbt),
            ] {
                for i in 0..w.len() {
                    let gi = g[i] * inv * clip;
                    m[i] = BETA1 * m[i] + (1.0 - BETA1) * gi;
                    v[i] = BETA2 * v[i] + (1.0 - BETA2) * gi * gi;
                    let upd = (m[i] / bc1) / ((v[i] / bc2).sqrt() + ADAM_EPS);
                    w[i] -= lr * (upd + wd * w[i]);
                }
                g.fill(0.0);
            }
        }
        norm
    }

    /// The adapter as trained so far (GGUF tensor names and row order).
    pub fn adapter(&self, base_model: &str) -> Adapter {
        let r = self.opts.r;
        let pairs = self
            .params
            .iter()
            .map(|p| {
                let mut b = vec![0f32; p.fout * r];
                for (j, row) in p.bt.chunks_exact(p.fout).enumerate() {
                    for (o, &v) in row.iter().enumerate() {
                        b[o * r + j] = v;
                    }
                }
                let pair = LoraPair {
                    r,
                    in_features: p.fin,
                    out_features: p.fout,
                    a: p.a.clone(),
                    b,
                };
                (gguf_tensor_name(p.layer, p.module), pair)
            })
            .collect();
        let mut target_modules = self.opts.targets.clone();
        target_modules.sort_by_key(|m| m.index());
        target_modules.dedup();
        Adapter {
            r,
            alpha: self.opts.alpha as f64,
            target_modules,
            base_model: base_model.to_string(),
            pairs,
        }
    }

    /// Everything a resumed run needs besides the step: each pair's `A`, `Bᵀ` and Adam
    /// moments, by name (`<gguf tensor>.{a,bt,m_a,v_a,m_bt,v_bt}`).
    pub fn state(&self) -> BTreeMap<String, &[f32]> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            let base = gguf_tensor_name(p.layer, p.module);
            for (suffix, v) in STATE_SUFFIXES.iter().zip(p.tensors()) {
                out.insert(format!("{base}.{suffix}"), v.as_slice());
            }
        }
        out
    }

    /// Restore [`Trainer::state`] and the step count. Every tensor must be present with
    /// its shape, and nothing else: otherwise the trainer is left as it was.
    pub fn restore(
        &mut self,
        step: u64,
        mut state: BTreeMap<String, Vec<f32>>,
    ) -> Result<(), EngineError> {
        let mut taken = Vec::with_capacity(self.params.len() * STATE_SUFFIXES.len());
        for p in &self.params {
            let base = gguf_tensor_name(p.layer, p.module);
            for (suffix, v) in STATE_SUFFIXES.iter().zip(p.tensors()) {
                let key = format!("{base}.{suffix}");
                let got = state
                    .remove(&key)
                    .ok_or_else(|| EngineError::Shape(format!("training state lacks `{key}`")))?;
                if got.len() != v.len() {
                    return Err(EngineError::Shape(format!(
                        "training state `{key}` has {} values, this job needs {}",
                        got.len(),
                        v.len()
                    )));
                }
                taken.push(got);
            }
        }
        if let Some(extra) = state.keys().next() {
            return Err(EngineError::Shape(format!(
                "training state has `{extra}`, which this job does not train"
            )));
        }
        let mut taken = taken.into_iter();
        for p in &mut self.params {
            for v in p.tensors_mut() {
                *v = taken.next().expect("one per tensor");
            }
        }
        self.step = step;
        Ok(())
    }

    fn pair(&self, li: usize, m: TargetModule) -> Option<(usize, PairRef<'_>)> {
        let i = self.index[li][m.index()]?;
        let p = &self.params[i];
        Some((
            i,
            PairRef {
                r: self.opts.r,
                fin: p.fin,
                fout: p.fout,
                a: &p.a,
                bt: &p.bt,
                scale: self.scale,
            },
        ))
    }

    /// `out = W·x` (+ the adapter of `m`, if trained) for `n` rows; the adapter's input
    /// and `A·x` go to `keep`.
    #[allow(clippy::too_many_arguments)]
    fn project(
        &self,
        lw: &LayerView<'_>,
        w: &crate::model::TensorRef,
        li: usize,
        m: Option<TargetModule>,
        x: &[f32],
        out: &mut [f32],
        key: Option<u64>,
        keep: &mut [Option<Kept>; 7],
    ) -> Result<(), EngineError> {
        let n = x.len() / w.cols;
        ops::matmul_fwd(&self.model.mat(lw, w), x, out, n, self.opts.threads)?;
        if let Some(m) = m {
            self.adapt(li, m, x, out, key, keep);
        }
        Ok(())
    }

    /// Add module `m`'s adapter update to `out`.
    fn adapt(
        &self,
        li: usize,
        m: TargetModule,
        x: &[f32],
        out: &mut [f32],
        key: Option<u64>,
        keep: &mut [Option<Kept>; 7],
    ) {
        let Some((i, p)) = self.pair(li, m) else {
            return;
        };
        let n = x.len() / p.fin;
        let dkey = key
            .filter(|_| self.opts.dropout > 0.0)
            .map(|k| ops::splitmix64(k ^ ((i as u64) << 20)));
        let u = match dkey {
            Some(k) => {
                let mask = ops::dropout_mask(x.len(), self.opts.dropout, k);
                let xd: Vec<f32> = x.iter().zip(&mask).map(|(v, f)| v * f).collect();
                ops::lora_fwd(&p, &xd, out, n)
            }
            None => ops::lora_fwd(&p, x, out, n),
        };
        keep[m.index()] = Some((u, dkey));
    }

    /// Layer `li`'s forward pass over `x` (`n × dim`): its output and the activations
    /// its backward needs (`key`: draw dropout masks from it; none: no dropout).
    fn layer_forward(
        &self,
        li: usize,
        x: Vec<f32>,
        key: Option<u64>,
    ) -> Result<(Vec<f32>, Acts1), EngineError> {
        let m = self.model;
        let c = &m.config;
        let l: &Layer = &m.layers[li];
        let lw = m.layer_view(li)?;
        let dim = c.dim;
        let n = x.len() / dim;
        let (hd, nh, nkv) = (c.head_dim, c.n_heads, c.n_kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let lkey = key.map(|k| ops::splitmix64(k ^ ((li as u64) << 40)));
        let mut lora: [Option<Kept>; 7] = Default::default();

        let mut xn1 = vec![0f32; n * dim];
        let r1 = ops::rmsnorm_fwd(&x, &l.attn_norm, c.rms_eps, &mut xn1);
        let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
        match &l.qkv {
            Qkv::Separate { wq, wk, wv } => {
                use TargetModule::*;
                self.project(&lw, wq, li, Some(Q), &xn1, &mut q, lkey, &mut lora)?;
                self.project(&lw, wk, li, Some(K), &xn1, &mut k, lkey, &mut lora)?;
                self.project(&lw, wv, li, Some(V), &xn1, &mut v, lkey, &mut lora)?;
            }
            Qkv::Fused(w) => {
                let mut fused = vec![0f32; n * w.rows];
                ops::matmul_fwd(&m.mat(&lw, w), &xn1, &mut fused, n, self.opts.threads)?;
                for (t, row) in fused.chunks_exact(w.rows).enumerate() {
                    q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                    k[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                    v[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
                }
                for (mm, buf) in [
                    (TargetModule::Q, &mut q),
                    (TargetModule::K, &mut k),
                    (TargetModule::V, &mut v),
                ] {
                    self.adapt(li, mm, &xn1, buf, lkey, &mut lora);
                }
            }
        }
        for (buf, b) in [(&mut q, &l.bq), (&mut k, &l.bk), (&mut v, &l.bv)] {
            if let Some(b) = b {
                for row in buf.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(y, bb)| *y += bb);
                }
            }
        }
        let (mut q_raw, mut k_raw, mut rq, mut rk) = Default::default();
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            (q_raw, k_raw) = (q.clone(), k.clone());
            rq = ops::rmsnorm_fwd(&q_raw, qn, c.rms_eps, &mut q);
            rk = ops::rmsnorm_fwd(&k_raw, kn, c.rms_eps, &mut k);
        }
        let rope = &self.ropes[l.rope];
        for t in 0..n {
            let rows = [&mut q[t * qd..(t + 1) * qd], &mut k[t * kvd..(t + 1) * kvd]];
            rope.rotate_heads(rows, hd, t, false);
        }
        let att = ops::attention_fwd(&q, &k, &v, n, nh, nkv, hd, c.attention_scale, l.window);
        let mut o_raw = vec![0f32; n * dim];
        self.project(
            &lw,
            &l.wo,
            li,
            Some(TargetModule::O),
            &att,
            &mut o_raw,
            lkey,
            &mut lora,
        )?;
        let (mut o, mut ro) = (o_raw, Vec::new());
        let mut o_raw = Vec::new();
        if let Some(w) = &l.post_attn_norm {
            o_raw = o.clone();
            ro = ops::rmsnorm_fwd(&o_raw, w, c.rms_eps, &mut o);
        }
        let x2: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
        let mut xn2 = vec![0f32; n * dim];
        let r2 = ops::rmsnorm_fwd(&x2, &l.ffn_norm, c.rms_eps, &mut xn2);
        let f = c.ffn_dim;
        let (mut gate, mut up) = (vec![0f32; n * f], vec![0f32; n * f]);
        let Ffn::Dense { gate_up, down } = &l.ffn else {
            unreachable!("check_model refused experts");
        };
        match gate_up {
            GateUp::Separate { gate: wg, up: wu } => {
                use TargetModule::*;
                self.project(&lw, wg, li, Some(Gate), &xn2, &mut gate, lkey, &mut lora)?;
                self.project(&lw, wu, li, Some(Up), &xn2, &mut up, lkey, &mut lora)?;
            }
            GateUp::Fused(w) => {
                let mut fused = vec![0f32; n * w.rows];
                ops::matmul_fwd(&m.mat(&lw, w), &xn2, &mut fused, n, self.opts.threads)?;
                for (t, row) in fused.chunks_exact(2 * f).enumerate() {
                    gate[t * f..(t + 1) * f].copy_from_slice(&row[..f]);
                    up[t * f..(t + 1) * f].copy_from_slice(&row[f..]);
                }
                self.adapt(li, TargetModule::Gate, &xn2, &mut gate, lkey, &mut lora);
                self.adapt(li, TargetModule::Up, &xn2, &mut up, lkey, &mut lora);
            }
        }
        let act = ops::gated_fwd(m.spec.activation, &gate, &up);
        let mut d_raw = vec![0f32; n * dim];
        let dm = Some(TargetModule::Down);
        self.project(&lw, down, li, dm, &act, &mut d_raw, lkey, &mut lora)?;
        let (mut d, mut rd) = (d_raw, Vec::new());
        let mut d_raw = Vec::new();
        if let Some(w) = &l.post_ffn_norm {
            d_raw = d.clone();
            rd = ops::rmsnorm_fwd(&d_raw, w, c.rms_eps, &mut d);
        }
        let out: Vec<f32> = x2.iter().zip(&d).map(|(a, b)| a + b).collect();
        Ok((
            out,
            Acts1 {
                x,
                xn1,
                att,
                xn2,
                act,
                r1,
                q_raw,
                k_raw,
                rq,
                rk,
                q,
                k,
                v,
                o_raw,
                ro,
                x2,
                r2,
                gate,
                up,
                d_raw,
                rd,
                lora,
            },
        ))
    }

    /// The gradient of module `m`'s adapter (into its accumulators) and of its input
    /// (into `dx`).
    fn adapt_bwd(&mut self, li: usize, m: TargetModule, a: &Acts1, dy: &[f32], dx: &mut [f32]) {
        let Some((i, _)) = self.pair(li, m) else {
            return;
        };
        let Some((u, dkey)) = &a.lora[m.index()] else {
            return;
        };
        let x = match m {
            TargetModule::Q | TargetModule::K | TargetModule::V => &a.xn1,
            TargetModule::O => &a.att,
            TargetModule::Gate | TargetModule::Up => &a.xn2,
            TargetModule::Down => &a.act,
        };
        let p = &mut self.params[i];
        let n = u.len() / self.opts.r;
        let pr = PairRef {
            r: self.opts.r,
            fin: p.fin,
            fout: p.fout,
            a: &p.a,
            bt: &p.bt,
            scale: self.scale,
        };
        match dkey {
            None => ops::lora_bwd(&pr, x, u, dy, n, &mut p.ga, &mut p.gbt, dx),
            // Through dropout: the same mask, drawn again from its key.
            Some(k) => {
                let mask = ops::dropout_mask(x.len(), self.opts.dropout, *k);
                let xd: Vec<f32> = x.iter().zip(&mask).map(|(v, f)| v * f).collect();
                let mut dxd = vec![0f32; xd.len()];
                ops::lora_bwd(&pr, &xd, u, dy, n, &mut p.ga, &mut p.gbt, &mut dxd);
                for ((o, g), f) in dx.iter_mut().zip(&dxd).zip(mask) {
                    *o += g * f;
                }
            }
        }
    }

    /// Layer `li`'s backward: the gradient of its output `dy` to that of its input,
    /// adding the adapters' gradients on the way.
    fn layer_backward(
        &mut self,
        li: usize,
        a: &Acts1,
        dy: Vec<f32>,
    ) -> Result<Vec<f32>, EngineError> {
        let m = self.model;
        let c = &m.config;
        let l: &Layer = &m.layers[li];
        let lw = m.layer_view(li)?;
        let threads = self.opts.threads.max(1);
        let dim = c.dim;
        let n = a.x.len() / dim;
        let (hd, nh, nkv, f) = (c.head_dim, c.n_heads, c.n_kv_heads, c.ffn_dim);
        let (qd, kvd) = (nh * hd, nkv * hd);

        // FFN: out = x2 + post(down(act(gate, up))).
        let mut dx2 = dy.clone();
        let dd = ops::post_norm_bwd(l.post_ffn_norm.as_deref(), &a.d_raw, &a.rd, dy);
        let Ffn::Dense { gate_up, down } = &l.ffn else {
            unreachable!("check_model refused experts");
        };
        let mut dact = vec![0f32; n * f];
        ops::matmul_t(&m.mat(&lw, down), &dd, &mut dact, n, threads)?;
        self.adapt_bwd(li, TargetModule::Down, a, &dd, &mut dact);
        let (mut dgate, mut dup) = (vec![0f32; n * f], vec![0f32; n * f]);
        ops::gated_bwd(
            m.spec.activation,
            &a.gate,
            &a.up,
            &dact,
            &mut dgate,
            &mut dup,
        );
        let mut dxn2 = vec![0f32; n * dim];
        match gate_up {
            GateUp::Separate { gate: wg, up: wu } => {
                ops::matmul_t(&m.mat(&lw, wg), &dgate, &mut dxn2, n, threads)?;
                ops::matmul_t(&m.mat(&lw, wu), &dup, &mut dxn2, n, threads)?;
            }
            GateUp::Fused(w) => {
                let mut g = vec![0f32; n * 2 * f];
                for (t, row) in g.chunks_exact_mut(2 * f).enumerate() {
                    row[..f].copy_from_slice(&dgate[t * f..(t + 1) * f]);
                    row[f..].copy_from_slice(&dup[t * f..(t + 1) * f]);
                }
                ops::matmul_t(&m.mat(&lw, w), &g, &mut dxn2, n, threads)?;
            }
        }
        self.adapt_bwd(li, TargetModule::Gate, a, &dgate, &mut dxn2);
        self.adapt_bwd(li, TargetModule::Up, a, &dup, &mut dxn2);
        ops::rmsnorm_bwd(&a.x2, &l.ffn_norm, &a.r2, &dxn2, &mut dx2);

        // Attention: x2 = x + post(o(attention(rope(norm(q)), rope(norm(k)), v))).
        let mut dx = dx2.clone();
        let dout = ops::post_norm_bwd(l.post_attn_norm.as_deref(), &a.o_raw, &a.ro, dx2);
        let mut datt = vec![0f32; n * qd];
        ops::matmul_t(&m.mat(&lw, &l.wo), &dout, &mut datt, n, threads)?;
        self.adapt_bwd(li, TargetModule::O, a, &dout, &mut datt);
        let (mut dq, mut dk, mut dv) =
            (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
        ops::attention_bwd(
            &a.q,
            &a.k,
            &a.v,
            &datt,
            n,
            (nh, nkv, hd),
            c.attention_scale,
            l.window,
            (&mut dq, &mut dk, &mut dv),
        );
        let rope = &self.ropes[l.rope];
        for t in 0..n {
            let rows = [
                &mut dq[t * qd..(t + 1) * qd],
                &mut dk[t * kvd..(t + 1) * kvd],
            ];
            rope.rotate_heads(rows, hd, t, true);
        }
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            let mut g = vec![0f32; n * qd];
            ops::rmsnorm_bwd(&a.q_raw, qn, &a.rq, &dq, &mut g);
            dq = g;
            let mut g = vec![0f32; n * kvd];
            ops::rmsnorm_bwd(&a.k_raw, kn, &a.rk, &dk, &mut g);
            dk = g;
        }
        let mut dxn1 = vec![0f32; n * dim];
        match &l.qkv {
            Qkv::Separate { wq, wk, wv } => {
                ops::matmul_t(&m.mat(&lw, wq), &dq, &mut dxn1, n, threads)?;
                ops::matmul_t(&m.mat(&lw, wk), &dk, &mut dxn1, n, threads)?;
                ops::matmul_t(&m.mat(&lw, wv), &dv, &mut dxn1, n, threads)?;
            }
            Qkv::Fused(w) => {
                let mut g = vec![0f32; n * w.rows];
                for (t, row) in g.chunks_exact_mut(w.rows).enumerate() {
                    row[..qd].copy_from_slice(&dq[t * qd..(t + 1) * qd]);
                    row[qd..qd + kvd].copy_from_slice(&dk[t * kvd..(t + 1) * kvd]);
                    row[qd + kvd..].copy_from_slice(&dv[t * kvd..(t + 1) * kvd]);
                }
                ops::matmul_t(&m.mat(&lw, w), &g, &mut dxn1, n, threads)?;
            }
        }
        self.adapt_bwd(li, TargetModule::Q, a, &dq, &mut dxn1);
        self.adapt_bwd(li, TargetModule::K, a, &dk, &mut dxn1);
        self.adapt_bwd(li, TargetModule::V, a, &dv, &mut dxn1);
        ops::rmsnorm_bwd(&a.x, &l.attn_norm, &a.r1, &dxn1, &mut dx);
        Ok(dx)
    }

    /// Forward (and, with a dropout key, backward) over one sequence.
    fn pass(
        &mut self,
        tokens: &[u32],
        labels: &[u32],
        weights: &[f32],
        key: Option<u64>,
    ) -> Result<LossSum, EngineError> {
        let n = tokens.len();
        if labels.len() != n || weights.len() != n {
            return Err(EngineError::Shape(format!(
                "{n} tokens need as many labels and weights, got {} and {}",
                labels.len(),
                weights.len()
            )));
        }
        if n == 0 {
            return Ok(LossSum::default());
        }
        let m = self.model;
        let c = &m.config;
        let vocab = c.vocab_size;
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= vocab) {
            return Err(EngineError::Invalid(format!(
                "label {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let dim = c.dim;
        let mut x = vec![0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            m.embed(tok, &mut x[t * dim..(t + 1) * dim])?;
        }
        if m.spec.scale_embeddings {
            let s = (dim as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        let train = key.is_some();
        let checkpoint = self.opts.checkpointing;
        let mut saved: Vec<Acts1> = Vec::new();
        let mut inputs: Vec<Vec<f32>> = Vec::new();
        for li in 0..c.n_layers {
            if train && checkpoint {
                inputs.push(x.clone());
            }
            let (out, acts) = self.layer_forward(li, x, key)?;
            if train && !checkpoint {
                saved.push(acts);
            }
            x = out;
        }

        // Head and loss, a chunk of rows at a time (the logits of a whole sequence are
        // `n × vocab`); the dry run's estimate charges the same chunk.
        let mut h = vec![0f32; n * dim];
        let rf = ops::rmsnorm_fwd(&x, &m.output_norm, c.rms_eps, &mut h);
        let view = m.layer_view(0)?;
        let head: QMatrix<'_> = m.mat(&view, &m.output);
        let mut dh = vec![0f32; n * dim];
        let mut loss = LossSum::default();
        const CHUNK: usize = dhurandhar_lora::LOSS_CHUNK_TOKENS as usize;
        for t0 in (0..n).step_by(CHUNK) {
            let t1 = (t0 + CHUNK).min(n);
            if weights[t0..t1].iter().all(|&w| w == 0.0) {
                continue;
            }
            let mut logits = vec![0f32; (t1 - t0) * vocab];
            let hs = &h[t0 * dim..t1 * dim];
            ops::matmul_fwd(&head, hs, &mut logits, t1 - t0, self.opts.threads)?;
            for (i, z) in logits.chunks_exact_mut(vocab).enumerate() {
                let t = t0 + i;
                let w = weights[t];
                if w == 0.0 {
                    z.fill(0.0);
                    continue;
                }
                // Soft-capped logits `cap·tanh(z/cap)`: keep tanh for the derivative.
                let tanh: Option<Vec<f32>> = c.final_logit_softcap.map(|cap| {
                    z.iter_mut()
                        .map(|l| {
                            let th = (*l / cap).tanh();
                            *l = cap * th;
                            th
                        })
                        .collect()
                });
                let ce = ops::cross_entropy(z, labels[t] as usize);
                loss.sum += w as f64 * ce;
                loss.tokens += 1;
                if let Some(th) = tanh {
                    z.iter_mut().zip(th).for_each(|(g, th)| *g *= 1.0 - th * th);
                }
                z.iter_mut().for_each(|g| *g *= w);
            }
            if train {
                let threads = self.opts.threads.max(1);
                ops::matmul_t(
                    &head,
                    &logits,
                    &mut dh[t0 * dim..t1 * dim],
                    t1 - t0,
                    threads,
                )?;
            }
        }
        drop(view);
        if !train {
            return Ok(loss);
        }
        let mut dx = vec![0f32; n * dim];
        ops::rmsnorm_bwd(&x, &m.output_norm, &rf, &dh, &mut dx);
        drop(x);
        for li in (0..c.n_layers).rev() {
            let acts = if checkpoint {
                let input = inputs.pop().expect("one input per layer");
                self.layer_forward(li, input, key)?.1
            } else {
                saved.pop().expect("one set of activations per layer")
            };
            dx = self.layer_backward(li, &acts, dx)?;
        }
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WeightMode;
    use rand::Rng;

    fn opts(targets: &[TargetModule]) -> TrainOptions {
        TrainOptions {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: targets.to_vec(),
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            checkpointing: false,
            seed: 7,
            threads: 2,
        }
    }

    /// Random `A` and `Bᵀ` (a fresh adapter has `B = 0`, where `A`'s gradient vanishes).
    fn randomize(t: &mut Trainer<'_>, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for p in &mut t.params {
            p.a.iter_mut().for_each(|v| *v = rng.gen_range(-0.3..0.3));
            p.bt.iter_mut().for_each(|v| *v = rng.gen_range(-0.3..0.3));
        }
    }

    fn sequence(n: usize, seed: u64) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<u32> = (0..=n).map(|_| rng.gen_range(100..20_000)).collect();
        let mut w = vec![1f32; n];
        w[0] = 0.0; // a masked position must not count
        (ids[..n].to_vec(), ids[1..].to_vec(), w)
    }

    /// The whole backward (every layer op, the head, the adapters on all seven
    /// projections) against central differences of the loss, on each dense tiny
    /// architecture: biases, QK-norm, fused projections, post-norms, GeGLU, sliding
    /// windows and soft-capped logits all lie on the path.
    #[test]
    fn model_gradients_match_finite_differences() {
        let Some(_) = dhurandhar_testkit::tiny_models() else {
            return;
        };
        let all = TargetModule::ALL;
        for arch in ["llama", "qwen2", "qwen3", "gemma3", "phi3"] {
            let path = dhurandhar_testkit::tiny_model(arch).unwrap();
            let model = Model::open_with(&path, WeightMode::Resident).unwrap();
            // Checkpointed with dropout: the recomputed layer must draw the same masks.
            for (checkpointing, dropout) in [(false, 0.0), (true, 0.2)] {
                let o = TrainOptions {
                    checkpointing,
                    dropout,
                    ..opts(&all)
                };
                let mut t = Trainer::new(&model, o).unwrap();
                randomize(&mut t, 3);
                let (tok, lab, w) = sequence(12, 5);
                t.accumulate(&tok, &lab, &w, 1).unwrap();
                let grads: Vec<(Vec<f32>, Vec<f32>)> = t
                    .params
                    .iter()
                    .map(|p| (p.ga.clone(), p.gbt.clone()))
                    .collect();
                let mut rng = ChaCha8Rng::seed_from_u64(9);
                let mut worst = 0f64;
                for _ in 0..24 {
                    let pi = rng.gen_range(0..t.params.len());
                    let in_a = rng.gen_bool(0.5);
                    let (ga, gbt) = &grads[pi];
                    let i = rng.gen_range(0..if in_a { ga.len() } else { gbt.len() });
                    let g = if in_a { ga[i] } else { gbt[i] } as f64;
                    let h = 1e-2f32;
                    // The same dropout key as the pass that took the gradient.
                    let at = |d: f32, t: &mut Trainer<'_>| {
                        let p = &mut t.params[pi];
                        if in_a {
                            p.a[i] += d
                        } else {
                            p.bt[i] += d
                        }
                        t.pass(&tok, &lab, &w, Some(1)).unwrap().sum
                    };
                    let up = at(h, &mut t);
                    let down = at(-2.0 * h, &mut t);
                    at(h, &mut t);
                    let fd = (up - down) / (2.0 * h as f64);
                    let err = (fd - g).abs() / (2e-2 + fd.abs().max(g.abs()));
                    worst = worst.max(err);
                }
                assert!(
                    worst < 0.05,
                    "{arch} (checkpointing {checkpointing}, dropout {dropout}): worst relative \
                     gradient error {worst:.3}"
                );
            }
        }
    }

    /// A few sequences memorised: the loss falls far below its start, and the same
    /// seed repeats the run exactly.
    #[test]
    fn overfits_a_few_sequences_deterministically() {
        let Some(path) = dhurandhar_testkit::tiny_model("llama") else {
            return;
        };
        let model = Model::open_with(&path, WeightMode::Resident).unwrap();
        let seqs: Vec<_> = (0..2).map(|s| sequence(16, 40 + s)).collect();
        let run = || {
            let mut o = opts(&[
                TargetModule::Q,
                TargetModule::V,
                TargetModule::Up,
                TargetModule::Down,
            ]);
            o.r = 8;
            o.dropout = 0.05;
            o.max_grad_norm = 1.0;
            let mut t = Trainer::new(&model, o).unwrap();
            let mut curve = Vec::new();
            for step in 0..80u64 {
                let mut l = LossSum::default();
                for (i, (tok, lab, w)) in seqs.iter().enumerate() {
                    l.add(t.accumulate(tok, lab, w, step * 16 + i as u64).unwrap());
                }
                t.optimizer_step(1e-2, l.tokens);
                curve.push(l.mean());
            }
            curve
        };
        let a = run();
        assert!(
            a[79] < 0.25 * a[0],
            "loss {:.3} -> {:.3}: not memorised",
            a[0],
            a[79]
        );
        assert_eq!(a, run(), "same seed, same curve");
    }

    /// Saving and restoring the state mid-run continues the same curve.
    #[test]
    fn restored_state_continues_the_same_run() {
        let Some(path) = dhurandhar_testkit::tiny_model("qwen2") else {
            return;
        };
        let model = Model::open_with(&path, WeightMode::Resident).unwrap();
        let (tok, lab, w) = sequence(10, 2);
        let targets = [TargetModule::Q, TargetModule::O, TargetModule::Gate];
        let mut a = Trainer::new(&model, opts(&targets)).unwrap();
        let step = |t: &mut Trainer<'_>, k: u64| {
            let l = t.accumulate(&tok, &lab, &w, k).unwrap();
            t.optimizer_step(5e-3, l.tokens);
            l.mean()
        };
        for k in 0..3 {
            step(&mut a, k);
        }
        let saved: BTreeMap<String, Vec<f32>> = a
            .state()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        let tail_a: Vec<f64> = (3..6).map(|k| step(&mut a, k)).collect();
        let mut b = Trainer::new(
            &model,
            TrainOptions {
                seed: 99,
                ..opts(&targets)
            },
        )
        .unwrap();
        b.restore(3, saved.clone()).unwrap();
        let tail_b: Vec<f64> = (3..6).map(|k| step(&mut b, k)).collect();
        assert_eq!(tail_a, tail_b);
        assert_eq!(b.step(), 6);
        let before = |t: &Trainer<'_>| -> Vec<Vec<f32>> {
            t.state().into_values().map(<[f32]>::to_vec).collect()
        };
        let kept = before(&b);
        let mut short = saved.clone();
        short.pop_first();
        assert!(b
            .restore(0, short)
            .unwrap_err()
            .to_string()
            .contains("lacks"));
        let mut extra = saved;
        extra.insert("blk.0.attn_k.weight.a".into(), vec![0.0]);
        assert!(b
            .restore(0, extra)
            .unwrap_err()
            .to_string()
            .contains("does not train"));
        // A refused restore leaves the trainer as it was (nothing half-assigned).
        assert_eq!(before(&b), kept);
        assert_eq!(b.step(), 6);
    }

    #[test]
    fn the_adapter_is_zero_at_the_start_and_in_gguf_layout() {
        let Some(path) = dhurandhar_testkit::tiny_model("llama") else {
            return;
        };
        let model = Model::open_with(&path, WeightMode::Resident).unwrap();
        let t = Trainer::new(&model, opts(&[TargetModule::K, TargetModule::Down])).unwrap();
        let a = t.adapter("tiny");
        assert_eq!(a.pairs.len(), 2 * model.config.n_layers);
        let k = &a.pairs["blk.1.attn_k.weight"];
        let c = &model.config;
        assert_eq!(
            (k.in_features, k.out_features),
            (c.dim, c.n_kv_heads * c.head_dim)
        );
        assert!(k.b.iter().all(|&v| v == 0.0) && k.a.iter().any(|&v| v != 0.0));
        assert_eq!(t.num_parameters(), a.num_parameters());
    }

    #[test]
    fn mixtures_of_experts_and_bad_options_are_refused() {
        let Some(path) = dhurandhar_testkit::tiny_model("qwen3moe") else {
            return;
        };
        let model = Model::open_with(&path, WeightMode::Resident).unwrap();
        let e = Trainer::new(&model, opts(&[TargetModule::Q]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("mixture-of-experts"), "{e}");
        let dense = Model::open_with(
            &dhurandhar_testkit::tiny_model("llama").unwrap(),
            WeightMode::Mmap,
        )
        .unwrap();
        assert!(Trainer::new(&dense, opts(&[])).is_err());
        assert!(Trainer::new(
            &dense,
            TrainOptions {
                dropout: 1.0,
                ..opts(&[TargetModule::Q])
            }
        )
        .is_err());
        let mut t = Trainer::new(&dense, opts(&[TargetModule::Q])).unwrap();
        assert!(t.loss(&[1, 2], &[2], &[1.0]).is_err());
        assert!(t
            .loss(&[1], &[u32::MAX], &[1.0])
            .unwrap_err()
            .to_string()
            .contains("vocabulary"));
    }
}
