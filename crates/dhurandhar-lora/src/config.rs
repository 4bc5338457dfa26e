//! The LoRA job file: the Python tool's fields and defaults (`LoRAConfig`,
//! `TrainingConfig`, `FinetuneJobConfig`), read strictly — an unknown or misspelt field
//! is an error naming it, as for model profiles.

use serde::{Deserialize, Serialize};

use crate::LoraError;

/// A whole fine-tuning job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraJob {
    /// Base model: a GGUF path (training and merging need one), a built-in model name
    /// or a YAML profile (enough for a dry run).
    pub base_model: String,
    /// Training data: a JSONL file whose lines hold `text` or chat `messages`.
    pub dataset: String,
    /// Validation data (JSONL); empty: hold back `validation_fraction` of `dataset`.
    pub validation_dataset: String,
    /// Fraction of `dataset` held back for the eval loss when no validation file is given.
    pub validation_fraction: f64,
    /// Where checkpoints and the final adapter are written.
    pub output_dir: String,
    /// Drop an audio encoder from the parameter count (Gemma 3n/4 style models).
    pub strip_audio_encoder: bool,
    pub lora: LoraSection,
    pub training: TrainingSection,
}

/// The adapter's shape (PEFT's `LoraConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// HF projection names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    pub target_modules: Vec<String>,
    /// Only "none" is supported (as in the Python tool's default).
    pub bias: String,
}

/// The optimisation (the Python tool's `TrainingConfig`, with `max_seq_length` honoured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub epochs: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub gradient_checkpointing: bool,
    pub learning_rate: f64,
    /// "cosine", "linear" or "constant".
    pub lr_scheduler: String,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_seq_length: usize,
    pub seed: u64,
    pub logging_steps: usize,
    pub eval_steps: usize,
    pub save_steps: usize,
    pub save_total_limit: usize,
    /// Stop after this many optimizer steps (0: run all epochs).
    pub max_steps: usize,
}

impl Default for LoraJob {
    fn default() -> Self {
        LoraJob {
            base_model: String::new(),
            dataset: String::new(),
            validation_dataset: String::new(),
            validation_fraction: 0.1,
            output_dir: "./outputs/edge-model-lora".into(),
            strip_audio_encoder: false,
            lora: LoraSection::default(),
            training: TrainingSection::default(),
        }
    }
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            bias: "none".into(),
        }
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            epochs: 3.0,
            batch_size: 4,
            gradient_accumulation_steps: 4,
            gradient_checkpointing: true,
            learning_rate: 2e-4,
            lr_scheduler: "cosine".into(),
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            max_seq_length: 4096,
            seed: 42,
            logging_steps: 10,
            eval_steps: 100,
            save_steps: 500,
            save_total_limit: 3,
            max_steps: 0,
        }
    }
}

impl LoraSection {
    /// The target modules the engine knows, in the job's order (validation has refused
    /// any other name).
    pub fn targets(&self) -> Vec<crate::TargetModule> {
        self.target_modules
            .iter()
            .filter_map(|m| crate::TargetModule::from_hf(m))
            .collect()
    }
}

impl LoraJob {
    /// Parse and validate a job file's text.
    pub fn from_yaml(text: &str) -> Result<LoraJob, LoraError> {
        let job: LoraJob =
            serde_yaml_ng::from_str(text).map_err(|e| LoraError::Yaml(e.to_string()))?;
        job.validate()?;
        Ok(job)
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), LoraError> {
        let l = &self.lora;
        if !(1..=4096).contains(&l.r) {
            return Err(LoraError::invalid(
                "lora.r",
                format!("must be 1..=4096, got {}", l.r),
            ));
        }
        if !(l.alpha.is_finite() && l.alpha > 0.0) {
            return Err(LoraError::invalid(
                "lora.alpha",
                format!("must be > 0, got {}", l.alpha),
            ));
        }
        if !(0.0..1.0).contains(&l.dropout) {
            return Err(LoraError::invalid(
                "lora.dropout",
                format!("must be in [0, 1), got {}", l.dropout),
            ));
        }
        if l.target_modules.is_empty() {
            return Err(LoraError::invalid(
                "lora.target_modules",
                "is empty: nothing would be trained",
            ));
        }
        for m in &l.target_modules {
            if crate::TargetModule::from_hf(m).is_none() {
                return Err(LoraError::invalid(
                    "lora.target_modules",
                    format!(
                        "unknown module `{m}` (known: {})",
                        crate::TargetModule::hf_names().join(", ")
                    ),
                ));
            }
        }
        if l.bias != "none" {
            return Err(LoraError::invalid(
                "lora.bias",
                format!("only \"none\" is supported, got \"{}\"", l.bias),
            ));
        }
        let t = &self.training;
        if !(t.epochs.is_finite() && t.epochs > 0.0) {
            return Err(LoraError::invalid(
                "training.epochs",
                format!("must be > 0, got {}", t.epochs),
            ));
        }
        for (f, v) in [
            ("training.batch_size", t.batch_size),
            (
                "training.gradient_accumulation_steps",
                t.gradient_accumulation_steps,
            ),
            ("training.max_seq_length", t.max_seq_length),
        ] {
            if v == 0 {
                return Err(LoraError::invalid(f, "must be at least 1"));
            }
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(LoraError::invalid(
                "training.learning_rate",
                format!("must be > 0, got {}", t.learning_rate),
            ));
        }
        if !["cosine", "linear", "constant"].contains(&t.lr_scheduler.as_str()) {
            return Err(LoraError::invalid(
                "training.lr_scheduler",
                format!(
                    "unknown `{}` (known: cosine, linear, constant)",
                    t.lr_scheduler
                ),
            ));
        }
        if !(0.0..1.0).contains(&t.warmup_ratio) {
            return Err(LoraError::invalid(
                "training.warmup_ratio",
                format!("must be in [0, 1), got {}", t.warmup_ratio),
            ));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(LoraError::invalid(
                "validation_fraction",
                format!("must be in [0, 1), got {}", self.validation_fraction),
            ));
        }
        Ok(())
    }

    /// The LoRA scale applied to `B·A·x`: alpha / r.
    pub fn scale(&self) -> f64 {
        self.lora.alpha / self.lora.r as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_python_tools() {
        let j = LoraJob::from_yaml("base_model: m.gguf\n").unwrap();
        assert_eq!(j.lora.r, 16);
        assert_eq!(j.scale(), 2.0);
        assert_eq!(j.training.learning_rate, 2e-4);
        assert_eq!(j.lora.target_modules.len(), 7);
    }

    #[test]
    fn the_template_holds_the_defaults() {
        let j = LoraJob::from_yaml(crate::JOB_TEMPLATE).unwrap();
        assert_eq!(
            j,
            LoraJob {
                base_model: "gemma4-e2b".into(),
                ..LoraJob::default()
            }
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = LoraJob::from_yaml("lora:\n  rank: 8\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank"), "{e}");
        let e = LoraJob::from_yaml("lora:\n  target_modules: [qq_proj]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("qq_proj") && e.contains("q_proj"), "{e}");
    }
}
