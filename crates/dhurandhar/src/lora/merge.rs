//! `W' = W + Σ weight · (alpha/r) · B·A` written into a new GGUF: every adapted
//! projection is dequantized, updated and stored as F32 (no second rounding, so the
//! merged file computes what the base with the adapters applied at run time computes);
//! every other tensor is copied byte for byte. Quantize the result afterwards to ship
//! it smaller.

use std::path::PathBuf;
use std::time::Instant;

use dhurandhar_checkpoint::gguf::{GgmlType, GgufFile};
use dhurandhar_checkpoint::gguf_write::GgufTensorOut;
use dhurandhar_checkpoint::map_file;
use dhurandhar_lora::{Adapter, LoraPair};
use rayon::prelude::*;
use serde::Serialize;

use super::{load_adapters, AdapterSpec};
use crate::gguf_out::GgufOut;
use crate::{CancelToken, Error, Progress, Result, Unit};

/// Version of the [`MergeReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// What to merge.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    /// The base GGUF.
    pub base: PathBuf,
    /// Adapters (PEFT directories) with their weights.
    pub adapters: Vec<AdapterSpec>,
    /// The merged GGUF (written atomically; never the base).
    pub output: PathBuf,
}

/// The `lora merge --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub schema_version: u32,
    pub base: String,
    pub output: String,
    pub adapters: Vec<String>,
    /// Projections updated (stored as F32).
    pub merged_tensors: usize,
    /// Tensors copied unchanged.
    pub copied_tensors: usize,
    pub base_file_bytes: u64,
    pub output_file_bytes: u64,
    pub seconds: f64,
}

/// Add `scale · B·A` to `w` (`out × in`, row-major).
fn add_delta(w: &mut [f32], p: &LoraPair, scale: f32) {
    w.par_chunks_mut(p.in_features)
        .zip(p.b.par_chunks(p.r))
        .for_each(|(row, b)| {
            for (bj, a) in b.iter().zip(p.a.chunks_exact(p.in_features)) {
                let s = scale * bj;
                for (x, av) in row.iter_mut().zip(a) {
                    *x += s * av;
                }
            }
        });
}

/// Merge `opts.adapters` into `opts.base`.
pub fn merge(
    opts: &MergeOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<MergeReport> {
    let started = Instant::now();
    if opts.adapters.is_empty() {
        return Err(Error::invalid("adapters", "none given; nothing to merge"));
    }
    let (base, output) = (&opts.base, &opts.output);
    dhurandhar_io::check_regular(base)?;
    dhurandhar_io::check_output(output, &[base.as_path()])?;
    let model = crate::generate::load_model(base)?;
    let adapters: Vec<(Adapter, f32)> = load_adapters(&model, &opts.adapters)?;
    // Every pair against the model's shapes, before anything is written.
    dhurandhar_engine::LoraStack::check(&model.config, &adapters)?;
    drop(model);

    let map = map_file(base)?;
    let origin = base.display().to_string();
    let file = GgufFile::parse(&map, &origin)?;
    file.check_ranges(map.len() as u64, &origin)?;
    super::check_tensor_names(&file, &origin, &adapters)?;
    let updates = |name: &str| -> Vec<(&LoraPair, f32)> {
        adapters
            .iter()
            .filter_map(|(a, w)| a.pairs.get(name).map(|p| (p, a.scale() * w)))
            .collect()
    };
    let outs: Vec<GgufTensorOut> = file
        .tensors
        .iter()
        .map(|t| GgufTensorOut {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ggml_type: if updates(&t.name).is_empty() {
                t.ggml_type
            } else {
                GgmlType::F32
            },
        })
        .collect();
    let mut w = GgufOut::create(output, &file.metadata, &outs)?;
    progress.start("merge", Some(file.total_tensor_bytes()), Unit::Bytes);
    let (mut merged, mut copied) = (0, 0);
    for t in &file.tensors {
        cancel.check()?;
        let data = file
            .tensor_data(t, &map)
            .expect("tensor ranges were checked against the file");
        let ups = updates(&t.name);
        if ups.is_empty() {
            w.write(data)?;
            copied += 1;
        } else {
            let n = t.shape.first().copied().unwrap_or(1) as usize;
            let mut rows = vec![0f32; t.n_elements() as usize];
            crate::quantize::to_f32(t.ggml_type, data, n, &mut rows)
                .map_err(|e| e.context(format!("tensor `{}`", t.name)))?;
            for (p, scale) in ups {
                add_delta(&mut rows, p, scale);
            }
            let bytes: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write(&bytes)?;
            merged += 1;
        }
        w.end_tensor()?;
        progress.advance(t.n_bytes);
    }
    cancel.check()?;
    w.commit()?;
    progress.finish();
    Ok(MergeReport {
        schema_version: SCHEMA_VERSION,
        base: origin,
        output: output.display().to_string(),
        adapters: opts
            .adapters
            .iter()
            .map(|a| a.path.display().to_string())
            .collect(),
        merged_tensors: merged,
        copied_tensors: copied,
        base_file_bytes: map.len() as u64,
        output_file_bytes: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0),
        seconds: started.elapsed().as_secs_f64(),
    })
}
