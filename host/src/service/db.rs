//! Whether the database answers, as last observed, and the one rule deciding whether an
//! error means "unreachable" (as opposed to a refusal).

use super::ServiceError;
use crate::store::{Backend, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

/// Whether `error` means the database could not be reached, or did not answer in time (as
/// opposed to a refusal): the store's one classification ([`StoreError::kind`]).
pub fn is_unreachable(error: &StoreError) -> bool {
    error.kind().is_transient()
}

/// The message of an operation refused because the database is unreachable.
pub const DATABASE_UNREACHABLE: &str =
    "the database is unreachable: decisions continue from the cached configuration, outcomes are buffered, \
     and operations are refused until it is back; retry later";

/// Whether the database answers, as last observed.
#[derive(Debug)]
pub struct DbHealth {
    backend: Backend,
    up: AtomicBool,
    last_ok_ms: AtomicI64,
    down_since_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// The database's state for the status.
#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    /// `postgres` or `sqlite`.
    pub backend: Backend,
    /// Whether the database answered the last time it was asked.
    pub reachable: bool,
    /// When it last answered.
    pub last_contact_at: Option<DateTime<Utc>>,
    /// Seconds since it last answered.
    pub seconds_since_contact: Option<f64>,
    /// Since when it has not answered.
    pub unreachable_since: Option<DateTime<Utc>>,
    /// The last error seen while it was unreachable.
    pub last_error: Option<String>,
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

impl DbHealth {
    pub(crate) fn new(backend: Backend) -> DbHealth {
        DbHealth {
            backend,
            up: AtomicBool::new(true),
            last_ok_ms: AtomicI64::new(now_ms()),
            down_since_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Note that the database answered.
    pub fn ok(&self) {
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("the database is reachable again");
            self.down_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Note that the database could not be reached.
    pub fn failed(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_owned());
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!("the database is unreachable: {error}");
            self.down_since_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Note the result of a store call: success means up, an unreachable error means down,
    /// any other error (a refusal) means up.
    pub fn observe<T, E: AsStoreError>(&self, result: &Result<T, E>) {
        match result.as_ref().err().and_then(AsStoreError::as_store_error) {
            Some(e) if is_unreachable(e) => self.failed(&e.to_string()),
            _ => self.ok(),
        }
    }

    /// Whether the database was unreachable the last time it was asked.
    pub fn is_down(&self) -> bool {
        !self.up.load(Ordering::Relaxed)
    }

    /// `Err(Unavailable)` while the database is known to be unreachable.
    pub fn require(&self) -> Result<(), ServiceError> {
        if self.is_down() {
            let status = self.status();
            let since = status.unreachable_since.map_or_else(String::new, |t| format!(" since {}", t.to_rfc3339()));
            return Err(ServiceError::Unavailable(format!("{DATABASE_UNREACHABLE}{since}")));
        }
        Ok(())
    }

    /// The state for the status.
    pub fn status(&self) -> DbStatus {
        let last_ok = self.last_ok_ms.load(Ordering::Relaxed);
        let reachable = !self.is_down();
        DbStatus {
            backend: self.backend,
            reachable,
            last_contact_at: from_ms(last_ok),
            seconds_since_contact: (last_ok > 0).then(|| (now_ms() - last_ok).max(0) as f64 / 1000.0),
            unreachable_since: if reachable { None } else { from_ms(self.down_since_ms.load(Ordering::Relaxed)) },
            last_error: if reachable { None } else { self.last_error.lock().ok().and_then(|e| e.clone()) },
        }
    }
}

/// An error that may carry a store error (for [`DbHealth::observe`]).
pub trait AsStoreError {
    /// The store error inside, if any.
    fn as_store_error(&self) -> Option<&StoreError>;
}

impl AsStoreError for StoreError {
    fn as_store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

impl AsStoreError for crate::manager::ManagerError {
    fn as_store_error(&self) -> Option<&StoreError> {
        match self {
            crate::manager::ManagerError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl AsStoreError for ServiceError {
    fn as_store_error(&self) -> Option<&StoreError> {
        match self {
            ServiceError::Store(e) => Some(e),
            _ => None,
        }
    }
}
