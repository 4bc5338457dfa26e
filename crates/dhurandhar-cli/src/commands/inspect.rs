//! `dhurandhar inspect FILE`: the tensor table of a real checkpoint grouped by model
//! component, with dtypes and exact stored bytes, plus the architecture inferred from it.

use std::fmt::Write as _;
use std::path::PathBuf;

use dhurandhar::inspect::{inspect, InspectOptions, InspectReport};
use dhurandhar::units::human_bytes;

use crate::output::{emit, OutputArgs};
use crate::render::{shape, table};

/// List the tensors of a checkpoint grouped by component.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf, .safetensors, model.safetensors.index.json, config.json, or a model directory.
    pub file: PathBuf,
    /// `--json`: `tensors` [{name, dtype, shape, offset, bytes, component}],
    /// `total_tensor_bytes`, `components` and the inferred `architecture`.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Also list every tensor (the JSON always does).
    #[arg(long, short = 't')]
    pub tensors: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = inspect(&InspectOptions {
        path: args.file.clone(),
    })?;
    emit(&args.out, &report, |r| render_text(r, args.tensors))
}

fn render_text(r: &InspectReport, list_tensors: bool) -> String {
    let mut out = String::new();
    let mut head = format!("{} ({}", r.file, r.format);
    if let Some(g) = &r.gguf {
        head += &format!(
            " v{}, {} metadata keys, alignment {}, data at byte {}",
            g.version, g.metadata_keys, g.alignment, g.data_offset
        );
    }
    if r.tensors.is_empty() {
        head += "): no tensors (geometry only; weight bytes must be estimated)";
    } else {
        head += &format!(
            "): {} tensors, {} ({} bytes)",
            r.tensors.len(),
            human_bytes(r.total_tensor_bytes),
            r.total_tensor_bytes
        );
    }
    let _ = writeln!(out, "{head}");
    match (&r.architecture, &r.architecture_error) {
        (Some(a), _) => {
            let mut line = format!(
                "architecture: {} — {} layers, hidden {}, {} heads / {} KV heads, head_dim {}, FFN {}, vocab {}, {} params, {}",
                a.family,
                a.num_hidden_layers,
                a.hidden_size,
                a.num_attention_heads,
                a.num_key_value_heads,
                a.head_dim,
                a.intermediate_size,
                a.vocab_size,
                if a.param_count_b < 1.0 {
                    format!("{:.1} M", a.param_count_b * 1e3)
                } else {
                    format!("{:.2} B", a.param_count_b)
                },
                if a.embeddings_tied { "tied embeddings" } else { "untied LM head" }
            );
            if a.sliding_window > 0 {
                line += &format!(", sliding window {}", a.sliding_window);
            }
            if a.is_moe {
                line += &format!(", MoE {}/{} experts", a.num_active_experts, a.num_experts);
            }
            if a.has_mamba {
                line += &format!(", {} SSM layers", a.mamba_num_layers);
            }
            if a.shared_kv_last_n_layers > 0 {
                line += &format!(", last {} layers share KV", a.shared_kv_last_n_layers);
            }
            let _ = writeln!(out, "{line}");
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "architecture: not inferred: {e}");
        }
        (None, None) => {}
    }
    let mut t = table("component|tensors|bytes|size|share|dtypes", &[1, 2, 3, 4]);
    for c in &r.components {
        let share = if r.total_tensor_bytes > 0 {
            100.0 * c.bytes as f64 / r.total_tensor_bytes as f64
        } else {
            0.0
        };
        let dtypes: Vec<String> = c
            .dtypes
            .iter()
            .map(|(d, b)| format!("{d} {}", human_bytes(*b)))
            .collect();
        t.add_row([
            c.component.name().to_string(),
            c.tensors.to_string(),
            c.bytes.to_string(),
            human_bytes(c.bytes),
            format!("{share:.1}%"),
            dtypes.join(", "),
        ]);
    }
    if !r.components.is_empty() {
        let _ = writeln!(out, "{t}");
    }
    if list_tensors && !r.tensors.is_empty() {
        let mut t = table("component|name|dtype|shape|offset|bytes", &[4, 5]);
        for c in &r.components {
            for x in r.tensors.iter().filter(|x| x.component == c.component) {
                t.add_row([
                    c.component.name().to_string(),
                    x.name.clone(),
                    x.dtype.clone(),
                    shape(&x.shape, "×"),
                    x.offset.to_string(),
                    x.n_bytes.to_string(),
                ]);
            }
        }
        let _ = writeln!(out, "{t}");
    }
    out
}
