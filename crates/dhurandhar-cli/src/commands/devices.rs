//! `dhurandhar devices`: built-in device profiles, memory budget presets and weight formats.

use dhurandhar::catalog::{self, DevicesReport, LISTING_ROW};

use crate::output::{print_json, print_text};
use crate::render::{table, wide_table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also show these devices: built-in slugs or YAML device profiles (validated).
    #[arg(long, short = 'd')]
    pub device: Vec<String>,

    /// Print one built-in device's YAML, with the source of every number.
    #[arg(long, value_name = "SLUG", conflicts_with = "json")]
    pub show: Option<String>,

    /// Print `{"devices": [...], "budget_presets": [...], "weight_formats": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// The three tables and the hint below them.
pub fn render(r: &DevicesReport) -> String {
    let mut t = wide_table(
        "Device|Name|RAM budget|Flash read|4K random read|RAM bw|f32|int8|Cores|NPU",
        &[2, 3, 4, 5, 6, 7, 8],
    );
    let or_unknown =
        |v: Option<f64>, unit: &str| v.map_or("unknown".into(), |x| format!("{x} {unit}"));
    for d in &r.devices {
        t.add_row([
            d.slug.clone(),
            d.name.clone(),
            format!("{} MiB", d.ram_budget_mb),
            format!("{} GB/s", d.flash_read_gbps),
            or_unknown(d.flash_random_read_iops, "IOPS"),
            or_unknown(d.memory_bandwidth_gbps, "GB/s"),
            or_unknown(d.compute_f32_gflops, "GFLOP/s"),
            or_unknown(d.compute_int8_gops, "Gop/s"),
            d.cpu_cores.map_or("unknown".into(), |c| c.to_string()),
            (if d.supports_npu { "yes" } else { "no" }).to_string(),
        ]);
    }
    let mut p = table("Budget preset|RAM budget|Meaning", &[1]);
    for b in &r.budget_presets {
        let ram = format!("{} MiB", b.ram_budget_mb);
        p.add_row([b.name.to_string(), ram, b.description.to_string()]);
    }
    let mut f = wide_table("Weight format|Bits/weight|Layout", &[1]);
    for w in &r.weight_formats {
        let bits = format!("{:.4}", w.bits_per_weight);
        f.add_row([w.name.clone(), bits, w.description.clone()]);
    }
    format!(
        "{t}\n\n{p}\n\n{f}\n\
         Per-channel formats (intN) are priced at a {LISTING_ROW}-wide row here; `analyze` uses the model's hidden size.\n\
         Ad-hoc device: `dhurandhar analyze --ram-mb 3072 --flash-gbps 2.0`; YAML: `--device my_device.yaml`.\n\
         Where each number comes from: `dhurandhar devices --show SLUG` (estimates say so); unknown speeds leave that bound unchecked.\n"
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(slug) = &args.show {
        return print_text(&catalog::device_yaml(slug)?);
    }
    let r = catalog::devices(&args.device)?;
    if args.json {
        return print_json(&r);
    }
    print_text(&render(&r))
}
