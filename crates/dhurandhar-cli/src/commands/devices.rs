//! `dhurandhar devices`: built-in device profiles, memory budget presets and weight formats.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar::catalog::{self, DevicesReport, LISTING_ROW};

use crate::output::{print_json, print_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also show these devices: built-in slugs or YAML device profiles (validated).
    #[arg(long, short = 'd')]
    pub device: Vec<String>,

    /// Print `{"devices": [...], "budget_presets": [...], "weight_formats": [...]}`.
    #[arg(long)]
    pub json: bool,
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// The three tables and the hint below them.
pub fn render(r: &DevicesReport) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec![
            "Device",
            "Name",
            "RAM budget",
            "Flash read",
            "NPU",
            "Notes",
        ]);
    for d in &r.devices {
        t.add_row(vec![
            Cell::new(&d.slug),
            Cell::new(&d.name),
            right(format!("{} MiB", d.ram_budget_mb)),
            right(format!("{} GB/s", d.flash_read_gbps)),
            Cell::new(if d.supports_npu { "yes" } else { "no" }),
            Cell::new(&d.notes),
        ]);
    }
    let mut p = Table::new();
    p.load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["Budget preset", "RAM budget", "Meaning"]);
    for b in &r.budget_presets {
        p.add_row(vec![
            Cell::new(b.name),
            right(format!("{} MiB", b.ram_budget_mb)),
            Cell::new(b.description),
        ]);
    }
    let mut f = Table::new();
    f.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec!["Weight format", "Bits/weight", "Layout"]);
    for w in &r.weight_formats {
        f.add_row(vec![
            Cell::new(&w.name),
            right(format!("{:.4}", w.bits_per_weight)),
            Cell::new(&w.description),
        ]);
    }
    format!(
        "{t}\n\n{p}\n\n{f}\n\
         Per-channel formats (intN) are priced at a {LISTING_ROW}-wide row here; `analyze` uses the model's hidden size.\n\
         Ad-hoc device: `dhurandhar analyze --ram-mb 3072 --flash-gbps 2.0`; YAML: `--device my_device.yaml`.\n"
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = catalog::devices(&args.device)?;
    if args.json {
        return print_json(&r);
    }
    print_text(&render(&r))
}
