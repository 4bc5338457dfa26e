//! The facade's jobs as Python functions: arguments → options struct → facade →
//! report through serde. Every report is the dict the CLI prints with `--json`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dhurandhar::dhurandhar_model::ModelArchitecture;
use dhurandhar::dhurandhar_plan::DeviceProfile;
use dhurandhar::generate::WeightMode;
use dhurandhar::{CancelToken, NoProgress};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{read_vectors, to_numpy};
use crate::codecs::parse_codec;
use crate::progress::PyProgress;
use crate::{to_py, to_py_err};

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn codecs(names: &[String]) -> PyResult<Vec<dhurandhar::kv::Codec>> {
    let mut out = Vec::new();
    for n in names {
        if n.trim().eq_ignore_ascii_case("all") {
            out.extend(dhurandhar::kv::Codec::ALL);
        } else {
            out.push(parse_codec(n)?);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------ models, devices

/// Every built-in model (the `models --json` document).
#[pyfunction]
fn list_models(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    to_py(py, &dhurandhar::catalog::models())
}

/// The YAML profile of a built-in model.
#[pyfunction]
fn model_yaml(name: &str) -> PyResult<String> {
    dhurandhar::catalog::model_yaml(name).map_err(to_py_err)
}

/// Resolve a built-in name, a `.yaml` profile or a checkpoint path: `{arch, weights,
/// origin}`.
#[pyfunction]
fn resolve_model<'py>(py: Python<'py>, spec: &str) -> PyResult<Bound<'py, PyAny>> {
    let spec = spec.to_string();
    let m = py
        .allow_threads(|| dhurandhar::model::resolve_model(&spec))
        .map_err(to_py_err)?;
    to_py(py, &m)
}

/// Check an architecture given as fields (the YAML profile's names) and return it
/// with every default filled in.
#[pyfunction]
fn model_from_fields<'py>(
    py: Python<'py>,
    fields: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let arch = arch_from(fields)?;
    to_py(py, &arch)
}

pub(crate) fn arch_from(fields: &Bound<'_, PyAny>) -> PyResult<ModelArchitecture> {
    let v: serde_json::Value = pythonize::depythonize(fields)?;
    // JSON is YAML: the profile loader's checks (unknown fields, depth, validation)
    // apply to Python-built architectures too.
    ModelArchitecture::from_yaml_str(&v.to_string(), "the given architecture")
        .map_err(|e| to_py_err(e.into()))
}

/// The `devices --json` document; `extra` names more devices (slugs or YAML files).
#[pyfunction]
#[pyo3(signature = (extra = Vec::new()))]
fn list_devices(py: Python<'_>, extra: Vec<String>) -> PyResult<Bound<'_, PyAny>> {
    let r = dhurandhar::catalog::devices(&extra).map_err(to_py_err)?;
    to_py(py, &r)
}

/// One device: a built-in slug or a YAML device profile.
#[pyfunction]
fn resolve_device<'py>(py: Python<'py>, spec: &str) -> PyResult<Bound<'py, PyAny>> {
    let d = dhurandhar::plan::resolve_device(spec).map_err(to_py_err)?;
    to_py(py, &d)
}

fn device_from(fields: &Bound<'_, PyAny>) -> PyResult<DeviceProfile> {
    let d: DeviceProfile = pythonize::depythonize(fields)?;
    d.validate().map_err(|e| {
        to_py_err(dhurandhar::Error::from(e).context(format!("invalid device `{}`", d.slug)))
    })?;
    Ok(d)
}

/// Check a custom device given as fields and return it.
#[pyfunction]
fn device_from_fields<'py>(
    py: Python<'py>,
    fields: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &device_from(fields)?)
}

// ------------------------------------------------------------ analyze

/// Plan a model on devices (the `analyze --json` document).
#[pyfunction]
#[pyo3(signature = (
    model = None, arch = None, context_tokens = 32768, weight_format = None,
    quant_bits = None, kv_codec = None, kv_bits = None, strip_audio = true,
    strip_vision = false, devices = Vec::new(), custom_devices = Vec::new(),
    ram_mb = None, flash_gbps = None, target_decode_tps = 15.0, ple_hot_tokens = None,
    ple_layout = "row", page_kib = 4, prefill_chunk = 512, runtime_overhead_mb = None,
    min_context_tokens = 1024
))]
#[allow(clippy::too_many_arguments)]
fn analyze<'py>(
    py: Python<'py>,
    model: Option<String>,
    arch: Option<&Bound<'py, PyAny>>,
    context_tokens: u64,
    weight_format: Option<String>,
    quant_bits: Option<f64>,
    kv_codec: Option<String>,
    kv_bits: Option<f64>,
    strip_audio: bool,
    strip_vision: bool,
    devices: Vec<String>,
    custom_devices: Vec<Bound<'py, PyAny>>,
    ram_mb: Option<f64>,
    flash_gbps: Option<f64>,
    target_decode_tps: f64,
    ple_hot_tokens: Option<u64>,
    ple_layout: &str,
    page_kib: u64,
    prefill_chunk: u64,
    runtime_overhead_mb: Option<f64>,
    min_context_tokens: u64,
) -> PyResult<Bound<'py, PyAny>> {
    use dhurandhar::plan::{AnalyzeOptions, CustomDevice, PleLayout, WeightChoice};
    let defaults = AnalyzeOptions::default();
    let opts = AnalyzeOptions {
        model: model.unwrap_or(defaults.model.clone()),
        context_tokens,
        weights: match (weight_format, quant_bits) {
            (Some(f), _) => WeightChoice::Format(f),
            (None, Some(b)) => WeightChoice::PlainBits(b),
            (None, None) => defaults.weights.clone(),
        },
        kv_codec: kv_codec.as_deref().map(parse_codec).transpose()?,
        kv_bits,
        strip_audio,
        strip_vision,
        devices,
        custom_device: match (ram_mb, flash_gbps) {
            (Some(ram_mb), Some(flash_gbps)) => Some(CustomDevice { ram_mb, flash_gbps }),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "ram_mb and flash_gbps go together: give both or neither",
                ))
            }
        },
        target_decode_tps,
        ple_hot_tokens,
        ple_layout: match ple_layout {
            "row" => PleLayout::Row,
            "per-layer" | "per_layer" => PleLayout::PerLayer,
            other => {
                return Err(bad(format!(
                    "ple_layout must be \"row\" or \"per-layer\", not {other:?}"
                )))
            }
        },
        page_kib,
        prefill_chunk,
        runtime_overhead_mb,
        min_context_tokens,
    };
    let arch = arch.map(arch_from).transpose()?;
    let extra = custom_devices
        .iter()
        .map(device_from)
        .collect::<PyResult<Vec<_>>>()?;
    let r = py
        .allow_threads(|| dhurandhar::plan::analyze_with(&opts, arch, &extra))
        .map_err(to_py_err)?;
    to_py(py, &r)
}

// ------------------------------------------------------------ kv jobs

/// Codec × bits sweep on synthetic KV, a tensor file, or in-memory `keys` and
/// `values` arrays (the `kv compare --json` document).
#[pyfunction]
#[pyo3(signature = (
    codecs = vec!["all".to_string()], bits = vec![2, 3, 4, 6, 8], data = None, keys = None,
    values = None, head_dim = 256,
    kv_heads = 4, seq_len = 2048, distribution = "outlier-channels", tensor = None,
    layers = Vec::new(), queries = 64, amortize_tokens = None, timing = true, seed = 0,
    progress = None
))]
#[allow(clippy::too_many_arguments)]
fn compare<'py>(
    py: Python<'py>,
    codecs: Vec<String>,
    bits: Vec<u32>,
    data: Option<PathBuf>,
    keys: Option<&Bound<'py, PyAny>>,
    values: Option<&Bound<'py, PyAny>>,
    head_dim: usize,
    kv_heads: usize,
    seq_len: usize,
    distribution: &str,
    tensor: Option<String>,
    layers: Vec<usize>,
    queries: usize,
    amortize_tokens: Option<usize>,
    timing: bool,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    use dhurandhar::kv::{CompareOptions, KvArrays, KvData};
    let data = match (data, keys, values) {
        (None, None, None) => KvData::Synthetic,
        (Some(p), None, None) => KvData::File(p),
        (None, Some(k), Some(v)) => {
            let k = read_vectors(k, 0, "keys")?;
            let v = read_vectors(v, 0, "values")?;
            if k.shape != v.shape {
                return Err(bad(format!(
                    "keys have shape {:?} but values {:?}; give K and V of one shape",
                    k.shape, v.shape
                )));
            }
            KvData::Arrays(KvArrays {
                shape: k.shape.clone(),
                keys: k.slice().to_vec(),
                values: v.slice().to_vec(),
            })
        }
        (Some(_), _, _) => {
            return Err(bad(
                "give either data (a file) or keys and values, not both",
            ))
        }
        _ => return Err(bad("give both keys and values (one shape [..., head_dim])")),
    };
    let opts = CompareOptions {
        data,
        head_dim,
        kv_heads,
        seq_len,
        distribution: distribution
            .parse()
            .map_err(|e: dhurandhar::dhurandhar_kv::KvError| bad(e.to_string()))?,
        bits,
        codecs: self::codecs(&codecs)?,
        tensor,
        layers,
        queries,
        amortize_tokens,
        timing,
        seed,
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::kv::compare(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// Quality and footprint of a codec on a model's KV geometry (the `kv bench --json`
/// document).
#[pyfunction]
#[pyo3(signature = (
    model = "gemma4-e2b".to_string(), seq_len = 32768, codec = "turbo-mse".to_string(), bits = 4,
    distribution = "outlier-channels", samples = 1024, queries = 64, seed = 0
))]
#[allow(clippy::too_many_arguments)]
fn kv_bench<'py>(
    py: Python<'py>,
    model: String,
    seq_len: u64,
    codec: String,
    bits: u32,
    distribution: &str,
    samples: usize,
    queries: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = dhurandhar::kv::BenchOptions {
        model,
        seq_len,
        codec: parse_codec(&codec)?,
        bits,
        distribution: distribution
            .parse()
            .map_err(|e: dhurandhar::dhurandhar_kv::KvError| bad(e.to_string()))?,
        samples,
        queries,
        seed,
    };
    let r = py
        .allow_threads(|| dhurandhar::kv::bench(&opts, &NoProgress, &CancelToken::new()))
        .map_err(to_py_err)?;
    to_py(py, &r)
}

/// Encode/decode throughput in Rust (the `kv speed --json` document).
#[pyfunction]
#[pyo3(signature = (
    head_dims = vec![128], codecs = vec!["turbo-mse".to_string()], bits = 4, threads = vec![1, 0],
    role = "key", vectors = 4096, min_seconds = 0.3
))]
#[allow(clippy::too_many_arguments)]
fn kv_speed<'py>(
    py: Python<'py>,
    head_dims: Vec<usize>,
    codecs: Vec<String>,
    bits: u32,
    threads: Vec<usize>,
    role: &str,
    vectors: usize,
    min_seconds: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = dhurandhar::kv::SpeedOptions {
        head_dims,
        codecs: self::codecs(&codecs)?,
        bits,
        threads,
        role: role
            .parse()
            .map_err(|e: dhurandhar::dhurandhar_kv::KvError| bad(e.to_string()))?,
        vectors,
        min_seconds,
    };
    let r = py
        .allow_threads(|| dhurandhar::kv::speed(&opts, &NoProgress, &CancelToken::new()))
        .map_err(to_py_err)?;
    to_py(py, &r)
}

// ------------------------------------------------------------ LoRA

/// What a LoRA job costs on a model (the `lora dry-run --json` document). `config`: a job
/// file; the other arguments override its fields.
#[pyfunction]
#[pyo3(signature = (model = None, config = None, r = None, max_seq_length = None, batch_size = None, base_format = "nf4"))]
fn lora_dry_run<'py>(
    py: Python<'py>,
    model: Option<String>,
    config: Option<PathBuf>,
    r: Option<usize>,
    max_seq_length: Option<usize>,
    batch_size: Option<usize>,
    base_format: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let report = py
        .allow_threads(|| {
            let mut job = match &config {
                Some(p) => dhurandhar::lora::read_job(p)?,
                None => dhurandhar::lora::default_job(),
            };
            if let Some(r) = r {
                job.lora.r = r;
            }
            if let Some(s) = max_seq_length {
                job.training.max_seq_length = s;
            }
            if let Some(b) = batch_size {
                job.training.batch_size = b;
            }
            dhurandhar::lora::dry_run(&dhurandhar::lora::DryRunOptions {
                job,
                model,
                base_format: base_format.to_string(),
            })
        })
        .map_err(to_py_err)?;
    to_py(py, &report)
}

/// Train a LoRA job on the CPU (the `lora train --json` document). `config`: a job file
/// whose `base_model` is a GGUF; `max_steps` and `output_dir` override its fields;
/// `resume` continues from the newest checkpoint in the output directory.
#[pyfunction]
#[pyo3(signature = (config, threads = 0, resume = false, max_steps = None, output_dir = None, progress = None))]
fn lora_train<'py>(
    py: Python<'py>,
    config: PathBuf,
    threads: usize,
    resume: bool,
    max_steps: Option<usize>,
    output_dir: Option<PathBuf>,
    progress: Option<PyObject>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut job = dhurandhar::lora::read_job(&config).map_err(to_py_err)?;
    if let Some(n) = max_steps {
        job.training.max_steps = n;
    }
    if let Some(d) = output_dir {
        job.output_dir = d.display().to_string();
    }
    let opts = dhurandhar::lora::TrainOptions {
        job,
        threads,
        resume,
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::lora::train(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

// ------------------------------------------------------------ real models

/// What a checkpoint holds (the `inspect --json` document).
#[pyfunction]
fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyAny>> {
    let opts = dhurandhar::inspect::InspectOptions { path };
    let r = py
        .allow_threads(|| dhurandhar::inspect::inspect(&opts))
        .map_err(to_py_err)?;
    to_py(py, &r)
}

/// A loaded GGUF model, shared by every generation started from it.
#[pyclass(frozen, module = "dhurandhar._native", name = "Model")]
struct PyModel {
    path: PathBuf,
    model: Arc<dhurandhar::dhurandhar_engine::Model>,
    weights: WeightMode,
    ram_budget: Option<u64>,
    experts: dhurandhar::generate::ExpertOptions,
}

/// `weights` and `ram_budget` as Python gives them (`"stream"`, `"48MiB"` or bytes).
fn weight_options(weights: &str, ram_budget: Option<&str>) -> PyResult<(WeightMode, Option<u64>)> {
    let mode = weights
        .parse::<WeightMode>()
        .map_err(|e| PyValueError::new_err(format!("weights: {e}")))?;
    let budget = ram_budget
        .map(dhurandhar::units::parse_size)
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("ram_budget: {e}")))?;
    Ok((mode, budget))
}

#[pymethods]
impl PyModel {
    /// Load a GGUF model with its weights mapped, resident or streamed (under
    /// `ram_budget`, a size such as `"48MiB"` or bytes). A streamed mixture-of-experts
    /// model caches its experts in `expert_cache` (a size; default: what the budget
    /// leaves), reads them ahead unless `expert_prefetch` is false, and evicts as
    /// `expert_eviction` says (`"next-use"` or `"lru"`).
    #[staticmethod]
    #[pyo3(signature = (path, weights = "mmap", ram_budget = None, expert_cache = None, expert_prefetch = true, expert_eviction = "next-use"))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        weights: &str,
        ram_budget: Option<String>,
        expert_cache: Option<String>,
        expert_prefetch: bool,
        expert_eviction: &str,
    ) -> PyResult<Self> {
        let (mode, budget) = weight_options(weights, ram_budget.as_deref())?;
        let experts = dhurandhar::generate::ExpertOptions {
            cache: expert_cache
                .as_deref()
                .map(dhurandhar::units::parse_size)
                .transpose()
                .map_err(|e| PyValueError::new_err(format!("expert_cache: {e}")))?,
            prefetch: expert_prefetch,
            eviction: expert_eviction
                .parse()
                .map_err(|e: String| PyValueError::new_err(format!("expert_eviction: {e}")))?,
        };
        let model = py
            .allow_threads(|| dhurandhar::generate::load_model_with(&path, mode))
            .map_err(to_py_err)?;
        Ok(PyModel {
            path,
            model,
            weights: mode,
            ram_budget: budget,
            experts,
        })
    }

    #[getter]
    fn weights(&self) -> &'static str {
        self.weights.name()
    }

    #[getter]
    fn ram_budget(&self) -> Option<u64> {
        self.ram_budget
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Start a generation; iterate it for text pieces. `adapters`: PEFT LoRA directories
    /// with the weight of each update, applied on top of this model for this generation.
    /// `messages`: `(role, content)` pairs rendered with the GGUF's chat template
    /// instead of `prompt`.
    #[pyo3(signature = (prompt, max_tokens = 64, temperature = 0.0, top_p = 1.0, seed = 0, threads = None, f32_activations = false, adapters = Vec::new(), messages = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: String,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: u64,
        threads: Option<usize>,
        f32_activations: bool,
        adapters: Vec<(PathBuf, f32)>,
        messages: Option<Vec<(String, String)>>,
    ) -> PyResult<PyGeneration> {
        let prompt = match messages {
            Some(m) => {
                let m: Vec<_> = m
                    .into_iter()
                    .map(|(role, content)| dhurandhar::generate::ChatMessage { role, content })
                    .collect();
                dhurandhar::generate::chat_prompt(&self.model, &m)
                    .map_err(to_py_err)?
                    .0
            }
            None => prompt,
        };
        let opts = dhurandhar::generate::GenerateOptions {
            model: self.path.clone(),
            prompt,
            max_tokens,
            temperature,
            top_p,
            seed,
            threads,
            f32_activations,
            weights: self.weights,
            ram_budget: self.ram_budget,
            experts: self.experts,
            adapters: adapters
                .into_iter()
                .map(|(path, weight)| dhurandhar::lora::AdapterSpec { path, weight })
                .collect(),
        };
        let model = self.model.clone();
        let g = py
            .allow_threads(|| dhurandhar::generate::Generator::with_model(model, &opts))
            .map_err(to_py_err)?;
        Ok(PyGeneration {
            g: Mutex::new(Some(g)),
        })
    }
}

/// A running generation: an iterator of text pieces; `report()` gives the
/// `generate --json` document (final once the iterator is exhausted).
#[pyclass(frozen, module = "dhurandhar._native", name = "Generation")]
struct PyGeneration {
    g: Mutex<Option<dhurandhar::generate::Generator>>,
}

#[pymethods]
impl PyGeneration {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        use dhurandhar::generate::GenerateEvent;
        loop {
            let step = py.allow_threads(|| {
                let mut guard = self.g.lock().map_err(|_| "generation poisoned")?;
                Ok::<_, &str>(guard.as_mut().and_then(|g| g.next()))
            });
            let step = step.map_err(bad)?;
            match step {
                None => return Err(PyStopIteration::new_err(())),
                Some(Err(e)) => return Err(to_py_err(e)),
                // A token that completes no character yet: keep going.
                Some(Ok(GenerateEvent::Token { text, .. })) if text.is_empty() => {
                    py.check_signals()?;
                }
                Some(Ok(GenerateEvent::Token { text, .. })) => return Ok(text),
                Some(Ok(GenerateEvent::End { text, .. })) if !text.is_empty() => return Ok(text),
                Some(Ok(GenerateEvent::End { .. })) => {}
            }
        }
    }

    /// The run so far (the `generate --json` document).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let guard = self.g.lock().map_err(|_| bad("generation poisoned"))?;
        match guard.as_ref() {
            Some(g) => to_py(py, &g.report()),
            None => Err(bad("generation is gone")),
        }
    }
}

/// Prefill and decode tokens/s per thread count, and peak RSS (the `generate --bench
/// --json` document).
#[pyfunction]
#[pyo3(signature = (model, prompt_tokens = 256, decode_tokens = 64, threads = vec![1, 2], repeats = 3, progress = None, weights = "mmap", ram_budget = None))]
#[allow(clippy::too_many_arguments)]
fn generate_bench<'py>(
    py: Python<'py>,
    model: PathBuf,
    prompt_tokens: usize,
    decode_tokens: usize,
    threads: Vec<usize>,
    repeats: usize,
    progress: Option<Py<PyAny>>,
    weights: &str,
    ram_budget: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let (weights, ram_budget) = weight_options(weights, ram_budget.as_deref())?;
    let opts = dhurandhar::generate::BenchOptions {
        model,
        prompt_tokens,
        decode_tokens,
        threads,
        repeats,
        weights,
        ram_budget,
        experts: Default::default(),
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::generate::bench(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// Perplexity with the exact cache and with each codec (the `eval --json` document).
#[pyfunction]
#[pyo3(signature = (
    model, text_file, codecs = Vec::new(), bits = 4, max_tokens = 512, chunk = 128,
    calibration_tokens = 64, seed = dhurandhar::kv::DEFAULT_SEED, threads = None,
    q8_activations = false, progress = None, weights = "mmap", ram_budget = None
))]
#[allow(clippy::too_many_arguments)]
fn eval<'py>(
    py: Python<'py>,
    model: PathBuf,
    text_file: PathBuf,
    codecs: Vec<String>,
    bits: u32,
    max_tokens: usize,
    chunk: usize,
    calibration_tokens: usize,
    seed: u64,
    threads: Option<usize>,
    q8_activations: bool,
    progress: Option<Py<PyAny>>,
    weights: &str,
    ram_budget: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let (weights, ram_budget) = weight_options(weights, ram_budget.as_deref())?;
    let opts = dhurandhar::eval::EvalOptions {
        model,
        text_file,
        codecs: self::codecs(&codecs)?,
        bits,
        max_tokens,
        chunk,
        calibration_tokens,
        seed,
        threads,
        q8_activations,
        weights,
        ram_budget,
        experts: Default::default(),
        adapters: Vec::new(),
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::eval::eval(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// Run a model over a text, save its K/V/Q as safetensors at `out` (the `kv capture
/// --json` document).
#[pyfunction]
#[pyo3(signature = (model, text_file, out, max_tokens = 256, threads = None, progress = None))]
fn capture_kv<'py>(
    py: Python<'py>,
    model: PathBuf,
    text_file: PathBuf,
    out: PathBuf,
    max_tokens: usize,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = dhurandhar::kv::CaptureOptions {
        model,
        text_file,
        out,
        max_tokens,
        threads,
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::kv::capture(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// Every float tensor of a safetensors or `.npy` KV file as float32 arrays.
#[pyfunction]
fn read_kv_file<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let file = py
        .allow_threads(|| {
            let bytes = dhurandhar::dhurandhar_io::read_bounded(
                &path,
                dhurandhar::kv::MAX_DATA_BYTES,
                "a KV tensor file",
            )?;
            let f = if bytes.starts_with(b"\x93NUMPY") {
                dhurandhar::dhurandhar_kv::tensorfile::parse_npy(&bytes)
            } else {
                dhurandhar::dhurandhar_kv::tensorfile::parse_safetensors(&bytes, |_| true)
            };
            f.map_err(|e| {
                dhurandhar::Error::from(e)
                    .context(format!("cannot read KV tensors from {}", path.display()))
            })
        })
        .map_err(to_py_err)?;
    let d = PyDict::new(py);
    for t in file.tensors {
        d.set_item(&t.name, to_numpy(py, t.data, &t.shape)?)?;
    }
    Ok(d)
}

// ------------------------------------------------------------ weights

/// Pack a checkpoint into a `.dhp` (the `pack --json` document).
#[pyfunction]
#[pyo3(signature = (input, output, mode = "lossless", bits = None, group = None, residual_frac = None, chunk_kib = 1024, min_plane_saving = None, progress = None))]
#[allow(clippy::too_many_arguments)]
fn pack<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    mode: &str,
    bits: Option<u8>,
    group: Option<usize>,
    residual_frac: Option<f64>,
    chunk_kib: usize,
    min_plane_saving: Option<f64>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    use dhurandhar::pack::{PackMode, PackOptions};
    let d = PackOptions::default();
    let opts = PackOptions {
        input,
        output,
        mode: match mode {
            "lossless" => PackMode::Lossless,
            "quant-residual" | "quant_residual" => PackMode::QuantResidual,
            other => {
                return Err(bad(format!(
                    "mode must be \"lossless\" or \"quant-residual\", not {other:?}"
                )))
            }
        },
        bits: bits.unwrap_or(d.bits),
        group: group.unwrap_or(d.group),
        residual_frac: residual_frac.unwrap_or(d.residual_frac),
        chunk_kib,
        min_plane_saving,
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::pack::pack(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// A `.dhp` back to safetensors (the `unpack --json` document).
#[pyfunction]
#[pyo3(signature = (input, output, progress = None))]
fn unpack<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = dhurandhar::pack::UnpackOptions { input, output };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::pack::unpack(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// Check a `.dhp` (the `verify --json` document).
#[pyfunction]
#[pyo3(signature = (input, quick = false, progress = None))]
fn verify<'py>(
    py: Python<'py>,
    input: PathBuf,
    quick: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = dhurandhar::pack::VerifyOptions { input, quick };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::pack::verify(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

/// What a `.dhp` holds and how well it compressed (the `pack-stats --json` document).
#[pyfunction]
fn pack_stats(py: Python<'_>, input: PathBuf) -> PyResult<Bound<'_, PyAny>> {
    let r = py
        .allow_threads(|| dhurandhar::pack::stats(&input))
        .map_err(to_py_err)?;
    to_py(py, &r)
}

/// Named tensors of a `.dhp` pack or a checkpoint, read one at a time without
/// unpacking the file.
#[pyclass(frozen, module = "dhurandhar._native", name = "TensorReader")]
struct PyTensorReader {
    src: dhurandhar::pack::Tensors,
}

#[pymethods]
impl PyTensorReader {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let src = py
            .allow_threads(|| dhurandhar::pack::open_tensors(&path))
            .map_err(to_py_err)?;
        Ok(PyTensorReader { src })
    }

    /// `[(name, dtype, shape, n_bytes)]` in file order.
    fn list(&self) -> Vec<(String, String, Vec<u64>, u64)> {
        use dhurandhar::dhurandhar_checkpoint::TensorSource;
        self.src
            .list_tensors()
            .into_iter()
            .map(|t| (t.name, format!("{:?}", t.dtype), t.shape, t.n_bytes))
            .collect()
    }

    /// The stored bytes of one tensor as a uint8 array (decoded from the pack's
    /// chunks with the GIL released; the Python side views it as its dtype).
    fn read_bytes<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<u8>>> {
        use dhurandhar::dhurandhar_checkpoint::TensorSource;
        let Some(meta) = self.src.list_tensors().into_iter().find(|t| t.name == name) else {
            return Err(pyo3::exceptions::PyKeyError::new_err(name.to_string()));
        };
        let n = usize::try_from(meta.n_bytes).map_err(|_| bad("tensor too large"))?;
        let arr = PyArray1::<u8>::zeros(py, n, false);
        {
            let mut rw = arr.readwrite();
            let buf = rw.as_slice_mut().expect("fresh array is contiguous");
            let src = &self.src;
            py.allow_threads(|| src.read_tensor_into(name, buf))
                .map_err(to_py_err)?;
        }
        Ok(arr)
    }
}

// ------------------------------------------------------------ profile

/// mmap-profile a synthetic PLE-shaped table or a real file region (the
/// `mmap-profile --json` document). `progress(done, total, label)` is called as it
/// runs; Ctrl-C stops it with `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (
    model = "gemma4-e2b".to_string(), scale = 0.1, cache_dir = None, file = None, tensor = None,
    offset = None, length = None, row_bytes = None, bits = 4, num_tokens = 1000,
    warmup_tokens = 50, target_tps = 15.0, patterns = Vec::new(), modes = Vec::new(),
    measure_memory = false, seed = 0, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn mmap_profile<'py>(
    py: Python<'py>,
    model: String,
    scale: f64,
    cache_dir: Option<PathBuf>,
    file: Option<PathBuf>,
    tensor: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
    row_bytes: Option<u64>,
    bits: u32,
    num_tokens: u64,
    warmup_tokens: u64,
    target_tps: f64,
    patterns: Vec<String>,
    modes: Vec<String>,
    measure_memory: bool,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    use dhurandhar::dhurandhar_profile::{Mode, Pattern};
    use dhurandhar::profile::{FileRegion, ProfileOptions, TableSource};
    let d = ProfileOptions::default();
    let table = match (file, tensor, offset, length) {
        (None, None, None, None) => TableSource::Synthetic {
            model,
            scale,
            cache_dir,
        },
        (Some(path), Some(t), None, None) => TableSource::File {
            path,
            region: FileRegion::Tensor(t),
            row_bytes,
            slices: None,
        },
        (Some(path), None, o, Some(length)) => TableSource::File {
            path,
            region: FileRegion::Bytes {
                offset: o.unwrap_or(0),
                length,
            },
            row_bytes,
            slices: None,
        },
        _ => {
            return Err(bad(
                "give a file with either tensor or length (and offset), or no file for a synthetic table",
            ))
        }
    };
    let patterns = if patterns.is_empty() {
        d.patterns.clone()
    } else {
        patterns
            .iter()
            .map(|p| Pattern::parse(p).ok_or_else(|| bad(format!("unknown pattern {p:?}"))))
            .collect::<PyResult<_>>()?
    };
    let modes = if modes.is_empty() {
        d.modes.clone()
    } else {
        modes
            .iter()
            .map(|m| match m.as_str() {
                "cold" => Ok(Mode::Cold),
                "warm" => Ok(Mode::Warm),
                _ => Err(bad(format!("mode must be \"cold\" or \"warm\", not {m:?}"))),
            })
            .collect::<PyResult<_>>()?
    };
    let opts = ProfileOptions {
        table,
        bits,
        num_tokens,
        warmup_tokens,
        target_tps,
        patterns,
        modes,
        measure_memory,
        seed,
        ..d
    };
    let p = PyProgress::new(progress, CancelToken::new());
    let cancel = p.cancel_token();
    let r = py.allow_threads(|| dhurandhar::profile::run(&opts, &p, &cancel));
    to_py(py, &p.finish(r)?)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(list_models, m)?)?;
    m.add_function(wrap_pyfunction!(model_yaml, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_model, m)?)?;
    m.add_function(wrap_pyfunction!(model_from_fields, m)?)?;
    m.add_function(wrap_pyfunction!(list_devices, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_device, m)?)?;
    m.add_function(wrap_pyfunction!(device_from_fields, m)?)?;
    m.add_function(wrap_pyfunction!(analyze, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(kv_bench, m)?)?;
    m.add_function(wrap_pyfunction!(kv_speed, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(lora_dry_run, m)?)?;
    m.add_function(wrap_pyfunction!(lora_train, m)?)?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyGeneration>()?;
    m.add_function(wrap_pyfunction!(eval, m)?)?;
    m.add_function(wrap_pyfunction!(generate_bench, m)?)?;
    m.add_function(wrap_pyfunction!(capture_kv, m)?)?;
    m.add_function(wrap_pyfunction!(read_kv_file, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(pack_stats, m)?)?;
    m.add_class::<PyTensorReader>()?;
    m.add_function(wrap_pyfunction!(mmap_profile, m)?)?;
    Ok(())
}
