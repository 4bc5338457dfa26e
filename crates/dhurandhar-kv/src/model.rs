//! Model-aware KV compression over [`ModelArchitecture::layers`]: per layer, per KV
//! head (GQA: never per query head), shared-KV layers skipped (they read an earlier
//! layer's already-compressed cache), sliding layers sized at their window, keys
//! compressed post-RoPE (the cache holds post-RoPE keys, so that is what is encoded).

use std::collections::BTreeMap;

use dhurandhar_model::{AttentionKind, KvSource, LayerSpec, ModelArchitecture};
use serde::Serialize;

use crate::codec::{build_codec_roles, Codec, CodecSpec, KvCodec, KvError, KvRole};
use crate::synth::{generate, Distribution};

/// Stored bytes of one head's K or V for `tokens` tokens: whole token groups through
/// the codec, the trailing partial group as bf16, plus the per-head side information.
pub fn stored_bytes(codec: &dyn KvCodec, role: KvRole, tokens: u64) -> u64 {
    let g = codec.token_group(role) as u64;
    let full = tokens / g * g;
    let d = codec.head_dim() as u64;
    let side = if tokens > 0 {
        codec.side_bytes(role) as u64
    } else {
        0
    };
    codec.encoded_len(role, full as usize) as u64 + (tokens - full) * d * 2 + side
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerFootprint {
    pub index: usize,
    pub attention: AttentionKind,
    pub kv: KvSource,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub window: Option<u64>,
    /// Tokens held (window-capped on sliding layers; 0 for shared/SSM layers).
    pub tokens: u64,
    pub baseline_bytes: u64,
    pub compressed_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Footprint {
    pub seq_len: u64,
    pub codec: Codec,
    pub bits: u32,
    pub baseline_bits: u32,
    pub baseline_bytes: u64,
    pub compressed_bytes: u64,
    pub savings_bytes: u64,
    pub ratio: f64,
    /// compressed bytes × 8 / cached values.
    pub bits_per_value: f64,
    pub fresh_layers: usize,
    pub shared_layers: usize,
    pub ssm_layers: usize,
    pub sliding_layers: usize,
    pub global_layers: usize,
    pub layers: Vec<LayerFootprint>,
}

/// Builds one codec per distinct head_dim of the model. SpectralQuant is calibrated
/// on the synthetic `low-rank` generator here (its size depends on the calibration
/// only through the bit allocation, which sums to the budget).
pub fn codecs_for(
    arch: &ModelArchitecture,
    codec: Codec,
    bits: u32,
    seed: u64,
) -> Result<BTreeMap<u32, Box<dyn KvCodec>>, KvError> {
    let mut out = BTreeMap::new();
    for l in arch.layers() {
        if l.kv != KvSource::Fresh || out.contains_key(&l.head_dim) {
            continue;
        }
        let d = l.head_dim as usize;
        let spec = CodecSpec {
            codec,
            bits,
            head_dim: d,
            seed,
        };
        let (ck, cv) = if codec.needs_calibration() {
            (
                generate(Distribution::LowRank, 512, d, seed, 0, false),
                generate(Distribution::LowRank, 512, d, seed, 0, true),
            )
        } else {
            (vec![], vec![])
        };
        let codec = build_codec_roles(&spec, Some(&ck), Some(&cv))?;
        out.insert(l.head_dim, codec);
    }
    Ok(out)
}

/// KV-cache memory at `seq_len` tokens: bf16 baseline vs the codec, layer by layer.
pub fn footprint(
    arch: &ModelArchitecture,
    seq_len: u64,
    codec: Codec,
    bits: u32,
    seed: u64,
) -> Result<Footprint, KvError> {
    let codecs = codecs_for(arch, codec, bits, seed)?;
    let mut layers = Vec::new();
    let (mut base, mut comp, mut values) = (0u64, 0u64, 0u64);
    let layer_specs = arch.layers();
    for l in &layer_specs {
        let tokens = l.kv_tokens(seq_len);
        let baseline = l.kv_bytes(seq_len, 16.0);
        let compressed = match codecs.get(&l.head_dim) {
            Some(c) if l.kv == KvSource::Fresh => {
                let per_head = stored_bytes(c.as_ref(), KvRole::Key, tokens)
                    + if l.kv_unified {
                        0
                    } else {
                        stored_bytes(c.as_ref(), KvRole::Value, tokens)
                    };
                per_head * l.kv_heads as u64
            }
            _ => 0,
        };
        base += baseline;
        comp += compressed;
        values += tokens * l.kv_elements_per_token();
        layers.push(LayerFootprint {
            index: l.index,
            attention: l.attention,
            kv: l.kv,
            kv_heads: l.kv_heads,
            head_dim: l.head_dim,
            window: l.window,
            tokens,
            baseline_bytes: baseline,
            compressed_bytes: compressed,
        });
    }
    let count = |f: &dyn Fn(&LayerSpec) -> bool| layer_specs.iter().filter(|l| f(l)).count();
    Ok(Footprint {
        seq_len,
        codec,
        bits,
        baseline_bits: 16,
        baseline_bytes: base,
        compressed_bytes: comp,
        savings_bytes: base.saturating_sub(comp),
        ratio: if comp > 0 {
            base as f64 / comp as f64
        } else {
            0.0
        },
        bits_per_value: if values > 0 {
            comp as f64 * 8.0 / values as f64
        } else {
            0.0
        },
        fresh_layers: count(&|l| l.kv == KvSource::Fresh),
        shared_layers: count(&|l| matches!(l.kv, KvSource::SharedFrom(_))),
        ssm_layers: count(&|l| l.kv == KvSource::None),
        sliding_layers: count(&|l| l.attention == AttentionKind::Sliding),
        global_layers: count(&|l| l.attention == AttentionKind::Global),
        layers,
    })
}

/// One layer's compressed cache: per KV head, the encoded whole groups and the
/// partial tail kept as f32 (what a live cache does until the group fills).
#[derive(Debug, Clone)]
pub struct CompressedLayer {
    pub layer: usize,
    pub role: KvRole,
    pub tokens: usize,
    /// Tokens dropped from the front by the sliding window.
    pub dropped: usize,
    pub heads: Vec<(Vec<u8>, Vec<f32>)>,
}

/// Compresses a model's KV cache layer by layer with one codec per head_dim.
pub struct KvCacheCompressor {
    layers: Vec<LayerSpec>,
    codecs: BTreeMap<u32, Box<dyn KvCodec>>,
}

impl KvCacheCompressor {
    pub fn new(
        arch: &ModelArchitecture,
        codec: Codec,
        bits: u32,
        seed: u64,
    ) -> Result<Self, KvError> {
        Ok(KvCacheCompressor {
            layers: arch.layers(),
            codecs: codecs_for(arch, codec, bits, seed)?,
        })
    }

    fn layer(&self, i: usize) -> Result<&LayerSpec, KvError> {
        self.layers.get(i).ok_or_else(|| {
            KvError::Invalid(format!(
                "layer {i} out of range ({} layers)",
                self.layers.len()
            ))
        })
    }

    /// Compress layer `i`'s K or V, `x` = `[tokens, kv_heads, head_dim]`. Returns
    /// `None` for a shared-KV layer (nothing of its own to store); errors for an SSM
    /// layer or a shape mismatch. Sliding layers keep only the last `window` tokens.
    pub fn compress_layer(
        &self,
        i: usize,
        role: KvRole,
        x: &[f32],
    ) -> Result<Option<CompressedLayer>, KvError> {
        let l = self.layer(i)?;
        match l.kv {
            KvSource::SharedFrom(_) => return Ok(None),
            KvSource::None => {
                return Err(KvError::Invalid(format!(
                    "layer {i} has no KV cache (SSM layer)"
                )))
            }
            KvSource::Fresh => {}
        }
        let (h, d) = (l.kv_heads as usize, l.head_dim as usize);
        if !x.len().is_multiple_of(h * d) {
            return Err(KvError::Invalid(format!(
                "layer {i}: {} values is not a multiple of kv_heads {h} × head_dim {d}",
                x.len()
            )));
        }
        let n = x.len() / (h * d);
        let keep = l.window.map_or(n, |w| n.min(w as usize));
        let first = n - keep;
        let codec = self
            .codecs
            .get(&l.head_dim)
            .ok_or_else(|| KvError::Invalid(format!("no codec for head_dim {d}")))?;
        let g = codec.token_group(role);
        let full = keep / g * g;
        let mut heads = Vec::with_capacity(h);
        let mut buf = vec![0.0f32; keep * d];
        for head in 0..h {
            for t in 0..keep {
                let src = ((first + t) * h + head) * d;
                buf[t * d..(t + 1) * d].copy_from_slice(&x[src..src + d]);
            }
            let enc = if full > 0 {
                codec.encode(role, &buf[..full * d])?
            } else {
                Vec::new()
            };
            heads.push((enc, buf[full * d..].to_vec()));
        }
        Ok(Some(CompressedLayer {
            layer: i,
            role,
            tokens: keep,
            dropped: first,
            heads,
        }))
    }

    /// Inverse of [`compress_layer`](Self::compress_layer): `[tokens, kv_heads, head_dim]`.
    pub fn decompress_layer(&self, c: &CompressedLayer) -> Result<Vec<f32>, KvError> {
        let l = self.layer(c.layer)?;
        if l.kv != KvSource::Fresh {
            return Err(KvError::Invalid(format!(
                "layer {} is not a fresh-KV layer; read the layer it shares from",
                c.layer
            )));
        }
        let (h, d) = (l.kv_heads as usize, l.head_dim as usize);
        if c.heads.len() != h {
            return Err(KvError::Corrupted(format!(
                "{} heads stored, layer has {h}",
                c.heads.len()
            )));
        }
        let codec = &self.codecs[&l.head_dim];
        let g = codec.token_group(c.role);
        let full = c.tokens / g * g;
        let mut out = vec![0.0f32; c.tokens * h * d];
        let mut buf = vec![0.0f32; c.tokens * d];
        for (head, (enc, tail)) in c.heads.iter().enumerate() {
            if full > 0 {
                codec.decode(c.role, enc, &mut buf[..full * d])?;
            }
            if tail.len() != (c.tokens - full) * d {
                return Err(KvError::Corrupted(
                    "partial-group tail has the wrong length".into(),
                ));
            }
            buf[full * d..].copy_from_slice(tail);
            for t in 0..c.tokens {
                let dst = (t * h + head) * d;
                out[dst..dst + d].copy_from_slice(&buf[t * d..(t + 1) * d]);
            }
        }
        Ok(out)
    }
}
