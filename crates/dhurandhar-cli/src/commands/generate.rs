//! `dhurandhar generate`: stream text from a GGUF model on the CPU, or benchmark it.

use std::io::Write;
use std::path::PathBuf;

use dhurandhar::generate::{
    bench, chat_prompt, load_model_with, BenchOptions, BenchReport, ChatMessage, Eviction,
    ExpertOptions, GenerateEvent, GenerateOptions, Generator, WeightMode, WeightsReport,
};
use dhurandhar::lora::AdapterSpec;
use dhurandhar::plan::FlashReadSource;
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::output::{emit, write_json_file, OutputArgs};
use crate::render::{bytes_or_na, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen2moe or qwen3moe),
    /// or a `.dhp` pack of one (`pack model.gguf`) with `--weights stream` or `resident`.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (literal control tokens such as `<|im_start|>` are recognised).
    #[arg(long, required_unless_present = "bench")]
    pub prompt: Option<String>,
    /// Tokens to generate (stops earlier at the end-of-sequence token).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// RNG seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Multiply in f32 instead of quantizing activations to 8 bits (slower, no
    /// activation rounding).
    #[arg(long)]
    pub f32_activations: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// The prompt is one user message: render it with the GGUF's chat template (plain
    /// `User:` / `Assistant:` lines when the file has none).
    #[arg(long, conflicts_with = "bench")]
    pub chat: bool,
    /// A LoRA adapter to apply: a PEFT directory (adapter_config.json +
    /// adapter_model.safetensors); `DIR@WEIGHT` scales its update. Repeat for several.
    #[arg(long = "adapter", value_name = "DIR[@WEIGHT]", value_parser = super::lora::parse_adapter, conflicts_with = "bench")]
    pub adapters: Vec<AdapterSpec>,
    /// `--json` prints one JSON object at the end instead of streaming text.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Benchmark instead: prefill and decode tokens/s for each of `--bench-threads`,
    /// and peak RSS. The context is `--bench-prompt` + `--max-tokens` tokens.
    #[arg(long)]
    pub bench: bool,
    /// Prompt length of the benchmark (synthetic English text).
    #[arg(long, default_value_t = 256)]
    pub bench_prompt: usize,
    /// Thread counts to benchmark.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub bench_threads: Vec<usize>,
    /// Runs per thread count (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    pub bench_repeats: usize,
}

/// How the weights are held (shared by generate and eval).
#[derive(Debug, Clone, clap::Args)]
pub struct WeightArgs {
    /// mmap: map the file (the kernel pages it); resident: read it into RAM (fastest on
    /// x86: Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K matrices are interleaved for 8-row
    /// kernels); stream: read layers from the file into a pool bounded by `--ram-budget`.
    #[arg(long = "weights", default_value = "mmap", value_parser = parse_mode)]
    pub mode: WeightMode,
    /// RAM budget for `--weights stream`, e.g. `48MiB`, `1.5GB`, `65536` (bytes): sizes
    /// the layer pool; refused up front when too small. Without it: the minimum pool.
    #[arg(long, value_parser = parse_size)]
    pub ram_budget: Option<u64>,
    /// Mixture-of-experts models with `--weights stream`: bytes of the expert cache
    /// (e.g. `64MiB`; raised to the least a layer needs). Default: what the RAM budget
    /// leaves once the dense layers are pinned (without a budget, the least).
    #[arg(long, value_parser = parse_size)]
    pub expert_cache: Option<u64>,
    /// Mixture-of-experts models with `--weights stream`: read no expert ahead (neither
    /// a layer's routed misses nor the next layer's predicted experts) — the baseline
    /// the read-ahead is measured against.
    #[arg(long)]
    pub no_expert_prefetch: bool,
    /// Mixture-of-experts models with `--weights stream`: which cached expert makes room
    /// for another. next-use: the one whose layer comes again last (layers run in a
    /// cycle); lru: the least recently used.
    #[arg(long, default_value = "next-use", value_parser = parse_eviction)]
    pub expert_eviction: Eviction,
}

fn parse_eviction(s: &str) -> Result<Eviction, String> {
    s.parse()
}

impl WeightArgs {
    /// The facade's expert-cache options.
    pub fn experts(&self) -> ExpertOptions {
        ExpertOptions {
            cache: self.expert_cache,
            prefetch: !self.no_expert_prefetch,
            eviction: self.expert_eviction,
        }
    }
}

fn parse_mode(s: &str) -> Result<WeightMode, String> {
    s.parse()
}

/// `37%`, or `n/a`.
fn pct(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{:.0}%", 100.0 * x))
}

/// `--ram-budget` and other sizes: the facade's parser.
pub fn parse_size(s: &str) -> Result<u64, String> {
    dhurandhar::units::parse_size(s)
}

/// `; weights: stream, budget 48.0 MiB, pool 20.1 MiB (2 buffers, 4 layers pinned),
/// 1.2 MiB read per token at 512.0 MiB/s, bound 426.7 tok/s (81% reached), I/O wait 12%`
/// (from a `.dhp` pack, the decode time per token follows the read rate); empty for the
/// default (mapped) weights.
pub fn render_weights(w: &WeightsReport) -> String {
    if w.mode == WeightMode::Mmap {
        return String::new();
    }
    let mut s = format!("; weights: {}", w.mode.name());
    if w.direct_io == Some(true) {
        s += " (O_DIRECT)";
    }
    if let Some(b) = w.ram_budget_bytes {
        s += &format!(", budget {}", human_bytes(b));
    }
    if let Some(p) = &w.plan {
        s += &format!(
            ", pool {} ({} buffers, {} layers pinned{}), {} read per token",
            human_bytes(p.pool_bytes),
            p.window_slots,
            p.pinned_layers,
            if p.head_chunks > 0 && p.pinned_head_chunks == p.head_chunks {
                " and the head".to_string()
            } else if p.pinned_head_chunks > 0 {
                format!(
                    " and {} of {} head chunks",
                    p.pinned_head_chunks, p.head_chunks
                )
            } else {
                String::new()
            },
            human_bytes(w.bytes_read_per_token as u64)
        );
    }
    if let Some(t) = &w.traffic {
        s += &format!(
            " at {}/s{}, bound {:.1} tok/s ({:.0}% reached), I/O wait {:.0}%",
            human_bytes(t.read_bytes_per_s as u64),
            if t.decode_seconds_per_token > 0.0 {
                format!(
                    " + {:.1} ms/token decoding the pack",
                    1e3 * t.decode_seconds_per_token
                )
            } else {
                String::new()
            },
            t.bound_tokens_per_s,
            100.0 * t.bound_fraction,
            100.0 * t.io_wait_share
        );
    }
    if let Some(e) = &w.experts {
        s += &format!(
            "; experts: cache {}, hit rate {}, {} read per token, prefetch accuracy {}",
            human_bytes(e.stats.capacity_bytes),
            pct(e.hit_rate),
            human_bytes(e.bytes_read_per_token as u64),
            pct(e.prefetch_accuracy)
        );
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.bench {
        return run_bench(&args);
    }
    let opts = GenerateOptions {
        model: args.model.clone(),
        prompt: args.prompt.clone().unwrap_or_default(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        threads: args.threads,
        f32_activations: args.f32_activations,
        weights: args.weights.mode,
        ram_budget: args.weights.ram_budget,
        experts: args.weights.experts(),
        adapters: args.adapters.clone(),
    };
    let model = load_model_with(&opts.model, opts.weights)?;
    let mut opts = opts;
    if args.chat {
        opts.prompt = chat_prompt(&model, &[ChatMessage::new("user", opts.prompt.clone())])?.0;
    }
    let mut generator = Generator::with_model(model, &opts)?;
    if args.out.json {
        return emit(&args.out, &generator.finish()?, |_| String::new());
    }
    let mut out = std::io::stdout().lock();
    for event in &mut generator {
        match event? {
            GenerateEvent::Token { text, .. } if !text.is_empty() => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            GenerateEvent::Token { .. } => {}
            GenerateEvent::End { text, .. } => writeln!(out, "{text}")?,
        }
    }
    drop(out);
    let r = generator.report();
    if let Some(path) = &args.out.json_out {
        write_json_file(path, &r)?;
    }
    eprintln!(
        "{}: prefill: {} tokens in {:.3} s ({:.1} tok/s); decode: {} tokens in {:.3} s ({:.1} tok/s); {} threads; peak RSS {}{}",
        r.architecture,
        r.prompt_tokens,
        r.prefill_seconds,
        r.prefill_tokens_per_s,
        r.generated_tokens,
        r.decode_seconds,
        r.decode_tokens_per_s,
        r.threads,
        bytes_or_na(r.peak_rss_bytes),
        render_weights(&r.weights)
    );
    Ok(())
}

fn run_bench(args: &Args) -> anyhow::Result<()> {
    let opts = BenchOptions {
        model: args.model.clone(),
        prompt_tokens: args.bench_prompt,
        decode_tokens: args.max_tokens,
        threads: args.bench_threads.clone(),
        repeats: args.bench_repeats,
        weights: args.weights.mode,
        ram_budget: args.weights.ram_budget,
        experts: args.weights.experts(),
    };
    let report = bench(&opts, &args.out.progress(), &CancelToken::new())?;
    emit(&args.out, &report, render_bench)
}

/// The planner's prediction beside the measurement, with the error in percent.
fn render_prediction(r: &BenchReport) -> String {
    let Some(p) = &r.predicted else {
        return format!(
            "planner prediction: none ({})\n",
            r.prediction_note.as_deref().unwrap_or("unavailable")
        );
    };
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |e| format!("{e:+.0}%"));
    let tps = |x: Option<f64>| x.map_or("n/a".to_string(), |t| format!("{t:.1}"));
    let mut t = table(
        "threads|decode tok/s predicted|measured|error|bound|prefill tok/s predicted|measured|error",
        &[],
    );
    for x in &p.threads {
        t.add_row([
            x.threads.to_string(),
            tps(x.decode_tps),
            tps(x.measured_decode_tps),
            pct(x.decode_error_pct),
            x.decode_bound
                .map_or("n/a".into(), |b| b.words().to_string()),
            tps(x.prefill_tps),
            tps(x.measured_prefill_tps),
            pct(x.prefill_error_pct),
        ]);
    }
    let reads = match p.measured_flash_bytes_per_token {
        Some(m) if p.flash_bytes_per_token > 0 => format!(
            "; weight reads per token predicted {}, counted {}; flash {:.2} GB/s ({})",
            human_bytes(p.flash_bytes_per_token),
            human_bytes(m.round() as u64),
            p.flash_read_gbps,
            match p.flash_read_source {
                FlashReadSource::ModelFile => "the model file, read cold just before the run",
                FlashReadSource::HostProfile => "the host profile",
            }
        ),
        _ => String::new(),
    };
    format!(
        "planner on `{}` (probed {}), weights {}:\n{t}\npeak RSS predicted {}, measured {} ({}){reads}\n",
        p.device,
        p.measured_at.as_deref().unwrap_or("?"),
        p.weight_mode.name(),
        human_bytes(p.peak_rss_bytes),
        bytes_or_na(p.measured_peak_rss_bytes),
        pct(p.peak_rss_error_pct),
    )
}

fn render_bench(r: &BenchReport) -> String {
    let mut table = table(
        "threads|prefill tok|prefill tok/s|prefill tok/CPU-s|decode tok|decode tok/s|decode tok/CPU-s",
        &[],
    );
    for b in &r.results {
        table.add_row([
            b.threads.to_string(),
            b.prompt_tokens.to_string(),
            format!("{:.1}", b.prefill_tokens_per_s),
            format!("{:.1}", b.prefill_tokens_per_cpu_s),
            b.decode_tokens.to_string(),
            format!("{:.1}", b.decode_tokens_per_s),
            format!("{:.1}", b.decode_tokens_per_cpu_s),
        ]);
    }
    format!(
        "{table}\n{}: peak RSS {} for a {}-token context; budget {} = 1.3 × {} tensors + {} KV + 64 MiB{}\n",
        r.architecture,
        bytes_or_na(r.peak_rss_bytes),
        r.context_tokens,
        human_bytes(r.rss_budget_bytes),
        human_bytes(r.gguf_tensor_bytes),
        human_bytes(r.kv_cache_bytes as u64),
        render_weights(&r.weights),
    ) + &render_prediction(r)
}
