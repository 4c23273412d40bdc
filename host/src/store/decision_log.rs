//! The decision log (`rollout_decisions`): decisions served over HTTP, as the policy received
//! and answered them, so any one can be found, explained and replayed (issue 14).
//!
//! A row is written by the service's background writer ([`crate::service::decision_log`]) in
//! batches, never on a decision's path; rows are immutable (the service role may insert and
//! delete, never update). Decision ids are UUIDv7, so their order is their time order and a
//! page of newest-first results continues after the last id it showed ([`DecisionFilter::before`]).
//!
//! Outcomes that name the decision they followed (`POST …/outcomes` with `decision_id`) are
//! kept in `rollout_decision_outcomes` ([`Store::link_outcomes`]); statistics join them with
//! the log to split outcomes by the policy and configuration that decided
//! ([`Store::outcomes_by_decision_version`]).

use super::types::to_u64;
use super::{Store, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

/// Which decision function answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// `is-eligible`.
    Eligibility,
    /// `route`.
    Route,
}

impl DecisionKind {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Eligibility => "eligibility",
            DecisionKind::Route => "route",
        }
    }

    /// The kind of a column value.
    pub fn parse(text: &str) -> Option<DecisionKind> {
        match text {
            "eligibility" => Some(DecisionKind::Eligibility),
            "route" => Some(DecisionKind::Route),
            _ => None,
        }
    }
}

/// One logged decision: its input as the policy received it, its result, and what made it.
/// It is also the line format of `rollout decisions export` (JSON Lines), so a replay reads
/// a database and an export alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision id (UUIDv7), returned to the caller in the response and `x-decision-id`.
    pub id: Uuid,
    /// When it was decided.
    pub time: DateTime<Utc>,
    /// The feature.
    pub feature: String,
    /// Which decision function answered.
    pub kind: DecisionKind,
    /// The stored `config_version` the decision's configuration snapshot was made from.
    pub config_version: i64,
    /// The environment overrides in force on the deciding process (the JSON of
    /// [`crate::env::EnvOverrides`]); `None` when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    /// Lowercase hex sha256 of the component that decided (`native` for the native rules,
    /// `none` when no policy was loaded).
    pub policy_sha256: String,
    /// The repository id as the policy received it (canonical text), or, when masked,
    /// `hmac-sha256:<hex>` of it under the operator's key.
    pub repository_id: String,
    /// Whether `repository_id` is masked (a masked decision cannot be replayed: its bucket
    /// depends on the id).
    pub masked: bool,
    /// The repository's category as the policy received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The job as the policy received it (route decisions; the JSON of the request's `job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_json::Value>,
    /// Where the job runs (route decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// The routing rule (route decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The eligibility rule.
    pub reason: String,
    /// The repository's bucket.
    pub bucket: u8,
    /// Why the policy gave no answer and the fallback decided (`None` when the policy
    /// answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// How long the decision took in the policy, in microseconds.
    pub duration_us: i64,
}

/// Which decisions to read, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionFilter {
    /// Of this feature only.
    pub feature: Option<String>,
    /// Of this repository id only (as logged: canonical text, or the masked form).
    pub repository_id: Option<String>,
    /// Decided at or after.
    pub since: Option<DateTime<Utc>>,
    /// Decided before.
    pub until: Option<DateTime<Utc>>,
    /// With this routing rule, or (eligibility decisions) this eligibility reason.
    pub rule: Option<String>,
    /// Ids strictly less than this one (the cursor: the last id of the previous page).
    pub before: Option<Uuid>,
    /// Ids strictly greater than this one (oldest-first reading, for replay and export).
    pub after: Option<Uuid>,
    /// At most this many rows.
    pub limit: u32,
}

/// Outcomes of decisions made by one (policy, configuration version) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionVersionOutcomes {
    /// The policy that decided.
    pub policy_sha256: String,
    /// The configuration version it decided under.
    pub config_version: i64,
    /// Outcomes reported as successes.
    pub successes: u64,
    /// Outcomes reported as failures.
    pub failures: u64,
}

/// An outcome naming the decision it followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// The decision id the caller passed.
    pub decision_id: Uuid,
    /// The feature the outcome was recorded for.
    pub feature: String,
    /// Whether the job succeeded.
    pub success: bool,
    /// When the outcome was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// The SQL of the decision log, in both dialects (`$n` placeholders, spelled `?n` for SQLite
/// by [`sql::lite`]).
mod sql {
    /// The statement with SQLite's numbered placeholders.
    pub fn lite(sql: &str) -> String {
        sql.replace('$', "?")
    }

    /// The columns of `rollout_decisions`, in the order of [`super::DecisionRecord`]'s fields
    /// (a macro, so the statements below can `concat!` it).
    macro_rules! columns {
        () => {
            "id, time, feature, kind, config_version, overrides, policy_sha256, repository_id, masked, category, \
             job, processor, rule, eligible, reason, bucket, fallback, duration_us"
        };
    }

    /// The columns of `rollout_decisions`, in the order of [`super::DecisionRecord`]'s fields.
    pub const COLUMNS: &str = columns!();

    /// How many columns [`COLUMNS`] names (bind parameters per row of a multi-row insert).
    pub const COLUMN_COUNT: usize = 18;

    /// Insert the rows given as one array per column ($1 … $18, in the order of
    /// [`COLUMNS`]); a logged id is ignored (Postgres: one statement whatever the row count).
    pub const PG_INSERT: &str = concat!(
        "INSERT INTO rollout_decisions (",
        columns!(),
        ") SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[], $6::jsonb[], \
        $7::text[], $8::text[], $9::bool[], $10::text[], $11::jsonb[], $12::text[], $13::text[], $14::bool[], \
        $15::text[], $16::int2[], $17::text[], $18::int8[]) ON CONFLICT (id) DO NOTHING"
    );

    /// The head of the SQLite multi-row insert (the `VALUES` rows follow).
    pub const LITE_INSERT_HEAD: &str = concat!("INSERT INTO rollout_decisions (", columns!(), ") ");

    /// The tail of the SQLite multi-row insert of decisions.
    pub const LITE_INSERT_TAIL: &str = " ON CONFLICT (id) DO NOTHING";

    /// SQLite: the Unix seconds of the first and the last second a decision was logged in
    /// (`NULL`s when none), read from `rollout_decisions_repository_second`.
    pub const LITE_SECONDS_LOGGED: &str = "SELECT \
        CAST(strftime('%s', (SELECT min(substr(time, 1, 19)) FROM rollout_decisions)) AS INTEGER), \
        CAST(strftime('%s', (SELECT max(substr(time, 1, 19)) FROM rollout_decisions)) AS INTEGER)";

    /// The decision $1.
    pub const ONE: &str = concat!("SELECT ", columns!(), " FROM rollout_decisions WHERE id = $1");

    /// Delete the decisions whose id is below $1 (made before its millisecond: the primary
    /// key serves it, [`super::first_id_at`]).
    pub const PRUNE_AGE: &str = "DELETE FROM rollout_decisions WHERE id < $1";
    /// Outcome links recorded before $1.
    pub const PRUNE_LINKS: &str = "DELETE FROM rollout_decision_outcomes WHERE recorded_at < $1";

    /// Delete all but the newest $1 decisions (nothing when there are no more than $1).
    pub const PRUNE_ROWS: &str = "DELETE FROM rollout_decisions WHERE id <= \
        (SELECT id FROM rollout_decisions ORDER BY id DESC LIMIT 1 OFFSET $1)";

    /// Link outcomes given as one array per column (decision ids $1, features $2, successes
    /// $3, times $4); a repeated (decision, time, success) is ignored.
    pub const PG_LINK: &str = "INSERT INTO rollout_decision_outcomes (decision_id, feature, success, recorded_at) \
        SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bool[], $4::timestamptz[]) \
        ON CONFLICT DO NOTHING";

    /// The head of the SQLite multi-row insert of outcomes (the `VALUES` rows follow).
    pub const LITE_LINK_HEAD: &str =
        "INSERT INTO rollout_decision_outcomes (decision_id, feature, success, recorded_at) ";

    /// The tail of the SQLite multi-row insert of outcomes.
    pub const LITE_LINK_TAIL: &str = " ON CONFLICT DO NOTHING";

    /// Bind parameters per outcome row.
    pub const LINK_COLUMN_COUNT: usize = 4;

    /// Outcomes of feature $1 recorded at or after $2 whose decision is logged, per (policy,
    /// configuration version) of the decision.
    pub const BY_VERSION: &str = "SELECT d.policy_sha256, d.config_version, \
        count(*) FILTER (WHERE o.success) AS successes, count(*) FILTER (WHERE NOT o.success) AS failures \
        FROM rollout_decision_outcomes o JOIN rollout_decisions d ON d.id = o.decision_id \
        WHERE o.feature = $1 AND o.recorded_at >= $2 \
        GROUP BY d.policy_sha256, d.config_version ORDER BY d.config_version DESC, d.policy_sha256";
}

/// Most bind parameters SQLite takes in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const SQLITE_MAX_VARIABLES: usize = 32_766;

/// Most rows of one SQLite multi-row insert (a power of two; 128 × 18 columns stays far below
/// [`SQLITE_MAX_VARIABLES`]).
const LITE_CHUNK_ROWS: usize = 128;
const _: () = assert!(
    LITE_CHUNK_ROWS.is_power_of_two()
        && LITE_CHUNK_ROWS * sql::COLUMN_COUNT <= SQLITE_MAX_VARIABLES
        && LITE_CHUNK_ROWS * sql::LINK_COLUMN_COUNT <= SQLITE_MAX_VARIABLES
);

/// `items` in chunks whose lengths are powers of two no greater than `max` (a power of
/// two), largest first: 1,000 rows are 7 × 128 + 64 + 32 + 8.
///
/// Every multi-row statement's text depends on its row count, and sqlx prepares and caches
/// one statement per text: cut at any length, a writer draining batches of every size from
/// 1 to 1,000 prepared a new 18,000-parameter statement for almost every batch (SQLite parses
/// the whole `VALUES` list each time) and kept up to 100 of them in the connection's cache.
/// With power-of-two chunks there are at most `log2(max) + 1` statement shapes, each prepared
/// once per connection.
fn shaped_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(max);
        let n = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Rows per Postgres insert statement (the arrays have no parameter limit; this bounds the
/// size of one message).
const PG_CHUNK_ROWS: usize = 10_000;

/// A value bound to a statement, bound as each database stores it (`pg::bind`, `lite::bind`).
#[derive(Debug, Clone, PartialEq)]
enum Arg<'a> {
    Text(&'a str),
    Time(DateTime<Utc>),
    Id(Uuid),
    Int(i64),
}

/// The smallest UUIDv7 made at Unix millisecond `ms` or later: every id made before `ms`
/// is smaller (ids sort by time, [`crate::service::decision_log::new_decision_id`]).
pub fn first_id_at(ms: i64) -> Uuid {
    Uuid::from_u128(u128::from(u64::try_from(ms).unwrap_or(0)) << 80)
}

/// The Unix millisecond a UUIDv7 was made at.
pub fn id_ms(id: Uuid) -> i64 {
    i64::try_from(id.as_u128() >> 80).unwrap_or(i64::MAX)
}

/// How far before a decision's time its id may have been made, for rows logged before a
/// decision's time was its id's millisecond: the lower id bound of a time filter is this
/// much earlier (the time condition stays exact).
const ID_TIME_MARGIN_MS: i64 = 1_000;

/// How [`select`] reaches the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// By the table's indexes.
    Table,
    /// SQLite, one repository: probe `rollout_decisions_repository_second` at every second
    /// from `from` to `to` (Unix seconds, in that order; descending when `from > to`).
    Seconds { from: i64, to: i64 },
}

/// The statement reading `filter` (with `$n` placeholders) and its arguments in order; `None`
/// when it can match no row (`limit` 0).
///
/// A time filter also bounds the id (ids are UUIDv7: their order is time order), so it is
/// served by the primary key on every backend.
fn select(filter: &DecisionFilter, scan: Scan) -> Option<(String, Vec<Arg<'_>>)> {
    if filter.limit == 0 {
        return None;
    }
    let mut args: Vec<Arg<'_>> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let (with, from) = match scan {
        Scan::Table => (String::new(), "rollout_decisions"),
        Scan::Seconds { from, to } => {
            let (step, stop) = if from > to { ("-", ">") } else { ("+", "<") };
            args.push(Arg::Int(from));
            args.push(Arg::Int(to));
            let with =
                format!("WITH RECURSIVE s(t) AS (SELECT $1 UNION ALL SELECT t {step} 1 FROM s WHERE t {stop} $2) ");
            // `s` first (CROSS JOIN fixes the order): one index probe per second
            (with, "s CROSS JOIN rollout_decisions ON substr(time, 1, 19) = strftime('%Y-%m-%dT%H:%M:%S', s.t, 'unixepoch')")
        }
    };
    // `{}` in a condition is its argument's placeholder
    let mut add = |condition: &str, arg| {
        args.push(arg);
        conditions.push(condition.replace("{}", &format!("${}", args.len())));
    };
    if let Some(feature) = &filter.feature {
        add("feature = {}", Arg::Text(feature));
    }
    if let Some(repository_id) = &filter.repository_id {
        add("repository_id = {}", Arg::Text(repository_id));
    }
    if let Some(since) = filter.since {
        add("time >= {}", Arg::Time(since));
        add("id >= {}", Arg::Id(first_id_at(since.timestamp_millis() - ID_TIME_MARGIN_MS)));
    }
    if let Some(until) = filter.until {
        add("time < {}", Arg::Time(until));
        add("id < {}", Arg::Id(first_id_at(until.timestamp_millis() + 1)));
    }
    if let Some(rule) = &filter.rule {
        add("(rule = {} OR (kind = 'eligibility' AND reason = {}))", Arg::Text(rule));
    }
    if let Some(before) = filter.before {
        add("id < {}", Arg::Id(before));
    }
    if let Some(after) = filter.after {
        add("id > {}", Arg::Id(after));
    }
    let mut sql = format!("{with}SELECT {} FROM {from}", sql::COLUMNS);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let order = if filter.after.is_some() { "ASC" } else { "DESC" };
    args.push(Arg::Int(i64::from(filter.limit)));
    sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", args.len()));
    Some((sql, args))
}

fn corrupt(column: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { column, message: e.to_string() }
}

/// Column `column` of `row`, or [`StoreError::Corrupt`] naming it.
fn column<'r, R, T>(row: &'r R, column: &'static str) -> StoreResult<T>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(column).map_err(|e| corrupt(column, e))
}

/// The position of each column in [`sql::COLUMNS`]: every statement reading decisions selects
/// them in that order, so a row is decoded by position (by name, each of the 18 columns of
/// every row cost a hash lookup: a replay reads hundreds of thousands of rows).
mod at {
    pub const ID: usize = 0;
    pub const TIME: usize = 1;
    pub const FEATURE: usize = 2;
    pub const KIND: usize = 3;
    pub const CONFIG_VERSION: usize = 4;
    pub const OVERRIDES: usize = 5;
    pub const POLICY_SHA256: usize = 6;
    pub const REPOSITORY_ID: usize = 7;
    pub const MASKED: usize = 8;
    pub const CATEGORY: usize = 9;
    pub const JOB: usize = 10;
    pub const PROCESSOR: usize = 11;
    pub const RULE: usize = 12;
    pub const ELIGIBLE: usize = 13;
    pub const REASON: usize = 14;
    pub const BUCKET: usize = 15;
    pub const FALLBACK: usize = 16;
    pub const DURATION_US: usize = 17;
}

/// The name of the column at `index` of [`sql::COLUMNS`], for messages.
fn column_name(index: usize) -> &'static str {
    sql::COLUMNS.split(", ").nth(index).unwrap_or("?")
}

/// Column `index` of [`sql::COLUMNS`] in `row`, or [`StoreError::Corrupt`] naming it.
fn field<'r, R, T>(row: &'r R, index: usize) -> StoreResult<T>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(index).map_err(|e| corrupt(column_name(index), e))
}

/// A decision from `row`: the columns both databases decode alike, and the four whose
/// encoding differs (`id`, `time`, `overrides`, `job`) decoded by the caller.
fn record_from<'r, R>(
    row: &'r R,
    id: Uuid,
    time: DateTime<Utc>,
    overrides: Option<serde_json::Value>,
    job: Option<serde_json::Value>,
) -> StoreResult<DecisionRecord>
where
    R: Row,
    usize: ColumnIndex<R>,
    &'r str: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i16: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let kind: &str = field(row, at::KIND)?;
    let bucket: i16 = field(row, at::BUCKET)?;
    Ok(DecisionRecord {
        id,
        time,
        feature: field(row, at::FEATURE)?,
        kind: DecisionKind::parse(kind).ok_or_else(|| corrupt("kind", format!("`{kind}` is not a decision kind")))?,
        config_version: field(row, at::CONFIG_VERSION)?,
        overrides,
        policy_sha256: field(row, at::POLICY_SHA256)?,
        repository_id: field(row, at::REPOSITORY_ID)?,
        masked: field(row, at::MASKED)?,
        category: field(row, at::CATEGORY)?,
        job,
        processor: field(row, at::PROCESSOR)?,
        rule: field(row, at::RULE)?,
        eligible: field(row, at::ELIGIBLE)?,
        reason: field(row, at::REASON)?,
        bucket: u8::try_from(bucket).map_err(|_| corrupt("bucket", format!("`{bucket}` is out of range")))?,
        fallback: field(row, at::FALLBACK)?,
        duration_us: field(row, at::DURATION_US)?,
    })
}

/// Outcome counts of one (policy, configuration version) from a row of [`sql::BY_VERSION`].
fn version_outcomes_from<'r, R>(row: &'r R) -> StoreResult<DecisionVersionOutcomes>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(DecisionVersionOutcomes {
        policy_sha256: column(row, "policy_sha256")?,
        config_version: column(row, "config_version")?,
        successes: to_u64("successes", column(row, "successes")?)?,
        failures: to_u64("failures", column(row, "failures")?)?,
    })
}

fn insert_context(records: &[DecisionRecord]) -> String {
    match (records.first(), records.last()) {
        (Some(first), Some(last)) if records.len() > 1 => {
            format!("log {} decisions (`{}` … `{}`)", records.len(), first.id, last.id)
        }
        (Some(first), _) => format!("log decision `{}`", first.id),
        _ => "log no decision".to_owned(),
    }
}

fn link_context(outcomes: &[DecisionOutcome]) -> String {
    match outcomes.first() {
        Some(first) if outcomes.len() > 1 => {
            format!(
                "link {} outcomes to their decisions (the first names decision `{}`)",
                outcomes.len(),
                first.decision_id
            )
        }
        Some(first) => format!("link an outcome to decision `{}`", first.decision_id),
        None => "link no outcome".to_owned(),
    }
}

/// The Postgres statements.
mod pg {
    use super::*;
    use sqlx::postgres::{PgArguments, PgPool, PgRow, Postgres};
    use sqlx::query::Query;

    /// A decision from a row of `rollout_decisions`.
    pub(super) fn decode(row: &PgRow) -> StoreResult<DecisionRecord> {
        let (id, time) = (field(row, at::ID)?, field(row, at::TIME)?);
        record_from(row, id, time, field(row, at::OVERRIDES)?, field(row, at::JOB)?)
    }

    /// The statement inserting `chunk`, one array per column.
    fn insert_query(chunk: &[DecisionRecord]) -> Query<'_, Postgres, PgArguments> {
        let n = chunk.len();
        let mut ids = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut features = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut config_versions = Vec::with_capacity(n);
        let mut overrides = Vec::with_capacity(n);
        let mut policies = Vec::with_capacity(n);
        let mut repositories = Vec::with_capacity(n);
        let mut masked = Vec::with_capacity(n);
        let mut categories = Vec::with_capacity(n);
        let mut jobs = Vec::with_capacity(n);
        let mut processors = Vec::with_capacity(n);
        let mut rules = Vec::with_capacity(n);
        let mut eligible = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut buckets = Vec::with_capacity(n);
        let mut fallbacks = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        for r in chunk {
            ids.push(r.id);
            times.push(r.time);
            features.push(r.feature.as_str());
            kinds.push(r.kind.as_str());
            config_versions.push(r.config_version);
            overrides.push(r.overrides.as_ref());
            policies.push(r.policy_sha256.as_str());
            repositories.push(r.repository_id.as_str());
            masked.push(r.masked);
            categories.push(r.category.as_deref());
            jobs.push(r.job.as_ref());
            processors.push(r.processor.as_deref());
            rules.push(r.rule.as_deref());
            eligible.push(r.eligible);
            reasons.push(r.reason.as_str());
            buckets.push(i16::from(r.bucket));
            fallbacks.push(r.fallback.as_deref());
            durations.push(r.duration_us);
        }
        sqlx::query(sql::PG_INSERT)
            .bind(ids)
            .bind(times)
            .bind(features)
            .bind(kinds)
            .bind(config_versions)
            .bind(overrides)
            .bind(policies)
            .bind(repositories)
            .bind(masked)
            .bind(categories)
            .bind(jobs)
            .bind(processors)
            .bind(rules)
            .bind(eligible)
            .bind(reasons)
            .bind(buckets)
            .bind(fallbacks)
            .bind(durations)
    }

    /// Insert `records` as one array per column: one statement per [`PG_CHUNK_ROWS`] rows,
    /// several in one transaction.
    pub(super) async fn insert(pool: &PgPool, records: &[DecisionRecord]) -> StoreResult<u64> {
        let context = || insert_context(records);
        if records.len() <= PG_CHUNK_ROWS {
            let done = insert_query(records).execute(pool).await.map_err(StoreError::db(context()))?;
            return Ok(done.rows_affected());
        }
        let mut tx = pool.begin().await.map_err(StoreError::db(context()))?;
        let mut inserted = 0;
        for chunk in records.chunks(PG_CHUNK_ROWS) {
            let done = insert_query(chunk).execute(&mut *tx).await.map_err(StoreError::db(context()))?;
            inserted += done.rows_affected();
        }
        tx.commit().await.map_err(StoreError::db(context()))?;
        Ok(inserted)
    }

    /// `sql` with `args` bound as Postgres keeps them.
    pub(super) fn bind<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> Query<'q, Postgres, PgArguments> {
        args.into_iter().fold(sqlx::query(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Time(time) => query.bind(time),
            Arg::Id(id) => query.bind(id),
            Arg::Int(n) => query.bind(n),
        })
    }

    /// Link `outcomes` in one statement, one array per column.
    pub(super) async fn link(pool: &PgPool, outcomes: &[DecisionOutcome]) -> StoreResult<()> {
        let ids: Vec<Uuid> = outcomes.iter().map(|o| o.decision_id).collect();
        let features: Vec<&str> = outcomes.iter().map(|o| o.feature.as_str()).collect();
        let successes: Vec<bool> = outcomes.iter().map(|o| o.success).collect();
        let times: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.recorded_at).collect();
        sqlx::query(sql::PG_LINK)
            .bind(ids)
            .bind(features)
            .bind(successes)
            .bind(times)
            .execute(pool)
            .await
            .map_err(StoreError::db(link_context(outcomes)))?;
        Ok(())
    }
}

/// The SQLite statements (UUIDs, times and JSON as text, like the other tables).
mod lite {
    use super::*;
    use crate::store::sqlite::ts;
    use sqlx::query::Query;
    use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqliteRow};
    use sqlx::QueryBuilder;

    fn parse_time(column: &'static str, text: &str) -> StoreResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(column, format!("`{text}` is not a timestamp: {e}")))
    }

    fn json(row: &SqliteRow, index: usize) -> StoreResult<Option<serde_json::Value>> {
        field::<_, Option<&str>>(row, index)?
            .map(|text| serde_json::from_str(text).map_err(|e| corrupt(column_name(index), e)))
            .transpose()
    }

    /// A decision from a row of `rollout_decisions`.
    pub(super) fn decode(row: &SqliteRow) -> StoreResult<DecisionRecord> {
        let id: &str = field(row, at::ID)?;
        let id = Uuid::parse_str(id).map_err(|e| corrupt("id", format!("`{id}`: {e}")))?;
        let time = parse_time("time", field(row, at::TIME)?)?;
        record_from(row, id, time, json(row, at::OVERRIDES)?, json(row, at::JOB)?)
    }

    /// Insert `records` with multi-row `VALUES` in [`shaped_chunks`] of at most
    /// [`LITE_CHUNK_ROWS`] rows, all in one transaction.
    pub(super) async fn insert(pool: &SqlitePool, records: &[DecisionRecord]) -> StoreResult<u64> {
        let context = || insert_context(records);
        let mut tx = pool.begin().await.map_err(StoreError::db(context()))?;
        let mut inserted = 0;
        for chunk in shaped_chunks(records, LITE_CHUNK_ROWS) {
            let mut query: QueryBuilder<'_, Sqlite> = QueryBuilder::new(sql::LITE_INSERT_HEAD);
            query.push_values(chunk, |mut row, r| {
                row.push_bind(r.id.to_string())
                    .push_bind(ts(r.time))
                    .push_bind(r.feature.as_str())
                    .push_bind(r.kind.as_str())
                    .push_bind(r.config_version)
                    .push_bind(r.overrides.as_ref().map(|v| v.to_string()))
                    .push_bind(r.policy_sha256.as_str())
                    .push_bind(r.repository_id.as_str())
                    .push_bind(r.masked)
                    .push_bind(r.category.as_deref())
                    .push_bind(r.job.as_ref().map(|v| v.to_string()))
                    .push_bind(r.processor.as_deref())
                    .push_bind(r.rule.as_deref())
                    .push_bind(r.eligible)
                    .push_bind(r.reason.as_str())
                    .push_bind(i16::from(r.bucket))
                    .push_bind(r.fallback.as_deref())
                    .push_bind(r.duration_us);
            });
            query.push(sql::LITE_INSERT_TAIL);
            let done = query.build().execute(&mut *tx).await.map_err(StoreError::db(context()))?;
            inserted += done.rows_affected();
        }
        tx.commit().await.map_err(StoreError::db(context()))?;
        Ok(inserted)
    }

    /// Seconds probed per statement by [`by_repository`].
    const SECONDS_PER_STATEMENT: i64 = 86_400;

    /// The decisions of `filter.repository_id` (set), in `filter`'s order.
    ///
    /// SQLite's index is keyed by the second a decision was made, then the repository
    /// (migration `20251206010000`), so an append touches only the newest seconds of the
    /// index. Reading probes every second from the newest to the oldest of the window (the
    /// log's own extent, narrowed by the filter), a day of seconds per statement, and stops
    /// as soon as `filter.limit` rows are found: about 0.1 s per day of log searched in vain.
    /// The window comes from the times logged (not the ids), so a row whatever its id bounds
    /// the search to the log's real extent.
    pub(super) async fn by_repository(pool: &SqlitePool, filter: &DecisionFilter) -> StoreResult<Vec<DecisionRecord>> {
        let context =
            || format!("list the decisions of repository `{}`", filter.repository_id.as_deref().unwrap_or(""));
        // the first and last second logged, from the index itself (two index seeks)
        let extent: (Option<i64>, Option<i64>) =
            sqlx::query_as(sql::LITE_SECONDS_LOGGED).fetch_one(pool).await.map_err(StoreError::db(context()))?;
        let (Some(mut lo), Some(mut hi)) = extent else { return Ok(Vec::new()) };
        if let Some(since) = filter.since {
            lo = lo.max(since.timestamp());
        }
        if let Some(until) = filter.until {
            hi = hi.min(until.timestamp());
        }
        if let Some(before) = filter.before {
            hi = hi.min(id_ms(before).div_euclid(1000) + 1);
        }
        if let Some(after) = filter.after {
            lo = lo.max(id_ms(after).div_euclid(1000));
        }
        let ascending = filter.after.is_some();
        let mut out: Vec<DecisionRecord> = Vec::new();
        let mut next = if ascending { lo } else { hi };
        while lo <= hi && (lo..=hi).contains(&next) {
            let remaining = filter.limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
            let (from, to) = if ascending {
                (next, next.saturating_add(SECONDS_PER_STATEMENT - 1).min(hi))
            } else {
                (next, next.saturating_sub(SECONDS_PER_STATEMENT - 1).max(lo))
            };
            let window = DecisionFilter { limit: remaining, ..filter.clone() };
            let Some((sql, args)) = select(&window, Scan::Seconds { from, to }) else { break };
            let sql = sql::lite(&sql);
            let rows = bind(&sql, args).fetch_all(pool).await.map_err(StoreError::db(context()))?;
            for row in &rows {
                out.push(decode(row)?);
            }
            if out.len() >= filter.limit as usize {
                break;
            }
            next = if ascending { to + 1 } else { to - 1 };
        }
        Ok(out)
    }

    /// `sql` (with SQLite's placeholders) with `args` bound as SQLite keeps them.
    pub(super) fn bind<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        args.into_iter().fold(sqlx::query(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Time(time) => query.bind(ts(time)),
            Arg::Id(id) => query.bind(id.to_string()),
            Arg::Int(n) => query.bind(n),
        })
    }

    /// Link `outcomes` with multi-row `VALUES`.
    pub(super) async fn link(pool: &SqlitePool, outcomes: &[DecisionOutcome]) -> StoreResult<()> {
        let context = || link_context(outcomes);
        let mut tx = pool.begin().await.map_err(StoreError::db(context()))?;
        for chunk in shaped_chunks(outcomes, LITE_CHUNK_ROWS) {
            let mut query: QueryBuilder<'_, Sqlite> = QueryBuilder::new(sql::LITE_LINK_HEAD);
            query.push_values(chunk, |mut row, o| {
                row.push_bind(o.decision_id.to_string())
                    .push_bind(o.feature.as_str())
                    .push_bind(o.success)
                    .push_bind(ts(o.recorded_at));
            });
            query.push(sql::LITE_LINK_TAIL);
            query.build().execute(&mut *tx).await.map_err(StoreError::db(context()))?;
        }
        tx.commit().await.map_err(StoreError::db(context()))
    }
}

impl Store {
    /// Insert a batch of decisions in one statement (or one transaction); an id already
    /// logged is ignored. How many rows were new.
    ///
    /// Postgres binds one array per column (`INSERT … SELECT * FROM UNNEST(…)`), one statement
    /// per 10,000 rows; SQLite sends multi-row `VALUES`, at most 128 rows per statement in
    /// power-of-two chunks (a few statement shapes, each prepared once). Several statements
    /// run in one transaction. An empty
    /// batch makes no round trip.
    pub async fn insert_decisions(&self, records: &[DecisionRecord]) -> StoreResult<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Postgres(pool) => pg::insert(pool, records).await,
            Store::Sqlite(pool) => lite::insert(pool, records).await,
        }
    }

    /// The decision `id`, if logged.
    pub async fn decision(&self, id: Uuid) -> StoreResult<Option<DecisionRecord>> {
        let rows = self.read(sql::ONE, vec![Arg::Id(id)], format!("read decision `{id}`"), pg::decode, lite::decode);
        Ok(rows.await?.into_iter().next())
    }

    /// Decisions matching `filter`: newest first, or oldest first when `filter.after` is set.
    ///
    /// `filter.rule` matches the routing rule, or the eligibility reason of eligibility
    /// decisions. At most `filter.limit` rows (none when it is 0); the caller caps the limit.
    ///
    /// On SQLite a repository's decisions are found by probing each second of the window
    /// ([`lite::by_repository`]); elsewhere by the indexes.
    pub async fn decisions(&self, filter: &DecisionFilter) -> StoreResult<Vec<DecisionRecord>> {
        if let (Store::Sqlite(pool), Some(_)) = (self, &filter.repository_id) {
            return lite::by_repository(pool, filter).await;
        }
        let Some((sql, args)) = select(filter, Scan::Table) else { return Ok(Vec::new()) };
        self.read(&sql, args, "list decisions".to_owned(), pg::decode, lite::decode).await
    }

    /// Delete decisions decided before `before`, then the oldest beyond the newest
    /// `keep_rows`; how many were deleted. Outcome links recorded before `before` go too
    /// (not counted): a link outlives its decision by at most the retention.
    pub async fn prune_decisions(&self, before: DateTime<Utc>, keep_rows: u64) -> StoreResult<u64> {
        let first_kept = Arg::Id(first_id_at(before.timestamp_millis()));
        let by_age = self.write(sql::PRUNE_AGE, vec![first_kept], format!("prune decisions made before `{before}`"));
        let by_age = by_age.await?;
        self.write(
            sql::PRUNE_LINKS,
            vec![Arg::Time(before)],
            format!("prune outcome links recorded before `{before}`"),
        )
        .await?;
        let keep = Arg::Int(i64::try_from(keep_rows).unwrap_or(i64::MAX));
        let by_rows =
            self.write(sql::PRUNE_ROWS, vec![keep], format!("prune decisions beyond the newest `{keep_rows}`")).await?;
        Ok(by_age + by_rows)
    }

    /// Record outcomes that name their decision (a repeated (decision, recorded_at, success)
    /// is kept once). The decision need not be logged (yet): the join happens when reading.
    pub async fn link_outcomes(&self, outcomes: &[DecisionOutcome]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(pool) => pg::link(pool, outcomes).await,
            Store::Sqlite(pool) => lite::link(pool, outcomes).await,
        }
    }

    /// Outcomes of `feature` recorded since `since` whose decision is logged, per (policy,
    /// configuration version) that made the decision, newest configuration first.
    pub async fn outcomes_by_decision_version(
        &self,
        feature: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionVersionOutcomes>> {
        let context = format!("count the outcomes of `{feature}` by deciding version");
        let args = vec![Arg::Text(feature), Arg::Time(since)];
        let pg_decode = |row: &sqlx::postgres::PgRow| version_outcomes_from(row);
        let lite_decode = |row: &sqlx::sqlite::SqliteRow| version_outcomes_from(row);
        self.read(sql::BY_VERSION, args, context, pg_decode, lite_decode).await
    }

    /// The rows of `sql` (`$n` placeholders) with `args`, each decoded by the backend's
    /// decoder; `context` names what was being read.
    async fn read<T>(
        &self,
        sql: &str,
        args: Vec<Arg<'_>>,
        context: String,
        pg_decode: fn(&sqlx::postgres::PgRow) -> StoreResult<T>,
        lite_decode: fn(&sqlx::sqlite::SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        match self {
            Store::Postgres(pool) => {
                let rows = pg::bind(sql, args).fetch_all(pool).await.map_err(StoreError::db(context))?;
                rows.iter().map(pg_decode).collect()
            }
            Store::Sqlite(pool) => {
                let sql = sql::lite(sql);
                let rows = lite::bind(&sql, args).fetch_all(pool).await.map_err(StoreError::db(context))?;
                rows.iter().map(lite_decode).collect()
            }
        }
    }

    /// Run `sql` (`$n` placeholders) with `args`; how many rows it changed.
    async fn write(&self, sql: &str, args: Vec<Arg<'_>>, context: String) -> StoreResult<u64> {
        let done = match self {
            Store::Postgres(pool) => pg::bind(sql, args).execute(pool).await.map(|d| d.rows_affected()),
            Store::Sqlite(pool) => lite::bind(&sql::lite(sql), args).execute(pool).await.map(|d| d.rows_affected()),
        };
        done.map_err(StoreError::db(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> DecisionFilter {
        DecisionFilter { limit: 10, ..DecisionFilter::default() }
    }

    #[test]
    fn the_filter_numbers_its_placeholders_in_the_order_of_its_arguments() {
        let plain = filter();
        let (sql, args) = select(&plain, Scan::Table).expect("a statement");
        assert!(sql.ends_with("FROM rollout_decisions ORDER BY id DESC LIMIT $1"), "{sql}");
        assert_eq!(args, vec![Arg::Int(10)]);

        let id = Uuid::now_v7();
        let f = DecisionFilter { feature: Some("f".into()), rule: Some("r".into()), after: Some(id), ..filter() };
        let (sql, args) = select(&f, Scan::Table).expect("a statement");
        assert!(
            sql.ends_with(
                "WHERE feature = $1 AND (rule = $2 OR (kind = 'eligibility' AND reason = $2)) AND id > $3 \
                 ORDER BY id ASC LIMIT $4"
            ),
            "{sql}"
        );
        assert_eq!(args, vec![Arg::Text("f"), Arg::Text("r"), Arg::Id(id), Arg::Int(10)]);
        assert!(!sql::lite(&sql).contains('$'));
        assert_eq!(select(&DecisionFilter { limit: 0, ..f }, Scan::Table), None, "limit 0 reads nothing");
    }

    #[test]
    fn time_filters_bound_the_id_and_a_repository_on_sqlite_probes_seconds() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T18:00:00.250Z").map(|t| t.with_timezone(&Utc));
        let at = at.expect("a time");
        let ms = at.timestamp_millis();
        // the bound sorts below every id of its millisecond and above every earlier one
        let id = crate::service::decision_log::new_decision_id();
        assert_eq!(id_ms(first_id_at(id_ms(id))), id_ms(id));
        assert!(first_id_at(id_ms(id)) <= id && id < first_id_at(id_ms(id) + 1));
        assert!(first_id_at(ms).to_string() < first_id_at(ms + 1).to_string(), "text order is id order");

        let f = DecisionFilter { since: Some(at), until: Some(at), ..filter() };
        let (sql, args) = select(&f, Scan::Table).expect("a statement");
        assert!(
            sql.ends_with("WHERE time >= $1 AND id >= $2 AND time < $3 AND id < $4 ORDER BY id DESC LIMIT $5"),
            "{sql}"
        );
        assert_eq!(
            args,
            vec![
                Arg::Time(at),
                Arg::Id(first_id_at(ms - ID_TIME_MARGIN_MS)),
                Arg::Time(at),
                Arg::Id(first_id_at(ms + 1)),
                Arg::Int(10)
            ]
        );

        let f = DecisionFilter { repository_id: Some("r".into()), ..filter() };
        let (sql, args) = select(&f, Scan::Seconds { from: 20, to: 10 }).expect("a statement");
        assert!(
            sql.starts_with("WITH RECURSIVE s(t) AS (SELECT $1 UNION ALL SELECT t - 1 FROM s WHERE t > $2) "),
            "{sql}"
        );
        assert!(sql.ends_with("WHERE repository_id = $3 ORDER BY id DESC LIMIT $4"), "{sql}");
        assert_eq!(args, vec![Arg::Int(20), Arg::Int(10), Arg::Text("r"), Arg::Int(10)]);
        let (sql, _) = select(&f, Scan::Seconds { from: 10, to: 20 }).expect("a statement");
        assert!(sql.contains("SELECT t + 1 FROM s WHERE t < $2"), "{sql}");
    }

    #[test]
    fn the_column_lists_agree() {
        assert_eq!(sql::COLUMNS.split(", ").count(), sql::COLUMN_COUNT);
        let positions = [
            (at::ID, "id"),
            (at::TIME, "time"),
            (at::FEATURE, "feature"),
            (at::KIND, "kind"),
            (at::CONFIG_VERSION, "config_version"),
            (at::OVERRIDES, "overrides"),
            (at::POLICY_SHA256, "policy_sha256"),
            (at::REPOSITORY_ID, "repository_id"),
            (at::MASKED, "masked"),
            (at::CATEGORY, "category"),
            (at::JOB, "job"),
            (at::PROCESSOR, "processor"),
            (at::RULE, "rule"),
            (at::ELIGIBLE, "eligible"),
            (at::REASON, "reason"),
            (at::BUCKET, "bucket"),
            (at::FALLBACK, "fallback"),
            (at::DURATION_US, "duration_us"),
        ];
        for (index, name) in positions {
            assert_eq!(column_name(index), name, "position {index}");
        }
        let lengths = |n: usize| shaped_chunks(&vec![0u8; n], 128).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(lengths(1000), vec![128, 128, 128, 128, 128, 128, 128, 64, 32, 8]);
        assert_eq!(lengths(1), vec![1]);
        assert!(lengths(0).is_empty());
        let shapes: std::collections::BTreeSet<usize> = (1..=2000).flat_map(lengths).collect();
        assert_eq!(shapes.into_iter().collect::<Vec<_>>(), vec![1, 2, 4, 8, 16, 32, 64, 128]);
        assert!(sql::ONE.contains(sql::COLUMNS));
        assert!(sql::PG_INSERT.contains(&format!("${}::", sql::COLUMN_COUNT)));
        assert!(!sql::PG_INSERT.contains(&format!("${}", sql::COLUMN_COUNT + 1)));
    }
}
