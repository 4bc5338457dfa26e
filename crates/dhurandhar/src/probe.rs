//! Measure this machine as a planner device: RAM bandwidth (a STREAM-style triad over
//! buffers far larger than the last-level cache, best of N, all cores), flash sequential
//! and random reads (the mmap profiler's cold method: pages dropped from the page cache
//! and checked with `mincore` before every run), int8 / f32 matmul throughput with the
//! engine's own kernels, and the one-token matvec rate of every weight type the engine
//! computes with, on one thread and on all (what decoding runs at). The result is a device YAML (`host`) that the planner loads
//! like any other profile.
//!
//! ```no_run
//! use dhurandhar::probe::{probe, ProbeOptions};
//! use dhurandhar::{CancelToken, NoProgress};
//! let r = probe(&ProbeOptions::default(), &NoProgress, &CancelToken::new()).unwrap();
//! println!("{} GB/s", r.device.memory_bandwidth_gbps.unwrap());
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use dhurandhar_engine::kernels::{matmul, Acts, QMatrix};
use dhurandhar_engine::quant::Q8Acts;
use dhurandhar_engine::GgmlType;
use dhurandhar_plan::DeviceProfile;
use dhurandhar_profile::{
    ensure_test_file, Mode, Pattern, Profiler, RunOptions, TableGeometry, TableKind,
};
use serde::Serialize;

use crate::profile::{lift, Phase};
use crate::progress::{CancelToken, Progress, Unit};
use crate::{Error, Result};

/// Version of the [`ProbeReport`] document.
pub const SCHEMA_VERSION: u32 = 1;
/// The slug a probed machine is known by (`-d host`).
pub const HOST_SLUG: &str = "host";
/// File name of the probed device in the cache directory.
pub const HOST_FILE: &str = "host.yaml";
const MIB: u64 = 1024 * 1024;
const PAGE: u64 = 4096;

/// Where the probed device lives: `host.yaml` in the cache directory
/// (`$DHURANDHAR_CACHE`, else `$XDG_CACHE_HOME/dhurandhar`, else `~/.cache/dhurandhar`).
pub fn host_device_path() -> PathBuf {
    dhurandhar_profile::default_cache_dir().join(HOST_FILE)
}

/// The probed device, or a clear error when this machine was never probed.
pub fn load_host() -> Result<DeviceProfile> {
    let path = host_device_path();
    if !path.exists() {
        return Err(Error::invalid(
            "device",
            format!(
                "`{HOST_SLUG}` has not been measured on this machine yet ({} does not exist): \
                 run the device probe first",
                path.display()
            ),
        ));
    }
    let text = dhurandhar_io::read_to_string_bounded(
        &path,
        crate::model::MAX_PROFILE_BYTES,
        "a device profile",
    )
    .map_err(|e| Error::from(e).context("cannot read the probed host device"))?;
    Ok(DeviceProfile::from_yaml_str(
        &text,
        &path.display().to_string(),
        HOST_SLUG,
    )?)
}

/// How much to measure. The defaults take about a minute; tests use tiny sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// Where the device YAML goes (`None`: [`host_device_path`]).
    pub output: Option<PathBuf>,
    /// Directory of the flash test file; it must be on the storage to measure (`None`:
    /// the cache directory).
    pub scratch_dir: Option<PathBuf>,
    /// Bytes of each of the triad's three arrays (make them ≫ the last-level cache).
    pub memory_array_bytes: u64,
    /// Size of the flash test file.
    pub flash_file_bytes: u64,
    /// Cold 4 KiB random reads timed.
    pub random_reads: u64,
    /// Side of the square weight matrix of the matmul runs (a multiple of 32).
    pub matmul_dim: usize,
    /// Activation rows per matmul call (a prefill-like batch, so the kernels are
    /// compute-bound).
    pub matmul_tokens: usize,
    /// Weight bytes each one-token matvec run streams through (make it ≫ the last-level
    /// cache, as a model's weights are).
    pub matvec_bytes: u64,
    /// Runs per measurement; the best is kept.
    pub repeats: u32,
    /// RAM budget written into the profile (`None`: RAM available now, capped by the
    /// cgroup limit on Linux).
    pub ram_budget_mb: Option<f64>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            output: None,
            scratch_dir: None,
            memory_array_bytes: 256 * MIB,
            flash_file_bytes: 512 * MIB,
            random_reads: 4000,
            matmul_dim: 2048,
            matmul_tokens: 64,
            matvec_bytes: 256 * MIB,
            repeats: 5,
            ram_budget_mb: None,
        }
    }
}

impl ProbeOptions {
    /// A quick probe on small buffers: less accurate, for a smoke test.
    pub fn quick() -> Self {
        ProbeOptions {
            memory_array_bytes: 32 * MIB,
            flash_file_bytes: 64 * MIB,
            random_reads: 500,
            matmul_dim: 512,
            matvec_bytes: 4 * MIB,
            repeats: 3,
            ..ProbeOptions::default()
        }
    }
}

/// The triad measurement.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryProbe {
    /// Best triad bandwidth, counting 3 × 8 B per element (two reads, one write) as
    /// STREAM does.
    pub triad_gbps: f64,
    pub array_bytes: u64,
    pub threads: usize,
    pub repeats: u32,
}

/// The cold flash measurement.
#[derive(Debug, Clone, Serialize)]
pub struct FlashProbe {
    /// Cold sequential `pread` of the whole file in 4 MiB blocks, `O_DIRECT` where the
    /// file system allows, GB/s: how streamed weights are read, so the profile's
    /// `flash_read_gbps`. The median of [`Self::sequential_passes_gbps`], passes spread
    /// over the probe's run: a disk whose speed drifts (a shared or virtual one) is read
    /// at its typical rate, not at one moment's, and not at its best.
    pub sequential_gbps: f64,
    /// Each pass's rate, GB/s, in the order they ran (after the flash test file's other
    /// reads, the RAM triad, the matmuls and the matvecs).
    pub sequential_passes_gbps: Vec<f64>,
    /// Whether that read bypassed the page cache (`O_DIRECT`).
    pub sequential_direct: bool,
    /// Cold sequential read through mmap (the kernel's readahead), GB/s.
    pub mmap_sequential_gbps: f64,
    /// Cold 4 KiB random reads per second through mmap (one page fault each, queue depth 1).
    pub random_read_iops: f64,
    pub file: String,
    pub file_bytes: u64,
    pub random_reads: u64,
}

/// The matmul measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ComputeProbe {
    /// Q8_0 weights × 8-bit activations (the engine's integer dot kernels), 10^9 op/s.
    pub int8_gops: f64,
    /// The same with the weights interleaved by eight rows (resident weights on x86).
    pub int8_interleaved_gops: Option<f64>,
    /// F32 weights × f32 activations, 10^9 FLOP/s.
    pub f32_gflops: f64,
    pub dim: usize,
    pub tokens: usize,
    pub threads: usize,
}

/// One-token matvec rates: every weight type the engine computes with, on one thread and
/// on all.
#[derive(Debug, Clone, Serialize)]
pub struct MatvecProbe {
    /// The rates as the device profile stores them (G weights/s per type and thread count).
    pub rates: dhurandhar_plan::MatvecRates,
    /// Weight bytes each run streamed through.
    pub bytes: u64,
    /// Row widths of the two matrices per type (rows fill `bytes`).
    pub cols: [usize; 2],
    /// Side of the square matrix of the batched (prefill) runs, and their tokens.
    pub prefill_side: usize,
    pub prefill_tokens: usize,
}

/// The `devices --probe --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub schema_version: u32,
    /// The device written, as the planner will read it.
    pub device: DeviceProfile,
    /// Where it was written.
    pub path: String,
    pub memory: MemoryProbe,
    pub flash: FlashProbe,
    pub compute: ComputeProbe,
    pub matvec: MatvecProbe,
}

fn validate(o: &ProbeOptions) -> Result<()> {
    if o.memory_array_bytes < MIB {
        return Err(Error::invalid(
            "memory_array_bytes",
            "must be at least 1 MiB",
        ));
    }
    if o.flash_file_bytes < MIB {
        return Err(Error::invalid("flash_file_bytes", "must be at least 1 MiB"));
    }
    if o.random_reads == 0 {
        return Err(Error::invalid("random_reads", "must be at least 1"));
    }
    if o.matmul_dim == 0 || !o.matmul_dim.is_multiple_of(32) || o.matmul_dim > 16384 {
        return Err(Error::invalid(
            "matmul_dim",
            format!(
                "must be a multiple of 32 in 32..=16384, got {}",
                o.matmul_dim
            ),
        ));
    }
    if o.matmul_tokens == 0 || o.matmul_tokens > 4096 {
        return Err(Error::invalid("matmul_tokens", "must be in 1..=4096"));
    }
    if o.matvec_bytes < MIB || o.matvec_bytes > 4096 * MIB {
        return Err(Error::invalid("matvec_bytes", "must be in 1 MiB..=4 GiB"));
    }
    if o.repeats == 0 || o.repeats > 1000 {
        return Err(Error::invalid("repeats", "must be in 1..=1000"));
    }
    if let Some(r) = o.ram_budget_mb {
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::invalid(
                "ram_budget_mb",
                "must be a positive number of MiB",
            ));
        }
    }
    Ok(())
}

/// Measure this machine and write its device YAML atomically.
pub fn probe(
    opts: &ProbeOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<ProbeReport> {
    validate(opts)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The flash passes are spread over the whole probe: a disk whose speed drifts (a
    // shared or virtual one) is then read at several moments, and the median is its
    // typical rate rather than one moment's.
    let mut flash = flash(opts, progress, cancel)?;
    let memory = triad(opts, threads, progress, cancel)?;
    flash_pass(&mut flash, progress, cancel)?;
    let compute = compute(opts, threads, progress, cancel)?;
    flash_pass(&mut flash, progress, cancel)?;
    let matvec = matvec(opts, threads, progress, cancel)?;
    flash_pass(&mut flash, progress, cancel)?;
    let ram_budget_mb = match opts.ram_budget_mb {
        Some(r) => r,
        None => available_ram_mb().ok_or_else(|| {
            Error::invalid(
                "ram_budget_mb",
                "cannot read the available RAM on this platform; give the budget explicitly",
            )
        })?,
    };
    let when = utc_now();
    let device = DeviceProfile {
        slug: HOST_SLUG.into(),
        name: format!(
            "This machine ({} {}, {threads} threads)",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        ram_budget_mb: ram_budget_mb.floor(),
        flash_read_gbps: round3(flash.sequential_gbps),
        flash_random_read_iops: Some(flash.random_read_iops.round()),
        memory_bandwidth_gbps: Some(round3(memory.triad_gbps)),
        compute_f32_gflops: Some(round3(compute.f32_gflops)),
        compute_int8_gops: Some(round3(compute.int8_gops)),
        compute_int8_interleaved_gops: compute.int8_interleaved_gops.map(round3),
        cpu_cores: Some(threads as u32),
        matvec: Some(matvec.rates.clone()),
        supports_npu: false,
        notes: "measured by the device probe".into(),
        source: format!(
            "measured {when}: ram_budget_mb = {}; memory_bandwidth_gbps = best of {} STREAM \
             triads over 3 x {} MiB on {threads} threads; flash = a {} MiB file in {}, sequential \
             by the median of {} cold preads in 4 MiB blocks{}, random by {} cold 4 KiB page faults through \
             mmap; compute = the engine's \
             matmul kernels on a {d}x{d} matrix x {} tokens (Q8_0 for int8, also interleaved by \
             eight rows, F32 for f32), best of {}; matvec = the engine's one-token matmul of \
             each type (and, keyed T@x8, each type it interleaves when resident) over {} MiB \
             of weights in {}- and {}-wide rows (random values; the two widths give the rate \
             per weight and the fixed cost per row) and 2000 calls of a 64 x 32 Q8_0 matrix \
             (the fixed cost per call), and decode attention as the engine runs it (8 heads \
             of 64 over 512 positions, softmax included; in cache, and over as many such \
             layers in turn as the matvec bytes, read from RAM), on 1 and {threads} threads, \
             and a decode step's vector work per layer (the engine's norms, quantization, \
             RoPE and activation; width 2048, FFN 2048 and 8192, one thread), and each \
             type's batched matmul (prefill_gops: a square matrix x the matmul tokens), \
             best of {}",
            if opts.ram_budget_mb.is_some() {
                "given"
            } else {
                "RAM available at probe time (cgroup limit included)"
            },
            opts.repeats,
            opts.memory_array_bytes / MIB,
            opts.flash_file_bytes / MIB,
            Path::new(&flash.file)
                .parent()
                .map_or(String::new(), |p| p.display().to_string()),
            flash.sequential_passes_gbps.len(),
            if flash.sequential_direct {
                ", O_DIRECT"
            } else {
                ", page cache dropped"
            },
            opts.random_reads,
            compute.tokens,
            opts.repeats,
            matvec.bytes / MIB,
            matvec.cols[0],
            matvec.cols[1],
            opts.repeats,
            d = compute.dim,
        ),
        measured_at: Some(when),
    };
    device.validate()?;
    let path = opts.output.clone().unwrap_or_else(host_device_path);
    let yaml = format!(
        "# This machine, measured by the dhurandhar device probe.\n{}",
        device.to_yaml()?
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::invalid("output", format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    dhurandhar_io::write_atomic(&path, yaml.as_bytes())
        .map_err(|e| Error::from(e).context("cannot write the host device"))?;
    Ok(ProbeReport {
        schema_version: SCHEMA_VERSION,
        device,
        path: path.display().to_string(),
        memory,
        flash,
        compute,
        matvec,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `a = b + s·c` over three arrays split across `threads` threads, best of N.
fn triad(
    opts: &ProbeOptions,
    threads: usize,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<MemoryProbe> {
    let n = (opts.memory_array_bytes / 8) as usize;
    let phase = Phase::start(
        progress,
        "memory bandwidth (triad)",
        opts.repeats as u64,
        Unit::Items("runs"),
    );
    let mut a = vec![0f64; n];
    let mut b = vec![0f64; n];
    let mut c = vec![0f64; n];
    let chunk = n.div_ceil(threads);
    // Touch every page from the threads that will use it.
    std::thread::scope(|s| {
        for ((a, b), c) in a
            .chunks_mut(chunk)
            .zip(b.chunks_mut(chunk))
            .zip(c.chunks_mut(chunk))
        {
            s.spawn(move || {
                a.fill(0.0);
                b.fill(1.0);
                c.fill(2.0);
            });
        }
    });
    let scalar = 3.0f64;
    let mut best = f64::INFINITY;
    for _ in 0..opts.repeats {
        cancel.check()?;
        let t = Instant::now();
        std::thread::scope(|s| {
            for ((a, b), c) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                s.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + scalar * z;
                    }
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&a);
        progress.advance(1);
    }
    drop(phase);
    Ok(MemoryProbe {
        triad_gbps: 3.0 * 8.0 * n as f64 / best / 1e9,
        array_bytes: opts.memory_array_bytes,
        threads,
        repeats: opts.repeats,
    })
}

/// Cold sequential and random page reads of a test file through the mmap profiler.
fn flash(opts: &ProbeOptions, progress: &dyn Progress, cancel: &CancelToken) -> Result<FlashProbe> {
    let dir = opts
        .scratch_dir
        .clone()
        .unwrap_or_else(dhurandhar_profile::default_cache_dir);
    let path = dir.join("probe_flash.bin");
    let len = opts.flash_file_bytes / PAGE * PAGE;
    {
        let phase = Phase::start(progress, "flash test file", len, Unit::Bytes);
        ensure_test_file(&path, len, &mut phase.callback(cancel))
            .map_err(|e| lift(e, || "cannot prepare the flash test file".into()))?;
    }
    let rows = len / PAGE;
    let g = TableGeometry::new(TableKind::TokenEmbedding, rows, 1, PAGE)?;
    let profiler = Profiler::open(&path, 0, g)?;
    let cold =
        |pattern: Pattern, tokens: u64, what: &str| -> Result<dhurandhar_profile::PatternResult> {
            let phase = Phase::start(progress, what, tokens, Unit::Items("reads"));
            let o = RunOptions {
                num_tokens: tokens,
                warmup_tokens: 0,
                ..RunOptions::default()
            };
            let r = profiler
                .run(pattern, Mode::Cold, &o, &mut phase.callback(cancel))
                .map_err(|e| lift(e, || format!("{what} failed")))?;
            if r.tokens_per_s.is_none() {
                return Err(Error::invalid(
                    "scratch_dir",
                    format!(
                        "no cold read could be measured in {}: {}; put the test file on the flash \
                     storage to measure",
                        dir.display(),
                        r.note.as_deref().unwrap_or("eviction failed")
                    ),
                ));
            }
            Ok(r)
        };
    let seq = cold(
        Pattern::SequentialPrefill,
        rows,
        "flash sequential read (cold)",
    )?;
    let rand = cold(
        Pattern::RandomDecode,
        opts.random_reads,
        "flash random 4 KiB reads (cold)",
    )?;
    let mut probe = FlashProbe {
        sequential_gbps: 0.0,
        sequential_passes_gbps: Vec::new(),
        sequential_direct: true,
        mmap_sequential_gbps: seq.mb_per_s.unwrap_or(0.0) * MIB as f64 / 1e9,
        random_read_iops: rand.tokens_per_s.unwrap_or(0.0),
        file: path.display().to_string(),
        file_bytes: len,
        random_reads: opts.random_reads,
    };
    flash_pass(&mut probe, progress, cancel)?;
    Ok(probe)
}

/// One more cold sequential `pread` pass over the flash test file, added to the probe's
/// passes; the median of them all becomes the flash rate.
fn flash_pass(f: &mut FlashProbe, progress: &dyn Progress, cancel: &CancelToken) -> Result<()> {
    cancel.check()?;
    let _phase = Phase::start(
        progress,
        "flash sequential pread (cold)",
        1,
        Unit::Items("passes"),
    );
    let path = Path::new(&f.file);
    let file = dhurandhar_io::open_regular(path)?;
    let (bw, direct) = dhurandhar_profile::sys::cold_read(&file, path, None, 0.0).map_err(|e| {
        Error::invalid(
            "scratch_dir",
            format!("cannot read {} back: {e}", path.display()),
        )
    })?;
    f.sequential_passes_gbps.push(round3(bw / 1e9));
    f.sequential_direct &= direct;
    f.sequential_gbps = dhurandhar_kv::metrics::median(&f.sequential_passes_gbps);
    progress.advance(1);
    Ok(())
}

/// Best-of-N time of the engine's matmul on `w`, on this thread or (`parallel`) on the
/// current rayon pool; one unmeasured run first warms caches and the pool.
fn time_matmul_on(
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    out: &mut [f32],
    parallel: bool,
    repeats: u32,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<f64> {
    matmul(w, acts, out, parallel)?;
    progress.advance(1);
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        cancel.check()?;
        let t = Instant::now();
        matmul(w, acts, out, parallel)?;
        best = best.min(t.elapsed().as_secs_f64());
        progress.advance(1);
    }
    Ok(best)
}

/// int8 and f32 matmul throughput with the engine's kernels.
fn compute(
    opts: &ProbeOptions,
    threads: usize,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<ComputeProbe> {
    let (d, t) = (opts.matmul_dim, opts.matmul_tokens);
    // xorshift64: any values do, the timing does not depend on them.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let x: Vec<f32> = (0..d * t)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let mut out = vec![0f32; d * t];
    let ops = 2.0 * (d * d * t) as f64;
    let x8 = dhurandhar_engine::interleave::fits(GgmlType::Q8_0, d, d)
        && dhurandhar_engine::kernels::simd().avx2();
    let phase = Phase::start(
        progress,
        "matmul throughput (int8, f32)",
        (2 + u64::from(x8)) * (opts.repeats as u64 + 1),
        Unit::Items("runs"),
    );
    // Q8_0 blocks: an f16 scale (0.01 = 0x211f) and 32 random int8 values.
    let blocks = d * d / 32;
    let mut q8 = Vec::with_capacity(blocks * 34);
    for _ in 0..blocks {
        q8.extend_from_slice(&0x211fu16.to_le_bytes());
        for _ in 0..4 {
            q8.extend_from_slice(&next().to_le_bytes());
        }
    }
    let wq = QMatrix::new(GgmlType::Q8_0, d, d, &q8)?;
    let mut acts = Q8Acts::default();
    acts.quantize_into(&x, d);
    let int8 = time_matmul_on(
        &wq,
        &Acts::Q8(&acts),
        &mut out,
        true,
        opts.repeats,
        progress,
        cancel,
    )?;
    let int8_interleaved = if x8 {
        let mut q8x = q8.clone();
        let wx = QMatrix::interleaved(GgmlType::Q8_0, d, d, &mut q8x)?;
        let a = Acts::Q8(&acts);
        Some(time_matmul_on(
            &wx,
            &a,
            &mut out,
            true,
            opts.repeats,
            progress,
            cancel,
        )?)
    } else {
        None
    };
    let f: Vec<u8> = (0..d * d)
        .flat_map(|i| (((i % 97) as f32 - 48.0) / 97.0).to_le_bytes())
        .collect();
    let wf = QMatrix::new(GgmlType::F32, d, d, &f)?;
    let f32 = time_matmul_on(
        &wf,
        &Acts::F32(&x),
        &mut out,
        true,
        opts.repeats,
        progress,
        cancel,
    )?;
    drop(phase);
    Ok(ComputeProbe {
        int8_gops: ops / int8 / 1e9,
        int8_interleaved_gops: int8_interleaved.map(|s| ops / s / 1e9),
        f32_gflops: ops / f32 / 1e9,
        dim: d,
        tokens: t,
        threads,
    })
}

/// Row widths of the matvec probe's two matrices (multiples of every block size, 256):
/// a narrow and a wide row of the same total bytes separate the per-weight cost from
/// the fixed cost per row.
const MATVEC_COLS: [usize; 2] = [512, 4096];

/// Rows of random values the matvec probe quantizes, then repeats to its size.
const TILE_ROWS: usize = 64;

/// The one-token matvec cost of every type the engine computes with: for each of two
/// row widths, a random matrix quantized to the type, its rows repeated until they fill
/// `matvec_bytes`, multiplied by one activation row on this thread and on a pool of
/// `threads`. The time per row is `overhead + cols / rate`; the two widths give both.
fn matvec(
    opts: &ProbeOptions,
    threads: usize,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<MatvecProbe> {
    use dhurandhar_quantize::Format;
    let counts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::invalid("threads", format!("cannot start {threads} threads: {e}")))?;
    let formats: Vec<Format> = Format::ALL
        .into_iter()
        .filter(|f| {
            GgmlType::from_u32(f.ggml_id()).is_some_and(dhurandhar_engine::quant::computes_with)
        })
        .collect();
    // Each type as stored, then interleaved by eight rows where the engine does that to
    // resident weights (keyed `T@x8`).
    let runs: Vec<(Format, bool)> = formats
        .iter()
        .flat_map(|&f| {
            let t = GgmlType::from_u32(f.ggml_id()).expect("filtered above");
            let x8 = dhurandhar_engine::interleave::fits(t, TILE_ROWS, MATVEC_COLS[0])
                && dhurandhar_engine::kernels::simd().avx2();
            std::iter::once((f, false)).chain(x8.then_some((f, true)))
        })
        .collect();
    let phase = Phase::start(
        progress,
        "one-token matvec per weight type",
        (runs.len() * counts.len() * (MATVEC_COLS.len() + 1)) as u64 * (opts.repeats as u64 + 1),
        Unit::Items("runs"),
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let timing = Timing {
        counts: &counts,
        pool: &pool,
        repeats: opts.repeats,
        progress,
        cancel,
    };
    let mut rates = std::collections::BTreeMap::new();
    let mut overheads = std::collections::BTreeMap::new();
    for &(f, x8) in &runs {
        let t = GgmlType::from_u32(f.ggml_id()).expect("filtered above");
        // Seconds per row at each width, per thread count.
        let mut per_row = vec![[0f64; 2]; counts.len()];
        for (w_i, &cols) in MATVEC_COLS.iter().enumerate() {
            let x: Vec<f32> = (0..cols).map(|_| next()).collect();
            let mut acts = Q8Acts::default();
            acts.quantize_into(&x, cols);
            let rb = f
                .row_bytes(cols)
                .expect("the widths are multiples of every block size");
            let rows = (opts.matvec_bytes as usize / rb).max(TILE_ROWS) / TILE_ROWS * TILE_ROWS;
            let mut data = test_matrix(f, rows, cols, x8, &mut next)?;
            let mut out = vec![0f32; rows];
            let secs = timing.matrix(t, (rows, cols), x8, &mut data, &acts, &x, &mut out)?;
            for (c_i, s) in secs.into_iter().enumerate() {
                per_row[c_i][w_i] = s / rows as f64;
            }
        }
        let (narrow, wide) = (MATVEC_COLS[0] as f64, MATVEC_COLS[1] as f64);
        let (mut rate, mut overhead) = (Vec::new(), Vec::new());
        for [t_narrow, t_wide] in per_row {
            let per_weight = (t_wide - t_narrow) / (wide - narrow);
            // A noisy run can make the narrow rows look as cheap per weight as the wide
            // ones: then there is no measurable row cost, and the wide rate stands alone.
            let (per_weight, row) = if per_weight > 0.0 {
                (per_weight, (t_narrow - narrow * per_weight).max(0.0))
            } else {
                (t_wide / wide, 0.0)
            };
            rate.push(round3(1.0 / per_weight / 1e9));
            overhead.push(round3(row * 1e9));
        }
        let key = if x8 {
            format!("{}{}", f.name(), dhurandhar_plan::INTERLEAVED)
        } else {
            f.name().to_string()
        };
        rates.insert(key.clone(), rate);
        overheads.insert(key, overhead);
    }
    // Each type's batched matmul, as a prefill chunk runs it: a square matrix (the
    // matmul probe's side, rounded up to whole k-quant blocks) by `matmul_tokens` rows.
    let side = opts.matmul_dim.max(1).next_multiple_of(256);
    let tokens = opts.matmul_tokens;
    let x: Vec<f32> = (0..tokens * side).map(|_| next()).collect();
    let mut acts = Q8Acts::default();
    acts.quantize_into(&x, side);
    let mut out = vec![0f32; tokens * side];
    let mut prefill_gops = std::collections::BTreeMap::new();
    for &(f, x8) in &runs {
        let t = GgmlType::from_u32(f.ggml_id()).expect("filtered above");
        let mut data = test_matrix(f, side, side, x8, &mut next)?;
        let ops = 2.0 * (side * side * tokens) as f64;
        let gops = timing
            .matrix(t, (side, side), x8, &mut data, &acts, &x, &mut out)?
            .into_iter()
            .map(|secs| round3(ops / secs / 1e9))
            .collect();
        let key = if x8 {
            format!("{}{}", f.name(), dhurandhar_plan::INTERLEAVED)
        } else {
            f.name().to_string()
        };
        prefill_gops.insert(key, gops);
    }
    // The call's own cost: the small matvecs' time less what their rows and weights cost at
    // the Q8_0 figures just measured (so the row term is not counted twice).
    let (call_data, call_rows, call_cols) = call_matrices(opts.matvec_bytes)?;
    let call_set = (call_data.as_slice(), call_rows, call_cols);
    let calls = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let (rows, weights, secs) = if n == 1 {
                time_calls(call_set, false, cancel)?
            } else {
                pool.install(|| time_calls(call_set, true, cancel))?
            };
            let q8 = |m: &std::collections::BTreeMap<String, Vec<f64>>| {
                m.get("Q8_0").and_then(|v| v.get(i)).copied()
            };
            let data = match (q8(&rates), q8(&overheads)) {
                (Some(rate), Some(row_ns)) => weights / (rate * 1e9) + rows * row_ns * 1e-9,
                _ => 0.0,
            };
            Ok(round3((secs - data).max(0.0) * 1e9))
        })
        .collect::<Result<Vec<f64>>>()?;
    // One layer's cache, re-read 200 times (it stays in cache), then as many layers of
    // it in turn as the matvecs' weight bytes (256 MiB by default: read from RAM every
    // call, as a model's cache is once its weights have streamed through the caches
    // between one token's visits to a layer).
    // The cache is built once per size and timed on every thread count.
    let attention_at = |layers: usize, calls: usize| {
        let cache = AttentionCache::new(layers);
        let flops = (layers * 4 * ATT_HEADS * ATT_HEAD_DIM * ATT_POSITIONS) as f64;
        counts
            .iter()
            .map(|&n| {
                let secs = if n == 1 {
                    time_attention(&cache, false, calls, cancel)?
                } else {
                    pool.install(|| time_attention(&cache, true, calls, cancel))?
                };
                Ok(round3(flops / secs / 1e9))
            })
            .collect::<Result<Vec<f64>>>()
    };
    let attention = attention_at(1, 200)?;
    let ram_layers = (opts.matvec_bytes as usize / ATT_LAYER_BYTES).max(1);
    let attention_ram = attention_at(ram_layers, 3)?;
    let vector = vector_work(opts.repeats, cancel)?;
    drop(phase);
    Ok(MatvecProbe {
        rates: dhurandhar_plan::MatvecRates {
            threads: counts,
            gweights_per_s: rates,
            row_overhead_ns: overheads,
            call_overhead_ns: calls,
            attention_gflops: attention,
            attention_ram_gflops: attention_ram,
            attention_kv_heads: Some(ATT_HEADS as u32),
            vector_ns: Some(vector),
            prefill_gops,
        },
        bytes: opts.matvec_bytes,
        cols: MATVEC_COLS,
        prefill_side: side,
        prefill_tokens: tokens,
    })
}

/// The bytes of a `rows × cols` matrix of `f` (`rows` a multiple of [`TILE_ROWS`]):
/// `TILE_ROWS` rows of values from `next` quantized, then repeated. With `resident`, in
/// the engine's own resident buffer (the `T@x8` runs stand for resident weights); the
/// rest stand for mapped weights, on the page cache's small pages.
fn test_matrix(
    f: dhurandhar_quantize::Format,
    rows: usize,
    cols: usize,
    resident: bool,
    next: &mut impl FnMut() -> f32,
) -> Result<Vec<u8>> {
    let tile: Vec<f32> = (0..TILE_ROWS * cols).map(|_| next()).collect();
    let rb = f
        .row_bytes(cols)
        .ok_or_else(|| Error::invalid("matvec", format!("{cols} is not whole {f} blocks")))?;
    let mut block = vec![0u8; rb * TILE_ROWS];
    dhurandhar_quantize::quantize_rows(f, &tile, cols, &mut block)
        .map_err(|e| Error::invalid("matvec", format!("cannot quantize {}: {e}", f.name())))?;
    let mut v = if resident {
        dhurandhar_engine::store::resident_buffer(rb * rows)
    } else {
        vec![0u8; rb * rows]
    };
    for c in v.chunks_mut(block.len()) {
        c.copy_from_slice(&block[..c.len()]);
    }
    Ok(v)
}

/// Where and how the matvec probe times a matrix: on this thread and on a pool, best of
/// `repeats`.
struct Timing<'a> {
    counts: &'a [usize],
    pool: &'a rayon::ThreadPool,
    repeats: u32,
    progress: &'a dyn Progress,
    cancel: &'a CancelToken,
}

impl Timing<'_> {
    /// Seconds of the engine's matmul of `data` (a `rows × cols` matrix of `t`,
    /// interleaved first when `x8`) by `q8` or, for a type without 8-bit activations,
    /// `x`, on each thread count.
    #[allow(clippy::too_many_arguments)]
    fn matrix(
        &self,
        t: GgmlType,
        (rows, cols): (usize, usize),
        x8: bool,
        data: &mut [u8],
        q8: &Q8Acts,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<Vec<f64>> {
        let w = if x8 {
            QMatrix::interleaved(t, rows, cols, data)?
        } else {
            QMatrix::new(t, rows, cols, data)?
        };
        let a = if w.uses_q8() {
            Acts::Q8(q8)
        } else {
            Acts::F32(x)
        };
        let (repeats, progress, cancel) = (self.repeats, self.progress, self.cancel);
        self.counts
            .iter()
            .map(|&n| {
                if n == 1 {
                    time_matmul_on(&w, &a, out, false, repeats, progress, cancel)
                } else {
                    self.pool
                        .install(|| time_matmul_on(&w, &a, out, true, repeats, progress, cancel))
                }
            })
            .collect()
    }
}

/// Width, heads and the two FFN widths of the vector-work probe's layers (a 1B-class
/// layer, with an FFN as wide as the layer and four times that).
const VEC_DIM: usize = 2048;
const VEC_HEADS: usize = 32;
const VEC_KV_HEADS: usize = 8;
const VEC_HEAD_DIM: usize = 64;
const VEC_FFN: [usize; 2] = [2048, 8192];

/// A decode step's vector work per layer ([`dhurandhar_engine::model::LayerVectorWork`],
/// the engine's own norm, quantization, RoPE and activation) on this thread, for two
/// layers of the same width and FFNs of two widths: the difference gives the cost per
/// FFN element, the rest the cost per width element. Best of `repeats` runs of 2000
/// tokens each.
fn vector_work(repeats: u32, cancel: &CancelToken) -> Result<dhurandhar_plan::VectorCost> {
    use dhurandhar_engine::model::LayerVectorWork;
    const TOKENS: usize = 2000;
    let mut ns = [0f64; 2];
    for (n, &ffn) in ns.iter_mut().zip(&VEC_FFN) {
        let mut w = LayerVectorWork::new(VEC_DIM, ffn, VEC_HEADS, VEC_KV_HEADS, VEC_HEAD_DIM);
        let mut best = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            cancel.check()?;
            let t = Instant::now();
            for pos in 0..TOKENS {
                w.run(pos);
            }
            best = best.min(t.elapsed().as_secs_f64() / TOKENS as f64);
        }
        *n = best * 1e9;
    }
    let per_ffn = ((ns[1] - ns[0]) / (VEC_FFN[1] - VEC_FFN[0]) as f64).max(0.0);
    let per_width = ((ns[0] - per_ffn * VEC_FFN[0] as f64) / VEC_DIM as f64).max(0.0);
    Ok(dhurandhar_plan::VectorCost {
        per_width: round3(per_width),
        per_ffn: round3(per_ffn),
    })
}

/// Heads, head width and attended positions of the decode-attention probe (a small
/// model's shape at a few hundred tokens of context; the cache stays in L2/L3 as a small
/// model's does).
const ATT_HEADS: usize = 8;
const ATT_HEAD_DIM: usize = 64;
const ATT_POSITIONS: usize = 512;
/// One layer's f32 K and V in that probe: 2 MiB.
const ATT_LAYER_BYTES: usize = 2 * ATT_HEADS * ATT_HEAD_DIM * ATT_POSITIONS * 4;

/// `layers` layers of the attention probe's f32 K and V (head-major, as the engine
/// keeps them: each head's positions in one run) and one token's queries.
struct AttentionCache {
    layers: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
}

impl AttentionCache {
    fn new(layers: usize) -> Self {
        let kvd = ATT_HEADS * ATT_HEAD_DIM;
        let len = layers * ATT_POSITIONS * kvd;
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
        AttentionCache {
            layers,
            k: (0..len).map(val).collect(),
            v: (0..len).map(|i| val(i + 13)).collect(),
            q: (0..kvd).map(|i| val(i + 29)).collect(),
        }
    }
}

/// Seconds of one token's attention over `ATT_POSITIONS` cached positions for
/// `ATT_HEADS` heads in each of the cache's layers in turn, composed as the engine's
/// decode step does it per KV head (here one query head each: score dots over the
/// head's run of keys, softmax, value axpys; heads split over the pool when
/// `parallel`), best of 5 runs of `calls` calls.
fn time_attention(
    c: &AttentionCache,
    parallel: bool,
    calls: usize,
    cancel: &CancelToken,
) -> Result<f64> {
    use dhurandhar_engine::kernels::{softmax, strided_axpys, strided_dots, StridedRows};
    use rayon::prelude::*;
    let (heads, hd, n) = (ATT_HEADS, ATT_HEAD_DIM, ATT_POSITIONS);
    let kvd = heads * hd;
    let layer = n * kvd;
    let (k, v, q, layers) = (&c.k, &c.v, &c.q, c.layers);
    let mut out = vec![0f32; kvd];
    let scale = 1.0 / (hd as f32).sqrt();
    let head = |l: usize, h: usize, o: &mut [f32]| {
        let (k, v) = (&k[l * layer..][..layer], &v[l * layer..][..layer]);
        let rows = |src| StridedRows {
            src,
            off: h * n * hd,
            stride: hd,
            d: hd,
        };
        let mut s = vec![0f32; n];
        strided_dots(&q[h * hd..(h + 1) * hd], rows(k), scale, n, &mut s, n);
        softmax(&mut s);
        o.fill(0.0);
        strided_axpys(&s, n, n, rows(v), o);
    };
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        cancel.check()?;
        let t = Instant::now();
        for _ in 0..calls {
            for l in 0..layers {
                if parallel {
                    out.par_chunks_mut(hd)
                        .enumerate()
                        .for_each(|(h, o)| head(l, h, o));
                } else {
                    out.chunks_mut(hd)
                        .enumerate()
                        .for_each(|(h, o)| head(l, h, o));
                }
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(best)
}

/// Small-model-sized matrices for [`time_calls`]: 512 × 512 Q8_0, copies of one filling
/// `bytes`, so that called in turn each comes from RAM, as a model's layers do once its
/// weights have passed through the caches. Returns the bytes and the rows, the columns.
fn call_matrices(bytes: u64) -> Result<(Vec<u8>, usize, usize)> {
    use dhurandhar_quantize::{quantize_rows, Format};
    let (rows, cols) = (512, 512);
    let w_f32: Vec<f32> = (0..rows * cols).map(|i| (i % 17) as f32 - 8.0).collect();
    let rb = Format::Q8_0.row_bytes(cols).expect("whole Q8_0 blocks");
    let mut one = vec![0u8; rb * rows];
    quantize_rows(Format::Q8_0, &w_f32, cols, &mut one)
        .map_err(|e| Error::invalid("matvec", format!("cannot quantize Q8_0: {e}")))?;
    let copies = (bytes as usize / one.len()).max(1);
    Ok((one.repeat(copies), rows, cols))
}

/// Seconds per call of the [`call_matrices`], called in turn, best of 5 runs of at
/// least 2000 calls. Less what their rows and weights cost at the Q8_0 rates, what is
/// left is the call's own cost: on a pool, handing rows to the threads, each thread's
/// start on a cold stretch of memory, and waiting for the slowest — which every one of
/// a token's hundreds of matvecs pays (a tiny matrix called back to back in cache sees
/// little of it; docs/plan.md). Returns the rows, the weights and the seconds per call.
fn time_calls(
    (data, rows, cols): (&[u8], usize, usize),
    parallel: bool,
    cancel: &CancelToken,
) -> Result<(f64, f64, f64)> {
    let one = dhurandhar_quantize::Format::Q8_0
        .row_bytes(cols)
        .expect("whole Q8_0 blocks")
        * rows;
    let mats = data
        .chunks_exact(one)
        .map(|d| QMatrix::new(GgmlType::Q8_0, rows, cols, d))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let x: Vec<f32> = (0..cols).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut acts = Q8Acts::default();
    acts.quantize_into(&x, cols);
    let a = Acts::Q8(&acts);
    let mut out = vec![0f32; rows];
    let rounds = 2000usize.div_ceil(mats.len());
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        cancel.check()?;
        let t = Instant::now();
        for _ in 0..rounds {
            for w in &mats {
                matmul(w, &a, &mut out, parallel)?;
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / (rounds * mats.len()) as f64);
    }
    Ok((rows as f64, (rows * cols) as f64, best))
}

/// RAM available now in MiB (`MemAvailable`), capped by the cgroup v2 `memory.max`.
fn available_ram_mb() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut bytes = kib * 1024;
    if let Ok(max) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(limit) = max.trim().parse::<u64>() {
            bytes = bytes.min(limit);
        }
    }
    Some(bytes as f64 / MIB as f64)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        let s = utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }

    #[test]
    fn bad_options_name_the_field() {
        let bad = |o: ProbeOptions| validate(&o).unwrap_err().to_string();
        let d = ProbeOptions::default();
        assert!(bad(ProbeOptions {
            matmul_dim: 33,
            ..d.clone()
        })
        .starts_with("matmul_dim"));
        assert!(bad(ProbeOptions {
            repeats: 0,
            ..d.clone()
        })
        .starts_with("repeats"));
        assert!(bad(ProbeOptions {
            random_reads: 0,
            ..d.clone()
        })
        .starts_with("random_reads"));
        assert!(bad(ProbeOptions {
            memory_array_bytes: 10,
            ..d
        })
        .starts_with("memory_array_bytes"));
    }
}
