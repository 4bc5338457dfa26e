//! The JSON API under `/api/…`: thin handlers that turn query values or a JSON body
//! into a facade options struct, call the facade on a blocking thread, and answer
//! with its report. File paths go through [`AllowList::resolve`] first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dhurandhar::dhurandhar_engine::Model;
use dhurandhar::dhurandhar_model::{registry, ModelArchitecture};
use dhurandhar::generate::{
    chat_prompt, ChatMessage, GenerateEvent, GenerateOptions, Generator, WeightMode,
};
use dhurandhar::kv::{Codec, Distribution, SweepOptions};
use dhurandhar::model::ResolvedModel;
use dhurandhar::plan::{AnalyzeOptions, CustomDevice, WeightChoice};
use dhurandhar::profile::{FileRegion, ProfileOptions, TableSource};
use dhurandhar::{CancelToken, NoProgress};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::jobs::{ProfileSlot, SlotProgress};
use crate::paths::AllowList;
use crate::AppState;

/// Version of the documents this API adds around the facade's reports (catalog,
/// compare, upload).
pub const API_SCHEMA_VERSION: u32 = 1;
/// Uploaded model profiles kept in memory (oldest dropped first).
pub const MAX_UPLOADS: usize = 32;
/// Configurations one compare request plans.
pub const MAX_COMPARE: usize = 8;
/// Synthetic tokens per KV head a sweep may ask for (keeps a request to seconds).
pub const MAX_SWEEP_SAMPLES: usize = 4096;
/// Timed profiler steps one dashboard run may ask for.
pub const MAX_PROFILE_TOKENS: u64 = 1_000_000;
/// Largest synthetic profiler table, as a fraction of the model's real table (the
/// file is written to the cache directory; the command line allows up to 8).
pub const MAX_PROFILE_SCALE: f64 = 1.0;
/// Tokens one dashboard generation may ask for.
pub const MAX_GENERATE_TOKENS: usize = 2048;
/// Tokens one dashboard KV capture runs through the model: a few seconds on a small
/// model, and a capture file of tens of MiB in a private temporary directory.
pub const MAX_CAPTURE_TOKENS: usize = 256;
/// Largest text a KV capture request may carry.
pub const MAX_CAPTURE_TEXT_BYTES: usize = 64 * 1024;
/// What a KV capture runs the model over when the request brings no text.
const CAPTURE_TEXT: &str = "The cache of keys and values grows with every token a model reads. \
On a small device it soon outweighs the weights themselves, so it is stored in fewer bits. \
How much that costs depends on the codec, the bits per value and the model: outlier \
channels, rotary position embedding and the spread of each head all change the error. \
This paragraph is only here to give the model something ordinary to read, so that the \
keys, queries and values it produces look like those of a real conversation.";
/// KV sweeps running at once (more wait their turn).
const SWEEP_SLOTS: usize = 2;

struct Upload {
    id: String,
    arch: ModelArchitecture,
}

pub(crate) struct Inner {
    pub allow: AllowList,
    uploads: Mutex<Vec<Upload>>,
    upload_seq: AtomicU64,
    profile: Arc<ProfileSlot>,
    /// One KV capture (+ codec comparison) at a time.
    capture: Arc<ProfileSlot>,
    run_slot: Arc<Semaphore>,
    sweep_slots: Arc<Semaphore>,
    /// The one model kept loaded, with how its weights are held (a streamed model's pool
    /// is sized once, so another budget means another load).
    model: Mutex<Option<(ModelKey, Arc<Model>)>>,
}

/// What a loaded model was loaded for: its file, weight mode and RAM budget.
type ModelKey = (PathBuf, WeightMode, Option<u64>);

impl Inner {
    pub fn new(allow: AllowList) -> Self {
        Inner {
            allow,
            uploads: Mutex::new(Vec::new()),
            upload_seq: AtomicU64::new(0),
            profile: Arc::new(ProfileSlot::default()),
            capture: Arc::new(ProfileSlot::default()),
            run_slot: Arc::new(Semaphore::new(1)),
            sweep_slots: Arc::new(Semaphore::new(SWEEP_SLOTS)),
            model: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/catalog", get(catalog))
        .route("/api/files", get(files))
        .route("/api/models", post(upload_model))
        .route("/api/plan", get(plan))
        .route("/api/compare", get(compare))
        .route("/api/kv/sweep", get(kv_sweep))
        .route("/api/kv/compare", get(kv_compare))
        .route("/api/kv/capture", get(capture_status).post(capture_start))
        .route("/api/kv/capture/events", get(capture_events))
        .route("/api/kv/capture/cancel", post(capture_cancel))
        .route("/api/profile", get(profile_status).post(profile_start))
        .route("/api/profile/events", get(profile_events))
        .route("/api/profile/cancel", post(profile_cancel))
        .route("/api/pack/stats", get(pack_stats))
        .route("/api/inspect", get(inspect))
        .route("/api/run", get(run_stream))
        .route("/api", get(api_not_found))
        .route("/api/{*rest}", get(api_not_found).post(api_not_found))
}

// ------------------------------------------------------------------ extractors

/// `Query` whose rejection is a JSON `{"error"}` answer.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Q(v))
    }
}

/// `Json` whose rejection is a JSON `{"error"}` answer.
pub struct J<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for J<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<T>::from_request(req, state)
            .await
            .map_err(ApiError::from)?;
        Ok(J(v))
    }
}

/// A UTF-8 request body whose rejection (too large, not UTF-8) is a JSON answer.
pub struct Text(pub String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("invalid body: {}", e.body_text())))?;
        String::from_utf8(bytes.to_vec())
            .map(Text)
            .map_err(|_| ApiError::bad("invalid body: not UTF-8 text"))
    }
}

/// Run a facade call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// [`blocking`] once one of the [`SWEEP_SLOTS`] codec-sweep slots is free.
async fn in_sweep_slot<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = s
        .inner
        .sweep_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("sweep queue closed"))?;
    blocking(f).await
}

fn list(s: &Option<String>) -> impl Iterator<Item = &str> {
    s.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

fn parse_codec(field: &str, s: &str) -> Result<Codec, ApiError> {
    s.parse::<Codec>().map_err(|_| {
        ApiError::bad(format!(
            "{field}: unknown codec `{s}` (known: {})",
            Codec::known_names()
        ))
    })
}

// ------------------------------------------------------------------ small endpoints

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn api_not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no API endpoint {} (see docs/dashboard.md)", uri.path()),
    )
}

#[derive(Serialize)]
struct CodecInfo {
    name: &'static str,
    bits: &'static [u32],
}

#[derive(Serialize)]
struct UploadInfo {
    id: String,
    name: String,
}

async fn catalog(State(s): State<AppState>) -> Result<Response, ApiError> {
    let models = dhurandhar::catalog::models();
    let devices = dhurandhar::catalog::devices(&[])?;
    let uploads: Vec<UploadInfo> = lock(&s.inner.uploads)
        .iter()
        .map(|u| UploadInfo {
            id: u.id.clone(),
            name: u.arch.name.clone(),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "schema_version": API_SCHEMA_VERSION,
        "models": models.models,
        "devices": devices,
        "codecs": Codec::ALL.iter().map(|c| CodecInfo { name: c.name(), bits: c.supported_bits() }).collect::<Vec<_>>(),
        "distributions": dhurandhar::dhurandhar_kv::synth::DISTRIBUTION_NAMES,
        "profile_patterns": dhurandhar::dhurandhar_profile::Pattern::ALL.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "uploads": uploads,
        "allow_dirs": s.inner.allow.roots().iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
        "limits": {
            "max_body_bytes": crate::MAX_BODY_BYTES,
            "max_compare": MAX_COMPARE,
            "max_sweep_samples": MAX_SWEEP_SAMPLES,
            "max_profile_tokens": MAX_PROFILE_TOKENS,
            "max_profile_scale": MAX_PROFILE_SCALE,
            "max_generate_tokens": MAX_GENERATE_TOKENS,
            "max_capture_tokens": MAX_CAPTURE_TOKENS,
            "max_capture_text_bytes": MAX_CAPTURE_TEXT_BYTES,
        },
    }))
    .into_response())
}

#[derive(Deserialize)]
struct FilesQuery {
    ext: Option<String>,
}

async fn files(State(s): State<AppState>, Q(q): Q<FilesQuery>) -> Result<Response, ApiError> {
    let exts: Vec<String> = list(&q.ext).map(|e| e.to_ascii_lowercase()).collect();
    if exts.is_empty() {
        return Err(ApiError::bad("ext: give one or more extensions (gguf,dhp)"));
    }
    let inner = s.inner.clone();
    let files = blocking(move || Ok(inner.allow.list(&exts))).await?;
    Ok(Json(serde_json::json!({ "files": files })).into_response())
}

/// `POST /api/models`: a model profile in YAML as the body; kept in memory.
async fn upload_model(State(s): State<AppState>, Text(body): Text) -> Result<Response, ApiError> {
    let arch = ModelArchitecture::from_yaml_str(&body, "uploaded profile")
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let n = s.inner.upload_seq.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("upload:{n}");
    let name = arch.name.clone();
    let mut ups = lock(&s.inner.uploads);
    if ups.len() >= MAX_UPLOADS {
        ups.remove(0);
    }
    ups.push(Upload {
        id: id.clone(),
        arch,
    });
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "schema_version": API_SCHEMA_VERSION, "id": id, "name": name })),
    )
        .into_response())
}

// ------------------------------------------------------------------ plan

/// The Plan / Devices / Compare controls as query values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    model: Option<String>,
    context: Option<u64>,
    /// A format name (`int4`, `q4_k`) or plain bits per weight (`4.5`).
    weights: Option<String>,
    /// A codec name, or `none` for a flat what-if charge of `kv_bits`.
    kv_codec: Option<String>,
    kv_bits: Option<f64>,
    strip_audio: Option<bool>,
    strip_vision: Option<bool>,
    /// Comma-separated built-in slugs, `all`, or device YAML paths.
    devices: Option<String>,
    ram_mb: Option<f64>,
    flash_gbps: Option<f64>,
    target_tps: Option<f64>,
    ple_hot_tokens: Option<u64>,
    /// Accepted and ignored: the page's budget line is drawn in the browser.
    budget_gb: Option<f64>,
}

enum ModelRef {
    Spec(String),
    Resolved(Box<ResolvedModel>),
}

impl Inner {
    /// A model as a request names it: built-in, `upload:N`, or an allowed path.
    fn model_ref(&self, spec: &str) -> Result<ModelRef, ApiError> {
        let spec = spec.trim();
        if registry::get(spec).is_some() {
            return Ok(ModelRef::Spec(spec.to_string()));
        }
        if let Some(_n) = spec.strip_prefix("upload:") {
            let ups = lock(&self.uploads);
            let u = ups.iter().find(|u| u.id == spec).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("model: no uploaded profile `{spec}` (uploads are kept in memory)"),
                )
            })?;
            return Ok(ModelRef::Resolved(Box::new(ResolvedModel {
                arch: u.arch.clone(),
                weights: None,
                origin: format!("uploaded ({spec})"),
                weights_estimated: false,
            })));
        }
        if spec.is_empty() {
            return Err(ApiError::bad("model: empty"));
        }
        if !spec.contains('/') && !spec.contains('.') {
            // Not a path: let the facade say which built-ins are near.
            return Ok(ModelRef::Spec(spec.to_string()));
        }
        Ok(ModelRef::Spec(
            self.allow.resolve(spec)?.display().to_string(),
        ))
    }

    /// A model for jobs that only take a name or path (no uploads).
    fn model_spec(&self, spec: &str) -> Result<String, ApiError> {
        match self.model_ref(spec)? {
            ModelRef::Spec(s) => Ok(s),
            ModelRef::Resolved(_) => Err(ApiError::bad(
                "model: an uploaded profile can be planned, not used by this job",
            )),
        }
    }

    fn plan_options(&self, q: &PlanQuery) -> Result<(AnalyzeOptions, ModelRef), ApiError> {
        let d = AnalyzeOptions::default();
        let model = self.model_ref(q.model.as_deref().unwrap_or(&d.model))?;
        let weights = match q.weights.as_deref().map(str::trim) {
            None | Some("") => d.weights.clone(),
            Some(w) => match w.parse::<f64>() {
                Ok(b) => WeightChoice::PlainBits(b),
                Err(_) => WeightChoice::Format(w.to_string()),
            },
        };
        let kv_codec = match q.kv_codec.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("none") => {
                if q.kv_bits.is_none() {
                    return Err(ApiError::bad(
                        "kv_codec: `none` is a flat what-if charge and needs kv_bits",
                    ));
                }
                None
            }
            Some(c) => Some(parse_codec("kv_codec", c)?),
        };
        let mut devices = Vec::new();
        for dev in list(&q.devices) {
            let builtin = dev.eq_ignore_ascii_case("all")
                || dhurandhar::dhurandhar_plan::builtin_device(dev).is_ok();
            devices.push(if builtin {
                dev.to_string()
            } else if dhurandhar::model::is_yaml_path(std::path::Path::new(dev)) {
                self.allow.resolve(dev)?.display().to_string()
            } else {
                // Unknown slug: the facade's error lists the built-ins.
                dev.to_string()
            });
        }
        let custom_device = match (q.ram_mb, q.flash_gbps) {
            (None, None) => None,
            (Some(ram_mb), Some(flash_gbps)) => Some(CustomDevice { ram_mb, flash_gbps }),
            _ => {
                return Err(ApiError::bad(
                    "ram_mb, flash_gbps: a custom device needs both",
                ))
            }
        };
        if let Some(b) = q.budget_gb {
            if !b.is_finite() || b <= 0.0 {
                return Err(ApiError::bad(format!(
                    "budget_gb: must be a positive number, got {b}"
                )));
            }
        }
        let opts = AnalyzeOptions {
            model: String::new(),
            context_tokens: q.context.unwrap_or(d.context_tokens),
            weights,
            kv_codec,
            kv_bits: q.kv_bits,
            strip_audio: q.strip_audio.unwrap_or(d.strip_audio),
            strip_vision: q.strip_vision.unwrap_or(d.strip_vision),
            devices,
            custom_device,
            target_decode_tps: q.target_tps.unwrap_or(d.target_decode_tps),
            ple_hot_tokens: q.ple_hot_tokens,
            ..d
        };
        Ok((opts, model))
    }
}

fn run_plan(
    mut opts: AnalyzeOptions,
    model: ModelRef,
) -> Result<dhurandhar::plan::AnalyzeReport, ApiError> {
    Ok(match model {
        ModelRef::Spec(s) => {
            opts.model = s;
            dhurandhar::plan::analyze(&opts)?
        }
        ModelRef::Resolved(m) => dhurandhar::plan::analyze_resolved(&opts, *m, &[])?,
    })
}

async fn plan(State(s): State<AppState>, Q(q): Q<PlanQuery>) -> Result<Response, ApiError> {
    let (opts, model) = s.inner.plan_options(&q)?;
    let report = blocking(move || run_plan(opts, model)).await?;
    Ok(Json(report).into_response())
}

/// `GET /api/compare?c=<plan query>&c=<plan query>…`: each `c` is a URL-encoded Plan
/// query string.
async fn compare(
    State(s): State<AppState>,
    Q(pairs): Q<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut configs = Vec::new();
    for (k, v) in pairs {
        if k != "c" {
            return Err(ApiError::bad(format!(
                "{k}: unknown parameter (give each configuration as c=<plan query>)"
            )));
        }
        configs.push(v);
    }
    if configs.is_empty() || configs.len() > MAX_COMPARE {
        return Err(ApiError::bad(format!(
            "c: give 1 to {MAX_COMPARE} configurations, got {}",
            configs.len()
        )));
    }
    let mut jobs = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let uri: Uri = format!("/?{c}")
            .parse()
            .map_err(|_| ApiError::bad(format!("c[{i}]: not a query string")))?;
        let axum::extract::Query(q) = axum::extract::Query::<PlanQuery>::try_from_uri(&uri)
            .map_err(|e| ApiError::bad(format!("c[{i}]: {}", e.body_text())))?;
        let (opts, model) = s
            .inner
            .plan_options(&q)
            .map_err(|e| ApiError::new(e.status, format!("c[{i}]: {}", e.message)))?;
        jobs.push((opts, model));
    }
    let reports = blocking(move || {
        jobs.into_iter()
            .enumerate()
            .map(|(i, (o, m))| {
                run_plan(o, m)
                    .map_err(|e| ApiError::new(e.status, format!("c[{i}]: {}", e.message)))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let items: Vec<_> = configs
        .into_iter()
        .zip(reports)
        .map(|(c, r)| serde_json::json!({ "query": c, "report": r }))
        .collect();
    Ok(
        Json(serde_json::json!({ "schema_version": API_SCHEMA_VERSION, "configs": items }))
            .into_response(),
    )
}

// ------------------------------------------------------------------ KV

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepQuery {
    /// Comma-separated models, or `all` (every built-in).
    models: Option<String>,
    codecs: Option<String>,
    bits: Option<String>,
    context: Option<u64>,
    samples: Option<usize>,
    queries: Option<usize>,
    distribution: Option<String>,
    seed: Option<u64>,
}

async fn kv_sweep(State(s): State<AppState>, Q(q): Q<SweepQuery>) -> Result<Response, ApiError> {
    let d = SweepOptions::default();
    let mut models = Vec::new();
    for m in list(&q.models) {
        if m.eq_ignore_ascii_case("all") {
            models.extend(registry::names().iter().map(|n| n.to_string()));
        } else {
            models.push(s.inner.model_spec(m)?);
        }
    }
    let codecs = list(&q.codecs)
        .map(|c| parse_codec("codecs", c))
        .collect::<Result<Vec<_>, _>>()?;
    let bits: Vec<u32> = numbers("bits", &q.bits)?;
    let distribution = match q.distribution.as_deref() {
        None | Some("") => d.distribution,
        Some(x) => x
            .parse::<Distribution>()
            .map_err(|e| ApiError::bad(format!("distribution: {e}")))?,
    };
    let samples = q.samples.unwrap_or(d.samples);
    if samples > MAX_SWEEP_SAMPLES {
        return Err(ApiError::bad(format!(
            "samples: at most {MAX_SWEEP_SAMPLES} in the dashboard, got {samples}"
        )));
    }
    let opts = SweepOptions {
        models: if models.is_empty() { d.models } else { models },
        codecs: if codecs.is_empty() { d.codecs } else { codecs },
        bits: if bits.is_empty() { d.bits } else { bits },
        seq_len: q.context.unwrap_or(d.seq_len),
        distribution,
        samples,
        queries: q.queries.unwrap_or(d.queries),
        seed: q.seed.unwrap_or(d.seed),
    };
    let report = in_sweep_slot(&s, move || {
        Ok(dhurandhar::kv::sweep(
            &opts,
            &NoProgress,
            &CancelToken::new(),
        )?)
    })
    .await?;
    Ok(Json(report).into_response())
}

/// `GET /api/kv/compare?data=<capture.safetensors>`: the codecs on real captured KV.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvCompareQuery {
    /// A `kv capture` safetensors (or `.npy`) under an allowed root.
    data: String,
    codecs: Option<String>,
    bits: Option<String>,
    /// Comma-separated layer indices (default: every layer in the file).
    layers: Option<String>,
    tensor: Option<String>,
    queries: Option<usize>,
}

fn numbers<T: std::str::FromStr>(field: &str, s: &Option<String>) -> Result<Vec<T>, ApiError> {
    list(s)
        .map(|b| {
            b.parse::<T>()
                .map_err(|_| ApiError::bad(format!("{field}: `{b}` is not a whole number")))
        })
        .collect()
}

async fn kv_compare(
    State(s): State<AppState>,
    Q(q): Q<KvCompareQuery>,
) -> Result<Response, ApiError> {
    let d = dhurandhar::kv::CompareOptions::default();
    let data = s.inner.allow.resolve(&q.data)?;
    let codecs = list(&q.codecs)
        .map(|c| parse_codec("codecs", c))
        .collect::<Result<Vec<_>, _>>()?;
    let bits: Vec<u32> = numbers("bits", &q.bits)?;
    let opts = dhurandhar::kv::CompareOptions {
        data: dhurandhar::kv::KvData::File(data),
        codecs: if codecs.is_empty() {
            SweepOptions::default().codecs
        } else {
            codecs
        },
        bits: if bits.is_empty() {
            d.bits.clone()
        } else {
            bits
        },
        layers: numbers("layers", &q.layers)?,
        tensor: q.tensor.clone(),
        queries: q.queries.unwrap_or(d.queries),
        // Timings of a shared server say little; the quality is what the page shows.
        timing: false,
        ..d
    };
    let report = in_sweep_slot(&s, move || {
        Ok(dhurandhar::kv::compare(
            &opts,
            &NoProgress,
            &CancelToken::new(),
        )?)
    })
    .await?;
    Ok(Json(report).into_response())
}

// ------------------------------------------------------------------ KV capture

/// `POST /api/kv/capture` body: capture K/V/Q from a GGUF, then compare codecs on it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureRequest {
    /// A GGUF model under an allowed root.
    path: String,
    /// Text to run through the model (default: a built-in paragraph).
    text: Option<String>,
    /// Tokens to capture (default and most: [`MAX_CAPTURE_TOKENS`]).
    max_tokens: Option<usize>,
    /// Comma-separated codecs and bits, as `/api/kv/compare` takes them.
    codecs: Option<String>,
    bits: Option<String>,
    /// Comma-separated layers to compare on (default: first, middle and last).
    layers: Option<String>,
}

/// The capture and the comparison it feeds, validated before the job starts.
struct CaptureJob {
    capture: dhurandhar::kv::CaptureOptions,
    text: String,
    compare: dhurandhar::kv::CompareOptions,
}

impl Inner {
    fn capture_job(&self, r: &CaptureRequest) -> Result<CaptureJob, ApiError> {
        let model = self.allow.resolve(&r.path)?;
        let max_tokens = r.max_tokens.unwrap_or(MAX_CAPTURE_TOKENS);
        if !(1..=MAX_CAPTURE_TOKENS).contains(&max_tokens) {
            return Err(ApiError::bad(format!(
                "max_tokens: 1 to {MAX_CAPTURE_TOKENS} in the dashboard, got {max_tokens}"
            )));
        }
        let text = r.text.clone().unwrap_or_else(|| CAPTURE_TEXT.to_string());
        if text.trim().is_empty() || text.len() > MAX_CAPTURE_TEXT_BYTES {
            return Err(ApiError::bad(format!(
                "text: 1 to {MAX_CAPTURE_TEXT_BYTES} bytes, got {}",
                text.len()
            )));
        }
        let d = dhurandhar::kv::CompareOptions::default();
        let codecs = list(&r.codecs)
            .map(|c| parse_codec("codecs", c))
            .collect::<Result<Vec<_>, _>>()?;
        let bits: Vec<u32> = numbers("bits", &r.bits)?;
        Ok(CaptureJob {
            capture: dhurandhar::kv::CaptureOptions {
                model,
                // Set in the job's temporary directory.
                text_file: PathBuf::new(),
                out: PathBuf::new(),
                max_tokens,
                threads: None,
            },
            text,
            compare: dhurandhar::kv::CompareOptions {
                codecs: if codecs.is_empty() {
                    SweepOptions::default().codecs
                } else {
                    codecs
                },
                bits: if bits.is_empty() {
                    d.bits.clone()
                } else {
                    bits
                },
                layers: numbers("layers", &r.layers)?,
                timing: false,
                ..d
            },
        })
    }
}

impl CaptureJob {
    /// Capture into a private temporary directory (removed afterwards), then compare.
    fn run(
        mut self,
        progress: &SlotProgress,
        cancel: &CancelToken,
    ) -> dhurandhar::Result<serde_json::Value> {
        let dir = tempfile::Builder::new()
            .prefix("dhurandhar-web-kv")
            .tempdir()
            .map_err(|e| {
                dhurandhar::Error::invalid(
                    "capture",
                    format!("cannot make a temporary directory: {e}"),
                )
            })?;
        self.capture.text_file = dir.path().join("text.txt");
        self.capture.out = dir.path().join("kv.safetensors");
        dhurandhar::dhurandhar_io::write_atomic(&self.capture.text_file, self.text.as_bytes())
            .map_err(|e| dhurandhar::Error::invalid("capture", e.to_string()))?;
        let cap = dhurandhar::kv::capture(&self.capture, progress, cancel)?;
        if self.compare.layers.is_empty() {
            let n = cap.n_layers;
            let mut l = vec![0, n / 2, n.saturating_sub(1)];
            l.dedup();
            self.compare.layers = l;
        }
        self.compare.data = dhurandhar::kv::KvData::File(self.capture.out.clone());
        let mut cmp =
            serde_json::to_value(dhurandhar::kv::compare(&self.compare, progress, cancel)?)
                .unwrap_or_default();
        // The temporary file is gone when the report is read: name what it held instead.
        cmp["config"]["data"] = format!("captured from {}", self.capture.model.display()).into();
        let mut cap = serde_json::to_value(&cap).unwrap_or_default();
        cap["out"] = serde_json::Value::Null;
        Ok(serde_json::json!({ "capture": cap, "compare": cmp }))
    }
}

async fn capture_start(
    State(s): State<AppState>,
    J(r): J<CaptureRequest>,
) -> Result<Response, ApiError> {
    let job = s.inner.capture_job(&r)?;
    let slot = s.inner.capture.clone();
    let (id, token) = slot
        .try_start()
        .ok_or_else(|| ApiError::busy("a KV capture is already going: cancel it or wait"))?;
    spawn_job(slot, "dhurandhar-kv-capture", "capture", move |p| {
        job.run(p, &token)
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "events": "/api/kv/capture/events" })),
    )
        .into_response())
}

async fn capture_status(State(s): State<AppState>) -> Json<crate::jobs::JobStatus> {
    Json(s.inner.capture.status())
}

async fn capture_events(State(s): State<AppState>) -> impl IntoResponse {
    s.inner.capture.clone().events()
}

async fn capture_cancel(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "cancelled": s.inner.capture.cancel() }))
}

/// Run a started job on its own thread, reporting to `slot`; a panic fails the job.
fn spawn_job(
    slot: Arc<ProfileSlot>,
    thread: &str,
    what: &'static str,
    f: impl FnOnce(&SlotProgress) -> dhurandhar::Result<serde_json::Value> + Send + 'static,
) -> Result<(), ApiError> {
    let s2 = slot.clone();
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let progress = SlotProgress(slot.clone());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&progress)))
                .unwrap_or_else(|_| {
                    Err(dhurandhar::Error::invalid(
                        what,
                        "the job panicked (see the server log)",
                    ))
                });
            slot.finish(result);
        })
        .map(|_| ())
        .map_err(|e| {
            let msg = format!("cannot start the {what} thread: {e}");
            s2.finish(Err(dhurandhar::Error::invalid(what, msg.clone())));
            ApiError::internal(msg)
        })
}

// ------------------------------------------------------------------ profiler

/// `POST /api/profile` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileRequest {
    /// Synthetic table shaped like this model's PLE (or embedding) table.
    model: Option<String>,
    /// Size of the synthetic file as a fraction of the real table.
    scale: Option<f64>,
    /// Profile a real file's tensor instead (with `tensor`).
    path: Option<String>,
    tensor: Option<String>,
    bits: Option<u32>,
    num_tokens: Option<u64>,
    warmup_tokens: Option<u64>,
    patterns: Option<Vec<String>>,
    modes: Option<Vec<String>>,
    target_tps: Option<f64>,
    seed: Option<u64>,
}

impl Inner {
    fn profile_options(&self, r: &ProfileRequest) -> Result<ProfileOptions, ApiError> {
        use dhurandhar::dhurandhar_profile::{Mode, Pattern};
        let d = ProfileOptions::default();
        let table = match (&r.path, &r.tensor) {
            (Some(p), Some(t)) => TableSource::File {
                path: self.allow.resolve(p)?,
                region: FileRegion::Tensor(t.clone()),
                row_bytes: None,
                slices: None,
            },
            (Some(_), None) | (None, Some(_)) => {
                return Err(ApiError::bad("path, tensor: a file table needs both"))
            }
            (None, None) => TableSource::Synthetic {
                model: self.model_spec(r.model.as_deref().unwrap_or("gemma4-e2b"))?,
                scale: r.scale.unwrap_or(0.02),
                cache_dir: None,
            },
        };
        let patterns = match &r.patterns {
            None => d.patterns.clone(),
            Some(v) => v
                .iter()
                .map(|p| {
                    Pattern::parse(p).ok_or_else(|| {
                        ApiError::bad(format!(
                            "patterns: unknown pattern `{p}` (known: {})",
                            Pattern::ALL.map(|p| p.name()).join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let modes = match &r.modes {
            None => d.modes.clone(),
            Some(v) => v
                .iter()
                .map(|m| match m.as_str() {
                    "cold" => Ok(Mode::Cold),
                    "warm" => Ok(Mode::Warm),
                    _ => Err(ApiError::bad(format!(
                        "modes: unknown mode `{m}` (known: cold, warm)"
                    ))),
                })
                .collect::<Result<_, _>>()?,
        };
        if let TableSource::Synthetic { scale, .. } = &table {
            if !(*scale > 0.0 && *scale <= MAX_PROFILE_SCALE) {
                return Err(ApiError::bad(format!(
                    "scale: in (0, {MAX_PROFILE_SCALE}] in the dashboard (the file is written \
                     to disk), got {scale}"
                )));
            }
        }
        let num_tokens = r.num_tokens.unwrap_or(2000);
        if num_tokens > MAX_PROFILE_TOKENS {
            return Err(ApiError::bad(format!(
                "num_tokens: at most {MAX_PROFILE_TOKENS} in the dashboard, got {num_tokens}"
            )));
        }
        let opts = ProfileOptions {
            table,
            bits: r.bits.unwrap_or(d.bits),
            num_tokens,
            warmup_tokens: r.warmup_tokens.unwrap_or(d.warmup_tokens),
            target_tps: r.target_tps.unwrap_or(d.target_tps),
            patterns,
            modes,
            seed: r.seed.unwrap_or(d.seed),
            ..d
        };
        dhurandhar::profile::validate(&opts)?;
        Ok(opts)
    }
}

async fn profile_start(
    State(s): State<AppState>,
    J(r): J<ProfileRequest>,
) -> Result<Response, ApiError> {
    let opts = s.inner.profile_options(&r)?;
    let slot = s.inner.profile.clone();
    let (id, token) = slot
        .try_start()
        .ok_or_else(|| ApiError::busy("a profiler run is already going: cancel it or wait"))?;
    std::thread::Builder::new()
        .name("dhurandhar-profile".into())
        .spawn(move || {
            let progress = SlotProgress(slot.clone());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                dhurandhar::profile::run(&opts, &progress, &token)
            }));
            let result = match result {
                Ok(r) => r.map(|rep| serde_json::to_value(rep).unwrap_or_default()),
                Err(_) => Err(dhurandhar::Error::invalid(
                    "profile",
                    "the profiler panicked (see the server log)",
                )),
            };
            slot.finish(result);
        })
        .map_err(|e| {
            let msg = format!("cannot start the profiler thread: {e}");
            s.inner
                .profile
                .finish(Err(dhurandhar::Error::invalid("profile", msg.clone())));
            ApiError::internal(msg)
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "events": "/api/profile/events" })),
    )
        .into_response())
}

async fn profile_status(State(s): State<AppState>) -> Json<crate::jobs::JobStatus> {
    Json(s.inner.profile.status())
}

async fn profile_events(State(s): State<AppState>) -> impl IntoResponse {
    s.inner.profile.clone().events()
}

async fn profile_cancel(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "cancelled": s.inner.profile.cancel() }))
}

// ------------------------------------------------------------------ files

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathQuery {
    path: String,
}

async fn pack_stats(State(s): State<AppState>, Q(q): Q<PathQuery>) -> Result<Response, ApiError> {
    let path = s.inner.allow.resolve(&q.path)?;
    let report = blocking(move || Ok(dhurandhar::pack::stats(&path)?)).await?;
    Ok(Json(report).into_response())
}

async fn inspect(State(s): State<AppState>, Q(q): Q<PathQuery>) -> Result<Response, ApiError> {
    let path = s.inner.allow.resolve(&q.path)?;
    let report = blocking(move || {
        Ok(dhurandhar::inspect::inspect(
            &dhurandhar::inspect::InspectOptions { path },
        )?)
    })
    .await?;
    Ok(Json(report).into_response())
}

// ------------------------------------------------------------------ generation

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    path: String,
    /// The prompt; with `chat`, the user's message. Ignored when `messages` is given.
    #[serde(default)]
    prompt: String,
    /// A chat as JSON (`[{"role": "user", "content": "…"}, …]`), rendered with the
    /// model's own chat template.
    messages: Option<String>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    /// The prompt is one user message, rendered with the model's chat template.
    chat: Option<bool>,
    /// `mmap` (default), `resident` or `stream`.
    weights: Option<String>,
    /// RAM budget of streamed weights: bytes or a size such as `80MiB`.
    ram_budget: Option<String>,
}

impl Inner {
    /// The loaded model for `key` (one model kept loaded; another key replaces it).
    fn load(&self, key: &ModelKey) -> Result<Arc<Model>, ApiError> {
        if let Some((k, m)) = &*lock(&self.model) {
            if k == key {
                return Ok(m.clone());
            }
        }
        // Drop the old model first: two need not fit at once.
        *lock(&self.model) = None;
        let m = dhurandhar::generate::load_model_with(&key.0, key.1)?;
        *lock(&self.model) = Some((key.clone(), m.clone()));
        Ok(m)
    }
}

#[derive(Serialize)]
struct TokenEvent<'a> {
    text: &'a str,
    n: usize,
    seconds: f64,
    tokens_per_s: f64,
}

/// `GET /api/run?path&prompt…`: server-sent events `start`, `token`…, then `done` (the
/// facade's generation report) or `error`. Closing the stream cancels the generation.
async fn run_stream(State(s): State<AppState>, Q(q): Q<RunQuery>) -> Result<Response, ApiError> {
    let permit = s
        .inner
        .run_slot
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::busy("a generation is already running"))?;
    let path = s.inner.allow.resolve(&q.path)?;
    let max_tokens = q.max_tokens.unwrap_or(64);
    if max_tokens > MAX_GENERATE_TOKENS {
        return Err(ApiError::bad(format!(
            "max_tokens: at most {MAX_GENERATE_TOKENS} in the dashboard, got {max_tokens}"
        )));
    }
    let weights: WeightMode = match q.weights.as_deref().map(str::trim) {
        None | Some("") => WeightMode::Mmap,
        Some(w) => w
            .parse()
            .map_err(|e| ApiError::bad(format!("weights: {e}")))?,
    };
    let ram_budget = match q.ram_budget.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => Some(
            dhurandhar::units::parse_size(b)
                .map_err(|e| ApiError::bad(format!("ram_budget: {e}")))?,
        ),
    };
    let key: ModelKey = (path.clone(), weights, ram_budget);
    let messages: Option<Vec<ChatMessage>> = match (&q.messages, q.chat.unwrap_or(false)) {
        (Some(m), _) => Some(serde_json::from_str(m).map_err(|e| {
            ApiError::bad(format!("messages: not a list of {{role, content}}: {e}"))
        })?),
        (None, true) => Some(vec![ChatMessage::new("user", q.prompt.clone())]),
        (None, false) => None,
    };
    let mut opts = GenerateOptions {
        model: path.clone(),
        prompt: q.prompt.clone(),
        max_tokens,
        temperature: q.temperature.unwrap_or(0.0),
        top_p: q.top_p.unwrap_or(1.0),
        seed: q.seed.unwrap_or(0),
        threads: None,
        f32_activations: false,
        weights,
        ram_budget,
        experts: Default::default(),
        adapters: Vec::new(),
    };
    let inner = s.inner.clone();
    let token = CancelToken::new();
    let t = token.clone();
    let load_start = Instant::now();
    let (generator, chat_format) = blocking(move || {
        let model = inner.load(&key)?;
        let format = match &messages {
            Some(m) => {
                let (prompt, format) = chat_prompt(&model, m)?;
                opts.prompt = prompt;
                Some(format)
            }
            None => None,
        };
        Ok((Generator::with_model(model, &opts)?.with_cancel(t), format))
    })
    .await?;
    let load_seconds = load_start.elapsed().as_secs_f64();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut generator = generator;
        let ev =
            |name: &str, v: serde_json::Value| Event::default().event(name).data(v.to_string());
        let start = ev(
            "start",
            serde_json::json!({
                "prompt_tokens": generator.prompt_tokens(),
                "load_seconds": load_seconds,
                "weight_store": generator.model().weight_mode().name(),
                "ram_budget_bytes": ram_budget,
                "chat_format": chat_format,
            }),
        );
        if tx.blocking_send(start).is_err() {
            return;
        }
        let t0 = Instant::now();
        let mut n = 0usize;
        let mut first: Option<Instant> = None;
        loop {
            match generator.next() {
                None => break,
                Some(Ok(GenerateEvent::Token { text, .. })) => {
                    n += 1;
                    let f = *first.get_or_insert_with(Instant::now);
                    let decode = f.elapsed().as_secs_f64();
                    let data = TokenEvent {
                        text: &text,
                        n,
                        seconds: t0.elapsed().as_secs_f64(),
                        tokens_per_s: if n > 1 && decode > 0.0 {
                            (n - 1) as f64 / decode
                        } else {
                            0.0
                        },
                    };
                    let e = Event::default()
                        .event("token")
                        .json_data(&data)
                        .unwrap_or_default();
                    if tx.blocking_send(e).is_err() {
                        token.cancel();
                        return;
                    }
                }
                Some(Ok(GenerateEvent::End { .. })) => {}
                Some(Err(e)) => {
                    let _ = tx
                        .blocking_send(ev("error", serde_json::json!({ "error": e.to_string() })));
                    return;
                }
            }
        }
        // The report, with the planner's prediction for this run on the probed host
        // beside it (or why there is none).
        let mut report = serde_json::to_value(generator.report()).unwrap_or_default();
        if let Some(obj) = report.as_object_mut() {
            obj.insert(
                "weight_cache_hit".into(),
                generator.model().weight_cache_hit().into(),
            );
            match generator.prediction() {
                Ok(p) => {
                    obj.insert(
                        "predicted".into(),
                        serde_json::to_value(p).unwrap_or_default(),
                    );
                }
                Err(e) => {
                    obj.insert("prediction_note".into(), e.to_string().into());
                }
            }
        }
        let _ = tx.blocking_send(ev("done", report));
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
