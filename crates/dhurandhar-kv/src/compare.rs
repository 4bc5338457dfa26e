//! The codec × bit-budget sweep behind `kv compare` and `kv bench`.

use rayon::prelude::*;
use serde::Serialize;

use crate::codec::{build_codec_roles, Codec, CodecSpec, KvCodec, KvError, KvRole};
use crate::metrics::{head_metrics, median, HeadData, HeadMetrics};

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub codecs: Vec<Codec>,
    pub bits: Vec<u32>,
    pub seed: u64,
    /// Tokens over which per-head side information (SpectralQuant calibration) is
    /// amortised; `None` = the tokens of each head in the data.
    pub amortize_tokens: Option<usize>,
}

/// The worst head for one metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorstHead {
    pub head: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Worst {
    pub nmse: WorstHead,
    pub cosine: WorstHead,
    pub attn_rel_err: WorstHead,
    pub attn_kl: WorstHead,
}

/// One codec × bit budget. Quality fields are medians over heads; `worst` names the
/// worst head per metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub codec: Codec,
    pub bits: u32,
    /// All stored bytes (records, unencodable partial groups as bf16, amortised side
    /// information) × 8 / values, keys and values together.
    pub bits_per_value: f64,
    pub key_bits_per_value: f64,
    pub value_bits_per_value: f64,
    /// The part of `bits_per_value` that is amortised side information.
    pub side_bits_per_value: f64,
    pub amortize_tokens: usize,
    pub compression_vs_bf16: f64,
    pub compression_vs_f32: f64,
    pub nmse: f64,
    pub cosine: f64,
    pub norm_ratio: f64,
    pub ip_bias_slope: f64,
    pub ip_err_var: f64,
    pub attn_rel_err: f64,
    pub attn_kl: f64,
    pub v_nmse: f64,
    pub worst: Worst,
    pub heads: usize,
}

/// A codec × bits pair that was not run, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skipped {
    pub codec: Codec,
    pub bits: u32,
    pub reason: String,
}

struct HeadResult {
    m: HeadMetrics,
    k_bytes: usize,
    v_bytes: usize,
    side_bytes: usize,
    tokens: usize,
}

/// Encode then decode `x` (`n × d`) for `role`: whole token groups through the codec,
/// a trailing partial group kept as bf16 (as a real cache would). Returns the
/// reconstruction and the stored bytes.
pub fn round_trip(
    codec: &dyn KvCodec,
    role: KvRole,
    x: &[f32],
) -> Result<(Vec<f32>, usize), KvError> {
    let d = codec.head_dim();
    let n = x.len() / d;
    let g = codec.token_group(role);
    let full = n / g * g;
    let mut out = vec![0.0f32; x.len()];
    let mut bytes = 0;
    if full > 0 {
        let enc = codec.encode(role, &x[..full * d])?;
        codec.decode(role, &enc, &mut out[..full * d])?;
        bytes += enc.len();
    }
    for (o, v) in out[full * d..].iter_mut().zip(&x[full * d..]) {
        *o = half::bf16::from_f32(*v).to_f32();
    }
    bytes += (n - full) * d * 2;
    Ok((out, bytes))
}

fn run_head(spec: &CodecSpec, h: &HeadData) -> Result<HeadResult, KvError> {
    let needs_cal = spec.codec.needs_calibration();
    let (kc, vc) = if needs_cal {
        (Some(&h.calib_k[..]), Some(&h.calib_v[..]))
    } else {
        (None, None)
    };
    let codec = build_codec_roles(spec, kc, vc)?;
    let (kh, kb) = round_trip(codec.as_ref(), KvRole::Key, &h.k)?;
    let (vh, vb) = round_trip(codec.as_ref(), KvRole::Value, &h.v)?;
    Ok(HeadResult {
        m: head_metrics(h, &kh, &vh),
        k_bytes: kb,
        v_bytes: vb,
        side_bytes: codec.side_bytes(KvRole::Key) + codec.side_bytes(KvRole::Value),
        tokens: h.tokens(),
    })
}

fn worst(
    heads: &[HeadData],
    res: &[HeadResult],
    f: impl Fn(&HeadMetrics) -> f64,
    max: bool,
) -> WorstHead {
    let mut best = 0;
    for (i, r) in res.iter().enumerate() {
        let (a, b) = (f(&r.m), f(&res[best].m));
        if (max && a > b) || (!max && a < b) {
            best = i;
        }
    }
    WorstHead {
        head: heads[best].label.clone(),
        value: f(&res[best].m),
    }
}

/// Run every requested codec × bits on every head.
pub fn compare(
    heads: &[HeadData],
    opts: &CompareOptions,
) -> Result<(Vec<Row>, Vec<Skipped>), KvError> {
    if heads.is_empty() {
        return Err(KvError::Invalid("no KV heads to compare".into()));
    }
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for &codec in &opts.codecs {
        let supported = codec.supported_bits();
        for &bits in &opts.bits {
            if !supported.contains(&bits) {
                let s: Vec<String> = supported.iter().map(|b| b.to_string()).collect();
                skipped.push(Skipped {
                    codec,
                    bits,
                    reason: format!("supports bits {}", s.join(",")),
                });
                continue;
            }
            let results: Vec<HeadResult> = heads
                .par_iter()
                .map(|h| {
                    let spec = CodecSpec {
                        codec,
                        bits,
                        head_dim: h.d,
                        seed: opts.seed,
                    };
                    run_head(&spec, h)
                })
                .collect::<Result<_, _>>()?;
            rows.push(summarise(
                codec,
                bits,
                heads,
                &results,
                opts.amortize_tokens,
            ));
        }
    }
    Ok((rows, skipped))
}

fn summarise(
    codec: Codec,
    bits: u32,
    heads: &[HeadData],
    res: &[HeadResult],
    amortize: Option<usize>,
) -> Row {
    let (mut kb, mut vb, mut side, mut vals) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut amort_tokens = 0;
    for (h, r) in heads.iter().zip(res) {
        let n = r.tokens as f64 * h.d as f64;
        vals += n;
        kb += r.k_bytes as f64 * 8.0;
        vb += r.v_bytes as f64 * 8.0;
        let a = amortize.unwrap_or(r.tokens).max(1);
        amort_tokens = a;
        // Side bytes spread over `a` tokens of K and V.
        side += r.side_bytes as f64 * 8.0 / (2.0 * a as f64 * h.d as f64) * 2.0 * n;
    }
    let side_bpv = side / (2.0 * vals);
    let bpv = (kb + vb) / (2.0 * vals) + side_bpv;
    let med =
        |f: &dyn Fn(&HeadMetrics) -> f64| median(&res.iter().map(|r| f(&r.m)).collect::<Vec<_>>());
    Row {
        codec,
        bits,
        bits_per_value: bpv,
        key_bits_per_value: kb / vals,
        value_bits_per_value: vb / vals,
        side_bits_per_value: side_bpv,
        amortize_tokens: amort_tokens,
        compression_vs_bf16: 16.0 / bpv,
        compression_vs_f32: 32.0 / bpv,
        nmse: med(&|m| m.nmse),
        cosine: med(&|m| m.cosine),
        norm_ratio: med(&|m| m.norm_ratio),
        ip_bias_slope: med(&|m| m.ip_bias_slope),
        ip_err_var: med(&|m| m.ip_err_var),
        attn_rel_err: med(&|m| m.attn_rel_err),
        attn_kl: med(&|m| m.attn_kl),
        v_nmse: med(&|m| m.v_nmse),
        worst: Worst {
            nmse: worst(heads, res, |m| m.nmse, true),
            cosine: worst(heads, res, |m| m.cosine, false),
            attn_rel_err: worst(heads, res, |m| m.attn_rel_err, true),
            attn_kl: worst(heads, res, |m| m.attn_kl, true),
        },
        heads: res.len(),
    }
}
