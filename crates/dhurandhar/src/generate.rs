//! Generate text from a GGUF model on the CPU, or benchmark its speed and memory.
//!
//! A [`Generator`] owns an `Arc<Model>` and its own session, so it can be built on one
//! thread and driven on another; it is an iterator of [`GenerateEvent`]s (one per
//! generated token, then one [`GenerateEvent::End`]), which is what a streaming front
//! end forwards. [`Generator::report`] is the `--json` document of the run.
//!
//! ```no_run
//! use dhurandhar::generate::{GenerateEvent, GenerateOptions, Generator};
//! let opts = GenerateOptions {
//!     model: "SmolLM2-135M-Instruct-Q4_1.gguf".into(),
//!     prompt: "The capital of France is".into(),
//!     ..GenerateOptions::default()
//! };
//! let mut g = Generator::open(&opts)?;
//! for event in &mut g {
//!     match event? {
//!         GenerateEvent::Token { text, .. } | GenerateEvent::End { text, .. } => print!("{text}"),
//!     }
//! }
//! println!("\n{} tokens", g.report().generated_tokens);
//! # Ok::<(), dhurandhar::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dhurandhar_engine::bench::{bench as bench_threads, synthetic_prompt, BenchResult};
pub use dhurandhar_engine::experts::Eviction;
use dhurandhar_engine::experts::ExpertStats;
use dhurandhar_engine::tokenizer::Utf8Stream;
use dhurandhar_engine::{Logits, Model, Sampler, Session, StreamStats};
pub use dhurandhar_engine::{StorePlan, WeightMode};
use serde::Serialize;

use crate::kv::{check_threads, resolve_threads};
use crate::lora::AdapterSpec;
use crate::{CancelToken, Error, Progress, Result};

/// Version of the [`GenerateReport`] and [`BenchReport`] JSON documents.
pub const SCHEMA_VERSION: u32 = 1;

/// Tokens of the prompt fed per forward pass during prefill.
const PREFILL_CHUNK: usize = 256;

/// Worker threads when none are asked for: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Memory-map and load a GGUF model, shareable between generators and threads. A path
/// that is not a regular file (a FIFO, a device) is refused instead of read.
pub fn load_model(path: &Path) -> Result<Arc<Model>> {
    Ok(Arc::new(Model::open(path)?))
}

/// Load a model with its weights held as `mode` says.
pub fn load_model_with(path: &Path, mode: WeightMode) -> Result<Arc<Model>> {
    Ok(Arc::new(Model::open_with(path, mode)?))
}

pub use dhurandhar_engine::tokenizer::ChatMessage;

/// How [`chat_prompt`] turned the messages into a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatFormat {
    /// The GGUF's own chat template (`tokenizer.chat_template`).
    Template,
    /// The GGUF has no template: `Role: content` lines ending in `Assistant:`.
    Plain,
}

/// The prompt for a chat with `model`: its own chat template with the assistant's turn
/// opened, or plain `User:` / `Assistant:` lines when the GGUF carries no template.
pub fn chat_prompt(model: &Model, messages: &[ChatMessage]) -> Result<(String, ChatFormat)> {
    if messages.is_empty() {
        return Err(Error::invalid(
            "messages",
            "empty; a chat needs at least one message",
        ));
    }
    if let Some(p) = model.tokenizer.apply_chat_template(messages, true)? {
        return Ok((p, ChatFormat::Template));
    }
    let mut p = String::new();
    for m in messages {
        let mut role = m.role.clone();
        if let Some(c) = role.get_mut(..1) {
            c.make_ascii_uppercase();
        }
        p += &format!("{role}: {}\n", m.content);
    }
    p += "Assistant:";
    Ok((p, ChatFormat::Plain))
}

/// How a streamed mixture-of-experts model caches its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertOptions {
    /// Bytes of the expert cache (raised to the least a layer needs); `None`: what the
    /// RAM budget leaves once the dense layers are pinned (without a budget, the least).
    pub cache: Option<u64>,
    /// Read experts ahead: a layer's routed misses while its cached experts compute,
    /// and the experts the next layer's router predicts from the current hidden state.
    pub prefetch: bool,
    /// Which cached expert makes room for another.
    pub eviction: Eviction,
}

impl Default for ExpertOptions {
    fn default() -> Self {
        ExpertOptions {
            cache: None,
            prefetch: true,
            eviction: Eviction::default(),
        }
    }
}

/// Start a streamed model's layer pool for `context` tokens in chunks of `chunk` with
/// `logit_rows` logits per pass on `threads` threads under `budget`, its expert cache as
/// `experts` says; refuses a budget or an expert cache size with any other mode (only
/// streamed weights are bounded).
pub fn start_weights(
    model: &Model,
    budget: Option<u64>,
    experts: ExpertOptions,
    context: usize,
    chunk: usize,
    logit_rows: usize,
    threads: usize,
) -> Result<()> {
    let streamed = model.weight_mode() == WeightMode::Stream;
    for (set, field, what) in [
        (budget.is_some(), "ram_budget", "a RAM budget bounds"),
        (
            experts.cache.is_some(),
            "expert_cache",
            "an expert cache holds",
        ),
    ] {
        if set && !streamed {
            return Err(Error::invalid(
                field,
                format!(
                    "{what} streamed weights only, not the {} weight mode",
                    model.weight_mode().name()
                ),
            ));
        }
    }
    model.set_expert_cache(experts.cache);
    model.set_expert_prefetch(experts.prefetch);
    model.set_expert_eviction(experts.eviction);
    model.start_stream(budget, context, chunk, logit_rows, threads)?;
    Ok(())
}

/// How the weights were held and what streaming them read (the `weights` object of the
/// generate and bench JSON).
#[derive(Debug, Clone, Serialize)]
pub struct WeightsReport {
    pub mode: WeightMode,
    pub ram_budget_bytes: Option<u64>,
    /// The streamed model's pool: budget breakdown, window, pinned layers.
    pub plan: Option<StorePlan>,
    /// Streamed: whether reads bypass the page cache (`O_DIRECT`; else buffered reads
    /// whose pages are dropped once read).
    pub direct_io: Option<bool>,
    /// Weight bytes read from the file since loading (0 unless streamed).
    pub bytes_read: u64,
    /// Weight bytes read per token (0 unless streamed): per decoded token for generate
    /// and bench, per token of the text over all passes for eval.
    pub bytes_read_per_token: f64,
    /// Streamed reads of the measured phase (decode for generate and bench, the whole
    /// run for eval): `None` unless the phase read weights.
    pub traffic: Option<Traffic>,
    /// A streamed mixture-of-experts model's expert cache over the measured phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experts: Option<ExpertsReport>,
}

/// How a streamed MoE model's expert cache did over a phase: the engine's counters
/// (lookups, hits, in flight, misses, prefetched, prefetch used and dropped, evictions,
/// bytes read, capacity) and what follows from them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExpertsReport {
    #[serde(flatten)]
    pub stats: ExpertStats,
    /// Lookups found in the cache, read.
    pub hit_rate: Option<f64>,
    /// Predicted experts (the next layer's router) that were then used.
    pub prefetch_accuracy: Option<f64>,
    /// Expert bytes read per token of the phase (part of the weights' figure).
    pub bytes_read_per_token: f64,
}

/// How fast streaming read, how long the computation waited for it, and the speed
/// limit that follows: tokens/s ≤ read bandwidth ÷ bytes read per token (from a `.dhp`
/// pack the reading thread also decodes, so its time counts too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Traffic {
    /// Bytes read ÷ seconds spent in `pread`, as the prefetch thread achieved it (the
    /// disk, or the page cache where the file is cached).
    pub read_bytes_per_s: f64,
    /// Seconds spent decoding what was read, per token (streams from a `.dhp` pack; 0
    /// from a GGUF).
    #[serde(default)]
    pub decode_seconds_per_token: f64,
    /// Seconds the forward pass waited for weights ÷ the phase's wall seconds.
    pub io_wait_share: f64,
    /// Tokens/s the reading thread can supply: tokens ÷ its seconds reading (and
    /// decoding), i.e. `read_bytes_per_s / bytes_read_per_token` from a GGUF.
    pub bound_tokens_per_s: f64,
    /// Tokens/s achieved ÷ the bound.
    pub bound_fraction: f64,
}

impl Traffic {
    /// `stats`: the store's counters over a phase of `seconds` that produced `tokens`.
    pub(crate) fn of(stats: &StreamStats, seconds: f64, tokens: usize) -> Option<Traffic> {
        if stats.bytes_read == 0 || stats.read_seconds <= 0.0 || seconds <= 0.0 || tokens == 0 {
            return None;
        }
        let read_bytes_per_s = stats.bytes_read as f64 / stats.read_seconds;
        let bound_tokens_per_s = tokens as f64 / (stats.read_seconds + stats.decode_seconds);
        Some(Traffic {
            read_bytes_per_s,
            decode_seconds_per_token: stats.decode_seconds / tokens as f64,
            io_wait_share: (stats.wait_seconds / seconds).min(1.0),
            bound_tokens_per_s,
            bound_fraction: tokens as f64 / seconds / bound_tokens_per_s,
        })
    }
}

impl WeightsReport {
    /// `phase`: the store's counters over the measured phase, its wall seconds and the
    /// tokens it produced (decoded, or evaluated).
    pub(crate) fn new(
        model: &Model,
        budget: Option<u64>,
        phase: &StreamStats,
        seconds: f64,
        tokens: usize,
    ) -> Self {
        WeightsReport {
            mode: model.weight_mode(),
            ram_budget_bytes: budget,
            plan: model.stream_plan(),
            direct_io: model.direct_io(),
            bytes_read: model.weight_bytes_read(),
            bytes_read_per_token: phase.bytes_read as f64 / tokens.max(1) as f64,
            // Embedding rows alone (every layer and the head pinned, no expert read)
            // bound nothing.
            traffic: model
                .stream_plan()
                .filter(|p| {
                    p.streamed_bytes_per_pass > 0 || phase.experts.is_some_and(|e| e.bytes_read > 0)
                })
                .and_then(|_| Traffic::of(phase, seconds, tokens)),
            experts: phase.experts.map(|stats| ExpertsReport {
                stats,
                hit_rate: stats.hit_rate(),
                prefetch_accuracy: stats.prefetch_accuracy(),
                bytes_read_per_token: stats.bytes_read as f64 / tokens.max(1) as f64,
            }),
        }
    }
}

/// Peak resident set of this process so far, from the profile crate's probe.
pub fn peak_rss_bytes() -> Option<u64> {
    dhurandhar_profile::MemorySnapshot::current().peak_rss_bytes
}

/// What to generate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// GGUF model file (an architecture of `dhurandhar_engine::ARCHITECTURES`). With
    /// [`Generator::with_model`] it only
    /// names the model in the report.
    pub model: PathBuf,
    /// Prompt text; literal control tokens such as `<|im_start|>` are recognised.
    pub prompt: String,
    /// Tokens to generate at most (generation stops earlier at end-of-sequence).
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    pub top_p: f32,
    /// RNG seed for sampling (same seed, same text).
    pub seed: u64,
    /// Worker threads; `None` = every core.
    pub threads: Option<usize>,
    /// Multiply in f32 instead of quantizing activations to 8 bits (slower, no
    /// activation rounding).
    pub f32_activations: bool,
    /// How the weights are held ([`WeightMode::Mmap`] by default).
    pub weights: WeightMode,
    /// RAM budget in bytes for streamed weights (`None`: the minimum window).
    pub ram_budget: Option<u64>,
    /// A streamed MoE model's expert cache.
    pub experts: ExpertOptions,
    /// LoRA adapters applied on top of the base (PEFT directories with weights).
    pub adapters: Vec<AdapterSpec>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            model: PathBuf::new(),
            prompt: String::new(),
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            threads: None,
            f32_activations: false,
            weights: WeightMode::Mmap,
            ram_budget: None,
            experts: ExpertOptions::default(),
            adapters: Vec::new(),
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_tokens` tokens were generated.
    MaxTokens,
}

/// One step of a generation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerateEvent {
    /// A generated token and the text it completes: empty while a multi-byte
    /// character is still incomplete, several characters once it completes.
    Token { id: u32, text: String },
    /// Generation is over. `text` holds the bytes of a character left unfinished,
    /// decoded lossily (almost always empty).
    End { reason: StopReason, text: String },
}

/// The result of a generation run (the `generate --json` document).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    pub schema_version: u32,
    pub model: String,
    /// `general.architecture` of the GGUF, as `inspect` and `analyze` name it.
    pub architecture: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Everything generated, as one string.
    pub text: String,
    /// `None` while the generator has not finished.
    pub stop_reason: Option<StopReason>,
    pub threads: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub weights: WeightsReport,
    /// LoRA adapters applied (directories), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<String>,
}

/// A running generation: a session over a shared model, a sampler, and the decode
/// state. `Send`, so it can be driven on any thread. The first call to `next` runs
/// the prompt (prefill); every later call one decode step.
pub struct Generator {
    session: Session<Arc<Model>>,
    sampler: Sampler,
    stream: Utf8Stream,
    prompt: Vec<u32>,
    max_tokens: usize,
    threads: usize,
    label: String,
    cancel: Option<CancelToken>,
    /// Logits for the next token to sample; `None` before prefill.
    logits: Option<Vec<f32>>,
    /// The last token yielded, not yet fed to the model (fed on the next step only if
    /// another token is wanted, so the caller sees each token before its forward pass).
    pending: Option<u32>,
    text: String,
    generated: usize,
    prefill_seconds: f64,
    decode_start: Option<Instant>,
    decode_seconds: f64,
    stop: Option<StopReason>,
    /// No more events (ended, failed or cancelled).
    done: bool,
    ram_budget: Option<u64>,
    /// Weight bytes the store had read when decoding started.
    stream_at_decode: StreamStats,
    /// Single-token forward passes since decoding started.
    decode_passes: usize,
    /// The adapters applied, for the report.
    adapters: Vec<String>,
}

impl Generator {
    /// Load `opts.model` and prepare a generation over it.
    pub fn open(opts: &GenerateOptions) -> Result<Self> {
        Self::with_model(load_model_with(&opts.model, opts.weights)?, opts)
    }

    /// Prepare a generation over an already loaded model (shared with other
    /// generators). Checks that the prompt tokenizes and fits in the context.
    pub fn with_model(model: Arc<Model>, opts: &GenerateOptions) -> Result<Self> {
        check_sampling(opts.temperature, opts.top_p)?;
        let threads = resolve_threads(opts.threads.map(|t| t.max(1)))?;
        let prompt = model.tokenizer.encode(&opts.prompt);
        if prompt.is_empty() {
            return Err(Error::invalid("prompt", "encodes to no tokens"));
        }
        let ctx = model.config.context_length;
        // Subtract rather than add: a huge max_tokens must not wrap the sum.
        if opts.max_tokens > ctx.saturating_sub(prompt.len()) {
            return Err(Error::invalid(
                "max_tokens",
                format!(
                    "prompt ({} tokens) + max_tokens {} exceeds the model's context length {ctx}",
                    prompt.len(),
                    opts.max_tokens
                ),
            ));
        }
        start_weights(
            &model,
            opts.ram_budget,
            opts.experts,
            prompt.len() + opts.max_tokens,
            PREFILL_CHUNK,
            1,
            threads,
        )?;
        let stack = crate::lora::load_stack(&model, &opts.adapters)?;
        let mut session = Session::new(model, threads, None)?;
        session.set_f32_activations(opts.f32_activations);
        session.set_adapters(stack)?;
        Ok(Generator {
            session,
            sampler: Sampler::new(opts.temperature, opts.top_p, opts.seed),
            stream: Utf8Stream::default(),
            prompt,
            max_tokens: opts.max_tokens,
            threads,
            label: opts.model.display().to_string(),
            cancel: None,
            logits: None,
            pending: None,
            text: String::new(),
            generated: 0,
            prefill_seconds: 0.0,
            decode_start: None,
            decode_seconds: 0.0,
            stop: None,
            done: false,
            ram_budget: opts.ram_budget,
            stream_at_decode: StreamStats::default(),
            decode_passes: 0,
            adapters: opts
                .adapters
                .iter()
                .map(|a| a.path.display().to_string())
                .collect(),
        })
    }

    /// The planner's prediction for this generation on the probed `host` device beside
    /// what it measured so far: decode and prefill tokens/s on its thread count, and for
    /// streamed weights the flash bytes per token planned and counted. The peak RSS is
    /// predicted but not compared (the process may hold more than this generation: the
    /// dashboard's server does). Errors when the host was never probed.
    pub fn prediction(&self) -> Result<crate::plan::RunPrediction> {
        let r = self.report();
        let measured = [(self.threads, r.prefill_tokens_per_s, r.decode_tokens_per_s)];
        let facts = crate::plan::RunFacts {
            model: &self.label,
            context: (self.prompt.len() + self.generated) as u64,
            prefill_chunk: PREFILL_CHUNK as u64,
            threads: &measured,
            measured_peak_rss: None,
            runtime_bytes: None,
            weight_mode: self.session.model().weight_mode(),
            store: r.weights.plan.as_ref(),
            measured_flash_bytes_per_token: (r.weights.mode == WeightMode::Stream)
                .then_some(r.weights.bytes_read_per_token),
            file_read_bytes_per_s: None,
        };
        crate::plan::predict_run(&facts)
    }

    /// Stop with [`Error::Cancelled`] at the next step once `token` is cancelled.
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The model this generator runs.
    pub fn model(&self) -> &Model {
        self.session.model()
    }

    /// Tokens of the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// The run so far (final once the iterator has ended).
    pub fn report(&self) -> GenerateReport {
        GenerateReport {
            schema_version: SCHEMA_VERSION,
            model: self.label.clone(),
            architecture: self.session.model().config.architecture.clone(),
            prompt_tokens: self.prompt.len(),
            generated_tokens: self.generated,
            text: self.text.clone(),
            stop_reason: self.stop,
            threads: self.threads,
            prefill_seconds: self.prefill_seconds,
            decode_seconds: self.decode_seconds,
            prefill_tokens_per_s: ratio(self.prompt.len(), self.prefill_seconds),
            decode_tokens_per_s: ratio(self.generated, self.decode_seconds),
            peak_rss_bytes: peak_rss_bytes(),
            weights: WeightsReport::new(
                self.session.model(),
                self.ram_budget,
                &self
                    .session
                    .model()
                    .stream_stats()
                    .since(&self.stream_at_decode),
                self.decode_seconds,
                self.decode_passes,
            ),
            adapters: self.adapters.clone(),
        }
    }

    /// Run to the end without looking at the events; the final report.
    pub fn finish(mut self) -> Result<GenerateReport> {
        for event in &mut self {
            event?;
        }
        Ok(self.report())
    }

    fn step(&mut self) -> Result<GenerateEvent> {
        if let Some(c) = &self.cancel {
            c.check()?;
        }
        let logits = match (self.logits.take(), self.pending.take()) {
            (None, _) => {
                let t0 = Instant::now();
                let l = self.session.prefill(&self.prompt, PREFILL_CHUNK)?;
                self.prefill_seconds = t0.elapsed().as_secs_f64();
                self.decode_start = Some(Instant::now());
                self.stream_at_decode = self.session.model().stream_stats();
                l
            }
            (Some(_), Some(tok)) if self.generated < self.max_tokens => {
                self.decode_passes += 1;
                self.session.forward(&[tok], Logits::Last, None)?
            }
            (Some(l), _) => l,
        };
        if self.generated >= self.max_tokens {
            return Ok(self.end(StopReason::MaxTokens));
        }
        let next = self.sampler.sample(&logits);
        if Some(next) == self.session.model().tokenizer.eos {
            return Ok(self.end(StopReason::Eos));
        }
        self.logits = Some(logits);
        self.generated += 1;
        let bytes = self.session.model().tokenizer.token_bytes(next, false);
        let piece = self.stream.push(&bytes);
        self.text.push_str(&piece);
        self.pending = Some(next);
        Ok(GenerateEvent::Token {
            id: next,
            text: piece,
        })
    }

    fn end(&mut self, reason: StopReason) -> GenerateEvent {
        self.decode_seconds = self
            .decode_start
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let rest = self.stream.finish();
        self.text.push_str(&rest);
        self.stop = Some(reason);
        self.done = true;
        GenerateEvent::End { reason, text: rest }
    }
}

impl Iterator for Generator {
    type Item = Result<GenerateEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

fn ratio(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// A speed and memory benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// GGUF model file.
    pub model: PathBuf,
    /// Prompt length (synthetic English text), prefilled in one pass.
    pub prompt_tokens: usize,
    /// Tokens decoded greedily after the prompt (no stop token).
    pub decode_tokens: usize,
    /// Thread counts to measure, in order.
    pub threads: Vec<usize>,
    /// Runs per thread count (the fastest is reported).
    pub repeats: usize,
    /// How the weights are held.
    pub weights: WeightMode,
    /// RAM budget in bytes for streamed weights.
    pub ram_budget: Option<u64>,
    /// A streamed MoE model's expert cache.
    pub experts: ExpertOptions,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: PathBuf::new(),
            prompt_tokens: 256,
            decode_tokens: 64,
            threads: vec![1, 2],
            repeats: 3,
            weights: WeightMode::Mmap,
            ram_budget: None,
            experts: ExpertOptions::default(),
        }
    }
}

/// The `generate --bench --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema_version: u32,
    pub model: String,
    /// `general.architecture` of the GGUF, as `inspect` and `analyze` name it.
    pub architecture: String,
    pub gguf_tensor_bytes: u64,
    /// Prompt + decoded tokens.
    pub context_tokens: usize,
    /// f32 K+V cache bytes the engine holds at `context_tokens` (sliding-window layers
    /// keep only their window), equal to the planner's KV figure at 32 bits.
    pub kv_cache_bytes: usize,
    /// 1.3 × tensor bytes + KV cache + 64 MiB.
    pub rss_budget_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    pub within_budget: Option<bool>,
    pub results: Vec<BenchResult>,
    /// The planner's prediction for this run on the probed `host` device, with the
    /// error of each figure in percent; `None` (and `prediction_note` says why) when the
    /// host was never probed.
    pub predicted: Option<crate::plan::RunPrediction>,
    pub prediction_note: Option<String>,
    pub weights: WeightsReport,
}

/// `Err(InvalidOption)` unless the temperature is finite and ≥ 0 and top-p is in (0, 1]:
/// NaN or out-of-range values would silently sample garbage or always the top token.
fn check_sampling(temperature: f32, top_p: f32) -> Result<()> {
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(Error::invalid(
            "temperature",
            format!("{temperature} is not a finite number ≥ 0 (0 = greedy)"),
        ));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::invalid(
            "top_p",
            format!("{top_p} is not in (0, 1] (1 = no nucleus cut)"),
        ));
    }
    Ok(())
}

/// Measure prefill and decode tokens/s for each thread count, and peak RSS against
/// the memory budget. Each thread count's result is also sent to `progress` as a
/// message; `cancel` is checked between thread counts.
pub fn bench(
    opts: &BenchOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<BenchReport> {
    for &t in &opts.threads {
        check_threads("threads", t, 1)?;
    }
    let model = load_model_with(&opts.model, opts.weights)?;
    // The runtime's own footprint (binary, tokenizer, metadata), for the planner's
    // prediction below: RSS now minus the weights the load put in RAM.
    let runtime_rss = dhurandhar_profile::MemorySnapshot::current()
        .rss_bytes
        .map(|r| r.saturating_sub(model.loaded_weight_bytes()));
    let max_ctx = model.config.context_length;
    // Checked before the synthetic prompt is built: its size is the user's number.
    let fits = opts
        .prompt_tokens
        .max(1)
        .checked_add(opts.decode_tokens)
        .is_some_and(|n| n <= max_ctx);
    if !fits {
        return Err(Error::invalid(
            "prompt_tokens",
            format!(
                "prompt {} + decode {} tokens exceeds the model's context length {max_ctx}",
                opts.prompt_tokens, opts.decode_tokens
            ),
        ));
    }
    let prompt = synthetic_prompt(&model, opts.prompt_tokens.max(1));
    let ctx = prompt.len() + opts.decode_tokens;
    // A streamed run reads at its file's own rate, which the probe's test file may not
    // share: measure it cold, just before the run, for the prediction (none without a
    // probed host, so no read either).
    let predicts = crate::probe::load_host().is_ok();
    let file_read_bytes_per_s = (model.weight_mode() == WeightMode::Stream && predicts)
        .then(|| model_file_read_rate(&opts.model))
        .transpose()?;
    if let Some(r) = file_read_bytes_per_s {
        progress.message(&format!(
            "model file read cold at {:.2} GB/s (the streamed prediction's flash rate)",
            r / 1e9
        ));
    }
    let most_threads = opts.threads.iter().copied().max().unwrap_or(1);
    start_weights(
        &model,
        opts.ram_budget,
        opts.experts,
        ctx,
        prompt.len(),
        1,
        most_threads,
    )?;
    let mut results = Vec::new();
    for &t in &opts.threads {
        cancel.check()?;
        let r = bench_threads(&model, &prompt, opts.decode_tokens, t.max(1), opts.repeats)
            .map_err(|e| Error::from(e).context(format!("benchmark with {t} threads")))?;
        progress.message(&format!(
            "threads {}: prefill {} tok @ {:.1} tok/s, decode {} tok @ {:.1} tok/s",
            r.threads,
            r.prompt_tokens,
            r.prefill_tokens_per_s,
            r.decode_tokens,
            r.decode_tokens_per_s
        ));
        results.push(r);
    }
    let kv = model.kv_bytes(ctx);
    let budget = rss_budget(model.tensor_bytes, kv as u64);
    let peak = peak_rss_bytes();
    let measured: Vec<_> = results
        .iter()
        .map(|r| (r.threads, r.prefill_tokens_per_s, r.decode_tokens_per_s))
        .collect();
    let weights = match results.last() {
        Some(r) => WeightsReport::new(
            &model,
            opts.ram_budget,
            &r.decode_stream,
            r.decode_seconds,
            r.decode_tokens,
        ),
        None => WeightsReport::new(&model, opts.ram_budget, &StreamStats::default(), 0.0, 0),
    };
    let model_spec = opts.model.display().to_string();
    let facts = crate::plan::RunFacts {
        model: &model_spec,
        context: ctx as u64,
        prefill_chunk: 256,
        threads: &measured,
        measured_peak_rss: peak,
        runtime_bytes: runtime_rss,
        weight_mode: model.weight_mode(),
        store: weights.plan.as_ref(),
        measured_flash_bytes_per_token: (weights.mode == WeightMode::Stream)
            .then_some(weights.bytes_read_per_token),
        file_read_bytes_per_s,
    };
    let (predicted, prediction_note) = match crate::plan::predict_run(&facts) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(BenchReport {
        schema_version: SCHEMA_VERSION,
        model: opts.model.display().to_string(),
        architecture: model.config.architecture.clone(),
        gguf_tensor_bytes: model.tensor_bytes,
        context_tokens: ctx,
        kv_cache_bytes: kv,
        rss_budget_bytes: budget,
        peak_rss_bytes: peak,
        within_budget: peak.map(|p| p <= budget),
        predicted,
        prediction_note,
        weights,
        results,
    })
}

/// At most this much of a model file is read to measure its read rate (4 MiB blocks
/// spread over it), whatever the model's size ...
const FILE_READ_SAMPLE: u64 = 256 << 20;
/// ... again and again for this long, so that a burst of the disk's first fraction of
/// a second does not stand for the rate a whole run holds.
const FILE_READ_SECONDS: f64 = 2.0;

/// Bytes/s of a cold `O_DIRECT` read of (a sample of) the model file.
fn model_file_read_rate(path: &Path) -> Result<f64> {
    let file = dhurandhar_io::open_regular(path)?;
    let (rate, _direct) =
        dhurandhar_profile::sys::cold_read(&file, path, Some(FILE_READ_SAMPLE), FILE_READ_SECONDS)
            .map_err(|e| dhurandhar_io::IoError::os(path, e))?;
    Ok(rate)
}

/// What a run may hold resident: the mapped tensors with 30 % slack for pages and
/// scratch, the KV cache, and 64 MiB for the runtime.
fn rss_budget(tensor_bytes: u64, kv_bytes: u64) -> u64 {
    (tensor_bytes as f64 * 1.3) as u64 + kv_bytes + 64 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Option<PathBuf> {
        dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)
    }

    fn opts(model: PathBuf, max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            model,
            prompt: "The capital of France is".into(),
            max_tokens,
            threads: Some(1),
            ..GenerateOptions::default()
        }
    }

    #[test]
    fn ram_budget_needs_streamed_weights_and_room_for_the_minimum() {
        let Some(path) = fixture() else { return };
        let mut o = opts(path, 4);
        o.ram_budget = Some(1 << 30);
        let e = Generator::open(&o).err().unwrap().to_string();
        assert!(e.starts_with("ram_budget:") && e.contains("mmap"), "{e}");
        o.weights = WeightMode::Stream;
        o.ram_budget = Some(1 << 20);
        let e = Generator::open(&o).err().unwrap().to_string();
        assert!(e.contains("cannot hold the minimum"), "{e}");
        assert!(!e.contains("--"), "a library message names no flag: {e}");
        o.ram_budget = None;
        let r = Generator::open(&o).unwrap().finish().unwrap();
        assert_eq!(r.weights.mode, WeightMode::Stream);
        let plan = r.weights.plan.expect("streamed models report their plan");
        assert_eq!((plan.window_slots, plan.pinned_layers), (2, 0));
        // Every decode pass reads each of the 30 layers once; the prefetch thread runs up
        // to two layers ahead at the start and the end of the count, which over three
        // decode passes can shift it by at most 2/90 of a pass.
        let per_pass = plan.streamed_bytes_per_pass as f64;
        let got = r.weights.bytes_read_per_token;
        assert!(
            got >= per_pass * (1.0 - 2.0 / 90.0) && got <= per_pass * (1.0 + 2.0 / 90.0),
            "{got} vs {per_pass}"
        );
    }

    #[test]
    fn generator_is_send() {
        fn send<T: Send + 'static>() {}
        send::<Generator>();
        send::<GenerateReport>();
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_fifo_as_model() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("m.gguf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let e = load_model(&fifo).err().unwrap().to_string();
        assert!(e.contains("m.gguf") && e.contains("FIFO"), "{e}");
    }

    #[test]
    fn budget_is_tensors_with_slack_plus_kv_plus_runtime() {
        assert_eq!(rss_budget(1000, 24), 1300 + 24 + (64 << 20));
    }

    #[test]
    fn stop_reasons_keep_their_json_names() {
        let v = serde_json::to_value([StopReason::Eos, StopReason::MaxTokens]).unwrap();
        assert_eq!(v, serde_json::json!(["eos", "max_tokens"]));
    }

    #[test]
    fn generates_on_a_spawned_thread_with_a_shared_model() {
        let Some(path) = fixture() else { return };
        let model = load_model(&path).unwrap();
        let o = opts(path, 4);
        // Built here, driven there: the model is shared, not borrowed.
        let g = Generator::with_model(Arc::clone(&model), &o).unwrap();
        let handle = std::thread::spawn(move || {
            let mut g = g;
            let events: Vec<GenerateEvent> = g.by_ref().map(|e| e.unwrap()).collect();
            (events, g.report())
        });
        let (events, report) = handle.join().unwrap();
        assert!(report.text.trim_start().starts_with("Paris"), "{report:?}");
        assert_eq!(report.prompt_tokens, 5);
        assert_eq!(report.generated_tokens, 4);
        assert_eq!(report.stop_reason, Some(StopReason::MaxTokens));
        // One event per generated token, then the end; the pieces are the text.
        assert_eq!(events.len(), 5);
        let mut streamed = String::new();
        for e in &events[..4] {
            let GenerateEvent::Token { id, text } = e else {
                panic!("{e:?}")
            };
            assert!((*id as usize) < model.config.vocab_size);
            streamed.push_str(text);
        }
        let GenerateEvent::End { reason, text } = &events[4] else {
            panic!("{:?}", events[4])
        };
        assert_eq!(*reason, StopReason::MaxTokens);
        streamed.push_str(text);
        assert_eq!(streamed, report.text);
        // The same options on this thread give the same tokens.
        let here = Generator::with_model(model, &o).unwrap().finish().unwrap();
        assert_eq!(here.text, report.text);
    }

    /// A streamed model's pool is planned once; a later run needing more KV cache than
    /// that plan held is refused instead of outgrowing the budget.
    #[test]
    fn chat_prompts_use_the_gguf_template() {
        let Some(path) = fixture() else { return };
        let model = load_model(&path).unwrap();
        let (p, f) = chat_prompt(&model, &[ChatMessage::new("user", "Hi")]).unwrap();
        assert_eq!(f, ChatFormat::Template);
        // SmolLM2's template adds its default system turn and opens the assistant's.
        assert!(
            p.starts_with("<|im_start|>system\n")
                && p.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
            "{p:?}"
        );
        assert!(chat_prompt(&model, &[]).is_err());
    }

    #[test]
    fn a_later_run_must_fit_the_streamed_pool() {
        let Some(path) = fixture() else { return };
        let model = load_model_with(&path, WeightMode::Stream).unwrap();
        assert_eq!(model.weight_cache_hit(), None, "no pool yet");
        let start = |context| {
            let experts = ExpertOptions::default();
            start_weights(&model, Some(u64::MAX / 4), experts, context, 16, 1, 1)
        };
        start(16).unwrap();
        // A budget that holds everything pins every item: every pass hits RAM.
        assert_eq!(model.weight_cache_hit(), Some(1.0));
        start(16).unwrap();
        let e = start(512).unwrap_err().to_string();
        assert!(
            e.contains("512 tokens") && e.contains("load the model again"),
            "{e}"
        );
    }

    #[test]
    fn refuses_prompts_that_do_not_fit_and_honours_cancel() {
        let Some(path) = fixture() else { return };
        let model = load_model(&path).unwrap();
        let too_long = opts(path.clone(), model.config.context_length);
        let e = Generator::with_model(Arc::clone(&model), &too_long)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("max_tokens: prompt (5 tokens)"),
            "{e}"
        );
        let empty = GenerateOptions {
            prompt: String::new(),
            ..opts(path.clone(), 4)
        };
        assert!(Generator::with_model(Arc::clone(&model), &empty).is_err());

        let cancel = CancelToken::new();
        let mut g = Generator::with_model(model, &opts(path, 4))
            .unwrap()
            .with_cancel(cancel.clone());
        assert!(matches!(g.next(), Some(Ok(GenerateEvent::Token { .. }))));
        cancel.cancel();
        assert!(matches!(g.next(), Some(Err(Error::Cancelled))));
        assert!(g.next().is_none());
    }

    #[test]
    fn sampling_options_must_be_sane() {
        assert!(check_sampling(0.0, 1.0).is_ok());
        assert!(check_sampling(0.7, 0.9).is_ok());
        for (t, p, option) in [
            (f32::NAN, 1.0, "temperature"),
            (-0.5, 1.0, "temperature"),
            (f32::INFINITY, 1.0, "temperature"),
            (1.0, 7.0, "top_p"),
            (1.0, 0.0, "top_p"),
            (1.0, f32::NAN, "top_p"),
        ] {
            let e = check_sampling(t, p).unwrap_err();
            assert!(
                matches!(e, Error::InvalidOption { option: o, .. } if o == option),
                "{t} {p}: {e}"
            );
        }
    }

    #[test]
    fn huge_max_tokens_and_bench_prompt_are_refused_not_wrapped() {
        let Some(path) = fixture() else { return };
        let e = Generator::open(&opts(path.clone(), usize::MAX))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("max_tokens: prompt"), "{e}");
        let b = BenchOptions {
            model: path,
            prompt_tokens: 1_000_000_000,
            threads: vec![1],
            ..BenchOptions::default()
        };
        let e = bench(&b, &crate::NoProgress, &CancelToken::new()).unwrap_err();
        assert!(e.to_string().contains("context length"), "{e}");
        let b = BenchOptions {
            threads: vec![1_000_000],
            ..b
        };
        let e = bench(&b, &crate::NoProgress, &CancelToken::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("threads: 1000000 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn zero_tokens_ends_at_once() {
        let Some(path) = fixture() else { return };
        let report = Generator::open(&opts(path, 0)).unwrap().finish().unwrap();
        assert_eq!(report.generated_tokens, 0);
        assert_eq!(report.text, "");
        assert_eq!(report.stop_reason, Some(StopReason::MaxTokens));
        assert!(report.prefill_seconds > 0.0);
    }
}
