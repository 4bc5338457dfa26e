//! `dhurandhar pack | unpack | verify | pack-stats`: the `.dhp` weight container.
//!
//! Thin adapter over `dhurandhar_pack`: parse flags, drive a progress bar, print a summary
//! or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar_pack::{
    Checkpoint, PackError, PackMode, PackOptions, PackReader, PackReport, QuantConfig,
    TensorReport, UnpackReport,
};
use serde::Serialize;

use crate::output::print_json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Bit-exact: byte planes + Huffman.
    Lossless,
    /// INT4/INT8 group-quantized base + sparse f16 residual (lossy).
    QuantResidual,
}

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Checkpoint: .safetensors, a sharded model.safetensors.index.json, a model directory,
    /// or a .gguf (its F32/F16/BF16 tensors).
    pub input: PathBuf,
    /// Output .dhp file (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "lossless")]
    pub mode: ModeArg,
    /// quant-residual: bits of the base (4 or 8).
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// quant-residual: weights per scale/minimum pair.
    #[arg(long, default_value_t = 32)]
    pub group: usize,
    /// quant-residual: fraction of weights whose residual is kept (e.g. 0.005 .. 0.05).
    #[arg(long, default_value_t = 0.01)]
    pub residual_frac: f64,
    /// Raw KiB per chunk (the unit of parallel and random-access decoding).
    #[arg(long, default_value_t = 1024)]
    pub chunk_kib: usize,
    /// Print JSON instead of the summary (hides the progress bar).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// A .dhp pack made by `pack`.
    pub input: PathBuf,
    /// Output .safetensors file (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A .dhp pack or delta.
    pub input: PathBuf,
    /// Only check chunk checksums (skip decoding lossless tensors and comparing hashes).
    #[arg(long)]
    pub quick: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// A .dhp pack or delta.
    pub input: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// A byte progress bar on stderr, hidden for `--json` (and by indicatif when stderr is
/// not a terminal).
pub(crate) fn progress_bar(total: u64, json: bool, what: &str) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// JSON document of `pack` and `delta`.
#[derive(Debug, Serialize)]
pub(crate) struct PackJson<'a> {
    pub input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub output: String,
    pub mode: String,
    pub seconds: f64,
    pub gb_per_s: f64,
    #[serde(flatten)]
    pub report: &'a PackReport,
}

fn overall_errors(r: &PackReport) -> Option<(f64, f64)> {
    Some((r.rel_error_base?, r.rel_error_with_residual?))
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

pub(crate) fn print_summary(r: &PackReport, out: &Path, seconds: f64) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    let counts = |m: &str| r.tensors.iter().filter(|t| t.mode == m).count();
    let mut modes = Vec::new();
    for m in ["lossless", "quant-residual", "delta", "unchanged"] {
        let n = counts(m);
        if n > 0 {
            modes.push(format!("{n} {m}"));
        }
    }
    writeln!(o, "wrote {} ({})", out.display(), modes.join(", "))?;
    writeln!(
        o,
        "  {} -> {} ({:.2}% of input, {:.2} bits/weight)",
        human_bytes(r.input_bytes),
        human_bytes(r.output_bytes),
        100.0 * r.ratio,
        r.bits_per_weight
    )?;
    if let Some((b, w)) = overall_errors(r) {
        writeln!(
            o,
            "  rel. Frobenius error of quantized tensors: {b:.4} base, {w:.4} with residual"
        )?;
    }
    // Group notes by reason: a model has hundreds of bias vectors.
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for t in &r.tensors {
        if let Some(n) = t.note.as_deref() {
            match reasons.iter_mut().find(|(k, _)| *k == n) {
                Some((_, v)) => v.push(&t.name),
                None => reasons.push((n, vec![&t.name])),
            }
        }
    }
    for (why, names) in reasons {
        let shown: Vec<&str> = names.iter().take(3).copied().collect();
        let more = if names.len() > 3 {
            format!(", +{} more", names.len() - 3)
        } else {
            String::new()
        };
        writeln!(
            o,
            "  {why}: {} tensor(s): {}{more}",
            names.len(),
            shown.join(", ")
        )?;
    }
    for n in &r.removed {
        writeln!(o, "  removed: {n}")?;
    }
    if !r.skipped.is_empty() {
        writeln!(
            o,
            "  skipped {} non-float tensors (e.g. {}: {})",
            r.skipped.len(),
            r.skipped[0].0,
            r.skipped[0].1
        )?;
    }
    writeln!(
        o,
        "  {:.2} s, {:.3} GB/s",
        seconds,
        r.input_bytes as f64 / seconds.max(1e-9) / 1e9
    )
}

pub fn run_pack(a: PackArgs) -> anyhow::Result<()> {
    let mode = match a.mode {
        ModeArg::Lossless => PackMode::Lossless,
        ModeArg::QuantResidual => PackMode::QuantResidual(QuantConfig {
            bits: a.bits,
            group: a.group,
            residual_frac: a.residual_frac,
        }),
    };
    let opts = PackOptions {
        mode,
        chunk_size: a.chunk_kib.saturating_mul(1024),
        ..Default::default()
    };
    let src = Checkpoint::open(&a.input)?;
    if src.tensors().is_empty() {
        anyhow::bail!("{}: no packable tensors", a.input.display());
    }
    let pb = progress_bar(src.total_bytes(), a.json, "pack");
    let t0 = Instant::now();
    let report = dhurandhar_pack::pack(&src, &a.output, &opts, &|n| pb.inc(n))?;
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if a.json {
        print_json(&PackJson {
            input: a.input.display().to_string(),
            base: None,
            output: a.output.display().to_string(),
            mode: match a.mode {
                ModeArg::Lossless => "lossless".into(),
                ModeArg::QuantResidual => "quant-residual".into(),
            },
            seconds: secs,
            gb_per_s: report.input_bytes as f64 / secs.max(1e-9) / 1e9,
            report: &report,
        })
    } else {
        Ok(print_summary(&report, &a.output, secs)?)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct UnpackJson {
    pub input: String,
    pub output: String,
    pub seconds: f64,
    pub gb_per_s: f64,
    #[serde(flatten)]
    pub report: UnpackReport,
}

pub(crate) fn print_unpack(r: &UnpackReport, out: &Path, secs: f64) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "wrote {} ({} tensors, {}): {} bit-exact (hash checked), {} dequantized",
        out.display(),
        r.tensors,
        human_bytes(r.output_bytes),
        r.verified_bit_exact,
        r.lossy
    )?;
    writeln!(
        o,
        "  {:.2} s, {:.3} GB/s",
        secs,
        r.output_bytes as f64 / secs.max(1e-9) / 1e9
    )
}

pub fn run_unpack(a: UnpackArgs) -> anyhow::Result<()> {
    let reader = PackReader::open(&a.input)?;
    restore(&reader, &a.input, &a.output, a.json, "unpack", |pb| {
        Ok(dhurandhar_pack::unpack(&reader, &a.output, &|n| pb.inc(n))?)
    })
}

/// Shared tail of `unpack` and `delta apply`: progress bar over the pack's raw bytes,
/// time the restore, then print JSON or the one-line summary.
pub(crate) fn restore(
    reader: &PackReader,
    input: &Path,
    output: &Path,
    json: bool,
    what: &str,
    work: impl FnOnce(&indicatif::ProgressBar) -> anyhow::Result<UnpackReport>,
) -> anyhow::Result<()> {
    let total = reader.tensors().iter().map(|t| t.raw_bytes).sum();
    let pb = progress_bar(total, json, what);
    let t0 = Instant::now();
    let r = work(&pb)?;
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if json {
        print_json(&UnpackJson {
            input: input.display().to_string(),
            output: output.display().to_string(),
            seconds: secs,
            gb_per_s: r.output_bytes as f64 / secs.max(1e-9) / 1e9,
            report: r,
        })
    } else {
        Ok(print_unpack(&r, output, secs)?)
    }
}

#[derive(Debug, Serialize)]
struct VerifyJson {
    file: String,
    ok: bool,
    tensors: Option<usize>,
    chunks: Option<usize>,
    tensors_hashed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bad_tensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bad_chunk: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run_verify(a: VerifyArgs) -> anyhow::Result<()> {
    let result = PackReader::open(&a.input).and_then(|r| r.verify(!a.quick));
    let file = a.input.display().to_string();
    match result {
        Ok(v) => {
            if a.json {
                print_json(&VerifyJson {
                    file,
                    ok: true,
                    tensors: Some(v.tensors),
                    chunks: Some(v.chunks),
                    tensors_hashed: Some(v.tensors_hashed),
                    bad_tensor: None,
                    bad_chunk: None,
                    error: None,
                })?;
            } else {
                writeln!(
                    std::io::stdout().lock(),
                    "{file}: OK ({} tensors, {} chunks checksummed, {} tensors decoded and hash-checked)",
                    v.tensors, v.chunks, v.tensors_hashed
                )?;
            }
            Ok(())
        }
        Err(e) => {
            if a.json {
                let (bad_tensor, bad_chunk) = match &e {
                    PackError::ChunkChecksum { tensor, chunk, .. }
                    | PackError::ChunkDecode { tensor, chunk, .. } => {
                        (Some(tensor.clone()), Some(*chunk))
                    }
                    PackError::TensorHash { tensor, .. } => (Some(tensor.clone()), None),
                    _ => (None, None),
                };
                print_json(&VerifyJson {
                    file,
                    ok: false,
                    tensors: None,
                    chunks: None,
                    tensors_hashed: None,
                    bad_tensor,
                    bad_chunk,
                    error: Some(e.to_string()),
                })?;
            }
            Err(e).context("verify failed")
        }
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * a as f64 / b as f64)
    }
}

pub(crate) fn stats_table(rows: &[TensorReport]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(vec![
        "tensor",
        "dtype",
        "shape",
        "mode",
        "input",
        "stored",
        "ratio",
        "bits/w",
        "rel err base",
        "rel err +res",
    ]);
    for r in rows {
        let shape = r
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
        t.add_row(vec![
            Cell::new(&r.name),
            Cell::new(&r.dtype),
            Cell::new(shape),
            Cell::new(&r.mode),
            Cell::new(r.input_bytes).set_alignment(CellAlignment::Right),
            Cell::new(r.output_bytes).set_alignment(CellAlignment::Right),
            Cell::new(pct(r.output_bytes, r.input_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", r.bits_per_weight)).set_alignment(CellAlignment::Right),
            Cell::new(f(r.rel_error_base)).set_alignment(CellAlignment::Right),
            Cell::new(f(r.rel_error_with_residual)).set_alignment(CellAlignment::Right),
        ]);
    }
    t
}

pub fn run_stats(a: StatsArgs) -> anyhow::Result<()> {
    let reader = PackReader::open(&a.input)?;
    let report = dhurandhar_pack::report(&reader);
    if a.json {
        #[derive(Serialize)]
        struct StatsJson<'a> {
            file: String,
            chunk_size: u64,
            #[serde(flatten)]
            report: &'a PackReport,
        }
        return print_json(&StatsJson {
            file: a.input.display().to_string(),
            chunk_size: reader.index().chunk_size,
            report: &report,
        });
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}", stats_table(&report.tensors))?;
    writeln!(
        o,
        "{}: {:?}, {} tensors, {} -> {} bytes ({}), {:.2} bits/weight overall (file bytes incl. index)",
        a.input.display(),
        report.kind,
        report.tensors.len(),
        report.input_bytes,
        report.output_bytes,
        pct(report.output_bytes, report.input_bytes),
        report.bits_per_weight
    )?;
    for n in &report.removed {
        writeln!(o, "removed: {n}")?;
    }
    Ok(())
}
