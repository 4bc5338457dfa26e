//! Memory-mapped access patterns, each run cold (page cache verifiably dropped) or warm.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use memmap2::{Mmap, MmapOptions};
use serde::Serialize;

use crate::error::ProfileError;
use crate::geometry::TableGeometry;
use crate::histogram::Histogram;
use crate::rng::Rng;
use crate::sys;
use crate::ProgressFn;

/// How a decode step touches the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Token-ordered scan: rows 0, 1, 2, … (prefill of a prompt in table order, the best case).
    SequentialPrefill,
    /// One uniformly random token per step; all of its slices, which are contiguous in a
    /// token-major table, are read.
    RandomDecode,
    /// Worst case: each of the step's slices comes from an independent random slice anywhere
    /// in the table (as with a layer-major layout), so a step costs up to `slices` separate
    /// page faults instead of one or two.
    RandomScatter,
}

impl Pattern {
    pub const ALL: [Pattern; 3] = [
        Pattern::SequentialPrefill,
        Pattern::RandomDecode,
        Pattern::RandomScatter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pattern::SequentialPrefill => "sequential_prefill",
            Pattern::RandomDecode => "random_decode",
            Pattern::RandomScatter => "random_scatter",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The table's pages are dropped from the page cache (and that is checked) before the run.
    Cold,
    /// The whole table is read into the page cache first; the mapping itself is fresh.
    Warm,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
        }
    }
}

/// madvise hint applied to the mapping before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// MADV_SEQUENTIAL for the sequential pattern, MADV_RANDOM for the random ones (what a
    /// runtime that knows its access pattern should do).
    Auto,
    /// No hint: the kernel's default readahead / fault-around.
    Normal,
    Random,
    Sequential,
    /// MADV_WILLNEED on the whole table: asynchronous readahead of everything.
    #[serde(rename = "willneed")]
    WillNeed,
}

impl Advice {
    pub const ALL: [Advice; 5] = [
        Advice::Auto,
        Advice::Normal,
        Advice::Random,
        Advice::Sequential,
        Advice::WillNeed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Advice::Auto => "auto",
            Advice::Normal => "normal",
            Advice::Random => "random",
            Advice::Sequential => "sequential",
            Advice::WillNeed => "willneed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The concrete hint used for `pattern`.
    pub fn resolve(self, pattern: Pattern) -> Advice {
        match (self, pattern) {
            (Advice::Auto, Pattern::SequentialPrefill) => Advice::Sequential,
            (Advice::Auto, _) => Advice::Random,
            (a, _) => a,
        }
    }
}

/// What the cold-run preparation achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// Pages dropped and mincore confirms it.
    Evicted,
    /// Dropped, but mincore cannot see page-cache state for this file (not owner and no
    /// write permission on Linux >= 5.0): the cold number is reported but unverified.
    Unverified,
    /// Pages are still resident after the eviction call (mapped by another process, tmpfs,
    /// locked); no cold number is reported.
    Failed,
    /// The platform offers no per-file eviction; no cold number is reported.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOptions {
    pub num_tokens: u64,
    /// Untimed steps before the timed ones (from the same stream).
    pub warmup_tokens: u64,
    pub seed: u64,
    pub advice: Advice,
    /// MAP_POPULATE (Linux/Android): prefault the whole mapping at mmap time.
    pub populate: bool,
    /// A cold run is only reported if at most this fraction of pages is resident before it.
    pub max_cold_resident: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            num_tokens: 1000,
            warmup_tokens: 50,
            seed: 0,
            advice: Advice::Auto,
            populate: false,
            max_cold_resident: 0.05,
        }
    }
}

/// One pattern × mode measurement. Rates and latencies are `None` when no number may be
/// reported (see `eviction` and `note`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternResult {
    pub pattern: Pattern,
    pub mode: Mode,
    pub advice: Advice,
    pub populate: bool,
    pub tokens: u64,
    pub bytes_per_token: u64,
    pub tokens_per_s: Option<f64>,
    /// MiB (2^20 bytes) of table data consumed per second.
    pub mb_per_s: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Fraction of the table's pages in the page cache just before the run (mincore).
    pub resident_fraction_before: Option<f64>,
    /// …and right after it: with readahead this shows how much more than asked was read.
    pub resident_fraction_after: Option<f64>,
    pub major_faults: u64,
    pub minor_faults: u64,
    /// Time to mmap (and populate, if asked) the table, in ms.
    pub map_ms: f64,
    /// Cold runs only.
    pub eviction: Option<Eviction>,
    pub note: Option<String>,
}

/// A table region of a file, ready to be profiled.
#[derive(Debug)]
pub struct Profiler {
    path: PathBuf,
    file: File,
    offset: u64,
    length: u64,
    geometry: TableGeometry,
    verifiable: bool,
}

impl Profiler {
    /// Profile `geometry.total_bytes()` bytes of `path` starting at `offset`.
    pub fn open(path: &Path, offset: u64, geometry: TableGeometry) -> Result<Self, ProfileError> {
        let file = File::open(path).map_err(|e| ProfileError::io(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| ProfileError::io(path, e))?
            .len();
        let length = geometry.total_bytes();
        if offset.checked_add(length).is_none_or(|end| end > file_len) {
            return Err(ProfileError::RegionOutOfFile {
                path: path.to_path_buf(),
                offset,
                length,
                file_len,
            });
        }
        if usize::try_from(length).is_err() {
            return Err(ProfileError::BadGeometry(format!(
                "a {length}-byte region cannot be mapped on this platform"
            )));
        }
        Ok(Profiler {
            verifiable: sys::residency_verifiable(path),
            path: path.to_path_buf(),
            file,
            offset,
            length,
            geometry,
        })
    }

    pub fn geometry(&self) -> &TableGeometry {
        &self.geometry
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of the table in the file.
    pub fn offset_bytes(&self) -> u64 {
        self.offset
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Whether mincore can see this file's page-cache state (see [`Eviction::Unverified`]).
    pub fn residency_verifiable(&self) -> bool {
        self.verifiable
    }

    fn map(&self, populate: bool) -> Result<Mmap, ProfileError> {
        let mut o = MmapOptions::new();
        o.offset(self.offset).len(self.length as usize);
        if populate {
            o.populate();
        }
        // SAFETY: the mapping is read-only; if another process truncates the file while we
        // profile it, reads may SIGBUS — the same hazard every mmap-based runtime accepts.
        unsafe { o.map(&self.file) }.map_err(|e| ProfileError::io(&self.path, e))
    }

    /// Fraction of the region resident in the page cache, via a throw-away mapping (so that
    /// neither MAP_POPULATE nor WILLNEED of the real run can affect the reading).
    pub fn resident_fraction(&self) -> Result<Option<f64>, ProfileError> {
        if !self.verifiable {
            return Ok(None);
        }
        let m = self.map(false)?;
        Ok(sys::resident_fraction(m.as_ptr(), m.len()))
    }

    /// Drop the region from the page cache. Requires that no mapping of it is alive in this
    /// process (all mappings here are scoped to one call).
    pub fn evict(&self) -> Result<sys::EvictSupport, ProfileError> {
        let page = sys::page_size();
        let start = self.offset / page * page;
        let end = (self.offset + self.length).div_ceil(page) * page;
        sys::evict(&self.file, start, end - start).map_err(|e| ProfileError::io(&self.path, e))
    }

    /// Pull the whole region into the page cache with plain reads.
    pub fn warm(&self) -> Result<(), ProfileError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        while pos < self.length {
            let n = (self.length - pos).min(buf.len() as u64) as usize;
            read_exact_at(&self.file, &mut buf[..n], self.offset + pos)
                .map_err(|e| ProfileError::io(&self.path, e))?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Run one pattern in one mode. `progress(done, total)` is called before the run's
    /// preparation and every few hundred timed tokens, outside the per-token timing; a
    /// `Break` from it ends the run with [`ProfileError::Cancelled`].
    pub fn run(
        &self,
        pattern: Pattern,
        mode: Mode,
        opts: &RunOptions,
        progress: &mut ProgressFn,
    ) -> Result<PatternResult, ProfileError> {
        self.run_with_histogram(pattern, mode, opts, progress)
            .map(|(r, _)| r)
    }

    /// [`run`](Self::run), also handing back the per-token latency histogram (ns) the
    /// percentiles were read from; `None` when no number was measured (see `note`).
    pub fn run_with_histogram(
        &self,
        pattern: Pattern,
        mode: Mode,
        opts: &RunOptions,
        progress: &mut ProgressFn,
    ) -> Result<(PatternResult, Option<Histogram>), ProfileError> {
        if opts.num_tokens == 0 {
            return Err(ProfileError::Invalid("number of tokens must be > 0".into()));
        }
        if progress(0, opts.num_tokens).is_break() {
            return Err(ProfileError::Cancelled);
        }
        let advice = opts.advice.resolve(pattern);
        let g = &self.geometry;
        let mut res = PatternResult {
            pattern,
            mode,
            advice,
            populate: opts.populate,
            tokens: opts.num_tokens,
            bytes_per_token: g.row_bytes(),
            tokens_per_s: None,
            mb_per_s: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            mean_us: None,
            max_us: None,
            resident_fraction_before: None,
            resident_fraction_after: None,
            major_faults: 0,
            minor_faults: 0,
            map_ms: 0.0,
            eviction: None,
            note: None,
        };
        match mode {
            Mode::Cold => {
                if self.evict()? == sys::EvictSupport::Unsupported {
                    res.eviction = Some(Eviction::Unsupported);
                    res.note = Some(
                        "this platform cannot drop a file from the page cache; no cold number \
                         is reported"
                            .into(),
                    );
                    return Ok((res, None));
                }
                res.resident_fraction_before = self.resident_fraction()?;
                match res.resident_fraction_before {
                    None => {
                        res.eviction = Some(Eviction::Unverified);
                        res.note = Some(
                            "mincore cannot see this file's page-cache state (not owner, not \
                             writable): cold number unverified"
                                .into(),
                        );
                    }
                    Some(f) if f > opts.max_cold_resident => {
                        res.eviction = Some(Eviction::Failed);
                        res.note = Some(format!(
                            "{:.1}% of the pages are still cached after posix_fadvise(DONTNEED) \
                             (mapped elsewhere, tmpfs or locked?); no cold number is reported",
                            f * 100.0
                        ));
                        return Ok((res, None));
                    }
                    Some(_) => res.eviction = Some(Eviction::Evicted),
                }
            }
            Mode::Warm => {
                self.warm()?;
                res.resident_fraction_before = self.resident_fraction()?;
                if let Some(f) = res.resident_fraction_before {
                    if f < 0.9 {
                        res.note = Some(format!(
                            "only {:.1}% of the table stayed cached after warming (memory \
                             pressure?)",
                            f * 100.0
                        ));
                    }
                }
            }
        }

        let t_map = Instant::now();
        let map = self.map(opts.populate)?;
        apply_advice(&map, advice).map_err(|e| ProfileError::io(&self.path, e))?;
        res.map_ms = t_map.elapsed().as_secs_f64() * 1e3;

        let mut stream = TokenStream::new(pattern, g, opts.seed);
        let mut offsets = vec![0u64; g.slices as usize];
        let mut acc = 0u64;
        for _ in 0..opts.warmup_tokens {
            stream.next(&mut offsets);
            acc ^= touch(&map, &offsets, g.slice_bytes as usize);
        }
        let mut hist = Histogram::new();
        let (maj0, min0) = sys::faults();
        let t0 = Instant::now();
        for i in 0..opts.num_tokens {
            stream.next(&mut offsets);
            let s = Instant::now();
            acc ^= touch(&map, &offsets, g.slice_bytes as usize);
            hist.record(s.elapsed().as_nanos() as u64);
            if i % 256 == 255 && progress(i + 1, opts.num_tokens).is_break() {
                return Err(ProfileError::Cancelled);
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (maj1, min1) = sys::faults();
        std::hint::black_box(acc);
        // The last report cannot cancel: the measurement is complete.
        let _ = progress(opts.num_tokens, opts.num_tokens);

        res.resident_fraction_after = if self.verifiable {
            sys::resident_fraction(map.as_ptr(), map.len())
        } else {
            None
        };
        drop(map);
        let n = opts.num_tokens as f64;
        let elapsed = elapsed.max(1e-9);
        res.tokens_per_s = Some(n / elapsed);
        res.mb_per_s = Some(n * g.row_bytes() as f64 / (1u64 << 20) as f64 / elapsed);
        let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1e3);
        res.p50_us = us(hist.quantile(0.5));
        res.p99_us = us(hist.quantile(0.99));
        res.p999_us = us(hist.quantile(0.999));
        res.max_us = us(hist.max());
        res.mean_us = hist.mean().map(|ns| ns / 1e3);
        res.major_faults = maj1.saturating_sub(maj0);
        res.minor_faults = min1.saturating_sub(min0);
        Ok((res, Some(hist)))
    }
}

/// Reads every byte of each slice (a real runtime dequantizes the whole slice) and folds
/// them so the compiler cannot skip the loads.
#[inline]
fn touch(map: &[u8], offsets: &[u64], slice: usize) -> u64 {
    let mut acc = 0u64;
    for &o in offsets {
        let o = o as usize;
        let bytes = &map[o..o + slice];
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            acc = acc.rotate_left(1) ^ u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        }
        for &b in chunks.remainder() {
            acc = acc.rotate_left(1) ^ b as u64;
        }
    }
    std::hint::black_box(acc)
}

/// The byte offsets of each step's slices, relative to the start of the table.
struct TokenStream {
    pattern: Pattern,
    rows: u64,
    slices: u64,
    slice_bytes: u64,
    row_bytes: u64,
    next_row: u64,
    rng: Rng,
}

impl TokenStream {
    fn new(pattern: Pattern, g: &TableGeometry, seed: u64) -> Self {
        // Distinct streams per pattern so that two random patterns never share rows by
        // construction.
        let salt = match pattern {
            Pattern::SequentialPrefill => 1,
            Pattern::RandomDecode => 2,
            Pattern::RandomScatter => 3,
        };
        TokenStream {
            pattern,
            rows: g.rows,
            slices: g.slices as u64,
            slice_bytes: g.slice_bytes,
            row_bytes: g.row_bytes(),
            next_row: 0,
            rng: Rng::new(seed.wrapping_mul(0x100).wrapping_add(salt)),
        }
    }

    fn next(&mut self, out: &mut [u64]) {
        match self.pattern {
            Pattern::SequentialPrefill | Pattern::RandomDecode => {
                let row = if self.pattern == Pattern::SequentialPrefill {
                    let r = self.next_row;
                    self.next_row = (r + 1) % self.rows;
                    r
                } else {
                    self.rng.below(self.rows)
                };
                for (l, o) in out.iter_mut().enumerate() {
                    *o = row * self.row_bytes + l as u64 * self.slice_bytes;
                }
            }
            Pattern::RandomScatter => {
                let total = self.rows * self.slices;
                for o in out.iter_mut() {
                    *o = self.rng.below(total) * self.slice_bytes;
                }
            }
        }
    }
}

fn apply_advice(map: &Mmap, advice: Advice) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use memmap2::Advice as A;
        let a = match advice {
            Advice::Auto | Advice::Normal => A::Normal,
            Advice::Random => A::Random,
            Advice::Sequential => A::Sequential,
            Advice::WillNeed => A::WillNeed,
        };
        map.advise(a)
    }
    #[cfg(not(unix))]
    {
        let _ = (map, advice);
        Ok(())
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::TableKind;
    use proptest::prelude::*;

    #[test]
    fn sequential_walks_rows_in_order_and_wraps() {
        let g = TableGeometry::new(TableKind::FileRegion, 3, 2, 10).unwrap();
        let mut s = TokenStream::new(Pattern::SequentialPrefill, &g, 0);
        let mut o = [0u64; 2];
        let mut seen = Vec::new();
        for _ in 0..4 {
            s.next(&mut o);
            seen.push(o);
        }
        assert_eq!(seen, [[0, 10], [20, 30], [40, 50], [0, 10]]);
    }

    #[test]
    fn auto_advice_follows_the_pattern() {
        assert_eq!(
            Advice::Auto.resolve(Pattern::SequentialPrefill),
            Advice::Sequential
        );
        assert_eq!(Advice::Auto.resolve(Pattern::RandomScatter), Advice::Random);
        assert_eq!(
            Advice::WillNeed.resolve(Pattern::RandomDecode),
            Advice::WillNeed
        );
        assert_eq!(Advice::parse("willneed"), Some(Advice::WillNeed));
        assert_eq!(
            Pattern::parse("random_scatter"),
            Some(Pattern::RandomScatter)
        );
    }

    proptest! {
        #[test]
        fn every_offset_stays_inside_the_table(
            rows in 1u64..5000, slices in 1u32..40, slice in 1u64..300, seed: u64, pat in 0usize..3,
        ) {
            let g = TableGeometry::new(TableKind::FileRegion, rows, slices, slice).unwrap();
            let mut s = TokenStream::new(Pattern::ALL[pat], &g, seed);
            let mut o = vec![0u64; slices as usize];
            for _ in 0..50 {
                s.next(&mut o);
                for &x in &o {
                    prop_assert!(x % slice == 0 && x + slice <= g.total_bytes());
                }
                if Pattern::ALL[pat] != Pattern::RandomScatter {
                    // decode and prefill read one whole contiguous row
                    prop_assert_eq!(o[0] % g.row_bytes(), 0);
                    prop_assert!(o.windows(2).all(|w| w[1] == w[0] + slice));
                }
            }
        }
    }
}
