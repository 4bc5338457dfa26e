//! KV codecs on numpy arrays: `Codec` (one codec built for one head_dim) and
//! `EncodedKV` (the packed bytes plus what decoding them needs).

use std::sync::Arc;

use dhurandhar::kv::{Codec, CodecHandle, KvRole, DEFAULT_SEED};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::arrays::{read_vectors, to_numpy};
use crate::{to_py, to_py_err};

pub(crate) fn parse_codec(name: &str) -> PyResult<Codec> {
    name.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: dhurandhar::dhurandhar_kv::KvError| PyValueError::new_err(e.to_string()))
}

fn parse_role(role: &str) -> PyResult<KvRole> {
    role.parse()
        .map_err(|e: dhurandhar::dhurandhar_kv::KvError| PyValueError::new_err(e.to_string()))
}

/// One KV codec for one head_dim. Thread-safe: encode and decode release the GIL, so
/// several Python threads encode in parallel.
#[pyclass(frozen, module = "dhurandhar._native", name = "Codec")]
pub(crate) struct PyCodec {
    h: Arc<CodecHandle>,
}

#[pymethods]
impl PyCodec {
    /// Build `codec` (a name such as "turbo", "spectral", "q4_0") at `bits` for
    /// vectors of `head_dim` values. SpectralQuant needs calibration samples
    /// (`[..., head_dim]` arrays; values default to the keys).
    #[new]
    #[pyo3(signature = (codec, bits, head_dim, seed = DEFAULT_SEED, calibration_keys = None, calibration_values = None))]
    fn new(
        py: Python<'_>,
        codec: &str,
        bits: u32,
        head_dim: usize,
        seed: u64,
        calibration_keys: Option<&Bound<'_, PyAny>>,
        calibration_values: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let codec = parse_codec(codec)?;
        let k = calibration_keys
            .map(|a| read_vectors(a, head_dim, "calibration keys"))
            .transpose()?;
        let v = calibration_values
            .map(|a| read_vectors(a, head_dim, "calibration values"))
            .transpose()?;
        let cal = match (&k, &v) {
            (Some(k), Some(v)) => Some((k.slice(), v.slice())),
            (Some(k), None) => Some((k.slice(), k.slice())),
            (None, Some(v)) => Some((v.slice(), v.slice())),
            (None, None) => None,
        };
        let h = py
            .allow_threads(|| CodecHandle::new(codec, bits, head_dim, seed, cal))
            .map_err(to_py_err)?;
        Ok(PyCodec { h: Arc::new(h) })
    }

    /// Canonical codec name.
    #[getter]
    fn name(&self) -> &'static str {
        self.h.codec().name()
    }
    #[getter]
    fn bits(&self) -> u32 {
        self.h.bits()
    }
    #[getter]
    fn head_dim(&self) -> usize {
        self.h.head_dim()
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.h.seed()
    }

    /// Tokens per encoded record for `role` ("key" or "value"); encode takes whole
    /// groups only.
    #[pyo3(signature = (role = "key"))]
    fn token_group(&self, role: &str) -> PyResult<usize> {
        Ok(self.h.token_group(parse_role(role)?))
    }

    /// Bytes stored once per head (SpectralQuant's calibration), not per token.
    #[pyo3(signature = (role = "key"))]
    fn side_bytes(&self, role: &str) -> PyResult<usize> {
        Ok(self.h.side_bytes(parse_role(role)?))
    }

    /// Encoded bytes of `tokens` vectors.
    #[pyo3(signature = (tokens, role = "key"))]
    fn encoded_len(&self, tokens: usize, role: &str) -> PyResult<usize> {
        Ok(self.h.encoded_len(parse_role(role)?, tokens))
    }

    /// Encode `kv` (`[..., head_dim]`, float32/float16) for `role`.
    #[pyo3(signature = (kv, role = "key"))]
    fn encode(&self, py: Python<'_>, kv: &Bound<'_, PyAny>, role: &str) -> PyResult<PyEncoded> {
        let role = parse_role(role)?;
        let x = read_vectors(kv, self.h.head_dim(), "kv")?;
        let s = x.slice();
        let h = &self.h;
        let data = py.allow_threads(|| h.encode(role, s)).map_err(to_py_err)?;
        Ok(PyEncoded {
            data,
            shape: x.shape.clone(),
            role,
            codec: h.codec(),
            bits: h.bits(),
            head_dim: h.head_dim(),
            seed: h.seed(),
        })
    }

    /// Decode an `EncodedKV` made by a codec of the same name, bits, head_dim and seed
    /// into a float32 array of its original shape.
    fn decode<'py>(&self, py: Python<'py>, encoded: &PyEncoded) -> PyResult<Bound<'py, PyAny>> {
        let h = &self.h;
        if (encoded.codec, encoded.bits, encoded.head_dim, encoded.seed)
            != (h.codec(), h.bits(), h.head_dim(), h.seed())
        {
            return Err(PyValueError::new_err(format!(
                "encoded by {} at {} bits, head_dim {}, seed {}; this codec is {} at {} bits, head_dim {}, seed {}",
                encoded.codec, encoded.bits, encoded.head_dim, encoded.seed,
                h.codec(), h.bits(), h.head_dim(), h.seed()
            )));
        }
        self.decode_raw(py, &encoded.data, encoded.shape.clone(), encoded.role)
    }

    /// Decode raw bytes (from `EncodedKV.data`) into a float32 array of `shape`
    /// (`[..., head_dim]`).
    #[pyo3(signature = (data, shape, role = "key"))]
    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        shape: Vec<usize>,
        role: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        if shape.last() != Some(&self.h.head_dim()) {
            return Err(PyValueError::new_err(format!(
                "shape {shape:?}: its last axis must be head_dim = {}",
                self.h.head_dim()
            )));
        }
        self.decode_raw(py, data, shape, parse_role(role)?)
    }

    /// Round-trip `kv` and measure it: cos_sim, mse, nmse, norm_preservation,
    /// bits_per_value, compression_vs_bf16 (and d_eff for SpectralQuant).
    #[pyo3(signature = (kv, role = "key"))]
    fn reconstruction<'py>(
        &self,
        py: Python<'py>,
        kv: &Bound<'py, PyAny>,
        role: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let role = parse_role(role)?;
        let x = read_vectors(kv, self.h.head_dim(), "kv")?;
        let s = x.slice();
        let h = &self.h;
        let r = py
            .allow_threads(|| h.reconstruction(role, s))
            .map_err(to_py_err)?;
        to_py(py, &r)
    }

    fn __repr__(&self) -> String {
        format!(
            "Codec('{}', bits={}, head_dim={}, seed={})",
            self.h.codec(),
            self.h.bits(),
            self.h.head_dim(),
            self.h.seed()
        )
    }
}

impl PyCodec {
    fn decode_raw<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        shape: Vec<usize>,
        role: KvRole,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= isize::MAX as usize / 4)
            .ok_or_else(|| PyValueError::new_err(format!("shape {shape:?} is too large")))?;
        let h = &self.h;
        let out = py
            .allow_threads(|| {
                let mut out = vec![0.0f32; n];
                h.decode(role, data, &mut out).map(|_| out)
            })
            .map_err(to_py_err)?;
        to_numpy(py, out, &shape)
    }
}

/// Encoded KV vectors: the packed bytes (`data`, `len()`), the original `shape`, the
/// role, and the codec that made them.
#[pyclass(frozen, module = "dhurandhar._native", name = "EncodedKV")]
pub(crate) struct PyEncoded {
    data: Vec<u8>,
    shape: Vec<usize>,
    role: KvRole,
    codec: Codec,
    bits: u32,
    head_dim: usize,
    seed: u64,
}

#[pymethods]
impl PyEncoded {
    /// The packed bytes (a copy, as `bytes`).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    /// Stored bytes.
    fn __len__(&self) -> usize {
        self.data.len()
    }
    #[getter]
    fn nbytes(&self) -> usize {
        self.data.len()
    }
    /// Shape of the array that was encoded.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }
    #[getter]
    fn role(&self) -> &'static str {
        self.role.as_str()
    }
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec.name()
    }
    #[getter]
    fn bits(&self) -> u32 {
        self.bits
    }
    #[getter]
    fn head_dim(&self) -> usize {
        self.head_dim
    }
    /// Stored bits per value.
    #[getter]
    fn bits_per_value(&self) -> f64 {
        let values: usize = self.shape.iter().product();
        self.data.len() as f64 * 8.0 / values.max(1) as f64
    }
    fn __repr__(&self) -> String {
        format!(
            "EncodedKV(codec='{}', bits={}, role='{}', shape={:?}, nbytes={})",
            self.codec,
            self.bits,
            self.role.as_str(),
            self.shape,
            self.data.len()
        )
    }
}

/// Names, aliases and supported bit widths of every codec (from the codec registry).
#[pyfunction]
fn codec_names(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    #[derive(serde::Serialize)]
    struct Entry {
        name: &'static str,
        aliases: &'static [&'static str],
        bits: &'static [u32],
        needs_calibration: bool,
    }
    let v: Vec<Entry> = Codec::ALL
        .iter()
        .map(|&c| Entry {
            name: c.name(),
            aliases: c.aliases(),
            bits: c.supported_bits(),
            needs_calibration: c.needs_calibration(),
        })
        .collect();
    to_py(py, &v)
}

/// `n` synthetic KV vectors of `head_dim` values drawn from `distribution` (the
/// generators `kv compare` uses), as a float32 array `[n, head_dim]`.
#[pyfunction]
#[pyo3(signature = (distribution, n, head_dim, seed = 0, head = 0, value = false))]
fn synthetic_kv<'py>(
    py: Python<'py>,
    distribution: &str,
    n: usize,
    head_dim: usize,
    seed: u64,
    head: usize,
    value: bool,
) -> PyResult<Bound<'py, PyAny>> {
    use dhurandhar::kv::Distribution;
    let dist: Distribution = distribution
        .parse()
        .map_err(|e: dhurandhar::dhurandhar_kv::KvError| PyValueError::new_err(e.to_string()))?;
    if head_dim == 0 || head_dim > dhurandhar::kv::MAX_HEAD_DIM {
        return Err(PyValueError::new_err(format!(
            "head_dim {head_dim} is out of range (1..={})",
            dhurandhar::kv::MAX_HEAD_DIM
        )));
    }
    if n == 0 || n.saturating_mul(head_dim) > dhurandhar::kv::MAX_SYNTH_VALUES {
        return Err(PyValueError::new_err(format!(
            "n × head_dim must be in 1..={}",
            dhurandhar::kv::MAX_SYNTH_VALUES
        )));
    }
    let v = py.allow_threads(|| {
        dhurandhar::dhurandhar_kv::synth::generate(dist, n, head_dim, seed, head, value)
    });
    to_numpy(py, v, &[n, head_dim])
}

/// Whether `kv` would be read in place (no copy): a C-contiguous float32 array.
#[pyfunction]
fn reads_in_place(kv: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(read_vectors(kv, 0, "kv")?.zero_copy())
}

/// A model's whole KV cache compressed layer by layer (the core's
/// `KvCacheCompressor`): per KV head, shared-KV layers skipped, sliding layers kept at
/// their window. `model` is a built-in name, profile or checkpoint path; `arch` the
/// fields of a Python-built architecture instead.
#[pyclass(frozen, module = "dhurandhar._native", name = "KvCacheCompressor")]
pub(crate) struct PyCompressor {
    inner: dhurandhar::dhurandhar_kv::KvCacheCompressor,
    layers: usize,
}

#[pymethods]
impl PyCompressor {
    #[new]
    #[pyo3(signature = (codec, bits, model = None, arch = None, seed = DEFAULT_SEED))]
    fn new(
        py: Python<'_>,
        codec: &str,
        bits: u32,
        model: Option<String>,
        arch: Option<&Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<Self> {
        let codec = parse_codec(codec)?;
        let arch = match (model, arch) {
            (Some(m), None) => {
                py.allow_threads(|| dhurandhar::model::resolve_model(&m))
                    .map_err(to_py_err)?
                    .arch
            }
            (None, Some(a)) => crate::jobs::arch_from(a)?,
            _ => return Err(PyValueError::new_err("give exactly one of model or arch")),
        };
        let layers = arch.layers().len();
        let inner = py
            .allow_threads(|| {
                dhurandhar::dhurandhar_kv::KvCacheCompressor::new(&arch, codec, bits, seed)
            })
            .map_err(|e| to_py_err(e.into()))?;
        Ok(PyCompressor { inner, layers })
    }

    /// Decoder layers of the model.
    #[getter]
    fn num_layers(&self) -> usize {
        self.layers
    }

    /// Compress layer `layer`'s K or V (`[tokens, kv_heads, head_dim]`, float32/float16);
    /// `None` for a shared-KV layer (it stores nothing of its own).
    #[pyo3(signature = (layer, kv, role = "key"))]
    fn compress_layer(
        &self,
        py: Python<'_>,
        layer: usize,
        kv: &Bound<'_, PyAny>,
        role: &str,
    ) -> PyResult<Option<PyCompressedLayer>> {
        let role = parse_role(role)?;
        let x = read_vectors(kv, 0, "kv")?;
        let s = x.slice();
        let inner = &self.inner;
        let c = py
            .allow_threads(|| inner.compress_layer(layer, role, s))
            .map_err(|e| to_py_err(e.into()))?;
        Ok(c.map(|inner| PyCompressedLayer { inner }))
    }

    /// The layer back as float32 `[tokens, kv_heads, head_dim]` (the kept tokens).
    fn decompress_layer<'py>(
        &self,
        py: Python<'py>,
        compressed: &PyCompressedLayer,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (inner, c) = (&self.inner, &compressed.inner);
        let out = py
            .allow_threads(|| inner.decompress_layer(c))
            .map_err(|e| to_py_err(e.into()))?;
        let heads = c.heads.len();
        let d = out.len() / (c.tokens * heads).max(1);
        to_numpy(py, out, &[c.tokens, heads, d])
    }
}

/// One compressed layer: per KV head the encoded whole groups plus the partial tail.
#[pyclass(frozen, module = "dhurandhar._native", name = "CompressedLayer")]
pub(crate) struct PyCompressedLayer {
    inner: dhurandhar::dhurandhar_kv::model::CompressedLayer,
}

#[pymethods]
impl PyCompressedLayer {
    #[getter]
    fn layer(&self) -> usize {
        self.inner.layer
    }
    #[getter]
    fn role(&self) -> &'static str {
        self.inner.role.as_str()
    }
    /// Tokens kept (a sliding layer keeps its window).
    #[getter]
    fn tokens(&self) -> usize {
        self.inner.tokens
    }
    /// Tokens dropped from the front by the sliding window.
    #[getter]
    fn dropped(&self) -> usize {
        self.inner.dropped
    }
    /// Stored bytes: encoded groups plus the f32 partial tails.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner
            .heads
            .iter()
            .map(|(enc, tail)| enc.len() + tail.len() * 4)
            .sum()
    }
    fn __repr__(&self) -> String {
        format!(
            "CompressedLayer(layer={}, role='{}', tokens={}, dropped={}, nbytes={})",
            self.inner.layer,
            self.inner.role.as_str(),
            self.inner.tokens,
            self.inner.dropped,
            self.nbytes()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCompressor>()?;
    m.add_class::<PyCompressedLayer>()?;
    m.add_function(wrap_pyfunction!(reads_in_place, m)?)?;
    m.add_class::<PyCodec>()?;
    m.add_class::<PyEncoded>()?;
    m.add_function(wrap_pyfunction!(codec_names, m)?)?;
    m.add_function(wrap_pyfunction!(synthetic_kv, m)?)?;
    Ok(())
}
