//! `dhurandhar devices`: built-in device profiles, memory budget presets and weight formats.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use dhurandhar_plan::{budget_presets, builtin_devices, BudgetPreset, DeviceProfile, WeightFormat};
use serde::Serialize;

use crate::commands::analyze::select_devices;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also show these devices: built-in slugs or YAML device profiles (validated).
    #[arg(long, short = 'd')]
    pub device: Vec<String>,

    /// Print `{"devices": [...], "budget_presets": [...], "weight_formats": [...]}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct FormatRow {
    name: String,
    /// Bits per weight including scales; per-channel formats priced at a 2048-wide row.
    bits_per_weight: f64,
    grouping: dhurandhar_plan::Grouping,
    description: String,
}

#[derive(Serialize)]
struct DevicesJson {
    devices: Vec<DeviceProfile>,
    budget_presets: Vec<BudgetPreset>,
    weight_formats: Vec<FormatRow>,
}

/// Row width used to price per-channel scales in the listing.
const LISTING_ROW: u64 = 2048;

pub fn run(args: Args) -> anyhow::Result<()> {
    use std::io::Write;
    let mut devices = builtin_devices();
    if !args.device.is_empty() {
        for d in select_devices(&args.device, None, None)? {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
    }
    let formats: Vec<FormatRow> = WeightFormat::catalog()
        .into_iter()
        .map(|f| FormatRow {
            bits_per_weight: f.bits_per_weight(LISTING_ROW),
            name: f.name,
            grouping: f.grouping,
            description: f.description,
        })
        .collect();
    if args.json {
        return print_json(&DevicesJson {
            devices,
            budget_presets: budget_presets(),
            weight_formats: formats,
        });
    }
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
    for d in &devices {
        t.add_row(vec![
            Cell::new(&d.slug),
            Cell::new(&d.name),
            Cell::new(format!("{} MiB", d.ram_budget_mb)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{} GB/s", d.flash_read_gbps)).set_alignment(CellAlignment::Right),
            Cell::new(if d.supports_npu { "yes" } else { "no" }),
            Cell::new(&d.notes),
        ]);
    }
    let mut p = Table::new();
    p.load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["Budget preset", "RAM budget", "Meaning"]);
    for b in budget_presets() {
        p.add_row(vec![
            Cell::new(b.name),
            Cell::new(format!("{} MiB", b.ram_budget_mb)).set_alignment(CellAlignment::Right),
            Cell::new(b.description),
        ]);
    }
    let mut f = Table::new();
    f.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec!["Weight format", "Bits/weight", "Layout"]);
    for r in &formats {
        f.add_row(vec![
            Cell::new(&r.name),
            Cell::new(format!("{:.4}", r.bits_per_weight)).set_alignment(CellAlignment::Right),
            Cell::new(&r.description),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{t}\n\n{p}\n\n{f}")?;
    writeln!(
        out,
        "Per-channel formats (intN) are priced at a {LISTING_ROW}-wide row here; `analyze` uses the model's hidden size.\n\
         Ad-hoc device: `dhurandhar analyze --ram-mb 3072 --flash-gbps 2.0`; YAML: `--device my_device.yaml`."
    )?;
    Ok(())
}
