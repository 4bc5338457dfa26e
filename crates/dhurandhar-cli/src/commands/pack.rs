//! `dhurandhar pack | unpack | verify | pack-stats`: the `.dhp` weight container.
//!
//! Flags → `dhurandhar::pack` options → report → text or JSON.

use std::path::PathBuf;

use anyhow::Context;
use dhurandhar::pack::{
    PackMode, PackOptions, PackReport, StatsReport, UnpackOptions, UnpackReport, VerifyOptions,
    VerifyReport,
};
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};
use crate::render::{shape, table};

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
    /// or a .gguf (lossless: the whole file, which `unpack` gives back byte for byte and
    /// `generate --weights stream` reads directly; quant-residual: its F32/F16/BF16 tensors).
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
    /// Entropy-code a byte plane only when that saves at least this share of it (0..1);
    /// otherwise store it raw, which decodes at copy speed. Default: 0.02 for float
    /// checkpoints; 0.10 for a GGUF's quant blocks, so a streamed pack codes the scales
    /// and keeps the packed quants raw
    #[arg(long, value_name = "SHARE")]
    pub min_plane_saving: Option<f64>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// A .dhp pack made by `pack`.
    pub input: PathBuf,
    /// Output file (written atomically): a .gguf for a pack of a GGUF, else a .safetensors.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A .dhp pack or delta.
    pub input: PathBuf,
    /// Only check chunk checksums (skip decoding lossless tensors and comparing hashes).
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// A .dhp pack or delta.
    pub input: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// The flag that sets each pack option field, for error messages.
const FLAGS: [(&str, &str); 4] = [
    ("bits", "--bits"),
    ("group", "--group"),
    ("residual_frac", "--residual-frac"),
    ("min_plane_saving", "--min-plane-saving"),
];

/// Library errors name option fields; say them the way the user typed them.
pub(crate) fn with_flags(e: dhurandhar::Error) -> anyhow::Error {
    if let dhurandhar::Error::Pack(dhurandhar_pack::PackError::InvalidOption { option, reason }) =
        &e
    {
        if let Some((_, flag)) = FLAGS.iter().find(|(f, _)| f == option) {
            return anyhow::anyhow!("invalid option: {flag} {reason}");
        }
    }
    e.into()
}

/// The text summary of `pack` and `delta`.
pub(crate) fn render_pack(r: &PackReport) -> String {
    let p = &r.result;
    let modes: Vec<String> = r
        .mode_counts()
        .iter()
        .map(|(m, n)| format!("{n} {m}"))
        .collect();
    let mut o = format!("wrote {} ({})\n", r.output, modes.join(", "));
    o += &format!(
        "  {} -> {} ({:.2}% of input, {:.2} bits/weight)\n",
        human_bytes(p.input_bytes),
        human_bytes(p.output_bytes),
        100.0 * p.ratio,
        p.bits_per_weight
    );
    if let (Some(b), Some(w)) = (p.rel_error_base, p.rel_error_with_residual) {
        o += &format!(
            "  rel. Frobenius error of quantized tensors: {b:.4} base, {w:.4} with residual\n"
        );
    }
    for (why, names) in r.notes_by_reason() {
        let shown: Vec<&str> = names.iter().take(3).copied().collect();
        let more = if names.len() > 3 {
            format!(", +{} more", names.len() - 3)
        } else {
            String::new()
        };
        o += &format!(
            "  {why}: {} tensor(s): {}{more}\n",
            names.len(),
            shown.join(", ")
        );
    }
    for n in &p.removed {
        o += &format!("  removed: {n}\n");
    }
    if let Some((name, why)) = p.skipped.first() {
        o += &format!(
            "  skipped {} non-float tensors (e.g. {name}: {why})\n",
            p.skipped.len()
        );
    }
    o += &format!("  {:.2} s, {:.3} GB/s\n", r.seconds, r.gb_per_s);
    let (x, s) = r.delta_chunks();
    if x + s > 0 {
        o += &format!("  changed chunks: {x} coded as XOR, {s} as difference (smaller of the two per chunk)\n");
    }
    o
}

pub fn run_pack(a: PackArgs) -> anyhow::Result<()> {
    let opts = PackOptions {
        input: a.input,
        output: a.output,
        mode: match a.mode {
            ModeArg::Lossless => PackMode::Lossless,
            ModeArg::QuantResidual => PackMode::QuantResidual,
        },
        bits: a.bits,
        group: a.group,
        residual_frac: a.residual_frac,
        chunk_kib: a.chunk_kib,
        min_plane_saving: a.min_plane_saving,
    };
    let report = dhurandhar::pack::pack(&opts, &a.out.progress(), &CancelToken::new())
        .map_err(with_flags)?;
    emit(&a.out, &report, render_pack)
}

/// The one-line summary of `unpack` and `delta apply`.
pub(crate) fn render_unpack(r: &UnpackReport) -> String {
    let u = &r.result;
    format!(
        "wrote {} ({} tensors, {}): {} bit-exact (hash checked), {} dequantized\n  {:.2} s, {:.3} GB/s\n",
        r.output,
        u.tensors,
        human_bytes(u.output_bytes),
        u.verified_bit_exact,
        u.lossy,
        r.seconds,
        r.gb_per_s
    )
}

pub fn run_unpack(a: UnpackArgs) -> anyhow::Result<()> {
    let opts = UnpackOptions {
        input: a.input,
        output: a.output,
    };
    let report = dhurandhar::pack::unpack(&opts, &a.out.progress(), &CancelToken::new())?;
    emit(&a.out, &report, render_unpack)
}

pub fn run_verify(a: VerifyArgs) -> anyhow::Result<()> {
    let opts = VerifyOptions {
        input: a.input,
        quick: a.quick,
    };
    match dhurandhar::pack::verify(&opts, &a.out.progress(), &CancelToken::new()) {
        Ok(v) => emit(&a.out, &v, |v| {
            format!(
                "{}: OK ({} tensors, {} chunks checksummed, {} tensors decoded and hash-checked)\n",
                v.file,
                v.tensors.unwrap_or(0),
                v.chunks.unwrap_or(0),
                v.tensors_hashed.unwrap_or(0)
            )
        }),
        Err(e) => {
            emit(&a.out, &VerifyReport::failed(&opts.input, &e), |_| {
                String::new()
            })?;
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

fn render_stats(r: &StatsReport) -> String {
    let p = &r.result;
    let header = "tensor|dtype|shape|mode|input|stored|ratio|bits/w|rel err base|rel err +res";
    let mut t = table(header, &[4, 5, 6, 7, 8, 9]);
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    for r in &p.tensors {
        t.add_row([
            r.name.clone(),
            r.dtype.clone(),
            shape(&r.shape, "x"),
            r.mode.clone(),
            r.input_bytes.to_string(),
            r.output_bytes.to_string(),
            pct(r.output_bytes, r.input_bytes),
            format!("{:.2}", r.bits_per_weight),
            f(r.rel_error_base),
            f(r.rel_error_with_residual),
        ]);
    }
    let mut o = format!("{t}\n");
    o += &format!(
        "{}: {:?}, {} tensors, {} -> {} bytes ({}), {:.2} bits/weight overall (file bytes incl. index)\n",
        r.file,
        p.kind,
        p.tensors.len(),
        p.input_bytes,
        p.output_bytes,
        pct(p.output_bytes, p.input_bytes),
        p.bits_per_weight
    );
    for n in &p.removed {
        o += &format!("removed: {n}\n");
    }
    o
}

pub fn run_stats(a: StatsArgs) -> anyhow::Result<()> {
    let report = dhurandhar::pack::stats(&a.input)?;
    emit(&a.out, &report, render_stats)
}
