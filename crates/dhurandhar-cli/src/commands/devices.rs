//! `dhurandhar devices`: built-in device profiles, memory budget presets and weight formats.

use std::path::PathBuf;

use dhurandhar::catalog::{self, DevicesReport, LISTING_ROW};
use dhurandhar::probe::{self, ProbeOptions, ProbeReport};
use dhurandhar::CancelToken;

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

    /// Measure this machine (RAM bandwidth, cold flash reads, matmul throughput) and
    /// save it as the device `host` (`-d host` in `analyze`).
    #[arg(long, conflicts_with = "show")]
    pub probe: bool,

    /// Where the probe writes the host device (default: host.yaml in the cache dir,
    /// $DHURANDHAR_CACHE or $XDG_CACHE_HOME/dhurandhar).
    #[arg(long, value_name = "FILE", requires = "probe")]
    pub probe_output: Option<PathBuf>,

    /// Directory for the probe's flash test file: put it on the storage to measure
    /// (default: the cache dir).
    #[arg(long, value_name = "DIR", requires = "probe")]
    pub probe_dir: Option<PathBuf>,

    /// RAM budget to record for the host in MiB (default: RAM available now).
    #[arg(long, requires = "probe")]
    pub probe_ram_mb: Option<f64>,

    /// A quick probe on small buffers (less accurate; for a smoke test).
    #[arg(long, requires = "probe")]
    pub quick: bool,

    /// Print `{"devices": [...], "budget_presets": [...], "weight_formats": [...]}`
    /// (with --probe: the probe's measurements and the device written).
    #[arg(long)]
    pub json: bool,
}

/// The probe's measurements and where the device went.
pub fn render_probe(r: &ProbeReport) -> String {
    let d = &r.device;
    let mut t = table("Measured|Value|How", &[1]);
    t.add_row([
        "RAM bandwidth".to_string(),
        format!("{:.1} GB/s", r.memory.triad_gbps),
        format!(
            "STREAM triad, 3 x {} MiB, {} threads, best of {}",
            r.memory.array_bytes >> 20,
            r.memory.threads,
            r.memory.repeats
        ),
    ]);
    t.add_row([
        "flash sequential".to_string(),
        format!("{:.2} GB/s", r.flash.sequential_gbps),
        format!(
            "median of {} cold preads of {} MiB in 4 MiB blocks{} (cold mmap scan: {:.2} GB/s)",
            r.flash.sequential_passes_gbps.len(),
            r.flash.file_bytes >> 20,
            if r.flash.sequential_direct {
                ", O_DIRECT"
            } else {
                ""
            },
            r.flash.mmap_sequential_gbps
        ),
    ]);
    t.add_row([
        "flash 4K random".to_string(),
        format!("{:.0} IOPS", r.flash.random_read_iops),
        format!("{} cold page faults", r.flash.random_reads),
    ]);
    t.add_row([
        "int8 matmul".to_string(),
        format!("{:.1} Gop/s", r.compute.int8_gops),
        format!(
            "Q8_0 {d}x{d} x {t} tokens, {} threads",
            r.compute.threads,
            d = r.compute.dim,
            t = r.compute.tokens
        ),
    ]);
    if let Some(x8) = r.compute.int8_interleaved_gops {
        t.add_row([
            "int8, interleaved".to_string(),
            format!("{x8:.1} Gop/s"),
            "the same, rows interleaved by eight (resident weights)".to_string(),
        ]);
    }
    t.add_row([
        "f32 matmul".to_string(),
        format!("{:.1} GFLOP/s", r.compute.f32_gflops),
        format!(
            "F32 {d}x{d} x {t} tokens",
            d = r.compute.dim,
            t = r.compute.tokens
        ),
    ]);
    t.add_row([
        "RAM budget".to_string(),
        format!("{} MiB", d.ram_budget_mb),
        "recorded in the profile".to_string(),
    ]);
    let m = &r.matvec.rates;
    let mut head = vec!["1-token matvec".to_string()];
    for t in &m.threads {
        head.push(format!("G weights/s, {t} thr"));
        head.push(format!("ns/row, {t} thr"));
    }
    for t in &m.threads {
        head.push(format!("prefill G op/s, {t} thr"));
    }
    let cols: Vec<usize> = (1..head.len()).collect();
    let mut mv = table(&head.join("|"), &cols);
    for (k, v) in &m.gweights_per_s {
        let mut row = vec![k.clone()];
        for (i, x) in v.iter().enumerate() {
            row.push(format!("{x:.1}"));
            let o = m.row_overhead_ns.get(k).and_then(|o| o.get(i));
            row.push(o.map_or("—".into(), |o| format!("{o:.1}")));
        }
        for i in 0..m.threads.len() {
            let g = m.prefill_gops.get(k).and_then(|g| g.get(i));
            row.push(g.map_or("—".into(), |g| format!("{g:.0}")));
        }
        mv.add_row(row);
    }
    format!(
        "{t}\n{mv}\nmatvec: the engine's one-token matmul over {} MiB per type, rows {} and {} wide \
         (time per row = ns/row + width / rate), best of {}; T@x8: rows interleaved by eight, as \
         resident weights run; prefill: the same kernels on a {side}x{side} matrix x {tokens} \
         tokens; per call: {}; decode attention (8 heads of 64, 512 positions): {}; \
         the same with K and V read from RAM ({} MiB of such layers in turn): {}; vector work \
         per layer (norms, quantization, RoPE, activation; 1 thr): {}.\n\
         Wrote {} ({}); use it with `dhurandhar analyze -d host`.\n",
        r.matvec.bytes >> 20,
        r.matvec.cols[0],
        r.matvec.cols[1],
        r.memory.repeats,
        per_thread(&m.call_overhead_ns, &m.threads, "ns", 0),
        per_thread(&m.attention_gflops, &m.threads, "GFLOP/s", 1),
        r.matvec.bytes >> 20,
        per_thread(&m.attention_ram_gflops, &m.threads, "GFLOP/s", 1),
        m.vector_ns.map_or("not measured".into(), |v| format!(
            "{:.2} ns per width element + {:.2} ns per FFN element",
            v.per_width, v.per_ffn
        )),
        r.path,
        d.measured_at.as_deref().unwrap_or(""),
        side = r.matvec.prefill_side,
        tokens = r.matvec.prefill_tokens,
    )
}

/// `"610 ns on 2 thr, …"`: one probe figure per thread count.
fn per_thread(v: &[f64], threads: &[usize], unit: &str, decimals: usize) -> String {
    v.iter()
        .zip(threads)
        .map(|(x, t)| format!("{x:.decimals$} {unit} on {t} thr"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The three tables and the hint below them.
pub fn render(r: &DevicesReport) -> String {
    let mut t = wide_table(
        "Device|RAM MiB|Flash GB/s|4K IOPS|RAM GB/s|f32 GFLOP/s|int8 Gop/s|Cores|NPU",
        &[1, 2, 3, 4, 5, 6, 7],
    );
    let or_unknown = |v: Option<f64>| v.map_or("unknown".into(), |x| x.to_string());
    for d in &r.devices {
        t.add_row([
            d.slug.clone(),
            d.ram_budget_mb.to_string(),
            d.flash_read_gbps.to_string(),
            or_unknown(d.flash_random_read_iops),
            or_unknown(d.memory_bandwidth_gbps),
            or_unknown(d.compute_f32_gflops),
            or_unknown(d.compute_int8_gops),
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
    if args.probe {
        let o = ProbeOptions {
            output: args.probe_output.clone(),
            scratch_dir: args.probe_dir.clone(),
            ram_budget_mb: args.probe_ram_mb,
            ..if args.quick {
                ProbeOptions::quick()
            } else {
                ProbeOptions::default()
            }
        };
        let bar = crate::output::Bar::new(!args.json);
        let r = probe::probe(&o, &bar, &CancelToken::new())?;
        drop(bar);
        if args.json {
            return print_json(&r);
        }
        return print_text(&render_probe(&r));
    }
    if let Some(slug) = &args.show {
        return print_text(&catalog::device_yaml(slug)?);
    }
    let r = catalog::devices(&args.device)?;
    if args.json {
        return print_json(&r);
    }
    print_text(&render(&r))
}
