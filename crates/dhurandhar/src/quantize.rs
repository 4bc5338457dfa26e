//! Quantize a GGUF model into another GGUF with a `llama-quantize` preset (`q4_k_m`,
//! `q8_0`, …): every metadata key copied, `general.file_type` updated, each weight
//! matrix converted to the type the preset gives its role, everything else copied.
//!
//! The input is memory-mapped and the output streamed tensor by tensor through an
//! atomic file, a slab of rows at a time, so memory stays at one slab of f32 rows plus
//! its quantized bytes whatever the model's size. Inputs that are already quantized are
//! dequantized first (with the engine's dequantizers) and reported as requantized: the
//! result carries the rounding of both types.
//!
//! The quality figure per tensor is the relative RMS error `‖x − x̂‖ / ‖x‖` over a
//! sample of rows, `x` being the input's values (dequantized if the input was
//! quantized) and `x̂` the output's, read back with the engine's dequantizers.

use std::path::PathBuf;
use std::time::Instant;

use dhurandhar_checkpoint::gguf::{GgmlType, GgufFile, GgufTensorInfo, GgufValue};
use dhurandhar_checkpoint::gguf_write::{GgufTensorOut, GgufWriter};

use crate::gguf_out::GgufOut;
use dhurandhar_checkpoint::{map_file, DType};
use dhurandhar_quantize::preset::{self, ModelInfo, TensorDesc};
use dhurandhar_quantize::{Format, Preset};
use rayon::prelude::*;
use serde::Serialize;

use crate::{CancelToken, Error, Progress, Result, Unit};

/// Version of the [`QuantizeReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// f32 values per slab of rows converted at once (32 MiB).
const SLAB_VALUES: usize = 8 << 20;
/// Bytes per progress step when a tensor is copied unchanged.
const COPY_CHUNK: usize = 8 << 20;

/// What to quantize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// A `.gguf` file (F32/F16/BF16 or already quantized).
    pub input: PathBuf,
    /// The `.gguf` to write (atomically; never one of the inputs).
    pub output: PathBuf,
    /// A preset name: `q4_k_m`, `q4_k_s`, `q5_k_m`, `q5_k_s`, `q6_k`, `q8_0`, `q4_0`,
    /// `q4_1`, `q5_0`, `q5_1`, `q2_k`, `q3_k_s`, `q3_k_m`, `q3_k_l`, `f16`, `bf16`.
    pub preset: String,
    /// Rows per tensor whose reconstruction error is measured (evenly spaced).
    pub sample_rows: usize,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            input: PathBuf::new(),
            output: PathBuf::new(),
            preset: "q4_k_m".into(),
            sample_rows: 16,
        }
    }
}

/// The preset names, in the order help texts list them.
pub fn preset_names() -> Vec<&'static str> {
    Preset::ALL.iter().map(|p| p.name()).collect()
}

/// One preset and what it does, for help texts.
pub fn preset_help() -> Vec<(&'static str, &'static str)> {
    Preset::ALL
        .iter()
        .map(|p| (p.name(), p.describe()))
        .collect()
}

/// One tensor of the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorRow {
    pub name: String,
    /// ggml order (row length first).
    pub shape: Vec<u64>,
    pub old_type: String,
    pub new_type: String,
    /// The type the preset chose when the row length forced `new_type` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// `‖x − x̂‖ / ‖x‖` over the sampled rows; `None` when the tensor was copied.
    pub rel_rms_error: Option<f64>,
    pub sampled_rows: usize,
}

/// Sums over the tensors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub tensors: usize,
    /// Tensors whose type changed.
    pub converted: usize,
    /// Tensors copied byte for byte (not quantizable, or already the target type).
    pub copied: usize,
    /// Tensors whose row length forced a fallback type.
    pub fallbacks: usize,
    pub input_tensor_bytes: u64,
    pub output_tensor_bytes: u64,
    pub input_file_bytes: u64,
    pub output_file_bytes: u64,
    /// Output tensor bits per weight.
    pub bits_per_weight: f64,
    /// Stored bytes per output type.
    pub bytes_by_type: std::collections::BTreeMap<String, u64>,
    /// The converted tensor with the largest relative RMS error, and that error.
    pub worst_tensor: Option<String>,
    pub worst_rel_rms_error: Option<f64>,
}

/// The `quantize --json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantizeReport {
    pub schema_version: u32,
    pub input: String,
    pub output: String,
    pub preset: String,
    /// `general.file_type` written (llama.cpp's `llama_ftype`).
    pub file_type: u32,
    /// Block-quantized input tensors that were dequantized and quantized again.
    pub requantized_tensors: usize,
    /// Things the user should know (requantization, fallbacks).
    pub warnings: Vec<String>,
    pub tensors: Vec<TensorRow>,
    pub totals: Totals,
    pub seconds: f64,
}

fn ggml_of(f: Format) -> GgmlType {
    GgmlType::from_u32(f.ggml_id()).expect("every quantize format is a ggml type")
}

fn is_float(t: GgmlType) -> bool {
    matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Dequantize `bytes` (rows of `n` values stored as `t`) into `out`.
pub(crate) fn to_f32(t: GgmlType, bytes: &[u8], n: usize, out: &mut [f32]) -> Result<()> {
    if let Ok(d) = DType::try_from(t) {
        let mut v = Vec::with_capacity(out.len());
        if d.to_f32(bytes, &mut v) && v.len() == out.len() {
            out.copy_from_slice(&v);
            return Ok(());
        }
    }
    let rb = t.tensor_bytes(&[n as u64]).unwrap_or(0) as usize;
    out.par_chunks_mut(n)
        .zip(bytes.par_chunks(rb.max(1)))
        .try_for_each(|(o, b)| dhurandhar_engine::quant::dequantize_row(t, b, o))?;
    Ok(())
}

fn model_info(f: &GgufFile) -> ModelInfo {
    let n = |k: &str| f.arch_get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    ModelInfo {
        arch: f.architecture().unwrap_or("").to_string(),
        n_layer: n("block_count"),
        n_head: n("attention.head_count"),
        n_head_kv: n("attention.head_count_kv"),
        n_expert: n("expert_count"),
    }
}

/// The input metadata with `general.file_type` and `general.quantization_version`
/// set and the split keys of a sharded input dropped (the output is one file).
fn output_metadata(f: &GgufFile, file_type: u32) -> Vec<(String, GgufValue)> {
    let mut m: Vec<(String, GgufValue)> = f
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("split."))
        .cloned()
        .collect();
    for (key, v) in [
        ("general.quantization_version", 2u32),
        ("general.file_type", file_type),
    ] {
        match m.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = GgufValue::U32(v),
            None => m.push((key.to_string(), GgufValue::U32(v))),
        }
    }
    m
}

/// Evenly spaced row indices, at most `k` of `rows`.
fn sample(rows: usize, k: usize) -> Vec<usize> {
    let k = k.min(rows);
    (0..k).map(|i| i * rows / k).collect()
}

/// Quantize `opts.input` into `opts.output`.
pub fn quantize(
    opts: &QuantizeOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<QuantizeReport> {
    let started = Instant::now();
    let preset = Preset::from_name(&opts.preset).ok_or_else(|| {
        Error::invalid(
            "preset",
            format!(
                "unknown type `{}`; one of: {}",
                opts.preset,
                preset_names().join(", ")
            ),
        )
    })?;
    let (input, output) = (&opts.input, &opts.output);
    dhurandhar_io::check_regular(input)?;
    dhurandhar_io::check_output(output, &[input.as_path()])?;
    let map = map_file(input)?;
    let origin = input.display().to_string();
    let file = GgufFile::parse(&map, &origin)?;
    file.check_ranges(map.len() as u64, &origin)?;

    let descs: Vec<TensorDesc> = file
        .tensors
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            shape: t.shape.clone(),
        })
        .collect();
    let plans = preset::plan(preset, &model_info(&file), &descs);
    let targets: Vec<GgmlType> = file
        .tensors
        .iter()
        .zip(&plans)
        .map(|(t, p)| p.target.map_or(t.ggml_type, ggml_of))
        .collect();
    // Refuse inputs we cannot read before writing anything.
    for (t, &to) in file.tensors.iter().zip(&targets) {
        if to != t.ggml_type
            && !is_float(t.ggml_type)
            && !dhurandhar_engine::computes_with(t.ggml_type)
        {
            return Err(Error::invalid(
                "input",
                format!(
                    "{origin}: tensor `{}` is stored as {}, which cannot be dequantized for requantizing",
                    t.name, t.ggml_type
                ),
            ));
        }
    }

    let outs: Vec<GgufTensorOut> = file
        .tensors
        .iter()
        .zip(&targets)
        .map(|(t, &ty)| GgufTensorOut {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ggml_type: ty,
        })
        .collect();
    let out_path = output.display().to_string();
    let mut w = GgufOut::create(output, &output_metadata(&file, preset.file_type()), &outs)?;

    progress.start("quantize", Some(file.total_tensor_bytes()), Unit::Bytes);
    let mut rows_out = Vec::with_capacity(file.tensors.len());
    let mut requantized = 0;
    for ((t, plan), &to) in file.tensors.iter().zip(&plans).zip(&targets) {
        cancel.check()?;
        let data = file
            .tensor_data(t, &map)
            .expect("tensor ranges were checked against the file");
        let mut row = TensorRow {
            name: t.name.clone(),
            shape: t.shape.clone(),
            old_type: t.ggml_type.name().to_string(),
            new_type: to.name().to_string(),
            fallback_from: plan.fallback_from.map(|f| f.name().to_string()),
            old_bytes: t.n_bytes,
            new_bytes: to.tensor_bytes(&t.shape).unwrap_or(0),
            rel_rms_error: None,
            sampled_rows: 0,
        };
        if to == t.ggml_type {
            for chunk in data.chunks(COPY_CHUNK) {
                cancel.check()?;
                w.write(chunk)?;
                progress.advance(chunk.len() as u64);
            }
        } else {
            if !is_float(t.ggml_type) {
                requantized += 1;
            }
            let format = plan.target.expect("a changed type comes from the preset");
            let converted = convert(
                t,
                data,
                format,
                opts.sample_rows,
                w.writer(),
                progress,
                cancel,
            );
            let (sq_err, sq_ref, n) = converted.map_err(|e| match e {
                ConvertError::Io(e) => w.io_error(e),
                ConvertError::Other(e) => e.context(format!("tensor `{}`", t.name)),
            })?;
            row.sampled_rows = n;
            row.rel_rms_error = Some(if sq_ref > 0.0 {
                (sq_err / sq_ref).sqrt()
            } else {
                sq_err.sqrt()
            });
        }
        w.end_tensor()?;
        rows_out.push(row);
    }
    cancel.check()?;
    w.commit()?;
    progress.finish();

    let output_file_bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let mut warnings = Vec::new();
    if requantized > 0 {
        let mut types: Vec<&str> = file
            .tensors
            .iter()
            .filter(|t| !is_float(t.ggml_type))
            .map(|t| t.ggml_type.name())
            .collect();
        types.sort();
        types.dedup();
        warnings.push(format!(
            "the input is already quantized ({}): {requantized} tensors were dequantized and quantized again, which adds the rounding of both types; quantize from an F32/F16/BF16 file when there is one",
            types.join(", ")
        ));
    }
    let fallbacks = rows_out
        .iter()
        .filter(|r| r.fallback_from.is_some())
        .count();
    if fallbacks > 0 {
        warnings.push(format!(
            "{fallbacks} tensors have rows that are not a whole number of their type's blocks and fell back to another type (as llama-quantize does)"
        ));
    }
    let totals = totals(
        &rows_out,
        map.len() as u64,
        output_file_bytes,
        &file.tensors,
    );
    Ok(QuantizeReport {
        schema_version: SCHEMA_VERSION,
        input: origin,
        output: out_path,
        preset: preset.name().to_string(),
        file_type: preset.file_type(),
        requantized_tensors: requantized,
        warnings,
        tensors: rows_out,
        totals,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn totals(rows: &[TensorRow], in_file: u64, out_file: u64, infos: &[GgufTensorInfo]) -> Totals {
    let mut bytes_by_type = std::collections::BTreeMap::new();
    for r in rows {
        *bytes_by_type.entry(r.new_type.clone()).or_insert(0) += r.new_bytes;
    }
    let weights: u64 = infos.iter().map(|t| t.n_elements()).sum();
    let out_bytes: u64 = rows.iter().map(|r| r.new_bytes).sum();
    let worst = rows
        .iter()
        .filter_map(|r| r.rel_rms_error.map(|e| (e, &r.name)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let converted = rows.iter().filter(|r| r.old_type != r.new_type).count();
    Totals {
        tensors: rows.len(),
        converted,
        copied: rows.len() - converted,
        fallbacks: rows.iter().filter(|r| r.fallback_from.is_some()).count(),
        input_tensor_bytes: rows.iter().map(|r| r.old_bytes).sum(),
        output_tensor_bytes: out_bytes,
        input_file_bytes: in_file,
        output_file_bytes: out_file,
        bits_per_weight: if weights > 0 {
            out_bytes as f64 * 8.0 / weights as f64
        } else {
            0.0
        },
        bytes_by_type,
        worst_tensor: worst.map(|(_, n)| n.clone()),
        worst_rel_rms_error: worst.map(|(e, _)| e),
    }
}

enum ConvertError {
    Io(std::io::Error),
    Other(Error),
}

impl From<Error> for ConvertError {
    fn from(e: Error) -> Self {
        ConvertError::Other(e)
    }
}

/// Convert one tensor slab by slab into `w`; returns the squared error, squared
/// reference norm and number of the sampled rows.
fn convert<W: std::io::Write>(
    t: &GgufTensorInfo,
    data: &[u8],
    format: Format,
    sample_rows: usize,
    w: &mut GgufWriter<W>,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> std::result::Result<(f64, f64, usize), ConvertError> {
    let n = t.shape.first().copied().unwrap_or(1) as usize;
    let rows = (t.n_elements() as usize).checked_div(n).unwrap_or(0);
    let in_rb = t.ggml_type.tensor_bytes(&[n as u64]).unwrap_or(0) as usize;
    let out_rb = format.row_bytes(n).ok_or_else(|| {
        Error::invalid(
            "preset",
            format!("rows of {n} values do not fit {format} blocks"),
        )
    })?;
    let slab_rows = (SLAB_VALUES / n.max(1)).max(1);
    let samples = sample(rows, sample_rows);
    let out_type = ggml_of(format);
    let mut x = vec![0f32; slab_rows.min(rows) * n];
    let mut q = vec![0u8; slab_rows.min(rows) * out_rb];
    let mut back = vec![0f32; n];
    let (mut sq_err, mut sq_ref) = (0f64, 0f64);
    let mut r0 = 0;
    while r0 < rows {
        cancel.check()?;
        let k = slab_rows.min(rows - r0);
        let (xs, qs) = (&mut x[..k * n], &mut q[..k * out_rb]);
        to_f32(t.ggml_type, &data[r0 * in_rb..(r0 + k) * in_rb], n, xs)?;
        dhurandhar_quantize::quantize_rows(format, xs, n, qs)
            .map_err(|e| Error::invalid("preset", e.to_string()))?;
        for &r in samples.iter().filter(|&&r| r >= r0 && r < r0 + k) {
            let i = r - r0;
            dhurandhar_engine::quant::dequantize_row(
                out_type,
                &qs[i * out_rb..(i + 1) * out_rb],
                &mut back,
            )
            .map_err(Error::from)?;
            for (a, b) in xs[i * n..(i + 1) * n].iter().zip(&back) {
                sq_err += ((a - b) as f64).powi(2);
                sq_ref += (*a as f64).powi(2);
            }
        }
        w.write_data(qs).map_err(ConvertError::Io)?;
        progress.advance((k * in_rb) as u64);
        r0 += k;
    }
    Ok((sq_err, sq_ref, samples.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;
    use dhurandhar_checkpoint::gguf::GgufBuilder;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A two-layer llama-shaped file with F32 weights (rows of 256).
    fn tiny(dir: &std::path::Path) -> PathBuf {
        let h = 256u64;
        let vals = |n: u64, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0 - 0.5
                })
                .collect()
        };
        let mut b = GgufBuilder::new()
            .kv("general.architecture", GgufValue::String("llama".into()))
            .kv("general.file_type", GgufValue::U32(0))
            .kv("llama.block_count", GgufValue::U32(2))
            .kv("llama.attention.head_count", GgufValue::U32(4))
            .kv("llama.attention.head_count_kv", GgufValue::U32(4))
            .tensor(
                "token_embd.weight",
                &[h, 8],
                GgmlType::F32,
                f32_bytes(&vals(h * 8, 1)),
            )
            .tensor(
                "output_norm.weight",
                &[h],
                GgmlType::F32,
                f32_bytes(&vals(h, 2)),
            );
        for l in 0..2 {
            for (i, name) in ["attn_q", "attn_v", "ffn_down"].iter().enumerate() {
                b = b.tensor(
                    &format!("blk.{l}.{name}.weight"),
                    &[h, 4],
                    GgmlType::F32,
                    f32_bytes(&vals(h * 4, 10 * l + i as u32)),
                );
            }
        }
        let p = dir.join("tiny.gguf");
        std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
        p
    }

    #[test]
    fn q4_k_m_of_a_float_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny(dir.path());
        let output = dir.path().join("out.gguf");
        let opts = QuantizeOptions {
            input: input.clone(),
            output: output.clone(),
            ..QuantizeOptions::default()
        };
        let r = quantize(&opts, &NoProgress, &CancelToken::new()).unwrap();
        assert_eq!(r.requantized_tensors, 0);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let f = GgufFile::open(&output).unwrap();
        assert_eq!(f.get_u64("general.file_type"), Some(15));
        assert_eq!(f.get_u64("llama.block_count"), Some(2));
        let ty = |n: &str| f.tensor(n).unwrap().ggml_type;
        // Tied embedding → output treatment; of 2 layers only the last is in the last
        // eighth (i ≥ 7·2/8), so only it gets more bits.
        assert_eq!(ty("token_embd.weight"), GgmlType::Q6K);
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q6K);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6K);
        assert_eq!(
            r.totals.output_file_bytes,
            std::fs::metadata(&output).unwrap().len()
        );
        for row in &r.tensors {
            if let Some(e) = row.rel_rms_error {
                // Uniform data: ~ step/√12 relative to RMS 0.29 → a few percent.
                assert!(e > 0.0 && e < 0.1, "{}: {e}", row.name);
            }
        }
        // Requantizing the output to q8_0 says so.
        let again = QuantizeOptions {
            input: output.clone(),
            output: dir.path().join("q8.gguf"),
            preset: "Q8_0".into(),
            ..QuantizeOptions::default()
        };
        let r2 = quantize(&again, &NoProgress, &CancelToken::new()).unwrap();
        assert_eq!(r2.requantized_tensors, 7);
        assert!(
            r2.warnings[0].contains("already quantized (Q4_K, Q6_K)"),
            "{:?}",
            r2.warnings
        );
    }

    #[test]
    fn refusals_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let input = tiny(dir.path());
        let bad = QuantizeOptions {
            input: input.clone(),
            output: dir.path().join("o.gguf"),
            preset: "q4_k_x".into(),
            ..QuantizeOptions::default()
        };
        let e = quantize(&bad, &NoProgress, &CancelToken::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown type `q4_k_x`; one of: q4_k_m"),
            "{e}"
        );
        let same = QuantizeOptions {
            output: input.clone(),
            input: input.clone(),
            ..QuantizeOptions::default()
        };
        assert!(quantize(&same, &NoProgress, &CancelToken::new()).is_err());
        let cancel = CancelToken::new();
        cancel.cancel();
        let opts = QuantizeOptions {
            input,
            output: dir.path().join("c.gguf"),
            ..QuantizeOptions::default()
        };
        assert!(matches!(
            quantize(&opts, &NoProgress, &cancel),
            Err(Error::Cancelled)
        ));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the input remains");
    }
}
