//! Log-linear latency histogram (HDR-style): values below 2^SUB_BITS nanoseconds get exact
//! buckets, larger values 2^SUB_BITS buckets per power of two, so any quantile is within
//! 1/2^SUB_BITS (≈1.6 %) of the exact sample quantile, in fixed memory for any run length.

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets up to 2^64 ns.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) - SUB; // 0..SUB
        ((shift as u64 + 1) * SUB + mantissa) as usize
    }

    /// Smallest value that falls in bucket `i` and the bucket width.
    fn bucket_range(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < SUB {
            return (i, 1);
        }
        let shift = i / SUB - 1;
        let mantissa = i % SUB;
        ((SUB + mantissa) << shift, 1u64 << shift)
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.n += 1;
        self.sum += ns as u128;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// Sample counts in the ranges cut by ascending `edges` (ns): `[0, e0)`, `[e0, e1)`,
    /// …, `[e_last, ∞)` — `edges.len() + 1` counts summing to [`count`](Self::count).
    /// Each internal bucket goes whole to the range holding its smallest value, so an
    /// edge is exact when it is a bucket boundary (every power of two is) and otherwise
    /// off by at most one bucket width (1/2^SUB_BITS of the value).
    pub fn counts_by_edges(&self, edges: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; edges.len() + 1];
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, _) = Self::bucket_range(i);
            out[edges.partition_point(|&e| e <= lo)] += c;
        }
        out
    }

    /// Nearest-rank quantile (`q` in 0..=1): the value at rank ceil(q·n), reported as the
    /// middle of its bucket and clamped to the observed min/max.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = Self::bucket_range(i);
                let mid = lo + (width - 1) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_by_power_of_two_edges_are_exact() {
        let values = [
            0u64,
            5,
            63,
            64,
            100,
            127,
            128,
            129,
            1000,
            4095,
            4096,
            1 << 20,
        ];
        let mut h = Histogram::new();
        values.iter().for_each(|&v| h.record(v));
        let edges = [64u64, 128, 4096];
        let exact: Vec<u64> = (0..=edges.len())
            .map(|k| {
                let lo = if k == 0 { 0 } else { edges[k - 1] };
                let hi = edges.get(k).copied().unwrap_or(u64::MAX);
                values.iter().filter(|&&v| v >= lo && v < hi).count() as u64
            })
            .collect();
        assert_eq!(h.counts_by_edges(&edges), exact);
        assert_eq!(exact, vec![3, 3, 4, 2]);
    }

    proptest! {
        #[test]
        fn counts_by_edges_keep_every_sample(values in proptest::collection::vec(any::<u32>(), 1..200)) {
            let mut h = Histogram::new();
            values.iter().for_each(|&v| h.record(v as u64));
            let edges: Vec<u64> = (6..34).map(|k| 1u64 << k).collect();
            let c = h.counts_by_edges(&edges);
            prop_assert_eq!(c.len(), edges.len() + 1);
            prop_assert_eq!(c.iter().sum::<u64>(), values.len() as u64);
        }
    }

    #[test]
    fn buckets_tile_the_number_line() {
        let mut expect_lo = 0u64;
        for i in 0..BUCKETS - 1 {
            let (lo, w) = Histogram::bucket_range(i);
            assert_eq!(lo, expect_lo, "bucket {i}");
            assert_eq!(Histogram::index(lo), i);
            assert_eq!(Histogram::index(lo + w - 1), i);
            expect_lo = lo + w;
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(25));
        assert_eq!(h.quantile(0.99), Some(50));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    proptest! {
        #[test]
        fn quantiles_match_exact_ranks_within_bucket_precision(
            mut xs in proptest::collection::vec(1u64..50_000_000, 1..2000),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &x in &xs { h.record(x); }
            xs.sort_unstable();
            let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
            let exact = xs[rank - 1] as f64;
            let got = h.quantile(q).unwrap() as f64;
            prop_assert!((got - exact).abs() <= exact / SUB as f64 + 1.0, "q={q} exact={exact} got={got}");
        }
    }
}
