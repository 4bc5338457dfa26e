//! `dhurandhar lora ...`: flags → [`dhurandhar::lora`] → a table or JSON.

use std::path::PathBuf;

use clap::Subcommand;
use dhurandhar::lora::{
    dry_run, read_job, write_template, AdapterSpec, DryRunOptions, DryRunReport,
    DEFAULT_BASE_FORMAT,
};
use dhurandhar::lora::{
    export_gguf, merge, ExportOptions, ExportReport, MergeOptions, MergeReport,
};
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::output::{emit, print_text, OutputArgs};
use crate::render::{f, num, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LoraCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoraCommand {
    /// Write a commented job file holding every default (the QLoRA recipe).
    Init(InitArgs),
    /// What a job costs before it runs: trainable parameters per target module, adapter
    /// bytes and the training memory (frozen base, LoRA state, activations).
    DryRun(DryRunArgs),
    /// Merge adapters into a GGUF: each adapted projection becomes `W + weight·(alpha/r)·B·A`
    /// stored as F32; every other tensor is copied. `quantize` the result to ship it.
    Merge(MergeArgs),
    /// Write a PEFT adapter as llama.cpp's LoRA GGUF (for `--lora` in llama.cpp's tools).
    ExportGguf(ExportArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        LoraCommand::Init(a) => run_init(a),
        LoraCommand::DryRun(a) => run_dry_run(a),
        LoraCommand::Merge(a) => run_merge(a),
        LoraCommand::ExportGguf(a) => run_export(a),
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to write the job file (`-` for stdout).
    #[arg(short, long, default_value = "lora-job.yaml")]
    pub output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

fn run_init(a: InitArgs) -> anyhow::Result<()> {
    if a.output.as_os_str() == "-" {
        return print_text(dhurandhar::lora::JOB_TEMPLATE);
    }
    write_template(&a.output, a.force).map_err(|e| match e.root() {
        dhurandhar::Error::InvalidOption {
            option: "output", ..
        } => anyhow::anyhow!("{e} (--force replaces it)"),
        _ => e.into(),
    })?;
    eprintln!(
        "wrote {}; estimate it with `dhurandhar lora dry-run --config {}`",
        a.output.display(),
        a.output.display()
    );
    Ok(())
}

/// Estimate a LoRA job on any model (built-in, YAML profile or checkpoint) without
/// training. The frozen base is charged as `analyze` charges it: a checkpoint's own
/// tensor bytes, or the weights at `--base-format` (NF4 by default, the QLoRA base).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "LoRA weights, gradients and AdamW's two moments are f32 (16 bytes per trainable \
parameter). Activations are those an f32 trainer keeps for backward per token and layer; with \
gradient checkpointing only each layer's input is kept and one layer is recomputed at a time. \
The loss runs through the head 128 tokens at a time, so logits and their gradient are charged \
for one such chunk."
)]
pub struct DryRunArgs {
    /// A job file (`dhurandhar lora init` writes one); without it, the defaults on
    /// gemma4-e2b.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The base model instead of the job's `base_model`: a built-in name, a YAML profile
    /// or a checkpoint (GGUF / safetensors / config.json).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Stored format of the frozen base when the model is not a checkpoint
    /// (nf4, q4_0, int8, bf16, ...; see `analyze --help`).
    #[arg(long, default_value = DEFAULT_BASE_FORMAT)]
    pub base_format: String,
    /// Adapter rank, instead of the job's `lora.r`.
    #[arg(long)]
    pub r: Option<usize>,
    /// Sequence length, instead of the job's `training.max_seq_length`.
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Sequences per micro-batch, instead of the job's `training.batch_size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_dry_run(a: DryRunArgs) -> anyhow::Result<()> {
    let mut job = match &a.config {
        Some(p) => read_job(p)?,
        None => dhurandhar::lora::default_job(),
    };
    if let Some(r) = a.r {
        job.lora.r = r;
    }
    if let Some(s) = a.max_seq_length {
        job.training.max_seq_length = s;
    }
    if let Some(b) = a.batch_size {
        job.training.batch_size = b;
    }
    let report = dry_run(&DryRunOptions {
        job,
        model: a.model,
        base_format: a.base_format,
    })?;
    emit(&a.out, &report, render)
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The base GGUF.
    pub base: PathBuf,
    /// An adapter (PEFT directory); `DIR@WEIGHT` scales its update. Repeat for several.
    #[arg(long = "adapter", value_name = "DIR[@WEIGHT]", value_parser = parse_adapter, required = true)]
    pub adapters: Vec<AdapterSpec>,
    /// The merged GGUF (written atomically; never the base).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_merge(a: MergeArgs) -> anyhow::Result<()> {
    let opts = MergeOptions {
        base: a.base,
        adapters: a.adapters,
        output: a.output,
    };
    let report = merge(&opts, &a.out.progress(), &CancelToken::new())?;
    emit(&a.out, &report, |r: &MergeReport| {
        format!(
            "wrote {}: {} projections merged (F32), {} tensors copied; {} -> {} in {:.2} s\n",
            r.output,
            r.merged_tensors,
            r.copied_tensors,
            human_bytes(r.base_file_bytes),
            human_bytes(r.output_file_bytes),
            r.seconds
        )
    })
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The PEFT adapter directory.
    pub adapter: PathBuf,
    /// The base GGUF it was trained for (gives the architecture and the Q/K row order).
    #[arg(long)]
    pub base: PathBuf,
    /// The LoRA GGUF to write (atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_export(a: ExportArgs) -> anyhow::Result<()> {
    let report = export_gguf(&ExportOptions {
        adapter: a.adapter,
        base: a.base,
        output: a.output,
    })?;
    emit(&a.out, &report, |r: &ExportReport| {
        format!(
            "wrote {} ({} LoRA, r={} alpha={}, {} tensors, {}); use it with llama.cpp's --lora\n",
            r.output,
            r.architecture,
            r.r,
            r.alpha,
            r.tensors,
            human_bytes(r.output_file_bytes)
        )
    })
}

fn count(v: u64) -> String {
    num(Some(v as f64), 0)
}

fn render(r: &DryRunReport) -> String {
    let e = &r.estimate;
    let mut t = table(
        "module|GGUF tensor|layers|in x out (first)|frozen params|LoRA params",
        &[2, 3, 4, 5],
    );
    for m in &e.modules {
        t.add_row([
            m.module.to_string(),
            m.gguf.to_string(),
            m.layers.to_string(),
            format!("{} x {}", m.shape.0, m.shape.1),
            count(m.base_params),
            count(m.trainable_params),
        ]);
    }
    let mut o = format!(
        "LoRA r={} alpha={} (scale {}) on {} ({}), base at {}\n{t}\n",
        e.r,
        e.alpha,
        f(e.scale, 3),
        r.model,
        r.model_origin,
        r.base_format
    );
    o += &format!(
        "trainable params: {} || all params: {} || trainable%: {:.4}\n",
        count(e.trainable_params),
        count(e.total_params),
        e.trainable_percent
    );
    o += &format!(
        "adapter: {} in f32; {} tokens per optimizer step ({} x {} sequences of {})\n\n",
        human_bytes(e.adapter_bytes),
        count(e.tokens_per_step),
        r.job.training.gradient_accumulation_steps,
        r.job.training.batch_size,
        r.job.training.max_seq_length
    );
    let m = &e.memory;
    let ck = r.job.training.gradient_checkpointing;
    let mut t = table("training memory|bytes|size", &[1, 2]);
    let chosen = if ck {
        "activations (checkpointed)"
    } else {
        "activations (all kept)"
    };
    for (name, b) in [
        ("frozen base", m.base_weights),
        ("LoRA weights (f32)", m.lora_weights),
        ("LoRA gradients (f32)", m.lora_gradients),
        ("AdamW moments (f32)", m.optimizer_state),
        (chosen, m.activations),
        ("backward working set", m.backward_working_set),
        ("logits + gradient (loss chunk)", m.logits),
        ("total", m.total),
    ] {
        t.add_row([name.to_string(), count(b), human_bytes(b)]);
    }
    o += &format!("{t}\n");
    let (other, other_bytes) = if ck {
        ("without", m.activations_full)
    } else {
        ("with", m.activations_checkpointed)
    };
    o += &format!(
        "activations {other} gradient checkpointing: {}\n",
        human_bytes(other_bytes)
    );
    for n in &e.notes {
        o += &format!("note: {n}\n");
    }
    o
}

/// `DIR` or `DIR@WEIGHT` (the suffix counts only when it is a number and `DIR@WEIGHT`
/// itself is not an existing path).
pub fn parse_adapter(s: &str) -> Result<AdapterSpec, String> {
    if !std::path::Path::new(s).exists() {
        if let Some((dir, w)) = s.rsplit_once('@') {
            if let Ok(weight) = w.parse::<f32>() {
                if !weight.is_finite() {
                    return Err(format!("adapter weight `{w}` is not a finite number"));
                }
                return Ok(AdapterSpec {
                    path: dir.into(),
                    weight,
                });
            }
        }
    }
    Ok(AdapterSpec::new(s))
}
