//! Queue backlog reports: a processor (or the code feeding it) says how many items wait in
//! its queue and how long the oldest has waited. One implementation for the HTTP API
//! (`PUT /v1/features/{feature}/backlog`) and the CLI (`rollout backlog report`): the
//! values are validated here, stored as a time series ([`crate::store::backlog`]), shown
//! as the `rollout_queue_backlog_*` gauges of `/metrics`, and the feature's health check is
//! woken to judge them.

use super::{Service, ServiceError, ServiceResult};
use crate::store::BacklogReport;
use rollout_policy::Processor;
use std::sync::atomic::Ordering;

/// The largest `oldest_age_seconds` accepted: 10 years (365-day years), in seconds.
pub const MAX_OLDEST_AGE_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// Check a report's figures: `depth` fits a BIGINT, `oldest_age_seconds` is finite, at
/// least 0 and at most [`MAX_OLDEST_AGE_SECONDS`]. Errors name the field and the allowed
/// values.
pub fn validate_backlog(depth: u64, oldest_age_seconds: f64) -> ServiceResult<()> {
    if i64::try_from(depth).is_err() {
        return Err(ServiceError::invalid(
            "depth",
            format!("`depth` {depth} is out of range: expected an integer from 0 to {}", i64::MAX),
        ));
    }
    if !oldest_age_seconds.is_finite() || !(0.0..=MAX_OLDEST_AGE_SECONDS).contains(&oldest_age_seconds) {
        return Err(ServiceError::invalid(
            "oldest_age_seconds",
            format!(
                "`oldest_age_seconds` {oldest_age_seconds} is out of range: expected a number of seconds from 0 to \
                 {MAX_OLDEST_AGE_SECONDS} (10 years)"
            ),
        ));
    }
    Ok(())
}

impl Service {
    /// Store a backlog report of `processor` for `feature`, set the
    /// `rollout_queue_backlog_*` gauges, and wake the feature's health check; returns the
    /// stored report. `depth` must be at most `i64::MAX` and `oldest_age_seconds` finite,
    /// from 0 to 10 years (invalid, naming the field); an unknown feature is not found,
    /// naming it.
    pub async fn report_backlog(
        &self,
        feature: &str,
        processor: Processor,
        depth: u64,
        oldest_age_seconds: f64,
    ) -> ServiceResult<BacklogReport> {
        validate_backlog(depth, oldest_age_seconds)?;
        self.inner.db.require()?;
        let served = self.feature(feature).await?;
        let stored =
            self.observed(self.inner.store.report_backlog(served.name(), processor, depth, oldest_age_seconds));
        let report = match stored.await {
            Ok(r) => r,
            Err(e) => return Err(self.explain_unknown(e).await),
        };
        self.metrics().set_backlog(served.name(), processor.as_str(), report.depth, report.oldest_age_seconds);
        served.health_due.store(true, Ordering::Relaxed);
        self.inner.health_kick.notify_one();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ErrorKind;

    fn field(e: &ServiceError) -> String {
        match e.kind() {
            ErrorKind::Invalid { field } => field,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn figures_out_of_range_are_refused_naming_the_field() {
        assert!(validate_backlog(0, 0.0).is_ok());
        assert!(validate_backlog(i64::MAX as u64, MAX_OLDEST_AGE_SECONDS).is_ok());
        let e = validate_backlog(u64::MAX, 0.0).unwrap_err();
        assert_eq!(field(&e), "depth");
        assert!(e.to_string().contains("from 0 to"), "{e}");
        for age in [-1.0, f64::NAN, f64::INFINITY, MAX_OLDEST_AGE_SECONDS + 1.0] {
            let e = validate_backlog(1, age).unwrap_err();
            assert_eq!(field(&e), "oldest_age_seconds", "{age}");
            assert!(e.to_string().contains("10 years"), "{e}");
        }
    }
}
