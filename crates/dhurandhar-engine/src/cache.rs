//! The KV cache, with two hooks: capture (copy Q/K/V out as they are produced) and a
//! codec path (every K/V token group of every KV head is encoded and decoded by a
//! `dhurandhar_kv` codec as soon as it is complete, so attention reads what a
//! compressed cache would return; a trailing partial group stays exact, like a real
//! implementation would keep it).

use std::collections::HashMap;
use std::sync::Arc;

use dhurandhar_kv::{KvCodec, KvRole};

use crate::kernels::StridedRows;
use crate::EngineError;

/// A codec applied to the cache: one codec per layer (layers may share one).
#[derive(Clone)]
pub struct CacheCodec {
    pub label: String,
    per_layer: Vec<Arc<dyn KvCodec>>,
    /// Encoded bytes and value counts, for the measured bits per value.
    pub stats: CodecStats,
}

/// Bytes produced by the codec, per role.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodecStats {
    pub key_bytes: u64,
    pub key_values: u64,
    pub value_bytes: u64,
    pub value_values: u64,
    /// Bytes stored once per codec instance (SpectralQuant's calibration), amortised over
    /// the values encoded, as `kv compare` does.
    pub side_bytes: u64,
}

impl CodecStats {
    /// Bits per stored value over keys and values, from the encoded bytes plus side data.
    pub fn bits_per_value(&self) -> Option<f64> {
        let v = self.key_values + self.value_values;
        (v > 0)
            .then(|| (self.key_bytes + self.value_bytes + self.side_bytes) as f64 * 8.0 / v as f64)
    }
}

/// Calibration bytes of one codec instance, keys and values.
fn side_bytes(codec: &dyn KvCodec) -> u64 {
    (codec.side_bytes(KvRole::Key) + codec.side_bytes(KvRole::Value)) as u64
}

impl CacheCodec {
    /// The same codec for every layer.
    pub fn shared(label: &str, codec: Arc<dyn KvCodec>, n_layers: usize) -> Self {
        let stats = CodecStats {
            side_bytes: side_bytes(codec.as_ref()),
            ..CodecStats::default()
        };
        CacheCodec {
            label: label.to_string(),
            per_layer: vec![codec; n_layers],
            stats,
        }
    }

    /// One codec per layer (e.g. calibrated per layer).
    pub fn per_layer(label: &str, codecs: Vec<Arc<dyn KvCodec>>) -> Self {
        let stats = CodecStats {
            side_bytes: codecs.iter().map(|c| side_bytes(c.as_ref())).sum(),
            ..CodecStats::default()
        };
        CacheCodec {
            label: label.to_string(),
            per_layer: codecs,
            stats,
        }
    }
}

/// K or V of one layer, head-major: one `[pos][head_dim]` run per KV head, which
/// attention reads front to back. Position-major (`[pos][kv_head][head_dim]`) gives a
/// head one piece of every row instead; reading those pieces from RAM ran at about
/// half the rate of one run (docs/run.md). Each head's run grows like any `Vec`, so
/// memory is only touched where positions are stored.
#[derive(Debug, Clone)]
pub(crate) struct HeadRows {
    heads: Vec<Vec<f32>>,
    head_dim: usize,
}

impl HeadRows {
    pub(crate) fn new(n_kv_heads: usize, head_dim: usize) -> Self {
        HeadRows {
            heads: vec![Vec::new(); n_kv_heads],
            head_dim,
        }
    }

    /// Positions stored.
    pub(crate) fn len(&self) -> usize {
        self.heads.first().map_or(0, |h| h.len() / self.head_dim)
    }

    /// Room for exactly `positions` per head (a ring's window: never a doubled `Vec`).
    pub(crate) fn reserve_exact(&mut self, positions: usize) {
        let want = positions * self.head_dim;
        for h in &mut self.heads {
            h.reserve_exact(want.saturating_sub(h.len()));
        }
    }

    /// Hold at least `positions` per head, new ones zero until written (a ring filled
    /// out of order by a chunk longer than its window).
    pub(crate) fn extend_to(&mut self, positions: usize) {
        let want = positions * self.head_dim;
        for h in &mut self.heads {
            if h.len() < want {
                h.resize(want, 0.0);
            }
        }
    }

    /// Store one token (`n_kv_heads · head_dim` values, `[kv_head][head_dim]`) at
    /// `slot`: a stored position, or the next one.
    pub(crate) fn put(&mut self, slot: usize, token: &[f32]) {
        let hd = self.head_dim;
        for (h, row) in self.heads.iter_mut().zip(token.chunks_exact(hd)) {
            put_row(h, slot * hd, row);
        }
    }

    /// Copy slot `src_slot` of every head of `from` into `slot` (as [`HeadRows::put`]).
    pub(crate) fn put_from(&mut self, slot: usize, from: &HeadRows, src_slot: usize) {
        let hd = self.head_dim;
        for (h, f) in self.heads.iter_mut().zip(&from.heads) {
            put_row(h, slot * hd, &f[src_slot * hd..][..hd]);
        }
    }

    /// Positions `from..to` of every head, as a new buffer holding exactly them.
    pub(crate) fn copy_range(&self, from: usize, to: usize) -> HeadRows {
        let hd = self.head_dim;
        HeadRows {
            heads: self
                .heads
                .iter()
                .map(|h| h[from * hd..to * hd].to_vec())
                .collect(),
            head_dim: hd,
        }
    }

    /// `len` positions of head `h` from `slot`, contiguous.
    pub(crate) fn span(&self, h: usize, slot: usize, len: usize) -> &[f32] {
        let hd = self.head_dim;
        &self.heads[h][slot * hd..][..len * hd]
    }

    pub(crate) fn span_mut(&mut self, h: usize, slot: usize, len: usize) -> &mut [f32] {
        let hd = self.head_dim;
        &mut self.heads[h][slot * hd..][..len * hd]
    }

    /// Head `h` from `slot` on, as the attention kernels read it.
    pub(crate) fn head(&self, h: usize, slot: usize) -> StridedRows<'_> {
        let hd = self.head_dim;
        StridedRows {
            src: &self.heads[h],
            off: slot * hd,
            stride: hd,
            d: hd,
        }
    }
}

/// Overwrite the row at `at`, or append it when `at` is the end.
fn put_row(run: &mut Vec<f32>, at: usize, row: &[f32]) {
    if at == run.len() {
        run.extend_from_slice(row);
    } else {
        run[at..at + row.len()].copy_from_slice(row);
    }
}

/// K/V for one layer; on a sliding-window layer a ring whose slot is `pos % window` and
/// that never holds more than the window.
#[derive(Debug, Clone)]
pub(crate) struct LayerKv {
    pub k: HeadRows,
    pub v: HeadRows,
    /// Positions `< enc_k` (`enc_v`) hold decoded codec output.
    pub enc_k: usize,
    pub enc_v: usize,
}

impl LayerKv {
    fn new(n_kv_heads: usize, head_dim: usize) -> Self {
        LayerKv {
            k: HeadRows::new(n_kv_heads, head_dim),
            v: HeadRows::new(n_kv_heads, head_dim),
            enc_k: 0,
            enc_v: 0,
        }
    }
}

/// The KV cache of one sequence.
pub struct KvCache {
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub(crate) layers: Vec<LayerKv>,
    /// Per layer: `Some(w)` keeps only the last `w` positions (a ring buffer).
    pub(crate) windows: Vec<Option<usize>>,
    pub(crate) codec: Option<CacheCodec>,
    pub(crate) len: usize,
}

impl KvCache {
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        codec: Option<CacheCodec>,
    ) -> Self {
        KvCache {
            n_kv_heads,
            head_dim,
            layers: vec![LayerKv::new(n_kv_heads, head_dim); n_layers],
            windows: vec![None; n_layers],
            codec,
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Give layers sliding windows (the model's, from [`crate::Model::layer_windows`]).
    /// Only an empty cache can change shape, and codecs run on full-attention layers
    /// only: a codec's token groups would straddle the ring's overwrites.
    pub fn set_windows(&mut self, windows: &[Option<usize>]) -> Result<(), EngineError> {
        if windows == self.windows.as_slice() {
            return Ok(());
        }
        if windows.len() != self.layers.len() || self.len > 0 {
            return Err(EngineError::Shape(
                "KV cache layers do not match the model's sliding windows".into(),
            ));
        }
        if self.codec.is_some() && windows.iter().any(Option::is_some) {
            return Err(EngineError::Invalid(
                "KV codecs are not supported on sliding-window layers yet".into(),
            ));
        }
        self.windows = windows.to_vec();
        Ok(())
    }

    /// Per-layer windows (`None`: the layer keeps every position).
    pub fn windows(&self) -> &[Option<usize>] {
        &self.windows
    }

    /// Bytes of f32 K and V the cache holds now (positions stored, not room reserved),
    /// so on a sliding layer never more than its window.
    pub fn bytes(&self) -> usize {
        let per_pos = self.n_kv_heads * self.head_dim * 2 * 4;
        self.layers.iter().map(|l| l.k.len() * per_pos).sum()
    }

    /// The codec in use, if any.
    pub fn codec(&self) -> Option<&CacheCodec> {
        self.codec.as_ref()
    }

    /// Token groups of the codec (1 when exact).
    pub(crate) fn groups(&self, layer: usize) -> (usize, usize) {
        match &self.codec {
            Some(c) => {
                let k = &c.per_layer[layer];
                (
                    k.token_group(KvRole::Key).max(1),
                    k.token_group(KvRole::Value).max(1),
                )
            }
            None => (1, 1),
        }
    }

    /// Encode + decode, in place, every complete group of `layer` not yet encoded.
    pub(crate) fn encode_complete(&mut self, layer: usize, upto: usize) -> Result<(), EngineError> {
        let Some(codec) = self.codec.as_mut() else {
            return Ok(());
        };
        let c = codec.per_layer[layer].clone();
        let (hd, nkv) = (self.head_dim, self.n_kv_heads);
        let l = &mut self.layers[layer];
        for role in [KvRole::Key, KvRole::Value] {
            let g = c.token_group(role).max(1);
            let (buf, enc) = match role {
                KvRole::Key => (&mut l.k, &mut l.enc_k),
                KvRole::Value => (&mut l.v, &mut l.enc_v),
            };
            let mut y = vec![0f32; g * hd];
            while *enc + g <= upto {
                for h in 0..nkv {
                    let bytes = c.encode(role, buf.span(h, *enc, g))?;
                    c.decode(role, &bytes, &mut y)?;
                    match role {
                        KvRole::Key => {
                            codec.stats.key_bytes += bytes.len() as u64;
                            codec.stats.key_values += (g * hd) as u64;
                        }
                        KvRole::Value => {
                            codec.stats.value_bytes += bytes.len() as u64;
                            codec.stats.value_values += (g * hd) as u64;
                        }
                    }
                    buf.span_mut(h, *enc, g).copy_from_slice(&y);
                }
                *enc += g;
            }
        }
        Ok(())
    }
}

/// Per-layer tensors copied out during a forward pass.
#[derive(Debug, Default, Clone)]
pub struct CaptureLayer {
    /// Queries after RoPE, `[tokens][n_heads][head_dim]`.
    pub q: Vec<f32>,
    /// Keys after RoPE, `[tokens][n_kv_heads][head_dim]`.
    pub k: Vec<f32>,
    /// Keys before RoPE.
    pub k_pre_rope: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// Everything captured from a run.
#[derive(Debug, Clone)]
pub struct Capture {
    pub layers: Vec<CaptureLayer>,
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Capture {
    pub fn new(n_layers: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        Capture {
            layers: vec![CaptureLayer::default(); n_layers],
            n_tokens: 0,
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    /// Serialize as safetensors: f32 `layers.{i}.{k,k_pre_rope,v}` `[tokens, n_kv_heads,
    /// head_dim]` and `layers.{i}.q` `[tokens, n_heads, head_dim]`, with `metadata`
    /// (plus the geometry) in `__metadata__`.
    pub fn to_safetensors(&self, metadata: &[(&str, String)]) -> Result<Vec<u8>, EngineError> {
        use safetensors::tensor::{Dtype, TensorView};
        let to_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let kv_shape = vec![self.n_tokens, self.n_kv_heads, self.head_dim];
        let q_shape = vec![self.n_tokens, self.n_heads, self.head_dim];
        for (i, l) in self.layers.iter().enumerate() {
            owned.push((format!("layers.{i}.k"), kv_shape.clone(), to_bytes(&l.k)));
            owned.push((
                format!("layers.{i}.k_pre_rope"),
                kv_shape.clone(),
                to_bytes(&l.k_pre_rope),
            ));
            owned.push((format!("layers.{i}.v"), kv_shape.clone(), to_bytes(&l.v)));
            owned.push((format!("layers.{i}.q"), q_shape.clone(), to_bytes(&l.q)));
        }
        let mut views = Vec::with_capacity(owned.len());
        for (name, shape, bytes) in &owned {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| EngineError::Invalid(format!("tensor {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let mut meta: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        meta.insert("n_layers".into(), self.layers.len().to_string());
        meta.insert("n_tokens".into(), self.n_tokens.to_string());
        meta.insert("head_dim".into(), self.head_dim.to_string());
        meta.insert("n_kv_heads".into(), self.n_kv_heads.to_string());
        meta.insert("n_heads".into(), self.n_heads.to_string());
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| EngineError::Invalid(format!("safetensors: {e}")))?;
        sorted_header(bytes)
    }
}

/// The same safetensors file with its JSON header's keys in sorted order: the crate
/// writes its metadata `HashMap` in a random order, so two captures of the same run
/// would differ byte for byte.
fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, EngineError> {
    let bad = || EngineError::Invalid("safetensors: malformed header from the writer".into());
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or_else(bad)?;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let parsed: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|_| bad())?;
    let mut json = serde_json::to_string(&parsed).map_err(|_| bad())?;
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens go in as `[kv_head][head_dim]` rows and come out as one run per head:
    /// appended at the end, overwritten in place (a ring), copied by range.
    #[test]
    fn head_rows_are_one_run_per_head() {
        let mut r = HeadRows::new(2, 3);
        let token = |p: f32| [p, p + 0.1, p + 0.2, -p, -p - 0.1, -p - 0.2];
        for p in 0..4 {
            r.put(p, &token(p as f32));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.span(1, 2, 1), &[-2.0, -2.1, -2.2]);
        let k = r.head(1, 1);
        assert_eq!((k.off, k.stride, k.d, k.src.len()), (3, 3, 3, 12));
        r.put(1, &token(9.0));
        assert_eq!(
            r.span(0, 0, 3),
            &[0.0, 0.1, 0.2, 9.0, 9.1, 9.2, 2.0, 2.1, 2.2]
        );
        let c = r.copy_range(2, 4);
        assert_eq!(c.len(), 2);
        assert_eq!(c.span(1, 0, 2), &[-2.0, -2.1, -2.2, -3.0, -3.1, -3.2]);
        // A ring filled out of order: slots past the end exist (zero) once extended.
        let mut ring = HeadRows::new(1, 2);
        ring.reserve_exact(4);
        ring.extend_to(4);
        ring.put(3, &[7.0, 8.0]);
        assert_eq!(
            ring.span(0, 0, 4),
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 8.0]
        );
        assert_eq!(ring.heads[0].capacity(), 8);
    }

    #[test]
    fn capture_headers_are_byte_reproducible() {
        // Each HashMap has its own random order: without sorting, two files with the
        // same 32 metadata keys would almost surely differ.
        let data = vec![0u8; 16];
        let file = || {
            let view = safetensors::tensor::TensorView::new(
                safetensors::tensor::Dtype::F32,
                vec![2, 2],
                &data,
            )
            .unwrap();
            let meta: HashMap<String, String> = (0..32)
                .map(|i| (format!("key{i}"), i.to_string()))
                .collect();
            sorted_header(safetensors::serialize(vec![("t", view)], Some(meta)).unwrap()).unwrap()
        };
        let (a, b) = (file(), file());
        assert_eq!(a, b);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["key31"], "31");
        assert_eq!(safetensors::SafeTensors::deserialize(&a).unwrap().len(), 1);
    }

    #[test]
    fn calibration_bytes_are_counted_once_per_codec_instance() {
        let d = 64;
        // Deterministic, anisotropic calibration vectors.
        let calib: Vec<f32> = (0..128 * d)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) / (1.0 + (i % d) as f32))
            .collect();
        let spec = dhurandhar_kv::CodecSpec::new(dhurandhar_kv::Codec::Spectral, 4, d);
        let c: Arc<dyn KvCodec> =
            Arc::from(dhurandhar_kv::build_codec(&spec, Some(&calib)).unwrap());
        let side = (c.side_bytes(KvRole::Key) + c.side_bytes(KvRole::Value)) as u64;
        assert!(side > 0, "spectral stores its calibration");
        let cc = CacheCodec::per_layer("spectral", vec![c.clone(), c.clone()]);
        assert_eq!(cc.stats.side_bytes, 2 * side);
        let mut stats = cc.stats;
        stats.key_values = 1000;
        stats.key_bytes = 500;
        let expected = (500 + 2 * side) as f64 * 8.0 / 1000.0;
        assert!((stats.bits_per_value().unwrap() - expected).abs() < 1e-12);
        // A codec without calibration adds nothing.
        let q8: Arc<dyn KvCodec> = Arc::from(
            dhurandhar_kv::build_codec(
                &dhurandhar_kv::CodecSpec::new(dhurandhar_kv::Codec::Q8_0, 8, d),
                None,
            )
            .unwrap(),
        );
        assert_eq!(CacheCodec::shared("q8_0", q8, 3).stats.side_bytes, 0);
    }
}
