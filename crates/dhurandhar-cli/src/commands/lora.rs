//! `dhurandhar lora ...`: flags → [`dhurandhar::lora`] → a table or JSON.

use std::path::PathBuf;

use clap::Subcommand;
use dhurandhar::lora::{
    dry_run, read_job, write_template, AdapterSpec, DryRunOptions, DryRunReport,
    DEFAULT_BASE_FORMAT,
};
use dhurandhar::lora::{
    export_gguf, merge, train, ExportOptions, ExportReport, MergeOptions, MergeReport,
    TrainOptions, TrainReport,
};
use dhurandhar::lora::{export_hf, ExportHfOptions, ExportHfReport};
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
    /// Write the job as a transformers + PEFT + TRL training directory for a GPU machine or
    /// cluster (`accelerate launch`): train.py, job.yaml, pinned requirements.txt,
    /// accelerate_config.yaml and a README. Multi-GPU training belongs there; the PEFT
    /// adapter it saves runs here with `generate --adapter DIR`.
    ExportHf(ExportHfArgs),
    /// Train the job's adapter on the CPU over its frozen GGUF base (kept in its stored,
    /// quantized format): a progress bar with loss and tokens/s, validation loss, PEFT
    /// checkpoints every `save_steps` (`--resume` continues the newest), the final
    /// adapter in `output_dir`.
    Train(TrainArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        LoraCommand::Init(a) => run_init(a),
        LoraCommand::DryRun(a) => run_dry_run(a),
        LoraCommand::Merge(a) => run_merge(a),
        LoraCommand::ExportGguf(a) => run_export(a),
        LoraCommand::ExportHf(a) => run_export_hf(a),
        LoraCommand::Train(a) => run_train(a),
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

/// Write a job as a transformers + PEFT + TRL (`SFTTrainer`) training directory, runnable
/// with `accelerate launch` on one or many GPUs. All five files are written or none; files
/// of the same names are kept unless `--force`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "transformers cannot train a GGUF: --hf-model names the same model in transformers form \
(a Hugging Face model id, or a directory with config.json and safetensors). Without it, train.py holds \
a placeholder and refuses to start until given `--model ID`. `python train.py --check` checks the job \
and the data without a GPU; the README in DIR has the launch command and how to bring the adapter back."
)]
pub struct ExportHfArgs {
    /// The job file (`dhurandhar lora init` writes one); copied as DIR/job.yaml.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The directory to write (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The base model in transformers form, which train.py trains: a Hugging Face model id
    /// or a local directory with config.json and safetensors (the model the job's GGUF was
    /// converted from).
    #[arg(long, value_name = "ID")]
    pub hf_model: Option<String>,
    /// Replace train.py, job.yaml, ... if DIR already has them.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_export_hf(a: ExportHfArgs) -> anyhow::Result<()> {
    let job = read_job(&a.config)?;
    let report = export_hf(&ExportHfOptions {
        job,
        output: a.output,
        hf_model: a.hf_model,
        overwrite: a.force,
    })
    .map_err(|e| match e.root() {
        dhurandhar::Error::InvalidOption {
            option: "output",
            reason,
        } if reason.contains("already exist") => anyhow::anyhow!("{e} (--force replaces them)"),
        _ => e.into(),
    })?;
    emit(&a.out, &report, render_export_hf)
}

fn render_export_hf(r: &ExportHfReport) -> String {
    let mut o = format!(
        "wrote {} files to {} (transformers + PEFT + TRL; hf_model {}):\n",
        r.files.len(),
        r.output_dir,
        r.hf_model
    );
    for f in &r.files {
        o += &format!("  {:<24} {:>10}\n", f.name, human_bytes(f.bytes));
    }
    o += &format!(
        "on the GPU machine, in {}:\n  pip install -r requirements.txt\n  {}\n  {}\n",
        r.output_dir, r.check_command, r.launch_command
    );
    o += &format!("then run the adapter here:\n  {}\n", r.load_command);
    for n in &r.notes {
        o += &format!("note: {n}\n");
    }
    o
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
        ("logits (loss chunk)", m.logits),
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

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The job file (`lora init` writes one); its `base_model` must be a GGUF.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Worker threads (0: every core).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Continue from the newest checkpoint in the job's output directory.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimizer steps, instead of the job's `training.max_steps`.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Write checkpoints and the adapter here, instead of the job's `output_dir`.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let mut job = read_job(&a.config)?;
    if let Some(n) = a.max_steps {
        job.training.max_steps = n;
    }
    if let Some(d) = a.output_dir {
        job.output_dir = d.display().to_string();
    }
    let opts = TrainOptions {
        job,
        threads: a.threads,
        resume: a.resume,
    };
    let report = train(&opts, &a.out.progress(), &CancelToken::new())?;
    emit(&a.out, &report, render_train)
}

fn render_train(r: &TrainReport) -> String {
    let mut t = table("what|value", &[]);
    let loss = |v: Option<f64>| v.map_or("-".to_string(), |l| format!("{l:.4}"));
    let first = r.history.first().map(|h| h.loss);
    let last = r.history.last().map(|h| h.loss);
    let (v0, v1) = (r.eval.first(), r.eval.last());
    let rows = [
        ("base", r.base_model.clone()),
        (
            "data",
            format!(
                "{} training and {} validation sequences of {} tokens",
                r.train_sequences, r.validation_sequences, r.sequence_length
            ),
        ),
        ("trainable parameters", count(r.trainable_params as u64)),
        (
            "steps",
            format!(
                "{} (from {} to {} of {}, {:.2} epochs)",
                r.steps, r.start_step, r.total_steps, r.total_steps, r.epochs_done
            ),
        ),
        (
            "speed",
            format!(
                "{:.0} tokens/s on {} threads ({} tokens in {:.1} s)",
                r.tokens_per_s, r.threads, r.tokens, r.seconds
            ),
        ),
        (
            "training loss",
            format!("{} -> {}", loss(first), loss(last)),
        ),
        (
            "validation loss",
            match (v0, v1) {
                (Some(a), Some(b)) => format!(
                    "{:.4} (step {}) -> {:.4} (step {})",
                    a.loss, a.step, b.loss, b.step
                ),
                _ => "-".into(),
            },
        ),
        (
            "memory",
            format!(
                "peak RSS {}, dry-run estimate {}",
                r.peak_rss_bytes.map_or("-".into(), human_bytes),
                human_bytes(r.estimated_bytes)
            ),
        ),
        ("adapter", format!("{} (PEFT layout)", r.output_dir)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    format!("{t}\n")
}
