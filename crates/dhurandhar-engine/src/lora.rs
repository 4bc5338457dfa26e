//! LoRA adapters applied at run time: `y = W·x + Σ scale · B·(A·x)` on the adapted
//! projections, with the base weights left as stored (quantized, mapped or streamed).
//!
//! A [`LoraStack`] belongs to a session, not to the model: several adapters with their
//! own weights can be active at once, and a session swaps its stack between requests
//! ([`Session::set_adapters`](crate::Session::set_adapters)) without reloading the base.

use dhurandhar_lora::{parse_gguf_tensor_name, Adapter, LoraPair, TargetModule};

use crate::kernels::{axpy, dot};
use crate::{EngineError, ModelConfig};

/// One adapter's pair on one projection, laid out for the forward pass: `A` as stored
/// (`r × in`, a dot per row) and `B` transposed (`r × out`, so the update is `r`
/// contiguous axpys instead of `out` dots of length `r`).
#[derive(Debug)]
struct Applied {
    in_features: usize,
    out_features: usize,
    a: Vec<f32>,
    bt: Vec<f32>,
    /// alpha / r times the weight the caller gave the adapter.
    scale: f32,
}

/// The adapters of a session, indexed by layer and target module.
#[derive(Debug)]
pub struct LoraStack {
    layers: Vec<[Vec<Applied>; 7]>,
    adapters: usize,
}

/// `(in_features, out_features)` of `m` in a model of this shape.
pub fn projection_shape(c: &ModelConfig, m: TargetModule) -> (usize, usize) {
    let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    match m {
        TargetModule::Q => (c.dim, q),
        TargetModule::K | TargetModule::V => (c.dim, kv),
        TargetModule::O => (q, c.dim),
        TargetModule::Gate | TargetModule::Up => (c.dim, c.ffn_dim),
        TargetModule::Down => (c.ffn_dim, c.dim),
    }
}

/// Check one pair against the model: its layer and module.
fn check_pair(
    c: &ModelConfig,
    i: usize,
    key: &str,
    p: &LoraPair,
) -> Result<(usize, TargetModule), EngineError> {
    let bad = |why: String| EngineError::Shape(format!("adapter {} tensor `{key}`: {why}", i + 1));
    let (li, m) =
        parse_gguf_tensor_name(key).ok_or_else(|| bad("not a projection LoRA can adapt".into()))?;
    if li >= c.n_layers {
        return Err(bad(format!("the model has {} layers", c.n_layers)));
    }
    let (fin, fout) = projection_shape(c, m);
    if (p.in_features, p.out_features) != (fin, fout) {
        return Err(bad(format!(
            "adapts a {}x{} projection, the model's is {fin}x{fout}",
            p.in_features, p.out_features
        )));
    }
    if p.r == 0 || p.a.len() != p.r * fin || p.b.len() != fout * p.r {
        return Err(bad(format!(
            "A holds {} values and B {}, rank {} needs {} and {}",
            p.a.len(),
            p.b.len(),
            p.r,
            p.r * fin,
            fout * p.r
        )));
    }
    Ok((li, m))
}

fn check_weight(i: usize, a: &Adapter, weight: f32) -> Result<(), EngineError> {
    if weight.is_finite() {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "adapter {} ({}): its weight must be finite, got {weight}",
            i + 1,
            a.base_model
        )))
    }
}

impl LoraStack {
    /// Check every pair of every adapter against the model's shapes, without building.
    pub fn check(c: &ModelConfig, adapters: &[(Adapter, f32)]) -> Result<(), EngineError> {
        for (i, (a, weight)) in adapters.iter().enumerate() {
            check_weight(i, a, *weight)?;
            for (key, p) in &a.pairs {
                check_pair(c, i, key, p)?;
            }
        }
        Ok(())
    }

    /// Check and index `adapters`, each with the weight its update is multiplied by
    /// (1 = as trained). Takes them by value: `A` moves into the stack and `B` is
    /// transposed pair by pair, so loading costs the adapter's size once, not twice.
    pub fn new(c: &ModelConfig, adapters: Vec<(Adapter, f32)>) -> Result<Self, EngineError> {
        Self::check(c, &adapters)?;
        let count = adapters.len();
        let mut layers: Vec<[Vec<Applied>; 7]> =
            (0..c.n_layers).map(|_| Default::default()).collect();
        for (i, (a, weight)) in adapters.into_iter().enumerate() {
            let scale = a.scale() * weight;
            for (key, p) in a.pairs {
                let (li, m) = check_pair(c, i, &key, &p)?;
                let fout = p.out_features;
                let mut bt = vec![0f32; p.b.len()];
                for (o, row) in p.b.chunks_exact(p.r).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        bt[j * fout + o] = v;
                    }
                }
                drop(p.b);
                layers[li][m.index()].push(Applied {
                    in_features: p.in_features,
                    out_features: fout,
                    a: p.a,
                    bt,
                    scale,
                });
            }
        }
        Ok(LoraStack {
            layers,
            adapters: count,
        })
    }

    /// Layers this stack was built for.
    /// Whether any adapter changes module `m` of layer `li`.
    pub fn targets(&self, li: usize, m: TargetModule) -> bool {
        self.layers
            .get(li)
            .is_some_and(|l| !l[m.index()].is_empty())
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Adapters in the stack.
    pub fn len(&self) -> usize {
        self.adapters
    }

    pub fn is_empty(&self) -> bool {
        self.adapters == 0
    }

    /// Add the adapters' update of projection `m` on layer `li` to `out` (`n` rows of
    /// `out_features`) for the input `x` (`n` rows of `in_features`).
    pub(crate) fn apply(&self, li: usize, m: TargetModule, x: &[f32], out: &mut [f32], n: usize) {
        for p in &self.layers[li][m.index()] {
            for t in 0..n {
                let xt = &x[t * p.in_features..(t + 1) * p.in_features];
                let ot = &mut out[t * p.out_features..(t + 1) * p.out_features];
                for (a, bt) in
                    p.a.chunks_exact(p.in_features)
                        .zip(p.bt.chunks_exact(p.out_features))
                {
                    axpy(p.scale * dot(a, xt), bt, ot);
                }
            }
        }
    }
}
