//! `dhurandhar generate`: stream text from a GGUF model on the CPU, or benchmark it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use dhurandhar_engine::bench::{bench, synthetic_prompt, BenchResult};
use dhurandhar_engine::tokenizer::Utf8Stream;
use dhurandhar_engine::{peak_rss_bytes, Logits, Model, Sampler};
use serde::Serialize;

use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file (llama / qwen2 family).
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
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
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

#[derive(Debug, Serialize)]
struct GenerateReport {
    model: String,
    prompt_tokens: usize,
    generated_tokens: usize,
    text: String,
    stop_reason: &'static str,
    threads: usize,
    prefill_seconds: f64,
    decode_seconds: f64,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    gguf_tensor_bytes: u64,
    context_tokens: usize,
    kv_cache_bytes: usize,
    /// 1.3 × tensor bytes + KV cache + 64 MiB.
    rss_budget_bytes: u64,
    peak_rss_bytes: Option<u64>,
    within_budget: Option<bool>,
    results: Vec<BenchResult>,
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn ratio(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    if args.bench {
        return run_bench(&args, &model);
    }
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let prompt = args.prompt.as_deref().unwrap_or_default();
    let tok = &model.tokenizer;
    let ids = tok.encode(prompt);
    if ids.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens");
    }
    let ctx = model.config.context_length;
    if ids.len() + args.max_tokens > ctx {
        anyhow::bail!(
            "prompt ({} tokens) + --max-tokens {} exceeds the model's context length {ctx}",
            ids.len(),
            args.max_tokens
        );
    }
    let mut session = model.session(threads, None)?;
    session.set_f32_activations(args.f32_activations);
    let mut sampler = Sampler::new(args.temperature, args.top_p, args.seed);
    let t0 = Instant::now();
    let mut logits = session.prefill(&ids, 256)?;
    let prefill = t0.elapsed().as_secs_f64();

    let mut out = std::io::stdout().lock();
    let mut stream = Utf8Stream::default();
    let mut text = String::new();
    let mut generated = 0;
    let mut stop_reason = "max_tokens";
    let t1 = Instant::now();
    for i in 0..args.max_tokens {
        let next = sampler.sample(&logits);
        if Some(next) == tok.eos {
            stop_reason = "eos";
            break;
        }
        generated += 1;
        let piece = stream.push(&tok.token_bytes(next, false));
        if !args.json && !piece.is_empty() {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        text.push_str(&piece);
        if i + 1 < args.max_tokens {
            logits = session.forward(&[next], Logits::Last, None)?;
        }
    }
    let decode = t1.elapsed().as_secs_f64();
    let rest = stream.finish();
    text.push_str(&rest);
    let report = GenerateReport {
        model: args.model.display().to_string(),
        prompt_tokens: ids.len(),
        generated_tokens: generated,
        text,
        stop_reason,
        threads,
        prefill_seconds: prefill,
        decode_seconds: decode,
        prefill_tokens_per_s: ratio(ids.len(), prefill),
        decode_tokens_per_s: ratio(generated, decode),
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        drop(out);
        return print_json(&report);
    }
    writeln!(out, "{rest}")?;
    drop(out);
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tok/s); decode: {} tokens in {:.3} s ({:.1} tok/s); {} threads; peak RSS {}",
        report.prompt_tokens,
        prefill,
        report.prefill_tokens_per_s,
        generated,
        decode,
        report.decode_tokens_per_s,
        threads,
        report
            .peak_rss_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "n/a".into())
    );
    Ok(())
}

fn run_bench(args: &Args, model: &Model) -> anyhow::Result<()> {
    let prompt = synthetic_prompt(model, args.bench_prompt.max(1));
    let ctx = prompt.len() + args.max_tokens;
    let mut results = Vec::new();
    for &t in &args.bench_threads {
        let r = bench(
            model,
            &prompt,
            args.max_tokens,
            t.max(1),
            args.bench_repeats,
        )
        .with_context(|| format!("benchmark with {t} threads"))?;
        if !args.json {
            eprintln!(
                "threads {}: prefill {} tok @ {:.1} tok/s, decode {} tok @ {:.1} tok/s",
                r.threads,
                r.prompt_tokens,
                r.prefill_tokens_per_s,
                r.decode_tokens,
                r.decode_tokens_per_s
            );
        }
        results.push(r);
    }
    let kv = model.kv_bytes_per_token() * ctx;
    let budget = (model.tensor_bytes as f64 * 1.3) as u64 + kv as u64 + 64 * 1024 * 1024;
    let peak = peak_rss_bytes();
    let report = BenchReport {
        model: args.model.display().to_string(),
        gguf_tensor_bytes: model.tensor_bytes,
        context_tokens: ctx,
        kv_cache_bytes: kv,
        rss_budget_bytes: budget,
        peak_rss_bytes: peak,
        within_budget: peak.map(|p| p <= budget),
        results,
    };
    if args.json {
        return print_json(&report);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "threads",
        "prefill tok",
        "prefill tok/s",
        "prefill tok/CPU-s",
        "decode tok",
        "decode tok/s",
        "decode tok/CPU-s",
    ]);
    for r in &report.results {
        table.add_row([
            r.threads.to_string(),
            r.prompt_tokens.to_string(),
            format!("{:.1}", r.prefill_tokens_per_s),
            format!("{:.1}", r.prefill_tokens_per_cpu_s),
            r.decode_tokens.to_string(),
            format!("{:.1}", r.decode_tokens_per_s),
            format!("{:.1}", r.decode_tokens_per_cpu_s),
        ]);
    }
    writeln!(std::io::stdout().lock(), "{table}")?;
    let mib = |b: u64| b as f64 / 1048576.0;
    writeln!(std::io::stdout().lock(),
        "peak RSS {} for a {ctx}-token context; budget {:.1} MiB = 1.3 × {:.1} MiB tensors + {:.1} MiB KV + 64 MiB",
        peak.map(|p| format!("{:.1} MiB", mib(p))).unwrap_or_else(|| "n/a".into()),
        mib(budget),
        mib(model.tensor_bytes),
        mib(kv as u64)
    )?;
    Ok(())
}
