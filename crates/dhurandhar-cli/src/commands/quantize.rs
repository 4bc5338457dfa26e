//! `dhurandhar quantize`: flags → [`dhurandhar::quantize`] → a per-tensor table or JSON.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use dhurandhar::quantize::{preset_help, QuantizeOptions, QuantizeReport};
use dhurandhar::units::human_bytes;
use dhurandhar::CancelToken;

use crate::output::{emit, OutputArgs};
use crate::render::{f, shape, table};

fn type_values() -> PossibleValuesParser {
    PossibleValuesParser::new(
        preset_help()
            .into_iter()
            .map(|(name, what)| PossibleValue::new(name).help(what)),
    )
}

/// Quantize a GGUF model with a llama.cpp `llama-quantize` preset. Weight matrices get
/// the type the preset gives their role; norms and other 1-D tensors are copied; all
/// metadata is kept and `general.file_type` updated. The output loads in llama.cpp.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "An input that is already quantized is dequantized first and requantized: \
the result carries the rounding of both types (the report warns). Tensors whose rows are \
not a multiple of 256 values fall back from k-quants as llama-quantize does \
(Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, Q2_K/Q3_K→Q4_0)."
)]
pub struct Args {
    /// Input GGUF (F32, F16, BF16 or a quantized model).
    pub input: PathBuf,
    /// Output GGUF (written atomically; never the input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Target preset (llama-quantize's names, any case).
    #[arg(long = "type", value_name = "TYPE", value_parser = type_values(), ignore_case = true)]
    pub ty: String,
    /// Rows per tensor read back to measure the relative RMS error.
    #[arg(long, default_value_t = 16)]
    pub sample_rows: usize,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn render(r: &QuantizeReport) -> String {
    let mut t = table(
        "tensor|shape|type|new type|bytes|new bytes|rel RMS err",
        &[4, 5, 6],
    );
    for row in &r.tensors {
        let new = match &row.fallback_from {
            Some(from) => format!("{} (for {from})", row.new_type),
            None => row.new_type.clone(),
        };
        t.add_row([
            row.name.clone(),
            shape(&row.shape, "x"),
            row.old_type.clone(),
            new,
            row.old_bytes.to_string(),
            row.new_bytes.to_string(),
            row.rel_rms_error
                .map(|e| f(e, 4))
                .unwrap_or_else(|| "copied".into()),
        ]);
    }
    let s = &r.totals;
    let mut o = format!("{t}\n");
    o += &format!(
        "wrote {} ({}, file type {}): {} -> {} ({:.2} bits/weight)\n",
        r.output,
        r.preset,
        r.file_type,
        human_bytes(s.input_file_bytes),
        human_bytes(s.output_file_bytes),
        s.bits_per_weight
    );
    let by_type: Vec<String> = s
        .bytes_by_type
        .iter()
        .map(|(ty, b)| format!("{ty} {}", human_bytes(*b)))
        .collect();
    o += &format!(
        "  {} tensors: {} converted, {} copied, {} fell back; by type: {}\n",
        s.tensors,
        s.converted,
        s.copied,
        s.fallbacks,
        by_type.join(", ")
    );
    if let (Some(n), Some(e)) = (&s.worst_tensor, s.worst_rel_rms_error) {
        o += &format!("  largest relative RMS error: {} ({n})\n", f(e, 4));
    }
    for w in &r.warnings {
        o += &format!("warning: {w}\n");
    }
    o += &format!("  {:.2} s\n", r.seconds);
    o
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = QuantizeOptions {
        input: a.input,
        output: a.output,
        preset: a.ty,
        sample_rows: a.sample_rows,
    };
    let report = dhurandhar::quantize::quantize(&opts, &a.out.progress(), &CancelToken::new())?;
    emit(&a.out, &report, render)
}
