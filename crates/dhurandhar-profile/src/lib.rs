//! Measure how fast a memory-mapped table (a PLE table, an embedding, any tensor read from
//! flash at decode time) can really be read, and how much memory the process holds.
//!
//! "Cold" here means the table's pages are not in the page cache: they are dropped with
//! `posix_fadvise(POSIX_FADV_DONTNEED)` (after unmapping and flushing) and `mincore()` checks
//! the result before every cold run. `madvise(MADV_DONTNEED)` on a shared file mapping only
//! drops this process's page-table entries, so it is never used for that. When eviction does
//! not work, no cold number is reported.
//!
//! Typical use:
//! ```no_run
//! use dhurandhar_profile::*;
//! let g = TableGeometry::new(TableKind::PerLayerEmbedding, 26_214, 30, 128)?;
//! let path = default_cache_dir().join(DEFAULT_FILE_NAME);
//! ensure_test_file(&path, g.total_bytes(), &mut no_progress)?;
//! let p = Profiler::open(&path, 0, g)?;
//! let r = p.run(Pattern::RandomDecode, Mode::Cold, &RunOptions::default(), &mut no_progress)?;
//! let v = evaluate_throughput(&[r], 15.0, DEFAULT_WARN_MARGIN)?;
//! println!("{:?}", v.verdict);
//! # Ok::<(), ProfileError>(())
//! ```

pub mod cgroup;
mod error;
mod geometry;
mod histogram;
pub mod memory;
mod probe;
mod profile;
mod rng;
pub mod sys;
mod testfile;
mod verdict;

pub use error::ProfileError;
pub use geometry::{default_slices, TableGeometry, TableKind, MAX_SCALE, MIN_TEST_FILE_BYTES};
pub use histogram::Histogram;
pub use memory::{
    evaluate_budget, peak_rss_bytes, reset_peak_rss, Budget, BudgetVerdict, GateVerdict,
    MemorySnapshot, BUDGET_PRESETS,
};
pub use probe::MemoryProbe;
pub use profile::{Advice, Eviction, Mode, Pattern, PatternResult, Profiler, RunOptions};
pub use sys::cpu_seconds;
pub use testfile::{default_cache_dir, ensure_test_file, FileOutcome, DEFAULT_FILE_NAME};
pub use verdict::{evaluate_throughput, ThroughputVerdict, DEFAULT_WARN_MARGIN, HOST_CAVEAT};

/// What a long measurement reports between units of work: `progress(done, total)`.
/// Returning [`ControlFlow::Break`](std::ops::ControlFlow::Break) stops it with
/// [`ProfileError::Cancelled`], so a front end can cancel a run mid-way.
pub type ProgressFn<'a> = dyn FnMut(u64, u64) -> std::ops::ControlFlow<()> + 'a;

/// A progress callback that ignores progress and never cancels.
pub fn no_progress(_done: u64, _total: u64) -> std::ops::ControlFlow<()> {
    std::ops::ControlFlow::Continue(())
}
