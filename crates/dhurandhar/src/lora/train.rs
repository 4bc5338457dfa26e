//! `lora train`: a LoRA job run on the CPU over its frozen GGUF base.
//!
//! The data is tokenized and packed ([`super::data`]); each optimizer step takes
//! `batch_size × gradient_accumulation_steps` sequences, in an order that is a function
//! of the seed and the step alone (one seeded shuffle per epoch), with dropout masks
//! keyed the same way — so a run resumed from a checkpoint repeats the uninterrupted
//! run's loss curve. The learning rate follows Hugging Face's schedulers (linear
//! warm-up, then cosine, linear or constant). Checkpoints are PEFT adapters plus the
//! optimizer state, each written to a temporary directory and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dhurandhar_engine::train::{LossSum, TrainOptions as EngineOptions, Trainer};
use dhurandhar_engine::{Model, WeightMode};
use dhurandhar_lora::LoraJob;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{pack, read_examples, Example, Sequence};
use super::peft::{self, Geometry};
use super::{dry_run, DryRunOptions, DEFAULT_BASE_FORMAT};
use crate::{CancelToken, Error, Progress, Result, Unit};

/// Report layout version of [`TrainReport`].
pub const TRAIN_SCHEMA_VERSION: u32 = 1;
/// Files of a checkpoint besides the PEFT adapter.
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Largest checkpoint state file read.
const MAX_STATE_BYTES: u64 = 64 << 20;
/// Hugging Face's default gradient clip.
const MAX_GRAD_NORM: f32 = 1.0;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub job: LoraJob,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Continue from the newest checkpoint in the job's `output_dir`.
    pub resume: bool,
}

/// One logged step (every `logging_steps`, and the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub step: usize,
    /// Mean training loss per target token over the steps since the last record.
    pub loss: f64,
    pub learning_rate: f64,
    /// Gradient norm of the step, before clipping.
    pub grad_norm: f64,
    /// Training tokens (read, not only scored) per second since the last record.
    pub tokens_per_s: f64,
}

/// A validation pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: usize,
    pub loss: f64,
    pub tokens: usize,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub schema_version: u32,
    pub base_model: String,
    pub output_dir: String,
    pub threads: usize,
    pub train_sequences: usize,
    pub validation_sequences: usize,
    /// Tokens per packed sequence (the job's `max_seq_length`).
    pub sequence_length: usize,
    pub trainable_params: usize,
    /// Step this run started from (0, or the checkpoint it resumed).
    pub start_step: usize,
    pub steps: usize,
    pub total_steps: usize,
    pub epochs_done: f64,
    /// Tokens read by the training passes of this run.
    pub tokens: u64,
    /// Seconds of training steps (validation passes and checkpoint writes excluded).
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub history: Vec<LogRecord>,
    pub eval: Vec<EvalRecord>,
    /// Checkpoints kept in `output_dir`, oldest first.
    pub checkpoints: Vec<String>,
    /// Peak resident memory of this process (VmHWM), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// The dry run's training-memory total for this job.
    pub estimated_bytes: u64,
}

/// What a checkpoint holds besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: usize,
    /// The job's data and optimisation, which a resumed run must share.
    fingerprint: String,
    history: Vec<LogRecord>,
    eval: Vec<EvalRecord>,
}

/// What must be the same for a checkpoint to continue a run.
fn fingerprint(job: &LoraJob) -> String {
    let mut j = job.clone();
    // Where results go and how often they are logged or saved do not change the run.
    j.output_dir.clear();
    j.training.logging_steps = 0;
    j.training.eval_steps = 0;
    j.training.save_steps = 0;
    j.training.save_total_limit = 0;
    serde_json::to_string(&j).expect("plain data serializes")
}

/// The learning rate multiplier at (0-based) `step` of `total`, as Hugging Face's
/// `get_{cosine,linear,constant}_schedule_with_warmup`.
pub fn lr_factor(schedule: &str, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        "cosine" => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0),
        "linear" => (1.0 - progress).max(0.0),
        _ => 1.0,
    }
}

/// Hold back `fraction` of the examples (at least one when there are two or more),
/// chosen by a seeded shuffle.
fn split(mut examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut held = ((n as f64) * fraction).ceil() as usize;
    if fraction > 0.0 && n >= 2 {
        held = held.clamp(1, n - 1);
    } else {
        held = 0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0FDA_7A00));
    let valid_idx: std::collections::HashSet<usize> = order[..held].iter().copied().collect();
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for (i, e) in examples.drain(..).enumerate() {
        if valid_idx.contains(&i) {
            valid.push(e);
        } else {
            train.push(e);
        }
    }
    (train, valid)
}

/// Checkpoints in `dir` (`checkpoint-<step>` with a state file), by step.
fn checkpoints(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn io(path: &Path, e: std::io::Error) -> Error {
    dhurandhar_io::IoError::os(path, e).into()
}

/// Write checkpoint `step` atomically: a temporary directory filled, then renamed.
fn save_checkpoint(
    dir: &Path,
    trainer: &Trainer<'_>,
    g: &Geometry,
    base: &str,
    state: &State,
) -> Result<PathBuf> {
    let target = dir.join(format!("checkpoint-{}", state.step));
    let tmp = dir.join(format!(".checkpoint-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    peft::save(&trainer.adapter(base), &tmp, g)?;
    // The optimizer state is streamed from the trainer's own buffers (no copy: it is
    // four times the adapter).
    let tensors = trainer.state();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, v) in &tensors {
        let bytes: &[u8] = bytemuck::cast_slice(v);
        let t = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v.len()], bytes)
            .map_err(|e| Error::invalid("checkpoint", format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), t));
    }
    let opt = tmp.join(OPTIMIZER_FILE);
    safetensors::serialize_to_file(views, None, &opt)
        .map_err(|e| Error::invalid("checkpoint", format!("{}: {e}", opt.display())))?;
    let json = serde_json::to_vec_pretty(state).expect("plain data serializes");
    dhurandhar_io::write_atomic(&tmp.join(STATE_FILE), &json)?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    Ok(target)
}

/// Read a checkpoint's state and optimizer tensors.
fn load_checkpoint(dir: &Path) -> Result<(State, BTreeMap<String, Vec<f32>>)> {
    let state_path = dir.join(STATE_FILE);
    let text =
        dhurandhar_io::read_to_string_bounded(&state_path, MAX_STATE_BYTES, "trainer state")?;
    let state: State = serde_json::from_str(&text)
        .map_err(|e| Error::invalid("checkpoint", format!("{}: {e}", state_path.display())))?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let map = dhurandhar_checkpoint::map_file(&opt_path)?;
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| Error::invalid("checkpoint", format!("{}: {e}", opt_path.display())))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::invalid(
                "checkpoint",
                format!("{}: tensor `{name}` is not F32", opt_path.display()),
            ));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, v);
    }
    Ok((state, tensors))
}

/// Mean validation loss over `seqs`.
fn evaluate(trainer: &mut Trainer<'_>, seqs: &[Sequence], cancel: &CancelToken) -> Result<LossSum> {
    let mut l = LossSum::default();
    for s in seqs {
        cancel.check()?;
        l.add(trainer.loss(&s.tokens, &s.labels, &s.weights)?);
    }
    Ok(l)
}

/// Run a LoRA job: train, evaluate, checkpoint, and write the final adapter (PEFT
/// layout) into the job's `output_dir`.
pub fn train(
    opts: &TrainOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<TrainReport> {
    let job = &opts.job;
    job.validate()?;
    let t = &job.training;
    let base = PathBuf::from(&job.base_model);
    if job.base_model.trim().is_empty() || !base.is_file() {
        return Err(Error::invalid(
            "base_model",
            format!(
                "training needs a GGUF file as base_model; `{}` is not a file",
                job.base_model
            ),
        ));
    }
    if job.dataset.trim().is_empty() {
        return Err(Error::invalid(
            "dataset",
            "the job names no dataset (a JSONL file)",
        ));
    }
    let out_dir = PathBuf::from(&job.output_dir);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let estimated_bytes = dry_run(&DryRunOptions {
        job: job.clone(),
        model: None,
        base_format: DEFAULT_BASE_FORMAT.into(),
    })?
    .estimate
    .memory
    .total;

    let model = Model::open_with(&base, WeightMode::Mmap)?;
    let c = &model.config;
    let mut examples = read_examples(Path::new(&job.dataset), &model.tokenizer)?;
    let valid_examples = if job.validation_dataset.trim().is_empty() {
        let (tr, va) = split(examples, job.validation_fraction, t.seed);
        examples = tr;
        va
    } else {
        read_examples(Path::new(&job.validation_dataset), &model.tokenizer)?
    };
    let seq_len = t.max_seq_length.min(c.context_length.max(1));
    let train_seqs = pack(&examples, seq_len);
    let valid_seqs = pack(&valid_examples, seq_len);
    drop((examples, valid_examples));
    if train_seqs.is_empty() {
        return Err(Error::invalid(
            "dataset",
            format!("{}: nothing to train on", job.dataset),
        ));
    }

    let targets = job.lora.targets();
    let mut trainer = Trainer::new(
        &model,
        EngineOptions {
            r: job.lora.r,
            alpha: job.lora.alpha as f32,
            dropout: job.lora.dropout as f32,
            targets,
            weight_decay: t.weight_decay as f32,
            max_grad_norm: MAX_GRAD_NORM,
            checkpointing: t.gradient_checkpointing,
            seed: t.seed,
            threads,
        },
    )?;
    let per_step = t.batch_size * t.gradient_accumulation_steps;
    let total_steps = if t.max_steps > 0 {
        t.max_steps
    } else {
        ((t.epochs * train_seqs.len() as f64) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    };
    let warmup = (t.warmup_ratio * total_steps as f64).ceil() as usize;
    let geometry = Geometry::from(c);
    let print = fingerprint(job);

    let mut state = State {
        step: 0,
        fingerprint: print.clone(),
        history: Vec::new(),
        eval: Vec::new(),
    };
    if opts.resume {
        let Some((_, dir)) = checkpoints(&out_dir).pop() else {
            return Err(Error::invalid(
                "resume",
                format!("{} holds no checkpoint to resume from", out_dir.display()),
            ));
        };
        let (s, tensors) = load_checkpoint(&dir)?;
        if s.fingerprint != print {
            return Err(Error::invalid(
                "resume",
                format!(
                    "{} was written by a different job (its data or optimisation settings \
                     differ); resume with the job that wrote it",
                    dir.display()
                ),
            ));
        }
        trainer.restore(s.step as u64, tensors)?;
        state = s;
        progress.message(&format!(
            "resuming from {} (step {})",
            dir.display(),
            state.step
        ));
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| io(&out_dir, e))?;
    let start_step = state.step;

    let eval_now = |trainer: &mut Trainer<'_>, step: usize, state: &mut State| -> Result<()> {
        if valid_seqs.is_empty() || state.eval.last().is_some_and(|e| e.step == step) {
            return Ok(());
        }
        let l = evaluate(trainer, &valid_seqs, cancel)?;
        progress.message(&format!("step {step}: validation loss {:.4}", l.mean()));
        state.eval.push(EvalRecord {
            step,
            loss: l.mean(),
            tokens: l.tokens,
        });
        Ok(())
    };
    if start_step == 0 {
        eval_now(&mut trainer, 0, &mut state)?;
    }

    // The sequence order: one seeded permutation per epoch.
    let n = train_seqs.len();
    let mut perms: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut seq_at = |g: usize| -> usize {
        let epoch = g / n;
        let perm = perms.entry(epoch).or_insert_with(|| {
            let mut p: Vec<usize> = (0..n).collect();
            p.shuffle(&mut ChaCha8Rng::seed_from_u64(
                t.seed.wrapping_add(epoch as u64),
            ));
            p
        });
        perm[g % n]
    };

    progress.start(
        "training",
        Some((total_steps - start_step.min(total_steps)) as u64),
        Unit::Items("steps"),
    );
    // Training time only: validation passes and checkpoint writes are not counted.
    let mut seconds = 0f64;
    let mut tokens_read = 0u64;
    let (mut log_loss, mut log_tokens, mut log_secs) = (LossSum::default(), 0u64, 0f64);
    let mut kept: Vec<String> = checkpoints(&out_dir)
        .into_iter()
        .map(|(_, p)| p.display().to_string())
        .collect();
    for step in start_step..total_steps {
        let step_began = Instant::now();
        let mut step_loss = LossSum::default();
        for micro in 0..per_step {
            cancel.check()?;
            let g = step * per_step + micro;
            let s = &train_seqs[seq_at(g)];
            let key = t.seed.rotate_left(17) ^ (g as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            step_loss.add(trainer.accumulate(&s.tokens, &s.labels, &s.weights, key)?);
            tokens_read += s.tokens.len() as u64;
            log_tokens += s.tokens.len() as u64;
        }
        let lr = t.learning_rate * lr_factor(&t.lr_scheduler, step, warmup, total_steps);
        let norm = trainer.optimizer_step(lr as f32, step_loss.tokens);
        log_loss.add(step_loss);
        let took = step_began.elapsed().as_secs_f64();
        (seconds, log_secs) = (seconds + took, log_secs + took);
        let done = step + 1;
        progress.advance(1);
        if done % t.logging_steps.max(1) == 0 || done == total_steps {
            let rec = LogRecord {
                step: done,
                loss: log_loss.mean(),
                learning_rate: lr,
                grad_norm: norm as f64,
                tokens_per_s: log_tokens as f64 / log_secs.max(1e-9),
            };
            progress.message(&format!(
                "step {done}/{total_steps}: loss {:.4}, lr {:.2e}, grad norm {:.3}, {:.0} tokens/s",
                rec.loss, rec.learning_rate, rec.grad_norm, rec.tokens_per_s
            ));
            state.history.push(rec);
            (log_loss, log_tokens, log_secs) = (LossSum::default(), 0, 0.0);
        }
        if t.eval_steps > 0 && done % t.eval_steps == 0 {
            eval_now(&mut trainer, done, &mut state)?;
        }
        if t.save_steps > 0 && done % t.save_steps == 0 && done < total_steps {
            state.step = done;
            let p = save_checkpoint(&out_dir, &trainer, &geometry, &job.base_model, &state)?;
            kept.retain(|k| k != &p.display().to_string());
            kept.push(p.display().to_string());
            while t.save_total_limit > 0 && kept.len() > t.save_total_limit {
                let old = kept.remove(0);
                std::fs::remove_dir_all(&old).map_err(|e| io(Path::new(&old), e))?;
            }
        }
    }
    progress.finish();
    eval_now(&mut trainer, total_steps, &mut state)?;
    state.step = total_steps;
    peft::save(&trainer.adapter(&job.base_model), &out_dir, &geometry)?;

    Ok(TrainReport {
        schema_version: TRAIN_SCHEMA_VERSION,
        base_model: job.base_model.clone(),
        output_dir: out_dir.display().to_string(),
        threads,
        train_sequences: n,
        validation_sequences: valid_seqs.len(),
        sequence_length: seq_len,
        trainable_params: trainer.num_parameters(),
        start_step,
        steps: total_steps - start_step.min(total_steps),
        total_steps,
        epochs_done: (total_steps * per_step) as f64 / n as f64,
        tokens: tokens_read,
        seconds,
        tokens_per_s: tokens_read as f64 / seconds.max(1e-9),
        history: state.history,
        eval: state.eval,
        checkpoints: kept,
        peak_rss_bytes: dhurandhar_profile::peak_rss_bytes(),
        estimated_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_hugging_face() {
        // Warm-up from 0; cosine reaches 0 at the end; linear halfway is a half.
        assert_eq!(lr_factor("cosine", 0, 10, 100), 0.0);
        assert!((lr_factor("cosine", 5, 10, 100) - 0.5).abs() < 1e-12);
        assert!((lr_factor("cosine", 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((lr_factor("cosine", 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(lr_factor("cosine", 99, 10, 100) < 1e-3);
        assert!((lr_factor("linear", 55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(lr_factor("constant", 55, 10, 100), 1.0);
        assert_eq!(lr_factor("constant", 0, 0, 100), 1.0);
    }

    #[test]
    fn the_split_is_seeded_and_never_empties_either_side() {
        let ex = |i: u32| Example {
            tokens: vec![i, i + 1],
            targets: vec![1.0; 2],
        };
        let all: Vec<Example> = (0..20).map(ex).collect();
        let (a, b) = split(all.clone(), 0.1, 42);
        assert_eq!((a.len(), b.len()), (18, 2));
        assert_eq!(split(all.clone(), 0.1, 42).1, b);
        assert_ne!(split(all.clone(), 0.1, 43).1, b);
        assert_eq!(split(all[..2].to_vec(), 0.9, 1).0.len(), 1);
        assert_eq!(split(all, 0.0, 1).1.len(), 0);
    }

    #[test]
    fn the_fingerprint_ignores_where_and_how_often() {
        let a = LoraJob::default();
        let mut b = a.clone();
        b.output_dir = "elsewhere".into();
        b.training.save_steps = 7;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.training.learning_rate = 1.0;
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
