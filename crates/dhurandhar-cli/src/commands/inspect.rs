//! `dhurandhar inspect FILE`: the tensor table of a real checkpoint grouped by model
//! component (embeddings, PLE, decoder layers, experts, LM head, encoders), with
//! dtypes and exact stored bytes, plus the architecture inferred from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use dhurandhar_checkpoint::{open_checkpoint, Component, TensorEntry};
use serde::Serialize;

use crate::output::print_json;

/// List the tensors of a checkpoint grouped by component.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf, .safetensors, model.safetensors.index.json, config.json, or a model directory.
    pub file: PathBuf,
    /// Print JSON: `tensors` [{name, dtype, shape, offset, bytes, component}],
    /// `total_tensor_bytes`, `components` and the inferred `architecture`.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor (the JSON always does).
    #[arg(long, short = 't')]
    pub tensors: bool,
}

#[derive(Serialize)]
struct ComponentRow {
    component: Component,
    tensors: usize,
    bytes: u64,
    /// Stored bytes per dtype within the component.
    dtypes: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct GgufHeader {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata_keys: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gguf: Option<GgufHeader>,
    /// The validated architecture, or null with `architecture_error` saying why.
    architecture: Option<dhurandhar_model::ModelArchitecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture_error: Option<String>,
    total_tensor_bytes: u64,
    components: Vec<ComponentRow>,
    tensors: &'a [TensorEntry],
}

/// Bytes as a short human figure (binary units).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn component_rows(tensors: &[TensorEntry]) -> Vec<ComponentRow> {
    Component::ALL
        .iter()
        .filter_map(|&c| {
            let ts: Vec<&TensorEntry> = tensors.iter().filter(|t| t.component == c).collect();
            if ts.is_empty() {
                return None;
            }
            let mut dtypes = BTreeMap::new();
            for t in &ts {
                *dtypes.entry(t.dtype.clone()).or_insert(0) += t.n_bytes;
            }
            Some(ComponentRow {
                component: c,
                tensors: ts.len(),
                bytes: ts.iter().map(|t| t.n_bytes).sum(),
                dtypes,
            })
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Reader errors already name the file and the byte offset.
    let ck = open_checkpoint(&args.file)?;
    let (architecture, architecture_error) = match ck.architecture() {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let report = Report {
        file: args.file.display().to_string(),
        format: ck.format.name(),
        gguf: ck.gguf.as_ref().map(|g| GgufHeader {
            version: g.version,
            alignment: g.alignment,
            data_offset: g.data_offset,
            metadata_keys: g.metadata.len(),
        }),
        architecture,
        architecture_error,
        total_tensor_bytes: ck.total_tensor_bytes(),
        components: component_rows(&ck.tensors),
        tensors: &ck.tensors,
    };
    if args.json {
        return print_json(&report);
    }
    // Written in one piece so a closed pipe (`| head`) is an io::Error, not a panic.
    let text = render_text(&report, args.tensors);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn render_text(r: &Report<'_>, list_tensors: bool) -> String {
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
            human(r.total_tensor_bytes),
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
            .map(|(d, b)| format!("{d} {}", human(*b)))
            .collect();
        t.add_row(vec![
            Cell::new(c.component.name()),
            Cell::new(c.tensors).set_alignment(CellAlignment::Right),
            Cell::new(c.bytes).set_alignment(CellAlignment::Right),
            Cell::new(human(c.bytes)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{share:.1}%")).set_alignment(CellAlignment::Right),
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
                    Cell::new(x.offset).set_alignment(CellAlignment::Right),
                    Cell::new(x.n_bytes).set_alignment(CellAlignment::Right),
                ]);
            }
        }
        let _ = writeln!(out, "{t}");
    }
    out
}
