//! The memory probe: RSS while decoding, optionally with an anonymous placeholder standing
//! in for the part of the model that must stay resident (decoder weights, KV cache).

use serde::Serialize;

use crate::error::ProfileError;
use crate::memory::MemorySnapshot;
use crate::profile::Profiler;
use crate::rng::Rng;
use crate::sys;
use crate::ProgressFn;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryProbe {
    pub placeholder_bytes: u64,
    /// The table was evicted from the page cache (and mincore agreed) before the probe.
    pub started_cold: bool,
    /// VmHWM was reset before the probe, so `end.peak_rss_bytes` covers the probe only.
    pub peak_reset: bool,
    pub tokens: u64,
    pub samples: u64,
    pub baseline: MemorySnapshot,
    pub after_placeholder: MemorySnapshot,
    /// Highest sampled VmRSS during decode.
    pub peak_sampled_rss_bytes: Option<u64>,
    /// Mean VmRSS over the last fifth of the samples.
    pub steady_rss_bytes: Option<u64>,
    /// Highest number of table bytes resident in the page cache (mincore), if verifiable.
    pub table_resident_bytes: Option<u64>,
    pub end: MemorySnapshot,
}

impl Profiler {
    /// Decode `tokens` random rows with the table mapped (MADV_RANDOM), sampling RSS every
    /// `sample_every` tokens, while `placeholder_bytes` of touched anonymous memory is held.
    /// With `cold`, the table is evicted first so the reading shows what decoding pulls in,
    /// not what earlier runs left cached. `progress(done, tokens)` is called at every
    /// sample; a `Break` ends the probe with [`ProfileError::Cancelled`].
    pub fn memory_probe(
        &self,
        tokens: u64,
        sample_every: u64,
        placeholder_bytes: u64,
        seed: u64,
        cold: bool,
        progress: &mut ProgressFn,
    ) -> Result<MemoryProbe, ProfileError> {
        let started_cold = cold
            && self.evict()? == sys::EvictSupport::Fadvise
            && self
                .resident_fraction()?
                .is_some_and(|f| f <= crate::profile::RunOptions::default().max_cold_resident);
        let peak_reset = sys::reset_peak_rss();
        let baseline = MemorySnapshot::current();
        let placeholder = Placeholder::new(placeholder_bytes)?;
        let after_placeholder = MemorySnapshot::current();
        let map = {
            let mut o = memmap2::MmapOptions::new();
            o.offset(self.offset_bytes())
                .len(self.geometry().total_bytes() as usize);
            // SAFETY: read-only mapping, see `Profiler::map`.
            unsafe { o.map(self.file()) }.map_err(|e| ProfileError::io(self.path(), e))?
        };
        #[cfg(unix)]
        map.advise(memmap2::Advice::Random)
            .map_err(|e| ProfileError::io(self.path(), e))?;
        let g = self.geometry().clone();
        let mut rng = Rng::new(seed ^ 0x004D_454D);
        let every = sample_every.max(1);
        let mut rss = Vec::new();
        let mut table_max: Option<u64> = None;
        let page = sys::page_size();
        let mut acc = 0u8;
        for i in 0..tokens {
            let row = rng.below(g.rows);
            for l in 0..g.slices as u64 {
                let o = (row * g.row_bytes() + l * g.slice_bytes) as usize;
                // One byte per slice is enough to fault its page in.
                acc ^= map[o];
            }
            if i % every == every - 1 || i + 1 == tokens {
                let s = MemorySnapshot::current();
                if let Some(r) = s.rss_bytes {
                    rss.push(r);
                }
                if self.residency_verifiable() {
                    if let Some((res, _)) = sys::resident_pages(map.as_ptr(), map.len()) {
                        table_max = Some(table_max.unwrap_or(0).max(res * page));
                    }
                }
                if progress(i + 1, tokens).is_break() {
                    return Err(ProfileError::Cancelled);
                }
            }
        }
        std::hint::black_box(acc);
        let end = MemorySnapshot::current();
        drop(map);
        std::hint::black_box(placeholder.touch_sum());
        let tail = rss.len().div_ceil(5).max(1).min(rss.len());
        Ok(MemoryProbe {
            placeholder_bytes,
            started_cold,
            peak_reset,
            tokens,
            samples: rss.len() as u64,
            baseline,
            after_placeholder,
            peak_sampled_rss_bytes: rss.iter().copied().max(),
            steady_rss_bytes: (!rss.is_empty())
                .then(|| rss[rss.len() - tail..].iter().sum::<u64>() / tail as u64),
            table_resident_bytes: table_max,
            end,
        })
    }
}

/// Anonymous memory made resident by writing one byte per page.
struct Placeholder(Vec<u8>);

impl Placeholder {
    fn new(bytes: u64) -> Result<Self, ProfileError> {
        let n = usize::try_from(bytes).map_err(|_| {
            ProfileError::Invalid(format!("placeholder of {bytes} bytes is too large"))
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            ProfileError::Invalid(format!(
                "cannot allocate a {:.0} MiB resident placeholder",
                bytes as f64 / (1u64 << 20) as f64
            ))
        })?;
        v.resize(n, 0);
        let page = sys::page_size() as usize;
        for i in (0..n).step_by(page) {
            v[i] = ((i / page) as u8) | 1;
        }
        Ok(Placeholder(v))
    }

    fn touch_sum(&self) -> u64 {
        self.0.iter().step_by(4096).map(|&b| b as u64).sum()
    }
}
