//! The bucket layout of processing times, as `rollout_latency_buckets.bucket` stores it
//! (the histogram over it, with merge and percentiles, is
//! [`crate::manager::latency::LatencyHistogram`]).
//!
//! Buckets `0..=31` hold one whole millisecond each; from 32 ms on every power of two is
//! split into [`SUB_BUCKETS`] equal buckets (each at most 1/16 of its lower bound wide);
//! bucket [`OVERFLOW_BUCKET`] holds every time of at least [`CAP_MS`]. [`BUCKETS`] in all.

/// Buckets per power of two (from 16 ms on).
pub const SUB_BUCKETS: u64 = 16;

/// Times of at least this many milliseconds share the open-ended last bucket (2^24 ms).
pub const CAP_MS: u64 = 1 << 24;

/// The open-ended bucket: every time of at least [`CAP_MS`].
pub const OVERFLOW_BUCKET: u16 = 336;

/// The number of buckets.
pub const BUCKETS: usize = OVERFLOW_BUCKET as usize + 1;

/// The bucket of a processing time of `ms` milliseconds.
pub fn bucket_of(ms: u64) -> u16 {
    if ms < 2 * SUB_BUCKETS {
        // one value per bucket (0..=31)
        return ms as u16;
    }
    if ms >= CAP_MS {
        return OVERFLOW_BUCKET;
    }
    let e = u64::from(63 - ms.leading_zeros()); // 5..=23
    let sub = (ms >> (e - 4)) - SUB_BUCKETS; // 0..=15
    (SUB_BUCKETS + (e - 4) * SUB_BUCKETS + sub) as u16
}

/// The whole-millisecond values of bucket `b`: `(lowest, highest)`, both included;
/// `highest` is `None` for the open-ended bucket (and `b` beyond it).
pub fn bucket_bounds(b: u16) -> (u64, Option<u64>) {
    let b = u64::from(b.min(OVERFLOW_BUCKET));
    if b == u64::from(OVERFLOW_BUCKET) {
        return (CAP_MS, None);
    }
    if b < 2 * SUB_BUCKETS {
        return (b, Some(b));
    }
    let shift = (b - SUB_BUCKETS) / SUB_BUCKETS; // e - 4
    let sub = (b - SUB_BUCKETS) % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << shift;
    (low, Some(low + (1 << shift) - 1))
}

/// The value [`LatencyHistogram::quantile`] answers for bucket `b`: the midpoint of its
/// values ([`CAP_MS`] for the open-ended bucket).
pub fn bucket_value(b: u16) -> f64 {
    match bucket_bounds(b) {
        (low, Some(high)) => (low as f64 + high as f64) / 2.0,
        (low, None) => low as f64,
    }
}
