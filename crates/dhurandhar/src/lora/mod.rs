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

pub mod data;
pub mod export;
pub mod export_hf;
pub mod merge;
pub mod peft;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dhurandhar_engine::{LoraStack, Model};
use dhurandhar_lora::{Adapter, Estimate, LoraJob};
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

pub use export::{export_gguf, ExportOptions, ExportReport};
pub use export_hf::{export_hf, ExportHfOptions, ExportHfReport};
pub use merge::{merge, MergeOptions, MergeReport};
pub use train::{train, TrainOptions, TrainReport};

/// An adapter to apply: a PEFT directory, and the weight its update is multiplied by
/// (1 = as trained).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub path: PathBuf,
    pub weight: f32,
}

impl AdapterSpec {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AdapterSpec {
            path: path.into(),
            weight: 1.0,
        }
    }
}

/// Read each adapter for `model` (PEFT layout; Q/K rows reordered as the GGUF's are).
pub fn load_adapters(model: &Model, specs: &[AdapterSpec]) -> Result<Vec<(Adapter, f32)>> {
    let g = peft::Geometry::from(&model.config);
    specs
        .iter()
        .map(|s| {
            if !s.weight.is_finite() {
                return Err(Error::invalid(
                    "adapters",
                    format!("{}: weight {} is not finite", s.path.display(), s.weight),
                ));
            }
            Ok((peft::load(&s.path, &g)?, s.weight))
        })
        .collect()
}

/// The adapters as a session applies them (`None` when there are none), each checked
/// against the model's shapes.
pub fn load_stack(model: &Model, specs: &[AdapterSpec]) -> Result<Option<Arc<LoraStack>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let adapters = load_adapters(model, specs)?;
    let stack = LoraStack::new(&model.config, adapters).map_err(|e| {
        let names: Vec<String> = specs.iter().map(|s| s.path.display().to_string()).collect();
        Error::from(e).context(format!(
            "adapters {} do not fit the model",
            names.join(", ")
        ))
    })?;
    Ok(Some(Arc::new(stack)))
}

/// Refuse adapters whose tensors the base file does not have under that name (a fused
/// `attn_qkv` or gate/up file, which the engine adapts after splitting but which a
/// merged or exported adapter would have to address by name).
fn check_tensor_names(
    base: &dhurandhar_checkpoint::gguf::GgufFile,
    origin: &str,
    adapters: &[(Adapter, f32)],
) -> Result<()> {
    let names: std::collections::HashSet<&str> =
        base.tensors.iter().map(|t| t.name.as_str()).collect();
    for (a, _) in adapters {
        if let Some(missing) = a.pairs.keys().find(|k| !names.contains(k.as_str())) {
            return Err(Error::invalid(
                "adapters",
                format!(
                    "{origin} has no tensor `{missing}` (its projections are fused); \
                     apply the adapter at run time instead"
                ),
            ));
        }
    }
    Ok(())
}

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
    /// The job (default: [`default_job`], the Python tool's QLoRA recipe).
    pub job: LoraJob,
    /// The base model, instead of the job's `base_model`: a built-in name, a YAML profile
    /// or a checkpoint (see [`resolve_model`]).
    pub model: Option<String>,
    /// Stored format of the frozen base when the model is not a checkpoint.
    pub base_format: String,
}

/// The job a front end uses when it is given no job file: every default, on the
/// planner's default model.
pub fn default_job() -> LoraJob {
    LoraJob {
        base_model: crate::plan::DEFAULT_MODEL.into(),
        ..LoraJob::default()
    }
}

impl Default for DryRunOptions {
    fn default() -> Self {
        DryRunOptions {
            job: default_job(),
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
    let targets = job.lora.targets();
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
    use dhurandhar_lora::TargetModule;

    #[test]
    fn a_job_without_a_model_is_refused() {
        let e = dry_run(&DryRunOptions {
            job: LoraJob::default(),
            ..DryRunOptions::default()
        })
        .unwrap_err()
        .to_string();
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

    /// A random adapter on every target of a few layers of `c`'s shape.
    fn random_adapter(c: &dhurandhar_engine::ModelConfig, seed: u64) -> Adapter {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let r = 2;
        let mut pairs = std::collections::BTreeMap::new();
        for layer in 0..c.n_layers.min(3) {
            for m in TargetModule::ALL {
                let (fin, fout) = dhurandhar_engine::lora::projection_shape(c, m);
                let mut v = |n: usize| (0..n).map(|_| rng.gen_range(-0.1f32..0.1)).collect();
                pairs.insert(
                    dhurandhar_lora::gguf_tensor_name(layer, m),
                    dhurandhar_lora::LoraPair {
                        r,
                        in_features: fin,
                        out_features: fout,
                        a: v(r * fin),
                        b: v(fout * r),
                    },
                );
            }
        }
        Adapter {
            r,
            alpha: 4.0,
            target_modules: TargetModule::ALL.to_vec(),
            base_model: "test".into(),
            pairs,
        }
    }

    /// Saved in PEFT's layout and read back (Q/K rows reordered both ways), the adapter
    /// is unchanged; the file's B for q_proj is in HF row order, not the GGUF's.
    #[test]
    fn peft_round_trip_on_the_real_model() {
        let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
            return;
        };
        let model = crate::generate::load_model(&path).unwrap();
        let g = peft::Geometry::from(&model.config);
        assert!(g.interleaved_rope, "SmolLM2 is a llama GGUF");
        let a = random_adapter(&model.config, 3);
        let dir = tempfile::tempdir().unwrap();
        peft::save(&a, dir.path(), &g).unwrap();
        assert_eq!(peft::load(dir.path(), &g).unwrap(), a);
        let flat = peft::Geometry {
            interleaved_rope: false,
            ..g
        };
        let as_stored = peft::load(dir.path(), &flat).unwrap();
        let key = "blk.0.attn_q.weight";
        assert_ne!(as_stored.pairs[key].b, a.pairs[key].b);
        assert_eq!(
            as_stored.pairs["blk.0.attn_v.weight"],
            a.pairs["blk.0.attn_v.weight"]
        );
    }

    /// Sessions over one loaded model take different adapters, in any order, without
    /// reloading: nothing of an adapter stays in the model (bit-identical logits).
    #[test]
    fn adapters_swap_between_sessions_over_one_model() {
        let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
            return;
        };
        let model = crate::generate::load_model(&path).unwrap();
        let a = random_adapter(&model.config, 5);
        let stack = Arc::new(LoraStack::new(&model.config, vec![(a, 1.0)]).unwrap());
        let prompt = [504, 3575, 282, 4649];
        let run = |stack: Option<Arc<LoraStack>>| {
            let mut s = model.session(1, None).unwrap();
            s.set_adapters(stack).unwrap();
            s.prefill(&prompt, 4).unwrap()
        };
        let base = run(None);
        let adapted = run(Some(Arc::clone(&stack)));
        assert_ne!(base, adapted);
        assert_eq!(run(None), base);
        assert_eq!(run(Some(stack)), adapted);
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
