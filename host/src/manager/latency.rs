//! Processing-time histograms: fixed log-linear buckets, exact merge, percentiles.
//!
//! # Buckets
//!
//! The layout is the store's ([`crate::store::latency`]: the bucket numbers are what
//! `rollout_latency_buckets` holds, and the store computes them when it records outcomes),
//! re-exported here. [`BUCKETS`] (337) fixed buckets over whole milliseconds, the same on every instance and
//! in the database (`rollout_latency_buckets.bucket`), so histograms merge exactly by
//! adding counts bucket by bucket:
//!
//! - buckets `0..=31` hold one value each: bucket `b` is exactly `b` ms (bucket 0 is 0 ms);
//! - from 32 ms on, every power of two is split into [`SUB_BUCKETS`] (16) equal buckets:
//!   a value `v` with `2^e <= v < 2^(e+1)` falls in a bucket `2^(e-4)` ms wide, so a bucket
//!   is at most 1/16 (6.25 %) of its lower bound wide;
//! - the last bucket ([`OVERFLOW_BUCKET`], 336) is open-ended: every time of at least
//!   [`CAP_MS`] (2^24 ms, about 4 h 40 min).
//!
//! # Percentiles
//!
//! [`LatencyHistogram::quantile`] uses the nearest-rank definition (the `⌈q·n⌉`-th smallest
//! observation) and answers the **midpoint** of the bucket holding it (the midpoint of its
//! whole-millisecond values): exact below 32 ms, within 1/32 (about 3.1 %) of the true
//! value above, and [`CAP_MS`] for the open-ended bucket (the true value is at least that).

pub use crate::store::latency::{
    bucket_bounds, bucket_of, bucket_value, BUCKETS, CAP_MS, OVERFLOW_BUCKET, SUB_BUCKETS,
};
use crate::store::LatencyRow;
use std::fmt;

/// A bucket index that is not one of the [`BUCKETS`] buckets (read from the database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("latency bucket {0} is outside 0..{BUCKETS}")]
pub struct BucketOutOfRange(pub i64);

/// Counts of processing times per bucket. Counts saturate at `u64::MAX`.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: Box::new([0; BUCKETS]), total: 0 }
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .field("buckets", &self.nonzero().collect::<Vec<_>>())
            .finish()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// Count one processing time of `ms` milliseconds.
    pub fn record(&mut self, ms: u64) {
        self.add_to_bucket(bucket_of(ms), 1);
    }

    /// Add `count` observations to bucket `b` (what the database stores); an index beyond
    /// the last bucket is refused.
    pub fn add(&mut self, b: i64, count: u64) -> Result<(), BucketOutOfRange> {
        let index = u16::try_from(b).ok().filter(|i| usize::from(*i) < BUCKETS).ok_or(BucketOutOfRange(b))?;
        self.add_to_bucket(index, count);
        Ok(())
    }

    fn add_to_bucket(&mut self, b: u16, count: u64) {
        if let Some(c) = self.counts.get_mut(usize::from(b)) {
            *c = c.saturating_add(count);
            self.total = self.total.saturating_add(count);
        }
    }

    /// Add every count of `other` (bucket by bucket, saturating): the histogram of both
    /// sets of observations.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (c, o) in self.counts.iter_mut().zip(other.counts.iter()) {
            *c = c.saturating_add(*o);
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The histogram of bucket rows read from the store (any processors: filter first).
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a LatencyRow>) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for r in rows {
            h.add_to_bucket(r.bucket.min(OVERFLOW_BUCKET), r.count);
        }
        h
    }

    /// The count of bucket `b` (0 beyond the last bucket).
    pub fn bucket_count(&self, b: u16) -> u64 {
        self.counts.get(usize::from(b)).copied().unwrap_or(0)
    }

    /// The buckets with a count, in order: `(bucket, count)`.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| (b as u16, *c))
    }

    /// The bucket holding the nearest-rank `q`-quantile (the `⌈q·n⌉`-th smallest
    /// observation, at least the first); `None` when empty. `q` is clamped to `0..=1`.
    pub fn quantile_bucket(&self, q: f64) -> Option<u16> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return Some(b as u16);
            }
        }
        Some(OVERFLOW_BUCKET)
    }

    /// The `q`-quantile in milliseconds: the midpoint of the bucket holding the nearest-rank
    /// observation ([`bucket_value`]); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantile_bucket(q).map(bucket_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn buckets_tile_the_milliseconds_in_order() {
        // every bucket's values follow the previous bucket's, and map back to it
        let mut next = 0u64;
        for b in 0..OVERFLOW_BUCKET {
            let (low, high) = bucket_bounds(b);
            let high = high.unwrap();
            assert_eq!(low, next, "bucket {b} starts where {} ended", b.wrapping_sub(1));
            assert!(high >= low);
            assert_eq!(bucket_of(low), b);
            assert_eq!(bucket_of(high), b);
            // at most 1/16 of the lower bound wide (buckets below 32 ms are exact)
            assert!(high - low + 1 == 1 || (high - low + 1) * SUB_BUCKETS <= low, "bucket {b} too wide");
            next = high + 1;
        }
        assert_eq!(next, CAP_MS);
        assert_eq!(bucket_of(CAP_MS), OVERFLOW_BUCKET);
        assert_eq!(bucket_of(u64::MAX), OVERFLOW_BUCKET);
        assert_eq!(bucket_bounds(OVERFLOW_BUCKET), (CAP_MS, None));
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(31), 31);
        assert_eq!(bucket_bounds(32), (32, Some(33)));
        assert_eq!(bucket_of(1000), bucket_of(1023));
        assert_ne!(bucket_of(1023), bucket_of(1024));
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert!(h.is_empty());
    }

    #[test]
    fn small_values_are_exact_and_overflow_is_the_cap() {
        let mut h = LatencyHistogram::new();
        for ms in [0, 5, 5, 7] {
            h.record(ms);
        }
        assert_eq!(h.quantile(0.25), Some(0.0));
        assert_eq!(h.quantile(0.5), Some(5.0));
        assert_eq!(h.quantile(1.0), Some(7.0));
        h.record(u64::MAX);
        assert_eq!(h.quantile(1.0), Some(CAP_MS as f64));
        assert_eq!(h.add(BUCKETS as i64, 1), Err(BucketOutOfRange(BUCKETS as i64)));
        assert_eq!(h.add(-1, 1), Err(BucketOutOfRange(-1)));
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn counts_saturate() {
        let mut a = LatencyHistogram::new();
        a.add(3, u64::MAX).unwrap();
        let b = a.clone();
        a.merge(&b);
        assert_eq!(a.bucket_count(3), u64::MAX);
        assert_eq!(a.count(), u64::MAX);
    }

    /// Log-uniform in 0..10 minutes (whole milliseconds).
    fn log_uniform(rng: &mut SplitMix) -> u64 {
        let max = 600_000f64;
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((max + 1.0).powf(u) - 1.0).floor() as u64
    }

    #[test]
    fn percentiles_of_100k_random_times_fall_in_the_exact_values_bucket() {
        let mut rng = SplitMix(0x1a7e_4c1e_5eed);
        let values: Vec<u64> = (0..100_000).map(|_| log_uniform(&mut rng)).collect();
        let mut h = LatencyHistogram::new();
        for v in &values {
            h.record(*v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.95, 0.99, 0.0, 0.001, 1.0] {
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact = sorted[rank - 1];
            let b = h.quantile_bucket(q).unwrap();
            let diff = (i32::from(b) - i32::from(bucket_of(exact))).abs();
            assert!(diff <= 1, "q={q}: bucket {b} vs the exact value {exact}'s bucket {}", bucket_of(exact));
            // nearest rank over the same buckets: in fact the very bucket
            assert_eq!(b, bucket_of(exact), "q={q}");
            let answer = h.quantile(q).unwrap();
            assert!((answer - exact as f64).abs() <= exact as f64 / 32.0 + 0.5, "q={q}: {answer} vs {exact}");
        }
    }

    #[test]
    fn merge_equals_the_histogram_of_the_concatenation() {
        let mut rng = SplitMix(42);
        let a: Vec<u64> = (0..30_000).map(|_| log_uniform(&mut rng)).collect();
        let b: Vec<u64> = (0..20_000).map(|_| log_uniform(&mut rng) * 40).collect();
        let of = |vs: &[u64]| {
            let mut h = LatencyHistogram::new();
            vs.iter().for_each(|v| h.record(*v));
            h
        };
        let mut merged = of(&a);
        merged.merge(&of(&b));
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, of(&all));
        assert_eq!(merged.count(), 50_000);
        assert!(merged.nonzero().count() > 100, "the data spread over many buckets");
    }

    proptest::proptest! {
        #[test]
        fn merge_is_exact_for_any_data(
            a in proptest::collection::vec(0u64..(1 << 26), 0..200),
            b in proptest::collection::vec(0u64..(1 << 26), 0..200),
        ) {
            let of = |vs: &[u64]| {
                let mut h = LatencyHistogram::new();
                vs.iter().for_each(|v| h.record(*v));
                h
            };
            let mut merged = of(&a);
            merged.merge(&of(&b));
            let all: Vec<u64> = a.iter().chain(&b).copied().collect();
            proptest::prop_assert_eq!(&merged, &of(&all));
            let mut sorted = all.clone();
            sorted.sort_unstable();
            for q in [0.5, 0.95, 0.99] {
                match merged.quantile_bucket(q) {
                    None => proptest::prop_assert!(sorted.is_empty()),
                    Some(bucket) => {
                        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                        proptest::prop_assert_eq!(bucket, bucket_of(sorted[rank - 1]));
                    }
                }
            }
        }
    }
}
