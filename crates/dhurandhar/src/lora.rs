//! LoRA / QLoRA jobs: the job file, its commented default, and the dry run — trainable
//! parameters per target module, adapter bytes, and the training memory with the frozen
//! base charged as the planner charges it (exact for a checkpoint; at a weight format,
//! NF4 by default, for a built-in model or a profile).
//!
//! ```
//! use dhurandhar::lora::{dry_run, DryRunOptions};
//!
//! let report = dry_run(&DryRunOptions { model: Some("qwen2.5-0.5b".into()), ..DryRunOptions::default() })?;
//! let q = &report.estimate.modules[0];
//! assert_eq!((q.module, q.layers, q.shape), ("q_proj", 24, (896, 896)));
//! assert_eq!(q.trainable_params, 24 * 16 * (896 + 896));
//! # Ok::<(), dhurandhar::Error>(())
//! ```

use std::path::Path;

use dhurandhar_lora::{Estimate, LoraJob, TargetModule};
use serde::Serialize;

use crate::model::{resolve_model, ResolvedModel};
use crate::plan::{analyze_resolved, AnalyzeOptions, WeightChoice};
use crate::{Error, Result};

pub use dhurandhar_lora::JOB_TEMPLATE;

/// Report layout version of [`DryRunReport`].
pub const SCHEMA_VERSION: u32 = 1;
/// Largest job file read (they are a few KiB).
pub const MAX_JOB_BYTES: u64 = 1 << 20;
/// The frozen base's format when the model is not a checkpoint: QLoRA's 4-bit NormalFloat.
pub const DEFAULT_BASE_FORMAT: &str = "nf4";

/// Components of the plan that are frozen weights.
const BASE_COMPONENTS: [&str; 7] = [
    "decoder_weights",
    "ple",
    "token_embeddings",
    "lm_head",
    "experts",
    "vision_encoder",
    "audio_encoder",
];

/// Read and validate a job file; errors name the file and the field.
pub fn read_job(path: &Path) -> Result<LoraJob> {
    let text = dhurandhar_io::read_to_string_bounded(path, MAX_JOB_BYTES, "a LoRA job file")?;
    LoraJob::from_yaml(&text)
        .map_err(|e| Error::from(e).context(format!("{}: invalid LoRA job", path.display())))
}

/// Write the commented default job to `path` (atomically). An existing file is kept
/// unless `overwrite`.
pub fn write_template(path: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && path.exists() {
        return Err(Error::invalid(
            "output",
            format!(
                "{} exists; choose another path or allow overwriting it",
                path.display()
            ),
        ));
    }
    dhurandhar_io::check_output(path, &[])?;
    dhurandhar_io::write_atomic(path, JOB_TEMPLATE.as_bytes())?;
    Ok(())
}

/// What to estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunOptions {
    /// The job (defaults: the Python tool's QLoRA recipe).
    pub job: LoraJob,
    /// The base model, instead of the job's `base_model`: a built-in name, a YAML profile
    /// or a checkpoint (see [`resolve_model`]).
    pub model: Option<String>,
    /// Stored format of the frozen base when the model is not a checkpoint.
    pub base_format: String,
}

impl Default for DryRunOptions {
    fn default() -> Self {
        DryRunOptions {
            job: LoraJob::default(),
            model: None,
            base_format: DEFAULT_BASE_FORMAT.into(),
        }
    }
}

/// The dry run: the job as read, where the base's bytes come from, and the estimate.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    pub schema_version: u32,
    pub model: String,
    pub model_origin: String,
    /// `checkpoint` (the file's tensor bytes) or the format the base was charged at.
    pub base_format: String,
    /// `checkpoint` or `estimated`.
    pub base_weights_source: &'static str,
    pub job: LoraJob,
    pub estimate: Estimate,
}

/// Estimate a LoRA job without running it.
pub fn dry_run(opts: &DryRunOptions) -> Result<DryRunReport> {
    let job = &opts.job;
    job.validate()?;
    let spec =
        match &opts.model {
            Some(m) => m.as_str(),
            None if job.base_model.trim().is_empty() => return Err(Error::invalid(
                "model",
                "the job names no base_model; give one (a built-in name, a YAML profile or a GGUF)",
            )),
            None => job.base_model.as_str(),
        };
    let model = resolve_model(spec)?;
    dry_run_resolved(opts, model)
}

/// [`dry_run`] for a model already resolved (`opts.model` and the job's `base_model`
/// are not read).
pub fn dry_run_resolved(opts: &DryRunOptions, model: ResolvedModel) -> Result<DryRunReport> {
    let job = &opts.job;
    job.validate()?;
    let targets: Vec<TargetModule> = job
        .lora
        .target_modules
        .iter()
        .filter_map(|m| TargetModule::from_hf(m))
        .collect();
    let checkpoint = model.weights.is_some();
    let arch = model.arch.clone();
    let origin = model.origin.clone();
    let plan = analyze_resolved(
        &AnalyzeOptions {
            model: String::new(),
            context_tokens: job.training.max_seq_length as u64,
            weights: WeightChoice::Format(opts.base_format.clone()),
            strip_audio: job.strip_audio_encoder,
            strip_vision: false,
            ..AnalyzeOptions::default()
        },
        model,
        &[],
    )
    .map_err(|e| e.context("cannot size the frozen base"))?;
    let base_bytes: u64 = plan
        .components
        .iter()
        .filter(|c| BASE_COMPONENTS.contains(&c.name))
        .map(|c| c.bytes)
        .sum();
    let p = &plan.params;
    let audio = if job.strip_audio_encoder {
        0
    } else {
        p.audio_encoder
    };
    let total_params = p.text_total + p.vision_encoder + audio + p.unified_modality;
    let estimate = dhurandhar_lora::estimate(&arch, job, &targets, base_bytes, total_params);
    Ok(DryRunReport {
        schema_version: SCHEMA_VERSION,
        model: arch.name.clone(),
        model_origin: origin,
        base_format: if checkpoint {
            "checkpoint".into()
        } else {
            plan.weight_format.name
        },
        base_weights_source: plan.weights_source,
        job: job.clone(),
        estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_without_a_model_is_refused() {
        let e = dry_run(&DryRunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("base_model"), "{e}");
    }

    /// The frozen base is what `analyze` charges for the same weights at the same format.
    #[test]
    fn the_base_is_the_plans_weights() {
        let r = dry_run(&DryRunOptions {
            model: Some("llama-3.2-1b".into()),
            ..DryRunOptions::default()
        })
        .unwrap();
        let plan = crate::plan::analyze(&AnalyzeOptions {
            model: "llama-3.2-1b".into(),
            weights: WeightChoice::Format("nf4".into()),
            ..AnalyzeOptions::default()
        })
        .unwrap();
        // Tied embeddings: no lm_head component.
        let weights: u64 = plan
            .components
            .iter()
            .filter(|c| ["decoder_weights", "token_embeddings"].contains(&c.name))
            .map(|c| c.bytes)
            .sum();
        assert!(plan.components.iter().all(|c| c.name != "lm_head"));
        assert_eq!(r.estimate.memory.base_weights, weights);
        assert_eq!(r.base_format, "nf4");
        // 16 layers × r 16 × (q 2048+2048, k/v 2048+512 each, o 2048+2048, FFN 3 × (2048+8192)).
        let per_layer = 16 * ((4096 + 2560 + 2560 + 4096) + 3 * (2048 + 8192));
        assert_eq!(r.estimate.trainable_params, 16 * per_layer);
    }

    #[test]
    fn the_template_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.yaml");
        write_template(&p, false).unwrap();
        assert_eq!(read_job(&p).unwrap().base_model, "gemma4-e2b");
        let e = write_template(&p, false).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        write_template(&p, true).unwrap();
        std::fs::write(&p, "lora:\n  rank: 8\n").unwrap();
        let e = read_job(&p).unwrap_err().to_string();
        assert!(e.contains("job.yaml") && e.contains("rank"), "{e}");
    }
}
