//! What can go wrong in the store, and what kind of failure each error is ([`ErrorKind`]):
//! the one classification every caller (HTTP statuses, CLI exit codes, retry loops, the
//! outcome buffer) uses.

use rollout_policy::ConfigError;
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

/// Something the store could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database url `{0}`: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl(String),
    /// The database could not be reached.
    #[error("cannot connect to `{url}`: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The migrations could not be applied.
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[source] Arc<sqlx::migrate::MigrateError>),
    /// A statement failed.
    #[error("{context}: {source}")]
    Database {
        /// What was being done, naming its input.
        context: String,
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// No configuration has this feature name.
    #[error("unknown feature `{0}`: no row in rollout_configuration has this feature_name")]
    UnknownFeature(String),
    /// An id that is neither a UUID nor `owner/name`.
    #[error("invalid repository id `{0}`: expected a UUID or owner/name")]
    InvalidRepositoryId(String),
    /// An `owner/name` (or UUID) that no row of `repositories` has.
    #[error("unknown repository `{0}`: not in the repositories table")]
    UnknownRepository(String),
    /// A value read back that the program cannot represent.
    #[error("unexpected value in column `{column}`: {message}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A configuration value the rules refuse.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// No stored policy has this digest.
    #[error("unknown policy `{0}`: no stored policy version has this sha256")]
    UnknownPolicy(String),
    /// The metrics recorder's flusher is gone (the runtime is shutting down).
    #[error("the metrics recorder has stopped")]
    RecorderClosed,
    /// The database refused a metrics write for its content — a permanent failure: the same
    /// outcomes fail again, so do not retry them as they are. Nothing of the write was kept.
    ///
    /// `batch_ids` are the submissions that were in the refused write. The
    /// [`MetricsRecorder`](super::recorder::MetricsRecorder) re-applies the submissions of a
    /// refused group commit one by one, so the error a caller of
    /// [`record_batch`](super::recorder::MetricsRecorder::record_batch) gets names its own
    /// submission only: to isolate the bad outcome, split the submission and record the
    /// halves (each under a new batch id); a refused submission of one outcome is the bad
    /// outcome itself. [`StoreError::kind`] is the kind of `source` (always
    /// [`ErrorKind::Input`]).
    #[error("the database refused the outcomes of batch {}: {source}", BatchIds(batch_ids))]
    MetricsRefused {
        /// The submissions of the refused write.
        batch_ids: Vec<Uuid>,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
}

struct BatchIds<'a>(&'a [Uuid]);

impl std::fmt::Display for BatchIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{id}`")?;
        }
        Ok(())
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What kind of failure a [`StoreError`] is ([`StoreError::kind`]): what a caller should do
/// about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorKind {
    /// The database could not be reached, or did not answer in time: retry later (HTTP
    /// 503, exit status 3). Connection, I/O, TLS and protocol errors, a pool that timed out
    /// or closed, a crashed worker, the recorder stopped; Postgres SQLSTATE classes `08`
    /// (connection exception) and `53` (insufficient resources), `57P01`-`57P03`
    /// (shutdown, cannot connect now); and the timeouts and lost races, which are
    /// transient too: `57014` (statement timeout), `55P03` (lock timeout), `40001`
    /// (serialization failure), `40P01` (deadlock); SQLite busy/locked (the busy timeout
    /// ran out), I/O, full disk, cannot open. When the connection broke during a commit the
    /// change may or may not have been made: changes are safe to retry (a repeated change
    /// is a no-op), outcome batches carry an idempotency key for that.
    Unreachable,
    /// The input was refused: the same input fails again (HTTP 400/404, exit status 2). The
    /// store's own refusals ([`StoreError::UnknownFeature`], `InvalidRepositoryId`,
    /// `UnknownRepository`, `InvalidConfig`, `UnknownPolicy`, `UnsupportedUrl`, an unusable
    /// database URL) and what the database refuses about a value: SQLSTATE class `22` (data
    /// exceptions: `22001` value too long, `22021` a NUL byte in text, `22003` numeric out
    /// of range, `22P02`, `22P05`, …), `23514` (check violation); SQLite check constraints
    /// and values too big.
    Input {
        /// The input at fault, when known.
        field: Option<String>,
    },
    /// A unique constraint refused the write (`23505`, SQLite unique/primary key): the row
    /// exists already (HTTP 409).
    Conflict {
        /// The constraint's name (empty when the database does not say).
        constraint: String,
    },
    /// Everything else: corrupt values read back, failed migrations, statements the
    /// database refused for another reason — a bug or a damaged database (HTTP 500, exit
    /// status 3).
    Internal,
}

impl ErrorKind {
    fn input(field: impl Into<String>) -> ErrorKind {
        ErrorKind::Input { field: Some(field.into()) }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ErrorKind::Unreachable)
    }
}

impl StoreError {
    /// A mapper of driver errors to [`StoreError::Database`] with `context` (what was being
    /// done, naming its input).
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Database { context, source: Arc::new(source) }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::UnsupportedUrl(_) => ErrorKind::input("database_url"),
            StoreError::Connect { source, .. } => match &**source {
                sqlx::Error::Configuration(_) => ErrorKind::input("database_url"),
                _ => ErrorKind::Unreachable,
            },
            StoreError::Migrate(_) | StoreError::Corrupt { .. } => ErrorKind::Internal,
            StoreError::Database { source, .. } => classify(source),
            StoreError::UnknownFeature(_) => ErrorKind::input("feature"),
            StoreError::InvalidRepositoryId(_) | StoreError::UnknownRepository(_) => ErrorKind::input("repository_id"),
            StoreError::InvalidConfig(e) => ErrorKind::input(e.field.clone()),
            StoreError::UnknownPolicy(_) => ErrorKind::input("sha256"),
            StoreError::RecorderClosed => ErrorKind::Unreachable,
            StoreError::MetricsRefused { source, .. } => source.kind(),
        }
    }

    /// The SQLSTATE (Postgres) or extended result code (SQLite) of a database error.
    pub fn database_code(&self) -> Option<String> {
        match self {
            StoreError::Database { source, .. } | StoreError::Connect { source, .. } => {
                source.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
            }
            StoreError::MetricsRefused { source, .. } => source.database_code(),
            _ => None,
        }
    }
}

/// The kind of a driver error.
fn classify(error: &sqlx::Error) -> ErrorKind {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Unreachable,
        sqlx::Error::Encode(_) => ErrorKind::Input { field: None },
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                classify_sqlstate(pg.code(), pg.column(), pg.constraint())
            } else {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                classify_sqlite(code, db.constraint())
            }
        }
        _ => ErrorKind::Internal,
    }
}

/// The kind of a Postgres error by its SQLSTATE.
fn classify_sqlstate(code: &str, column: Option<&str>, constraint: Option<&str>) -> ErrorKind {
    let class = code.get(..2).unwrap_or("");
    match (class, code) {
        ("08" | "53", _) | (_, "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "40001" | "40P01") => {
            ErrorKind::Unreachable
        }
        ("22", _) | (_, "23514") => ErrorKind::Input { field: column.map(str::to_owned) },
        (_, "23505") => ErrorKind::Conflict { constraint: constraint.unwrap_or_default().to_owned() },
        _ => ErrorKind::Internal,
    }
}

/// The kind of a SQLite error by its extended result code.
fn classify_sqlite(code: i32, constraint: Option<&str>) -> ErrorKind {
    // extended codes carry the primary code in their low byte
    match (code & 0xff, code) {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL
        (5 | 6 | 10 | 13 | 14 | 15, _) => ErrorKind::Unreachable,
        // TOOBIG, CONSTRAINT_CHECK
        (18, _) | (_, 275) => ErrorKind::Input { field: None },
        // CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE
        (_, 1555 | 2067) => ErrorKind::Conflict { constraint: constraint.unwrap_or_default().to_owned() },
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(classify_sqlstate("22001", None, None), ErrorKind::Input { field: None });
        assert_eq!(classify_sqlstate("22021", Some("reason"), None), ErrorKind::input("reason"));
        assert_eq!(classify_sqlstate("23514", None, Some("c")), ErrorKind::Input { field: None });
        assert_eq!(classify_sqlstate("23505", None, Some("k")), ErrorKind::Conflict { constraint: "k".into() });
        for transient in ["08006", "57P01", "57P03", "57014", "55P03", "40P01", "53300"] {
            assert_eq!(classify_sqlstate(transient, None, None), ErrorKind::Unreachable, "{transient}");
        }
        assert_eq!(classify_sqlstate("42P01", None, None), ErrorKind::Internal);
        assert_eq!(classify_sqlstate("23503", None, None), ErrorKind::Internal);
    }

    #[test]
    fn sqlite_codes_are_classified() {
        assert_eq!(classify_sqlite(5, None), ErrorKind::Unreachable);
        assert_eq!(classify_sqlite(517, None), ErrorKind::Unreachable, "busy snapshot");
        assert_eq!(classify_sqlite(275, None), ErrorKind::Input { field: None });
        assert_eq!(classify_sqlite(2067, Some("k")), ErrorKind::Conflict { constraint: "k".into() });
        assert_eq!(classify_sqlite(787, None), ErrorKind::Internal, "foreign key");
        assert_eq!(classify_sqlite(1, None), ErrorKind::Internal);
    }

    #[test]
    fn store_refusals_name_their_input() {
        assert_eq!(StoreError::UnknownFeature("f".into()).kind(), ErrorKind::input("feature"));
        let e = StoreError::InvalidConfig(ConfigError { field: "max_error_rate".into(), message: "x".into() });
        assert_eq!(e.kind(), ErrorKind::input("max_error_rate"));
        assert_eq!(StoreError::RecorderClosed.kind(), ErrorKind::Unreachable);
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(StoreError::db("read")(io).kind(), ErrorKind::Unreachable);
        let refused = StoreError::MetricsRefused {
            batch_ids: vec![Uuid::nil()],
            source: Box::new(StoreError::db("record")(sqlx::Error::Encode("bad".into()))),
        };
        assert_eq!(refused.kind(), ErrorKind::Input { field: None });
        assert!(refused.to_string().starts_with("the database refused the outcomes of batch `00000000-"), "{refused}");
        assert_eq!(StoreError::Corrupt { column: "c", message: "m".into() }.kind(), ErrorKind::Internal);
    }
}
