//! Throughput measurement: prefill and decode tokens/s at a given thread count. The
//! facade's generate benchmark adds peak RSS from the profile crate's probe.

use std::time::Instant;

use serde::Serialize;

use crate::model::{Logits, Model};
use crate::sampling::argmax;
use crate::store::StreamStats;
use crate::EngineError;

/// One benchmark configuration's result (best of `repeats`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub threads: usize,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Prefill tokens per second of process CPU time (all threads): on a machine shared
    /// with other work this shows the speed the code would reach uncontended.
    pub prefill_tokens_per_cpu_s: f64,
    pub decode_tokens_per_cpu_s: f64,
    /// Weight bytes read from the file per decoded token (streamed weights; 0 when the
    /// weights are mapped or resident), counted by the store over the last run.
    pub weight_bytes_read_per_decode_token: f64,
    /// The weight store's reads and waits over the last run's decode (zeros unless
    /// streamed), with that decode's wall seconds: the bound and I/O wait share.
    pub decode_stream: StreamStats,
    pub decode_seconds: f64,
    pub repeats: usize,
}

/// Process CPU seconds from the profile crate's probe (the workspace's one copy); 0 where
/// the OS reports none, as before.
fn cpu_seconds() -> f64 {
    dhurandhar_profile::cpu_seconds().unwrap_or(0.0)
}

/// Prefill `prompt` in one pass, then decode `decode` tokens greedily (no stop token),
/// `repeats` times; keep the fastest run of each phase.
pub fn bench(
    model: &Model,
    prompt: &[u32],
    decode: usize,
    threads: usize,
    repeats: usize,
) -> Result<BenchResult, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::Invalid("benchmark prompt is empty".into()));
    }
    let mut best_prefill = 0f64;
    let mut best_decode = 0f64;
    let mut best_prefill_cpu = 0f64;
    let mut best_decode_cpu = 0f64;
    let mut read_per_token = 0f64;
    let mut decode_stream = StreamStats::default();
    let mut decode_seconds = 0f64;
    for _ in 0..repeats.max(1) {
        let mut s = model.session(threads, None)?;
        // Touch the weights once so page-ins are not counted as compute.
        model
            .session(1, None)?
            .forward(&prompt[..1], Logits::Last, None)?;
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let mut logits = s.prefill(prompt, 256)?;
        let (tp, cp) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        best_prefill = best_prefill.max(prompt.len() as f64 / tp);
        best_prefill_cpu = best_prefill_cpu.max(prompt.len() as f64 / cp.max(1e-9));
        let (t1, c1, r1) = (Instant::now(), cpu_seconds(), model.stream_stats());
        for _ in 0..decode {
            let tok = argmax(&logits);
            logits = s.forward(&[tok], Logits::Last, None)?;
        }
        let (td, cd) = (t1.elapsed().as_secs_f64(), cpu_seconds() - c1);
        decode_stream = model.stream_stats().since(&r1);
        decode_seconds = td;
        read_per_token = decode_stream.bytes_read as f64 / decode.max(1) as f64;
        if decode > 0 {
            best_decode = best_decode.max(decode as f64 / td);
            best_decode_cpu = best_decode_cpu.max(decode as f64 / cd.max(1e-9));
        }
    }
    Ok(BenchResult {
        threads,
        prompt_tokens: prompt.len(),
        decode_tokens: decode,
        prefill_tokens_per_s: best_prefill,
        decode_tokens_per_s: best_decode,
        prefill_tokens_per_cpu_s: best_prefill_cpu,
        decode_tokens_per_cpu_s: best_decode_cpu,
        weight_bytes_read_per_decode_token: read_per_token,
        decode_stream,
        decode_seconds,
        repeats: repeats.max(1),
    })
}

/// Tokens of a neutral English prompt, repeated until it has `n` tokens.
pub fn synthetic_prompt(model: &Model, n: usize) -> Vec<u32> {
    let base = model.tokenizer.encode(
        "The history of the region is long and varied. Farmers, merchants and sailors \
         settled along the river, built towns and markets, and traded grain, wool and \
         timber with their neighbours across the sea. ",
    );
    if base.is_empty() {
        return Vec::new();
    }
    base.iter().copied().cycle().take(n).collect()
}
