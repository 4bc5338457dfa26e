//! A LoRA job as a transformers + PEFT + TRL training directory for a GPU machine or
//! cluster (`accelerate launch`): `train.py`, the job as `job.yaml`, pinned
//! `requirements.txt`, a data-parallel `accelerate_config.yaml` and a `README.md`.
//!
//! Multi-GPU training belongs there, not in this tool. What comes back is a PEFT adapter
//! directory (`adapter_config.json` + `adapter_model.safetensors`) that
//! `generate --adapter DIR` applies on the GGUF base: the script adapts only what
//! [`peft::load`](super::peft::load) accepts (plain LoRA on the text decoder's
//! `q/k/v/o/gate/up/down_proj`, no bias, DoRA, rsLoRA or added tokens).
//!
//! transformers cannot train a GGUF, so the script needs the base in transformers form
//! (`hf_model`: a Hugging Face model id or a directory with `config.json` and
//! safetensors). Without one the script holds a `<…>` placeholder and refuses to start
//! until it is given (`train.py --model ID`).
//!
//! The five files are written all or nothing: each to a temp file beside its target, and
//! renamed into place only when all five are written; an existing file is kept unless
//! `overwrite`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dhurandhar_io::AtomicFile;
use dhurandhar_lora::LoraJob;
use serde::Serialize;

use crate::{Error, Result};

/// Version of the [`ExportHfReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// What `requirements.txt` pins: the versions `train.py` was written against (TRL 1.16's
/// `SFTConfig` takes `max_length`, the name since TRL 0.16; `max_seq_length` was removed
/// in 0.20. transformers 5 replaced `warmup_ratio` by a fractional `warmup_steps` and
/// `gradient_checkpointing` by `activation_checkpointing`).
pub const PINNED: [(&str, &str); 8] = [
    ("torch", "2.15.0"),
    ("transformers", "5.25.0"),
    ("peft", "0.21.2"),
    ("trl", "1.16.0"),
    ("accelerate", "1.16.0"),
    ("datasets", "5.2.0"),
    ("bitsandbytes", "0.50.2"),
    ("pyyaml", "6.0.3"),
];

/// The files written, in this order.
pub const FILES: [&str; 5] = [
    "train.py",
    "job.yaml",
    "requirements.txt",
    "accelerate_config.yaml",
    "README.md",
];

/// What to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportHfOptions {
    /// The job (read with [`read_job`](super::read_job)); written as `job.yaml`.
    pub job: LoraJob,
    /// The directory to write into (created if missing).
    pub output: PathBuf,
    /// The base in transformers form: a Hugging Face model id or a local directory with
    /// `config.json` and safetensors. `None`: the job's `base_model` when it is such a
    /// directory, otherwise a placeholder the script refuses to run with.
    pub hf_model: Option<String>,
    /// Replace files of the same names in `output`.
    pub overwrite: bool,
}

/// One file written.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenFile {
    pub name: String,
    pub path: String,
    pub bytes: u64,
}

/// The `lora export-hf --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ExportHfReport {
    pub schema_version: u32,
    pub output_dir: String,
    pub files: Vec<WrittenFile>,
    /// The base `train.py` loads (`HF_MODEL`), or the placeholder it holds.
    pub hf_model: String,
    /// `given`, `job base_model` (a transformers checkpoint directory) or `placeholder`.
    pub hf_model_source: &'static str,
    /// The job's `base_model`: the GGUF the adapter runs on here.
    pub base_model: String,
    /// Where `train.py` saves the adapter, seen from where this command ran (the job's
    /// `output_dir` under `output_dir` when relative).
    pub adapter_dir: String,
    /// Run in `output_dir` on the GPU machine.
    pub launch_command: String,
    /// Checks the job and the data without a GPU (nor torch).
    pub check_command: String,
    /// Runs the trained adapter here.
    pub load_command: String,
    /// Package → version, as `requirements.txt` pins them.
    pub pinned: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

/// Write `opts.job` as a transformers + PEFT + TRL training directory.
pub fn export_hf(opts: &ExportHfOptions) -> Result<ExportHfReport> {
    let job = &opts.job;
    job.validate()?;
    if !job.training.weight_decay.is_finite() || job.training.weight_decay < 0.0 {
        return Err(Error::invalid(
            "job",
            format!(
                "training.weight_decay: must be a finite number >= 0, got {}",
                job.training.weight_decay
            ),
        ));
    }
    let out = &opts.output;
    if out.as_os_str().is_empty() {
        return Err(Error::invalid("output", "empty; give a directory"));
    }
    let (hf_model, source, mut notes) = choose_hf_model(job, opts.hf_model.as_deref())?;
    let placeholder = source == "placeholder";

    let yaml = job_yaml(job);
    // The copy must be the job: read back, it is the same job.
    match LoraJob::from_yaml(&yaml) {
        Ok(back) if back == *job => {}
        Ok(_) => {
            return Err(Error::invalid(
                "job",
                "cannot be written as YAML that reads back unchanged (a value does not round-trip)",
            ))
        }
        Err(e) => {
            return Err(Error::from(e).context("the job written as job.yaml does not read back"))
        }
    }
    let adapter_rel = job.output_dir.trim_start_matches("./").to_string();
    let adapter_dir = if Path::new(&job.output_dir).is_absolute() {
        job.output_dir.clone()
    } else {
        out.join(&adapter_rel).display().to_string()
    };
    let gguf = if job.base_model.to_ascii_lowercase().ends_with(".gguf") {
        job.base_model.clone()
    } else {
        "BASE.gguf".to_string()
    };
    let launch_command =
        "accelerate launch --config_file accelerate_config.yaml train.py".to_string();
    let check_command = "python train.py --check".to_string();
    let load_command = format!(
        "dhurandhar generate --model {} --adapter {} --prompt \"...\"",
        sh_quote(&gguf),
        sh_quote(&adapter_dir)
    );

    notes.extend(data_notes(job));
    if gguf != job.base_model {
        notes.push(format!(
            "base_model `{}` is not a GGUF: to run the adapter here, convert the same transformers \
             model to GGUF (llama.cpp's convert_hf_to_gguf.py) and give it to `generate --model`",
            job.base_model
        ));
    }
    notes.push(
        "more GPUs: set num_processes in accelerate_config.yaml (or `accelerate launch \
         --num_processes N`); each optimizer step then sees num_processes x batch_size x \
         gradient_accumulation_steps sequences"
            .to_string(),
    );

    let ctx = Ctx {
        job,
        hf_model: &hf_model,
        placeholder,
        gguf: &gguf,
        adapter_rel: &adapter_rel,
        adapter_dir: &adapter_dir,
    };
    let contents: [(&str, String); 5] = [
        ("train.py", train_py(&ctx)),
        ("job.yaml", yaml),
        ("requirements.txt", requirements_txt()),
        ("accelerate_config.yaml", ACCELERATE_CONFIG.to_string()),
        ("README.md", readme(&ctx)),
    ];
    write_all_or_nothing(out, &contents, opts.overwrite, None)?;

    let files = contents
        .iter()
        .map(|(name, text)| WrittenFile {
            name: name.to_string(),
            path: out.join(name).display().to_string(),
            bytes: text.len() as u64,
        })
        .collect();
    Ok(ExportHfReport {
        schema_version: SCHEMA_VERSION,
        output_dir: out.display().to_string(),
        files,
        hf_model,
        hf_model_source: source,
        base_model: job.base_model.clone(),
        adapter_dir,
        launch_command,
        check_command,
        load_command,
        pinned: PINNED
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect(),
        notes,
    })
}

/// The base `train.py` loads, where it came from, and what to tell the user about it.
fn choose_hf_model(
    job: &LoraJob,
    given: Option<&str>,
) -> Result<(String, &'static str, Vec<String>)> {
    if let Some(m) = given {
        let m = m.trim();
        if m.is_empty() {
            return Err(Error::invalid(
                "hf_model",
                "empty; give a Hugging Face model id or a directory with config.json and safetensors",
            ));
        }
        let mut notes = Vec::new();
        if Path::new(m).exists() && Path::new(m).is_relative() {
            notes.push(format!(
                "hf_model `{m}` is a relative path: train.py reads it from the directory it is \
                 launched in"
            ));
        }
        return Ok((m.to_string(), "given", notes));
    }
    let base = job.base_model.trim();
    let p = Path::new(base);
    let dir = if p.is_dir() {
        Some(p)
    } else if p.is_file() && (base.ends_with("config.json") || base.ends_with(".safetensors")) {
        p.parent()
    } else {
        None
    };
    if let Some(d) = dir.filter(|d| d.join("config.json").is_file()) {
        let d = if d.as_os_str().is_empty() {
            ".".to_string()
        } else {
            d.display().to_string()
        };
        return Ok((
            d.clone(),
            "job base_model",
            vec![format!(
                "hf_model is the job's base_model `{d}` (a transformers checkpoint directory); \
                 it must exist at that path where train.py runs, or pass `train.py --model`"
            )],
        ));
    }
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "the base model".to_string());
    let placeholder = format!("<transformers checkpoint of {stem}>");
    let mut note = format!(
        "no hf_model given: train.py holds the placeholder `{placeholder}` and stops until you \
         pass `train.py --model ID` (a Hugging Face model id or a directory with config.json and \
         safetensors: the model the GGUF was converted from) or edit HF_MODEL in it"
    );
    if let Some(repo) = dhurandhar_model::registry::get(base).and_then(|a| hf_repo(&a.source)) {
        note.push_str(&format!(
            "; the built-in profile {base} was read from the Hugging Face repository {repo}"
        ));
    }
    Ok((placeholder, "placeholder", vec![note]))
}

/// `owner/name` of a `https://huggingface.co/owner/name/...` address.
fn hf_repo(source: &str) -> Option<String> {
    let rest = source.strip_prefix("https://huggingface.co/")?;
    let mut parts = rest.split(['/', ' ']);
    let (owner, name) = (parts.next()?, parts.next()?);
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// What the user must do about the job's data paths on the GPU machine.
fn data_notes(job: &LoraJob) -> Vec<String> {
    let mut notes = Vec::new();
    if job.dataset.trim().is_empty() {
        notes.push(
            "the job names no dataset: set `dataset` in job.yaml (JSONL, one object per line \
             with `text` or chat `messages`) or pass `train.py --dataset FILE`"
                .to_string(),
        );
    }
    for (field, path) in [
        ("dataset", &job.dataset),
        ("validation_dataset", &job.validation_dataset),
    ] {
        if !path.trim().is_empty() && !Path::new(path).is_absolute() {
            notes.push(format!(
                "{field} `{path}` is relative: train.py reads it from the directory it is \
                 launched in (the output directory, in the README's commands); copy it there"
            ));
        }
    }
    notes
}

/// What the renderers need.
struct Ctx<'a> {
    job: &'a LoraJob,
    hf_model: &'a str,
    placeholder: bool,
    gguf: &'a str,
    adapter_rel: &'a str,
    /// The adapter seen from where the export ran.
    adapter_dir: &'a str,
}

/// Write every `(name, text)` into `dir`, or none of them: all are written to temp files
/// first, then renamed; a failure before the renames leaves nothing, and one during them
/// removes the files this call created. `fail_at` makes the rename of that file fail
/// (tests only).
fn write_all_or_nothing(
    dir: &Path,
    contents: &[(&str, String)],
    overwrite: bool,
    fail_at: Option<usize>,
) -> Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::invalid(
                "output",
                format!("{shown}: exists and is not a directory"),
            ))
        }
        _ => {}
    }
    let existing = |c: &[(&str, String)]| -> Vec<String> {
        c.iter()
            .filter(|(n, _)| std::fs::symlink_metadata(dir.join(n)).is_ok())
            .map(|(n, _)| n.to_string())
            .collect()
    };
    let refuse = |names: Vec<String>| {
        Error::invalid(
            "output",
            format!(
                "{shown}: {} already exist{}; choose another directory or allow overwriting them",
                names.join(", "),
                if names.len() == 1 { "s" } else { "" }
            ),
        )
    };
    let before = existing(contents);
    if !overwrite && !before.is_empty() {
        return Err(refuse(before));
    }
    let created_dir = !dir.exists();
    if created_dir {
        std::fs::create_dir_all(dir).map_err(|e| dhurandhar_io::IoError::os(dir, e))?;
    }
    let cleanup_dir = || {
        if created_dir {
            // Only if empty: nothing of ours is left in it.
            let _ = std::fs::remove_dir(dir);
        }
    };
    // Stage: every file written and flushed to its temp before any rename.
    let mut staged: Vec<(AtomicFile, bool)> = Vec::with_capacity(contents.len());
    for (name, text) in contents {
        let target = dir.join(name);
        let existed = before.iter().any(|b| b == name);
        let r = AtomicFile::create(&target).and_then(|mut f| {
            f.write_all(text.as_bytes())
                .map_err(|e| dhurandhar_io::IoError::os(&target, e))?;
            Ok(f)
        });
        match r {
            Ok(f) => staged.push((f, existed)),
            Err(e) => {
                drop(staged);
                cleanup_dir();
                return Err(Error::from(e).context(format!("{shown}: nothing was written")));
            }
        }
    }
    // A file that appeared since the check is not replaced without `overwrite`.
    if !overwrite {
        let now = existing(contents);
        if !now.is_empty() {
            drop(staged);
            cleanup_dir();
            return Err(refuse(now));
        }
    }
    let mut done: Vec<(PathBuf, bool)> = Vec::new();
    let mut rest = staged.into_iter().enumerate();
    while let Some((i, (f, existed))) = rest.next() {
        let target = f.target().to_path_buf();
        let tmp = f.temp_path().to_path_buf();
        let r = if fail_at == Some(i) {
            drop(f);
            Err(dhurandhar_io::IoError::os(
                &target,
                std::io::Error::other("injected failure"),
            ))
        } else {
            f.commit()
        };
        if let Err(e) = r {
            // A failed commit keeps its temp file; the files not yet renamed drop theirs.
            let _ = std::fs::remove_file(&tmp);
            drop(rest);
            let mut replaced = Vec::new();
            for (p, existed) in &done {
                if *existed {
                    replaced.push(p.display().to_string());
                } else {
                    let _ = std::fs::remove_file(p);
                }
            }
            cleanup_dir();
            let what = if replaced.is_empty() {
                "nothing was written".to_string()
            } else {
                format!("already replaced: {}", replaced.join(", "))
            };
            return Err(Error::from(e).context(format!("{shown}: {what}")));
        }
        done.push((target, existed));
    }
    Ok(())
}

/// `s` for a POSIX shell: as is when plain, otherwise single-quoted.
fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` as a YAML double-quoted scalar that PyYAML (YAML 1.1) and serde_yaml read alike:
/// ASCII only, everything else escaped.
fn yaml_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            ' '..='~' => o.push(c),
            c if (c as u32) <= 0xFFFF => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    o.push('"');
    o
}

/// An f64 both YAML readers take as a float and that reads back to the same value
/// (Rust's shortest round-trip digits, never an exponent, always a point).
fn yaml_f64(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// `value` as JSON with every non-ASCII character escaped (for Python source).
fn json_ascii<T: Serialize + ?Sized>(value: &T, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .expect("plain data serializes");
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            o.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                o.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    o
}

/// The job as commented YAML (the template's layout, this job's values).
pub fn job_yaml(job: &LoraJob) -> String {
    let l = &job.lora;
    let t = &job.training;
    let targets: Vec<String> = l.target_modules.iter().map(|m| yaml_str(m)).collect();
    format!(
        "# A dhurandhar LoRA / QLoRA job, exported with `dhurandhar lora export-hf`.
# train.py (transformers + PEFT + TRL) reads this file; so does dhurandhar
# (`dhurandhar lora dry-run --config job.yaml`). A misspelt or unknown field is an error
# naming it. train.py reads the data paths relative to the directory it is launched in.

# The GGUF dhurandhar runs the trained adapter on (`generate --model`). train.py trains
# the same model in transformers form (HF_MODEL in train.py, or `train.py --model`).
base_model: {base_model}
# Training data: JSONL, one object per line with `text` or chat `messages`.
dataset: {dataset}
# Validation data (JSONL); empty: hold back validation_fraction of the dataset.
validation_dataset: {validation_dataset}
validation_fraction: {validation_fraction}
# Checkpoints and the final adapter (PEFT layout) are written here.
output_dir: {output_dir}
# Leave a Gemma 3n/4-style audio encoder out of the model (dhurandhar's dry run).
strip_audio_encoder: {strip_audio}

lora:
  r: {r}
  alpha: {alpha}
  dropout: {dropout}
  # HF projection names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
  target_modules: [{targets}]
  bias: {bias}

training:
  epochs: {epochs}
  batch_size: {batch_size}                    # sequences per micro-batch (per GPU)
  gradient_accumulation_steps: {accum}
  gradient_checkpointing: {ckpt}
  learning_rate: {lr}
  lr_scheduler: {sched}             # cosine, linear or constant
  warmup_ratio: {warmup}
  weight_decay: {wd}
  max_seq_length: {max_seq}
  seed: {seed}
  logging_steps: {logging}
  eval_steps: {eval}
  save_steps: {save}
  save_total_limit: {limit}
  max_steps: {max_steps}                     # 0: all epochs
",
        base_model = yaml_str(&job.base_model),
        dataset = yaml_str(&job.dataset),
        validation_dataset = yaml_str(&job.validation_dataset),
        validation_fraction = yaml_f64(job.validation_fraction),
        output_dir = yaml_str(&job.output_dir),
        strip_audio = job.strip_audio_encoder,
        r = l.r,
        alpha = yaml_f64(l.alpha),
        dropout = yaml_f64(l.dropout),
        targets = targets.join(", "),
        bias = yaml_str(&l.bias),
        epochs = yaml_f64(t.epochs),
        batch_size = t.batch_size,
        accum = t.gradient_accumulation_steps,
        ckpt = t.gradient_checkpointing,
        lr = yaml_f64(t.learning_rate),
        sched = yaml_str(&t.lr_scheduler),
        warmup = yaml_f64(t.warmup_ratio),
        wd = yaml_f64(t.weight_decay),
        max_seq = t.max_seq_length,
        seed = t.seed,
        logging = t.logging_steps,
        eval = t.eval_steps,
        save = t.save_steps,
        limit = t.save_total_limit,
        max_steps = t.max_steps,
    )
}

fn requirements_txt() -> String {
    let mut o = String::from(
        "# Pinned for train.py (written by `dhurandhar lora export-hf`): the versions it was\n\
         # written against. torch's default wheel must match the cluster's CUDA driver; if it\n\
         # does not, install the same torch version built for that CUDA first.\n",
    );
    for (p, v) in PINNED {
        let why = match p {
            "bitsandbytes" => "  # only for train.py --qlora (NVIDIA GPUs)",
            "pyyaml" => "  # reads job.yaml",
            _ => "",
        };
        o.push_str(&format!("{p}=={v}{why}\n"));
    }
    o
}

const ACCELERATE_CONFIG: &str = "\
# `accelerate launch --config_file accelerate_config.yaml train.py`, written by
# `dhurandhar lora export-hf`. Data parallel (DDP): one process per GPU, each holding the
# frozen base and the adapter; gradients are averaged across processes after each
# micro-batch. Each optimizer step sees num_processes x batch_size x
# gradient_accumulation_steps sequences.
compute_environment: LOCAL_MACHINE
debug: false
distributed_type: MULTI_GPU
downcast_bf16: 'no'
gpu_ids: all
machine_rank: 0               # several machines: 0 on the first, 1, 2, ... on the others
main_training_function: main
mixed_precision: bf16         # as train.py --precision: bf16, fp16 (then `fp16`) or fp32 (then `no`)
num_machines: 1               # several machines: how many, and set main_process_ip / main_process_port
num_processes: 8              # EDIT: the number of GPUs in all (GPUs per machine x num_machines)
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
";

fn train_py(c: &Ctx) -> String {
    let pinned: BTreeMap<&str, &str> = PINNED.iter().copied().collect();
    let model_comment = if c.placeholder {
        "# PLACEHOLDER: no model was given to `dhurandhar lora export-hf --hf-model`. Replace it\n\
         # (or pass --model): the transformers model the job's GGUF was converted from. A value\n\
         # in <angle brackets> is refused."
    } else {
        "# Given to `dhurandhar lora export-hf`; --model overrides it."
    };
    TRAIN_PY
        .replace("@@VERSION@@", env!("CARGO_PKG_VERSION"))
        .replace("@@HF_MODEL_COMMENT@@", model_comment)
        .replace("@@HF_MODEL@@", &json_ascii(c.hf_model, false))
        .replace("@@BASE_MODEL@@", &json_ascii(c.gguf, false))
        .replace("@@PINNED@@", &json_ascii(&pinned, true))
        .replace("@@EXPORTED_JOB@@", &json_ascii(c.job, true))
        .replace(
            "@@DEFAULT_JOB@@",
            &json_ascii(&dhurandhar_lora::LoraJob::default(), true),
        )
}

fn readme(c: &Ctx) -> String {
    let j = c.job;
    let l = &j.lora;
    let t = &j.training;
    let model_line = if c.placeholder {
        format!(
            "**`HF_MODEL` in `train.py` is a placeholder (`{}`)**: pass `--model ID` to `train.py` \
             (after `train.py` in the launch command) or edit `HF_MODEL`: the Hugging Face id, or a \
             directory with `config.json` and safetensors, of the model the GGUF was converted \
             from. The script refuses to start until then.",
            c.hf_model
        )
    } else {
        format!(
            "`train.py` trains `{}` (`HF_MODEL`; `--model` overrides it), the transformers form \
             of the GGUF `{}`.",
            c.hf_model, c.gguf
        )
    };
    let dataset = if j.dataset.trim().is_empty() {
        "**the job names no dataset**: set `dataset` in `job.yaml` or pass `--dataset FILE`"
            .to_string()
    } else {
        format!("`{}`", j.dataset)
    };
    let eval = if !j.validation_dataset.trim().is_empty() {
        format!("validation data `{}`", j.validation_dataset)
    } else if j.validation_fraction > 0.0 {
        format!(
            "{} of the data held back for the eval loss",
            j.validation_fraction
        )
    } else {
        "no eval loss".to_string()
    };
    let sched = if t.lr_scheduler == "constant" {
        "constant_with_warmup".to_string()
    } else {
        t.lr_scheduler.clone()
    };
    let opt = |v: usize, off: &str| {
        if v == 0 {
            off.to_string()
        } else {
            v.to_string()
        }
    };
    let rows = [
        ("lora.r", "LoraConfig.r", l.r.to_string()),
        ("lora.alpha", "LoraConfig.lora_alpha", yaml_f64(l.alpha)),
        (
            "lora.dropout",
            "LoraConfig.lora_dropout",
            yaml_f64(l.dropout),
        ),
        (
            "lora.target_modules",
            "LoraConfig.target_modules (text decoder layers only)",
            l.target_modules.join(" "),
        ),
        ("lora.bias", "LoraConfig.bias", l.bias.clone()),
        ("training.epochs", "num_train_epochs", yaml_f64(t.epochs)),
        (
            "training.max_steps",
            "max_steps",
            opt(t.max_steps, "-1 (all epochs)"),
        ),
        (
            "training.batch_size",
            "per_device_train_batch_size",
            t.batch_size.to_string(),
        ),
        (
            "training.gradient_accumulation_steps",
            "gradient_accumulation_steps",
            t.gradient_accumulation_steps.to_string(),
        ),
        (
            "training.gradient_checkpointing",
            "activation_checkpointing (transformers 5's name)",
            t.gradient_checkpointing.to_string(),
        ),
        (
            "training.learning_rate",
            "learning_rate",
            yaml_f64(t.learning_rate),
        ),
        ("training.lr_scheduler", "lr_scheduler_type", sched),
        (
            "training.warmup_ratio",
            "warmup_steps (a fraction below 1 is a ratio in transformers 5)",
            yaml_f64(t.warmup_ratio),
        ),
        (
            "training.weight_decay",
            "weight_decay",
            yaml_f64(t.weight_decay),
        ),
        (
            "training.max_seq_length",
            "SFTConfig.max_length (TRL's name since 0.16)",
            t.max_seq_length.to_string(),
        ),
        ("training.seed", "seed, data_seed", t.seed.to_string()),
        (
            "training.logging_steps",
            "logging_steps",
            opt(t.logging_steps, "0 (no logging)"),
        ),
        (
            "training.eval_steps",
            "eval_steps",
            opt(t.eval_steps, "0 (no eval)"),
        ),
        (
            "training.save_steps",
            "save_steps",
            opt(t.save_steps, "0 (no checkpoints)"),
        ),
        (
            "training.save_total_limit",
            "save_total_limit",
            opt(t.save_total_limit, "0 (no limit)"),
        ),
        ("output_dir", "output_dir", j.output_dir.clone()),
    ];
    let mut table =
        String::from("| job.yaml | transformers / PEFT / TRL | value |\n|---|---|---|\n");
    for (field, arg, value) in rows {
        table.push_str(&format!("| `{field}` | `{arg}` | `{value}` |\n"));
    }
    let pins: Vec<String> = PINNED.iter().map(|(p, v)| format!("{p} {v}")).collect();
    format!(
        "# LoRA training job for a GPU machine or cluster

Written by `dhurandhar lora export-hf` (dhurandhar {version}): the dhurandhar LoRA job in
`job.yaml` as a transformers + PEFT + TRL (`SFTTrainer`) script. Multi-GPU training happens
here, with `accelerate launch`, not in dhurandhar; the adapter it writes runs in dhurandhar.

| file | what |
|---|---|
| `train.py` | the training script; reads `job.yaml` beside it (`python train.py --help`) |
| `job.yaml` | the job (dhurandhar reads it too: `dhurandhar lora dry-run --config job.yaml`) |
| `requirements.txt` | pinned versions: {pins} |
| `accelerate_config.yaml` | data-parallel (DDP) launch; **edit `num_processes`** to the number of GPUs |
| `README.md` | this file |

## Before launching

- {model_line}
- Data: {dataset} (JSONL, one object per line with `text`, or chat `messages` as
  `{{\"role\": ..., \"content\": ...}}` lists); {eval}.
  Relative paths are read from the directory the script is launched in: this one, in the
  commands below.
- Chat data (`messages`) is rendered with the tokenizer's chat template, and the loss is
  on the assistant turns only where TRL can mark them (`--assistant-only-loss auto`);
  otherwise on the whole conversation, and the script says so.

## Run

From this directory, on the GPU machine:

```sh
pip install -r requirements.txt
python train.py --check             # the job and the data; no GPU, no torch needed
accelerate launch --config_file accelerate_config.yaml train.py
```

QLoRA (the frozen base in 4-bit NF4 with double quantization, bitsandbytes): add `--qlora`
after `train.py`. Other options: `--packing` (pack sequences to `max_seq_length`; needs
`--attn-implementation flash_attention_2`, or packed sequences attend to each other),
`--precision fp16` on GPUs without bf16 (then `mixed_precision: fp16` in
`accelerate_config.yaml`), `--resume` to continue from the last checkpoint. On one GPU,
`python train.py` runs the same job without accelerate.

With N processes each optimizer step sees N x {batch} x {accum} sequences (per GPU:
`batch_size` x `gradient_accumulation_steps`); divide `gradient_accumulation_steps` by N
in `job.yaml` to keep the job's step size.

## What the job sets

{table}
Only the text decoder's projections (`...layers.N.<block>.<name>`) are adapted: vision and
audio towers and MoE experts are left alone, as dhurandhar adapts none of them. No DoRA,
rsLoRA, bias or new tokens: dhurandhar refuses adapters with them.

## Bring the adapter back

The final adapter is saved in `{adapter}/` here (PEFT's `adapter_config.json` +
`adapter_model.safetensors`; checkpoints in `{adapter}/checkpoint-N/`). Copy that
directory back to `{adapter_dir}` and run it on the GGUF of the same model, from the
directory `dhurandhar lora export-hf` ran in:

```sh
dhurandhar generate --model {gguf} --adapter {adapter_sh} --prompt \"...\"
dhurandhar eval --model {gguf} --adapter {adapter_sh} --text-file held-out.txt
dhurandhar lora merge {gguf} --adapter {adapter_sh} -o merged.gguf
```

The GGUF must be converted from the same transformers model `train.py` trained
(`HF_MODEL`): dhurandhar checks every adapter matrix against the GGUF's shapes.
",
        version = env!("CARGO_PKG_VERSION"),
        pins = pins.join(", "),
        model_line = model_line,
        dataset = dataset,
        eval = eval,
        batch = t.batch_size,
        accum = t.gradient_accumulation_steps,
        table = table,
        adapter = c.adapter_rel,
        adapter_dir = c.adapter_dir,
        adapter_sh = sh_quote(c.adapter_dir),
        gguf = sh_quote(c.gguf),
    )
}

/// The training script; `@@NAME@@` are filled in by [`train_py`].
const TRAIN_PY: &str = r##"#!/usr/bin/env python3
# Written by `dhurandhar lora export-hf` (dhurandhar @@VERSION@@).
"""LoRA / QLoRA fine-tuning of a dhurandhar job with transformers + PEFT + TRL.

Reads job.yaml beside this file (another with --job) and trains a PEFT LoRA adapter with
TRL's SFTTrainer, on one GPU or many:

    pip install -r requirements.txt
    python train.py --check          # the job and the data; no GPU, no torch needed
    accelerate launch --config_file accelerate_config.yaml train.py [--qlora]

The adapter is saved in the job's output_dir in PEFT's layout (adapter_config.json +
adapter_model.safetensors); dhurandhar runs it on the GGUF base:

    dhurandhar generate --model BASE.gguf --adapter OUTPUT_DIR --prompt "..."
"""

import argparse
import dataclasses
import json
import math
import os
import sys

# The base model in transformers form: a Hugging Face model id, or a directory with
# config.json and safetensors. transformers cannot train the job's GGUF (base_model).
@@HF_MODEL_COMMENT@@
HF_MODEL = @@HF_MODEL@@

# The job's base_model: the GGUF dhurandhar runs the adapter on.
BASE_MODEL = @@BASE_MODEL@@

# The versions this script was written against (requirements.txt pins them).
PINNED = @@PINNED@@

# The job as exported. job.yaml is what runs; fields edited since are listed at start.
EXPORTED_JOB = json.loads(r"""@@EXPORTED_JOB@@""")

# dhurandhar's defaults, for fields job.yaml leaves out.
DEFAULT_JOB = json.loads(r"""@@DEFAULT_JOB@@""")

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# dhurandhar's scheduler names -> transformers'. transformers' "constant" ignores warm-up;
# the job's warmup_ratio applies to every schedule, as in dhurandhar.
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
# Module paths with these are not the text decoder (multimodal towers): never adapted.
NOT_TEXT = ("vision", "audio", "visual", "image", "speech", "multi_modal")
PRECISIONS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class JobError(Exception):
    pass


def fail(message):
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def is_main_process():
    return os.environ.get("RANK", "0") == "0"


def say(message):
    if is_main_process():
        print(f"train.py: {message}", file=sys.stderr, flush=True)


def coerce(value, default, name):
    """`value` as the type of dhurandhar's default (PyYAML reads `2e-4` as a string)."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise JobError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise JobError(f"{name}: expected a whole number, got {value!r}")
        if isinstance(value, int):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise JobError(f"{name}: expected a whole number, got {value!r}") from None
            if not number.is_integer():
                raise JobError(f"{name}: expected a whole number, got {value!r}")
            number = int(number)
        if number < 0:
            raise JobError(f"{name}: must be >= 0, got {number}")
        return number
    if isinstance(default, float):
        if isinstance(value, bool):
            raise JobError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise JobError(f"{name}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise JobError(f"{name}: must be finite, got {value!r}")
        return number
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise JobError(f"{name}: expected a list of names, got {value!r}")
        return list(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise JobError(f"{name}: expected a string, got {value!r}")
    return value


def merge(defaults, given, prefix=""):
    """`given` over dhurandhar's defaults; an unknown field is an error naming it."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise JobError(f"{prefix.rstrip('.') or 'the job'}: expected a mapping")
    for key in given:
        if key not in defaults:
            raise JobError(f"{prefix}{key}: unknown field (known: {', '.join(defaults)})")
    job = {}
    for key, default in defaults.items():
        if isinstance(default, dict):
            job[key] = merge(default, given.get(key), f"{prefix}{key}.")
        elif key in given:
            job[key] = coerce(given[key], default, prefix + key)
        else:
            job[key] = default
    return job


def validate(job):
    """The checks dhurandhar makes of a job (`LoraJob::validate`)."""
    lora, t = job["lora"], job["training"]
    checks = [
        (1 <= lora["r"] <= 4096, "lora.r", f"must be 1..=4096, got {lora['r']}"),
        (lora["alpha"] > 0, "lora.alpha", f"must be > 0, got {lora['alpha']}"),
        (0 <= lora["dropout"] < 1, "lora.dropout", f"must be in [0, 1), got {lora['dropout']}"),
        (bool(lora["target_modules"]), "lora.target_modules", "is empty: nothing would be trained"),
        (lora["bias"] == "none", "lora.bias", f'only "none" is supported, got "{lora["bias"]}"'),
        (t["epochs"] > 0, "training.epochs", f"must be > 0, got {t['epochs']}"),
        (t["batch_size"] >= 1, "training.batch_size", "must be at least 1"),
        (
            t["gradient_accumulation_steps"] >= 1,
            "training.gradient_accumulation_steps",
            "must be at least 1",
        ),
        (t["max_seq_length"] >= 1, "training.max_seq_length", "must be at least 1"),
        (t["learning_rate"] > 0, "training.learning_rate", f"must be > 0, got {t['learning_rate']}"),
        (
            t["lr_scheduler"] in SCHEDULERS,
            "training.lr_scheduler",
            f"unknown `{t['lr_scheduler']}` (known: {', '.join(SCHEDULERS)})",
        ),
        (
            0 <= t["warmup_ratio"] < 1,
            "training.warmup_ratio",
            f"must be in [0, 1), got {t['warmup_ratio']}",
        ),
        (t["weight_decay"] >= 0, "training.weight_decay", f"must be >= 0, got {t['weight_decay']}"),
        (
            0 <= job["validation_fraction"] < 1,
            "validation_fraction",
            f"must be in [0, 1), got {job['validation_fraction']}",
        ),
    ]
    for module in lora["target_modules"]:
        checks.append(
            (
                module in TARGET_MODULES,
                "lora.target_modules",
                f"unknown module `{module}` (known: {', '.join(TARGET_MODULES)})",
            )
        )
    for ok, field, reason in checks:
        if not ok:
            raise JobError(f"{field}: {reason}")


def read_job(path):
    try:
        import yaml
    except ImportError:
        fail("PyYAML reads job.yaml: pip install -r requirements.txt")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    except yaml.YAMLError as e:
        fail(f"{path}: not valid YAML: {e}")
    try:
        job = merge(DEFAULT_JOB, raw)
        validate(job)
    except JobError as e:
        fail(f"{path}: invalid LoRA job: {e}")
    return job


def flatten(d, prefix=""):
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def edited_fields(job):
    exported = flatten(EXPORTED_JOB)
    return [k for k, v in flatten(job).items() if exported.get(k) != v]


def target_regex(modules):
    """PEFT's target_modules as a regex (full match): the named projections of the text
    decoder's layers (`...layers.N.<block>.<name>`). Vision and audio towers, MoE experts
    (`mlp.experts.E.<name>`) and shared experts are left alone: dhurandhar adapts none of
    them, and would refuse or misplace their tensors."""
    return r"^(?!.*(?:%s)).*\.layers\.\d+\.[^.]+\.(?:%s)$" % ("|".join(NOT_TEXT), "|".join(modules))


def settings(job, args):
    """Every argument the job sets: for the model, LoraConfig, SFTConfig and the data."""
    lora, t = job["lora"], job["training"]
    has_eval = bool(job["validation_dataset"]) or job["validation_fraction"] > 0
    checkpointing = t["gradient_checkpointing"]
    return {
        "model": {
            "name_or_path": args.model or HF_MODEL,
            "dtype": PRECISIONS[args.precision],
            "attn_implementation": args.attn_implementation,
            "trust_remote_code": args.trust_remote_code,
        },
        # QLoRA: the frozen base in 4-bit NormalFloat with double quantization.
        "quantization": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": PRECISIONS[args.precision],
        }
        if args.qlora
        else None,
        # Plain LoRA: what dhurandhar's `--adapter` applies (no DoRA, rsLoRA or bias).
        "lora_config": {
            "r": lora["r"],
            "lora_alpha": lora["alpha"],
            "lora_dropout": lora["dropout"],
            "target_modules": target_regex(lora["target_modules"]),
            "bias": lora["bias"],
            "use_dora": False,
            "use_rslora": False,
            "task_type": "CAUSAL_LM",
        },
        "sft_config": {
            "output_dir": job["output_dir"],
            "num_train_epochs": t["epochs"],
            "max_steps": t["max_steps"] if t["max_steps"] > 0 else -1,
            "per_device_train_batch_size": t["batch_size"],
            "per_device_eval_batch_size": t["batch_size"],
            "gradient_accumulation_steps": t["gradient_accumulation_steps"],
            # transformers 5's name for gradient_checkpointing (kept as an alias until v6).
            "activation_checkpointing": checkpointing,
            "activation_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
            "learning_rate": t["learning_rate"],
            "lr_scheduler_type": SCHEDULERS[t["lr_scheduler"]],
            # transformers 5 has no warmup_ratio: a warmup_steps below 1 is that ratio.
            "warmup_steps": t["warmup_ratio"],
            "weight_decay": t["weight_decay"],
            # TRL's name since 0.16 (max_seq_length was removed in 0.20).
            "max_length": t["max_seq_length"],
            "packing": args.packing,
            "seed": t["seed"],
            "data_seed": t["seed"],
            "logging_strategy": "steps" if t["logging_steps"] > 0 else "no",
            "logging_steps": max(t["logging_steps"], 1),
            "eval_strategy": "steps" if has_eval and t["eval_steps"] > 0 else "no",
            "eval_steps": max(t["eval_steps"], 1),
            "save_strategy": "steps" if t["save_steps"] > 0 else "no",
            "save_steps": max(t["save_steps"], 1),
            "save_total_limit": t["save_total_limit"] or None,
            "bf16": args.precision == "bf16",
            "fp16": args.precision == "fp16",
            "ddp_find_unused_parameters": False,
            "report_to": args.report_to,
            "dataset_text_field": "text",
        },
        "data": {
            "dataset": job["dataset"],
            "validation_dataset": job["validation_dataset"],
            "validation_fraction": 0.0 if job["validation_dataset"] else job["validation_fraction"],
            "seed": t["seed"],
        },
    }


def check_model(name):
    if not name:
        fail("no model: pass --model ID or set HF_MODEL in train.py")
    if name.startswith("<"):
        fail(
            f"HF_MODEL is a placeholder ({name}): pass --model ID or edit HF_MODEL in train.py: "
            "the Hugging Face id, or a directory with config.json and safetensors, of the model "
            f"the GGUF {BASE_MODEL} was converted from"
        )


def scan_jsonl(path):
    """(format, examples) of a JSONL file, every line checked: `text` or `messages`."""
    kinds, count = set(), 0
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not JSON ({e.msg})")
            if not isinstance(row, dict):
                fail(f"{path}:{number}: not a JSON object")
            messages = row.get("messages")
            if isinstance(messages, list):
                for m in messages:
                    if not (isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m):
                        fail(f"{path}:{number}: a message is not {{\"role\": ..., \"content\": ...}}")
                kinds.add("messages")
            elif isinstance(row.get("text"), str):
                kinds.add("text")
            else:
                fail(f"{path}:{number}: has neither `text` (a string) nor `messages` (a list)")
            count += 1
    if count == 0:
        fail(f"{path}: no examples")
    if len(kinds) > 1:
        fail(f"{path}: mixes `text` and `messages` lines; use one format per file")
    return kinds.pop(), count


def check_data(data):
    if not data["dataset"]:
        fail("the job names no dataset: set `dataset` in job.yaml or pass --dataset FILE")
    kind, count = scan_jsonl(data["dataset"])
    summary = {"format": kind, "examples": count}
    if data["validation_dataset"]:
        vkind, vcount = scan_jsonl(data["validation_dataset"])
        if vkind != kind:
            fail(f"{data['validation_dataset']}: `{vkind}` lines, but the dataset has `{kind}`")
        summary["validation_examples"] = vcount
    return summary


def check_versions(qlora):
    from importlib.metadata import PackageNotFoundError, version

    for package, wanted in PINNED.items():
        if package == "bitsandbytes" and not qlora:
            continue
        try:
            have = version(package)
        except PackageNotFoundError:
            fail(f"{package} is not installed: pip install -r requirements.txt")
        if have.split("+")[0] != wanted:
            say(f"warning: {package} {have} is installed; this script was written for {wanted}")


def load_data(data):
    from datasets import load_dataset

    def load(path):
        ds = load_dataset("json", data_files=path, split="train")
        columns = ds.column_names
        kind = "messages" if "messages" in columns else "text" if "text" in columns else None
        if kind is None:
            fail(f"{path}: has neither a `text` nor a `messages` column (columns: {', '.join(columns)})")
        return ds.select_columns([kind]), kind

    train, kind = load(data["dataset"])
    evaluation = None
    if data["validation_dataset"]:
        evaluation, vkind = load(data["validation_dataset"])
        if vkind != kind:
            fail(f"{data['validation_dataset']}: `{vkind}` data, but the dataset has `{kind}`")
    elif data["validation_fraction"] > 0:
        split = train.train_test_split(test_size=data["validation_fraction"], seed=data["seed"])
        train, evaluation = split["train"], split["test"]
    return train, evaluation, kind


def assistant_only_loss(tokenizer, kind, mode):
    """Loss on the assistant turns only, where TRL can mark them in the chat template."""
    if kind != "messages" or mode == "off":
        return False
    if not getattr(tokenizer, "chat_template", None):
        fail("the tokenizer has no chat template; `messages` data needs one (or give `text` lines)")
    try:
        from trl.chat_template_utils import get_training_chat_template

        get_training_chat_template(tokenizer)
        return True
    except Exception as e:  # ValueError: a template TRL cannot add {% generation %} markers to
        if mode == "on":
            fail(f"--assistant-only-loss on: TRL cannot mark the assistant turns: {e}")
        say(
            "the chat template has no {% generation %} markers TRL can add: the loss covers the "
            "whole conversation (--assistant-only-loss off to silence this)"
        )
        return False


def sft_config_kwargs(kwargs, config_class):
    """Fall back to the pre-transformers-5 names when an older version is installed."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    out = dict(kwargs)
    if "activation_checkpointing" not in fields:
        out["gradient_checkpointing"] = out.pop("activation_checkpointing")
        out["gradient_checkpointing_kwargs"] = out.pop("activation_checkpointing_kwargs")
    return out


def train(job, s, args):
    import torch
    from accelerate import PartialState
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    check_versions(args.qlora)
    state = PartialState()
    m = s["model"]
    if args.packing and not m["attn_implementation"].startswith(("flash", "kernels-community")):
        say(
            "warning: --packing with attention `%s`: packed sequences attend to each other; use "
            "--attn-implementation flash_attention_2" % m["attn_implementation"]
        )
    tokenizer = AutoTokenizer.from_pretrained(m["name_or_path"], trust_remote_code=m["trust_remote_code"])
    if tokenizer.pad_token is None:
        # No new token: a resized vocabulary makes PEFT save the embeddings, which
        # dhurandhar's --adapter refuses.
        tokenizer.pad_token = tokenizer.eos_token
    quantization = None
    if s["quantization"] is not None:
        quantization = BitsAndBytesConfig(**s["quantization"])
    model = AutoModelForCausalLM.from_pretrained(
        m["name_or_path"],
        dtype=getattr(torch, m["dtype"]),
        quantization_config=quantization,
        # One whole copy per process (DDP), on this process's GPU.
        device_map={"": state.local_process_index} if torch.cuda.is_available() else None,
        attn_implementation=m["attn_implementation"],
        trust_remote_code=m["trust_remote_code"],
    )
    with state.main_process_first():
        train_data, eval_data, kind = load_data(s["data"])
    config = dict(s["sft_config"])
    config["assistant_only_loss"] = assistant_only_loss(tokenizer, kind, args.assistant_only_loss)
    if eval_data is None:
        config["eval_strategy"] = "no"
    sft_args = SFTConfig(**sft_config_kwargs(config, SFTConfig))
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=LoraConfig(**s["lora_config"]),
    )
    adapted = [name for name, module in trainer.model.named_modules() if hasattr(module, "lora_A")]
    if not adapted:
        fail("no module of the model matched lora.target_modules in its text decoder layers")
    say(
        f"{len(adapted)} projections adapted ({', '.join(sorted({n.rsplit('.', 1)[-1] for n in adapted}))}), "
        f"e.g. {adapted[0]}; {len(train_data)} training examples ({kind}), "
        f"{state.num_processes} process(es) x {config['per_device_train_batch_size']} x "
        f"{config['gradient_accumulation_steps']} sequences per optimizer step"
    )
    if is_main_process():
        trainer.model.print_trainable_parameters()
    trainer.train(resume_from_checkpoint=args.resume)
    out = config["output_dir"]
    trainer.save_model(out)
    state.wait_for_everyone()
    if state.is_main_process:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not os.path.isfile(os.path.join(out, name)):
                fail(f"{out}: {name} was not written")
        say(f"adapter saved in {out}; run it with dhurandhar on the GGUF of the same model:")
        print(f'  dhurandhar generate --model {BASE_MODEL} --adapter {out} --prompt "..."', flush=True)


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(
        description="Train the dhurandhar LoRA job in job.yaml with transformers + PEFT + TRL "
        "(run with `accelerate launch --config_file accelerate_config.yaml train.py` on several GPUs)."
    )
    p.add_argument("--job", default=os.path.join(here, "job.yaml"), help="the job file (default: job.yaml beside this script)")
    p.add_argument("--model", help="the base in transformers form (Hugging Face id or directory), instead of HF_MODEL")
    p.add_argument("--dataset", help="training JSONL, instead of the job's dataset")
    p.add_argument("--validation-dataset", help="validation JSONL, instead of the job's validation_dataset")
    p.add_argument("--output-dir", help="where the adapter goes, instead of the job's output_dir")
    p.add_argument("--qlora", action="store_true", help="QLoRA: load the frozen base in 4-bit NF4 with double quantization (bitsandbytes)")
    p.add_argument("--packing", action="store_true", help="pack sequences to max_seq_length (needs a FlashAttention implementation)")
    p.add_argument("--attn-implementation", default="sdpa", help="transformers attention implementation (default: sdpa)")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16", help="compute precision (default: bf16)")
    p.add_argument(
        "--assistant-only-loss",
        choices=["auto", "on", "off"],
        default="auto",
        help="chat data: loss on the assistant turns only (auto: where TRL can mark them)",
    )
    p.add_argument("--report-to", default="none", help="transformers report_to (none, tensorboard, wandb, ...)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT", help="resume from the last checkpoint in output_dir, or from CHECKPOINT")
    p.add_argument("--check", action="store_true", help="check the job and the data, print the settings as JSON, and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    job = read_job(args.job)
    edited = edited_fields(job)
    for field, value in (
        ("dataset", args.dataset),
        ("validation_dataset", args.validation_dataset),
        ("output_dir", args.output_dir),
    ):
        if value is not None:
            job[field] = value
    s = settings(job, args)
    check_model(s["model"]["name_or_path"])
    if edited:
        say(f"{args.job}: edited since the export: {', '.join(edited)}")
    if args.check:
        summary = check_data(s["data"])
        print(json.dumps({"job": args.job, "edited": edited, "data_summary": summary, **s}, indent=2))
        return
    train(job, s, args)


if __name__ == "__main__":
    main()
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn job() -> LoraJob {
        let mut j = LoraJob {
            base_model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            dataset: "data/train.jsonl".into(),
            ..LoraJob::default()
        };
        j.lora.r = 24;
        j.lora.alpha = 48.5;
        j.lora.dropout = 0.07;
        j.lora.target_modules = vec!["q_proj".into(), "v_proj".into(), "down_proj".into()];
        let t = &mut j.training;
        t.epochs = 1.5;
        t.batch_size = 3;
        t.gradient_accumulation_steps = 5;
        t.gradient_checkpointing = false;
        t.learning_rate = 3.5e-5;
        t.lr_scheduler = "constant".into();
        t.warmup_ratio = 0.03;
        t.weight_decay = 0.01;
        t.max_seq_length = 1536;
        t.seed = 1234;
        t.logging_steps = 7;
        t.eval_steps = 0;
        t.save_steps = 250;
        t.save_total_limit = 0;
        t.max_steps = 900;
        j
    }

    fn export(dir: &Path, hf: Option<&str>, overwrite: bool) -> Result<ExportHfReport> {
        export_hf(&ExportHfOptions {
            job: job(),
            output: dir.to_path_buf(),
            hf_model: hf.map(String::from),
            overwrite,
        })
    }

    /// Every file is there, the script holds the job (non-default values), the placeholders
    /// are all filled, and job.yaml is the job.
    #[test]
    fn the_files_hold_the_job() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("hf");
        let r = export(&out, Some("HuggingFaceTB/SmolLM2-135M-Instruct"), false).unwrap();
        assert_eq!(r.hf_model_source, "given");
        let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, FILES);
        for f in &r.files {
            assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.bytes);
        }
        let py = std::fs::read_to_string(out.join("train.py")).unwrap();
        assert!(!py.contains("@@"), "a placeholder is left");
        assert!(py.contains(r#"HF_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct""#));
        // The embedded job is the job, value for value.
        let start = py.find("EXPORTED_JOB = json.loads(r\"\"\"").unwrap() + 30;
        let end = start + py[start..].find("\"\"\")").unwrap();
        let embedded: serde_json::Value = serde_json::from_str(&py[start..end]).unwrap();
        assert_eq!(embedded, serde_json::to_value(job()).unwrap());
        for v in [
            "\"r\": 24",
            "\"alpha\": 48.5",
            "\"learning_rate\": 0.000035",
            "\"max_seq_length\": 1536",
        ] {
            assert!(py.contains(v), "train.py lacks {v}");
        }
        // Every setting is read from the job (and max_length is TRL's current name).
        for read in [
            r#"lora["r"]"#,
            r#"lora["alpha"]"#,
            r#"lora["dropout"]"#,
            r#"lora["target_modules"]"#,
            r#"lora["bias"]"#,
            r#"t["epochs"]"#,
            r#"t["batch_size"]"#,
            r#"t["gradient_accumulation_steps"]"#,
            r#"t["gradient_checkpointing"]"#,
            r#"t["learning_rate"]"#,
            r#"t["lr_scheduler"]"#,
            r#"t["warmup_ratio"]"#,
            r#"t["weight_decay"]"#,
            r#""max_length": t["max_seq_length"]"#,
            r#"t["seed"]"#,
            r#"t["logging_steps"]"#,
            r#"t["eval_steps"]"#,
            r#"t["save_steps"]"#,
            r#"t["save_total_limit"]"#,
            r#"t["max_steps"]"#,
            r#"job["output_dir"]"#,
            r#"job["dataset"]"#,
            r#"job["validation_dataset"]"#,
            r#"job["validation_fraction"]"#,
        ] {
            assert!(py.contains(read), "train.py does not read {read}");
        }
        assert!(
            !py.contains("\"max_seq_length\": t["),
            "TRL has no max_seq_length"
        );
        let yaml = std::fs::read_to_string(out.join("job.yaml")).unwrap();
        assert_eq!(LoraJob::from_yaml(&yaml).unwrap(), job());
        let req = std::fs::read_to_string(out.join("requirements.txt")).unwrap();
        for (p, v) in PINNED {
            assert!(req.contains(&format!("{p}=={v}")), "{req}");
        }
        let acc = std::fs::read_to_string(out.join("accelerate_config.yaml")).unwrap();
        assert!(acc.contains("distributed_type: MULTI_GPU") && acc.contains("num_processes:"));
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(readme.contains("accelerate launch --config_file accelerate_config.yaml train.py"));
        assert!(readme.contains(&format!(
            "dhurandhar generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter {}",
            r.adapter_dir
        )));
        assert!(readme.contains("| `lora.r` | `LoraConfig.r` | `24` |"));
        assert_eq!(
            r.adapter_dir,
            out.join("outputs/edge-model-lora").display().to_string()
        );
        assert!(r.notes.iter().any(|n| n.contains("data/train.jsonl")));
    }

    /// Without --hf-model: a placeholder the script refuses, said so in the report and the
    /// script; a built-in base names its Hugging Face source.
    #[test]
    fn a_missing_model_is_a_placeholder() {
        let d = tempfile::tempdir().unwrap();
        let r = export(d.path(), None, false).unwrap();
        assert_eq!(r.hf_model_source, "placeholder");
        assert_eq!(
            r.hf_model,
            "<transformers checkpoint of SmolLM2-135M-Instruct.Q4_1>"
        );
        assert!(r.notes[0].contains("placeholder"), "{:?}", r.notes);
        let py = std::fs::read_to_string(d.path().join("train.py")).unwrap();
        assert!(py.contains("# PLACEHOLDER"));
        let d2 = tempfile::tempdir().unwrap();
        let r = export_hf(&ExportHfOptions {
            job: LoraJob {
                base_model: "qwen2.5-0.5b".into(),
                ..LoraJob::default()
            },
            output: d2.path().to_path_buf(),
            hf_model: None,
            overwrite: false,
        })
        .unwrap();
        assert!(r.notes[0].contains("Qwen/Qwen2.5-0.5B"), "{:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("names no dataset")));
        assert!(r.notes.iter().any(|n| n.contains("is not a GGUF")));
        assert!(r.load_command.contains("--model BASE.gguf"));
    }

    /// A job whose base_model is a transformers checkpoint directory trains that.
    #[test]
    fn a_checkpoint_directory_base_is_the_hf_model() {
        let d = tempfile::tempdir().unwrap();
        let ckpt = d.path().join("ckpt");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(ckpt.join("config.json"), "{}").unwrap();
        let r = export_hf(&ExportHfOptions {
            job: LoraJob {
                base_model: ckpt.display().to_string(),
                ..LoraJob::default()
            },
            output: d.path().join("out"),
            hf_model: None,
            overwrite: false,
        })
        .unwrap();
        assert_eq!(r.hf_model_source, "job base_model");
        assert_eq!(r.hf_model, ckpt.display().to_string());
    }

    fn python() -> Option<&'static str> {
        match Command::new("python3").arg("--version").output() {
            Ok(o) if o.status.success() => Some("python3"),
            _ => {
                println!("skipped: python3 is not available");
                None
            }
        }
    }

    /// The script compiles; with PyYAML, `--check` reads the job and the data and maps
    /// every job value to the transformers / PEFT / TRL argument it sets.
    #[test]
    fn the_script_compiles_and_checks_the_job() {
        let Some(py) = python() else { return };
        let d = tempfile::tempdir().unwrap();
        let r = export(d.path(), Some("some/model"), false).unwrap();
        assert_eq!(r.files.len(), 5);
        let o = Command::new(py)
            .args(["-m", "py_compile"])
            .arg(d.path().join("train.py"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let has_yaml = Command::new(py)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_yaml {
            println!("skipped the --check run: PyYAML is not installed for python3");
            return;
        }
        std::fs::create_dir(d.path().join("data")).unwrap();
        std::fs::write(
            d.path().join("data/train.jsonl"),
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n\n\
             {\"messages\": [{\"role\": \"user\", \"content\": \"2+2\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n",
        )
        .unwrap();
        let check = |extra: &[&str]| {
            Command::new(py)
                .arg("train.py")
                .arg("--check")
                .args(extra)
                .current_dir(d.path())
                .output()
                .unwrap()
        };
        let parse = |o: &std::process::Output| -> serde_json::Value {
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                panic!(
                    "{e}: stdout {} stderr {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
        };
        let o = check(&[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = parse(&o);
        assert_eq!(v["edited"], serde_json::json!([]));
        assert_eq!(v["data_summary"]["format"], "messages");
        assert_eq!(v["data_summary"]["examples"], 2);
        let l = &v["lora_config"];
        assert_eq!(l["r"], 24);
        assert_eq!(l["lora_alpha"], 48.5);
        assert_eq!(l["lora_dropout"], 0.07);
        assert_eq!(l["bias"], "none");
        assert_eq!(l["use_dora"], false);
        let re = l["target_modules"].as_str().unwrap();
        assert!(
            re.contains("q_proj|v_proj|down_proj") && re.contains("vision"),
            "{re}"
        );
        let s = &v["sft_config"];
        for (k, want) in [
            ("num_train_epochs", serde_json::json!(1.5)),
            ("max_steps", serde_json::json!(900)),
            ("per_device_train_batch_size", serde_json::json!(3)),
            ("gradient_accumulation_steps", serde_json::json!(5)),
            ("activation_checkpointing", serde_json::json!(false)),
            ("learning_rate", serde_json::json!(3.5e-5)),
            (
                "lr_scheduler_type",
                serde_json::json!("constant_with_warmup"),
            ),
            ("warmup_steps", serde_json::json!(0.03)),
            ("weight_decay", serde_json::json!(0.01)),
            ("max_length", serde_json::json!(1536)),
            ("seed", serde_json::json!(1234)),
            ("logging_steps", serde_json::json!(7)),
            ("eval_strategy", serde_json::json!("no")),
            ("save_steps", serde_json::json!(250)),
            ("save_total_limit", serde_json::Value::Null),
            ("output_dir", serde_json::json!("./outputs/edge-model-lora")),
        ] {
            assert_eq!(s[k], want, "sft_config.{k}");
        }
        assert_eq!(v["quantization"], serde_json::Value::Null);
        // --qlora: NF4 with double quantization.
        let o = check(&["--qlora"]);
        let v = parse(&o);
        assert_eq!(v["quantization"]["bnb_4bit_quant_type"], "nf4");
        assert_eq!(v["quantization"]["bnb_4bit_use_double_quant"], true);
        // An edited job.yaml is what runs, and the edit is named; a bad one is refused
        // naming the file and the field.
        let yaml = std::fs::read_to_string(d.path().join("job.yaml")).unwrap();
        std::fs::write(
            d.path().join("job.yaml"),
            yaml.replace("  r: 24\n", "  r: 8\n"),
        )
        .unwrap();
        let o = check(&[]);
        let v = parse(&o);
        assert_eq!(v["lora_config"]["r"], 8);
        assert_eq!(v["edited"], serde_json::json!(["lora.r"]));
        std::fs::write(d.path().join("job.yaml"), "lora:\n  rank: 8\n").unwrap();
        let o = check(&[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && e.contains("job.yaml") && e.contains("lora.rank"),
            "{e}"
        );
    }

    /// The placeholder stops the script, naming what to give.
    #[test]
    fn the_script_refuses_the_placeholder() {
        let Some(py) = python() else { return };
        let d = tempfile::tempdir().unwrap();
        export(d.path(), None, false).unwrap();
        let o = Command::new(py)
            .args(["train.py", "--check"])
            .current_dir(d.path())
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        if e.contains("PyYAML") {
            println!("skipped: PyYAML is not installed for python3");
            return;
        }
        assert!(
            !o.status.success() && e.contains("placeholder") && e.contains("--model"),
            "{e}"
        );
    }

    #[test]
    fn existing_files_are_kept_unless_overwriting() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("job.yaml"), "mine").unwrap();
        std::fs::write(d.path().join("notes.txt"), "unrelated").unwrap();
        let e = export(d.path(), Some("m"), false).unwrap_err().to_string();
        assert!(e.contains("job.yaml already exists"), "{e}");
        assert!(!d.path().join("train.py").exists(), "nothing was written");
        assert_eq!(
            std::fs::read_to_string(d.path().join("job.yaml")).unwrap(),
            "mine"
        );
        export(d.path(), Some("m"), true).unwrap();
        let yaml = std::fs::read_to_string(d.path().join("job.yaml")).unwrap();
        assert_eq!(LoraJob::from_yaml(&yaml).unwrap(), job());
        assert_eq!(
            std::fs::read_to_string(d.path().join("notes.txt")).unwrap(),
            "unrelated"
        );
        let e = export(&d.path().join("notes.txt"), Some("m"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notes.txt") && e.contains("not a directory"),
            "{e}"
        );
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A failure while writing leaves nothing: not the files written before it, not a
    /// temp file, not the directory the call created.
    #[test]
    fn a_failed_write_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        // The last file cannot be written (its name is a directory): the four before it
        // are staged, and dropped.
        std::fs::create_dir(d.path().join("README.md")).unwrap();
        let e = export(d.path(), Some("m"), true).unwrap_err().to_string();
        assert!(
            e.contains("README.md") && e.contains("nothing was written"),
            "{e}"
        );
        assert_eq!(listing(d.path()), ["README.md"]);

        // A rename that fails midway removes the files this call created and the
        // directory it made; a replaced file is named.
        let contents: Vec<(&str, String)> =
            FILES.iter().map(|n| (*n, format!("new {n}"))).collect();
        let fresh = d.path().join("a/b");
        let e = write_all_or_nothing(&fresh, &contents, false, Some(3))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nothing was written") && e.contains("injected"),
            "{e}"
        );
        assert!(!fresh.exists());
        let kept = d.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        std::fs::write(kept.join("train.py"), "old").unwrap();
        let e = write_all_or_nothing(&kept, &contents, true, Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already replaced") && e.contains("train.py"),
            "{e}"
        );
        assert_eq!(listing(&kept), ["train.py"]);
        write_all_or_nothing(&kept, &contents, true, None).unwrap();
        assert_eq!(listing(&kept), {
            let mut f = FILES.map(String::from).to_vec();
            f.sort();
            f
        });
    }

    #[test]
    fn yaml_values_round_trip() {
        let mut j = job();
        j.base_model = "dir with \"quotes\" \\ and ünïcode 😀/m.gguf".into();
        j.training.learning_rate = 1e-7;
        j.validation_fraction = 0.0;
        j.training.epochs = 2.0;
        assert_eq!(LoraJob::from_yaml(&job_yaml(&j)).unwrap(), j);
        assert!(job_yaml(&j).is_ascii());
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(sh_quote("out/x.gguf"), "out/x.gguf");
        assert_eq!(
            hf_repo("https://huggingface.co/google/gemma-4-E2B-it/blob/main/config.json (x)"),
            Some("google/gemma-4-E2B-it".into())
        );
    }
}
