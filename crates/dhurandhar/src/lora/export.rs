//! An adapter as llama.cpp's LoRA GGUF (`llama-cli --lora FILE`): `general.type =
//! adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the base's
//! `general.architecture`, and per adapted tensor `NAME.lora_a` (`r` rows of `in`) and
//! `NAME.lora_b` (`out` rows of `r`) in F32 — PEFT's `A` and `B` with the rows of `B` in
//! the GGUF's order. llama.cpp scales the update by `alpha / r`, as PEFT does.

use std::path::PathBuf;

use dhurandhar_checkpoint::gguf::{GgmlType, GgufValue};
use dhurandhar_checkpoint::gguf_write::GgufTensorOut;
use serde::Serialize;

use super::{load_adapters, AdapterSpec};
use crate::gguf_out::GgufOut;
use crate::Result;

/// Version of the [`ExportReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// What to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The PEFT adapter directory.
    pub adapter: PathBuf,
    /// The base GGUF the adapter was trained for (its architecture and Q/K row order).
    pub base: PathBuf,
    /// The LoRA GGUF to write (atomically).
    pub output: PathBuf,
}

/// The `lora export-gguf --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub schema_version: u32,
    pub adapter: String,
    pub base: String,
    pub output: String,
    pub architecture: String,
    pub r: usize,
    pub alpha: f64,
    /// Adapted tensors (each written as a `lora_a` / `lora_b` pair).
    pub tensors: usize,
    pub output_file_bytes: u64,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write `opts.adapter` as a llama.cpp LoRA GGUF.
pub fn export_gguf(opts: &ExportOptions) -> Result<ExportReport> {
    let output = &opts.output;
    dhurandhar_io::check_regular(&opts.base)?;
    dhurandhar_io::check_output(output, &[opts.base.as_path()])?;
    let model = crate::generate::load_model(&opts.base)?;
    let mut adapters = load_adapters(&model, &[AdapterSpec::new(&opts.adapter)])?;
    dhurandhar_engine::LoraStack::check(&model.config, &adapters)?;
    let map = dhurandhar_checkpoint::map_file(&opts.base)?;
    let origin = opts.base.display().to_string();
    let file = dhurandhar_checkpoint::gguf::GgufFile::parse(&map, &origin)?;
    super::check_tensor_names(&file, &origin, &adapters)?;
    drop(map);
    let (adapter, _) = adapters.pop().expect("one adapter was loaded");
    let arch = model.config.architecture.clone();
    drop(model);
    let metadata = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String(arch.clone()),
        ),
        (
            "general.type".to_string(),
            GgufValue::String("adapter".into()),
        ),
        ("adapter.type".to_string(), GgufValue::String("lora".into())),
        (
            "adapter.lora.alpha".to_string(),
            GgufValue::F32(adapter.alpha as f32),
        ),
    ];
    let mut outs = Vec::with_capacity(2 * adapter.pairs.len());
    for (name, p) in &adapter.pairs {
        outs.push(GgufTensorOut {
            name: format!("{name}.lora_a"),
            shape: vec![p.in_features as u64, p.r as u64],
            ggml_type: GgmlType::F32,
        });
        outs.push(GgufTensorOut {
            name: format!("{name}.lora_b"),
            shape: vec![p.r as u64, p.out_features as u64],
            ggml_type: GgmlType::F32,
        });
    }
    let mut w = GgufOut::create(output, &metadata, &outs)?;
    for p in adapter.pairs.values() {
        for half in [&p.a, &p.b] {
            w.write(&f32_bytes(half))?;
            w.end_tensor()?;
        }
    }
    w.commit()?;
    Ok(ExportReport {
        schema_version: SCHEMA_VERSION,
        adapter: opts.adapter.display().to_string(),
        base: opts.base.display().to_string(),
        output: output.display().to_string(),
        architecture: arch,
        r: adapter.r,
        alpha: adapter.alpha,
        tensors: adapter.pairs.len(),
        output_file_bytes: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0),
    })
}
