//! `dhurandhar inspect FILE`: the tensor table of a real checkpoint grouped by model
//! component, with dtypes and exact stored bytes, plus the architecture inferred from it.

use std::fmt::Write as _;
use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use dhurandhar::inspect::{inspect, InspectOptions, InspectReport};
use dhurandhar::units::human_bytes;

use crate::output::{emit, OutputArgs};

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
    let right = |c: Cell| c.set_alignment(CellAlignment::Right);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "component",
        "tensors",
        "bytes",
        "size",
        "share",
        "dtypes",
    ]);
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
        t.add_row(vec![
            Cell::new(c.component.name()),
            right(Cell::new(c.tensors)),
            right(Cell::new(c.bytes)),
            right(Cell::new(human_bytes(c.bytes))),
            right(Cell::new(format!("{share:.1}%"))),
            Cell::new(dtypes.join(", ")),
        ]);
    }
    if !r.components.is_empty() {
        let _ = writeln!(out, "{t}");
    }
    if list_tensors && !r.tensors.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "component",
            "name",
            "dtype",
            "shape",
            "offset",
            "bytes",
        ]);
        for c in &r.components {
            for x in r.tensors.iter().filter(|x| x.component == c.component) {
                let shape: Vec<String> = x.shape.iter().map(|d| d.to_string()).collect();
                t.add_row(vec![
                    Cell::new(c.component.name()),
                    Cell::new(&x.name),
                    Cell::new(&x.dtype),
                    Cell::new(shape.join("×")),
                    right(Cell::new(x.offset)),
                    right(Cell::new(x.n_bytes)),
                ]);
            }
        }
        let _ = writeln!(out, "{t}");
    }
    out
}
