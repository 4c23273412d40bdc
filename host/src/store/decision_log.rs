//! The decision log: decisions served over HTTP, as the policy received and answered them,
//! so any one can be found, explained and replayed (issue 14).
//!
//! The service's background writer ([`crate::service::decision_log`]) logs decisions in
//! batches, never on a decision's path, as *segments* (`rollout_decision_segments`): one row
//! per feature and per 1,000 decisions of a batch, holding them as a JSON array (`Packed`)
//! with their id range, repositories and rules, so a read skips what cannot match and
//! decodes the rest. A row per decision cost more than the whole logging budget (issue 14:
//! at most 15 % of throughput); see migration `20251207010000_decision_log_segments`.
//! Segments are immutable (the service role may insert and delete, never update). Decision
//! ids are UUIDv7, so their order is their time order and a page of newest-first results
//! continues after the last id it showed ([`DecisionFilter::before`]).
//!
//! Outcomes that name the decision they followed (`POST …/outcomes` with `decision_id`) are
//! kept in `rollout_decision_outcomes` ([`Store::link_outcomes`]); statistics join them with
//! the log to split outcomes by the policy and configuration that decided
//! ([`Store::outcomes_by_decision_version`]).

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

    /// The rule a decision of this kind is found by (the `rule` filter, a segment's rules):
    /// the routing rule of a route decision, the eligibility reason of an eligibility one (a
    /// route decision without a rule has none).
    pub fn found_by<'a>(self, rule: Option<&'a str>, reason: &'a str) -> Option<&'a str> {
        match self {
            DecisionKind::Route => rule,
            DecisionKind::Eligibility => Some(reason),
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

    /// Insert one segment: feature $1, first id $2, last id $3, rows $4, repositories $5,
    /// rules $6, body $7, policy sha256 $8.
    pub const INSERT: &str = "INSERT INTO rollout_decision_segments \
        (feature, first_id, last_id, rows, repositories, rules, body, policy_sha256) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

    /// Arguments per segment of [`INSERT`].
    pub const INSERT_ARGS: usize = 8;

    /// [`INSERT`] of `n` segments in one statement, the arguments of each in turn.
    pub fn insert_many(n: usize) -> String {
        let mut sql = INSERT.trim_end_matches("($1, $2, $3, $4, $5, $6, $7, $8)").to_owned();
        for i in 0..n {
            sql.push_str(if i > 0 { ", (" } else { "(" });
            let placeholders: Vec<String> = (1..=INSERT_ARGS).map(|k| format!("${}", i * INSERT_ARGS + k)).collect();
            sql.push_str(&placeholders.join(", "));
            sql.push(')');
        }
        sql
    }

    /// What a read takes of a segment.
    pub const SEGMENT: &str =
        "SELECT seq, feature, first_id, last_id, body, policy_sha256 FROM rollout_decision_segments";

    /// The segments that may hold an id from $1 to $2 (inclusive). Ordered by last id, so
    /// SQLite seeks its index from $1 up (by `first_id` it read every older segment: new
    /// decisions, the common case, have no segment at or after them).
    pub const OVERLAPPING: &str =
        "SELECT seq, feature, first_id, last_id, body, policy_sha256 FROM rollout_decision_segments \
        WHERE last_id >= $1 AND first_id <= $2 ORDER BY last_id";

    /// [`OVERLAPPING`] without the bodies (an empty one each).
    pub const OVERLAPPING_HEADS: &str =
        "SELECT seq, feature, first_id, last_id, '' AS body, policy_sha256 FROM rollout_decision_segments \
        WHERE last_id >= $1 AND first_id <= $2 ORDER BY last_id";

    /// Segment $1.
    pub const ONE: &str =
        "SELECT seq, feature, first_id, last_id, body, policy_sha256 FROM rollout_decision_segments WHERE seq = $1";

    /// Delete the segments whose decisions were all made before id $1; the rows each held.
    pub const PRUNE_BEFORE: &str = "DELETE FROM rollout_decision_segments WHERE last_id < $1 RETURNING rows";

    /// Delete the segments whose decisions all have an id up to $1; the rows each held.
    pub const PRUNE_THROUGH: &str = "DELETE FROM rollout_decision_segments WHERE last_id <= $1 RETURNING rows";

    /// Delete segment $1 (to write it again, trimmed).
    pub const DELETE_ONE: &str = "DELETE FROM rollout_decision_segments WHERE seq = $1";

    /// How many decisions are logged.
    pub const ROWS: &str = "SELECT CAST(coalesce(sum(rows), 0) AS BIGINT) FROM rollout_decision_segments";

    /// Outcome links recorded before $1.
    pub const PRUNE_LINKS: &str = "DELETE FROM rollout_decision_outcomes WHERE recorded_at < $1";

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

    /// The outcomes of feature $1 recorded at or after $2: the decision each names and
    /// whether it succeeded.
    pub const LINKED: &str = "SELECT decision_id, success FROM rollout_decision_outcomes \
        WHERE feature = $1 AND recorded_at >= $2";
}

/// Most bind parameters SQLite takes in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const SQLITE_MAX_VARIABLES: usize = 32_766;

/// Most rows of one SQLite multi-row insert of outcome links (a power of two).
const LITE_CHUNK_ROWS: usize = 128;
const _: () =
    assert!(LITE_CHUNK_ROWS.is_power_of_two() && LITE_CHUNK_ROWS * sql::LINK_COLUMN_COUNT <= SQLITE_MAX_VARIABLES);

/// `items` in chunks whose lengths are powers of two no greater than `max` (a power of
/// two), largest first: 1,000 rows are 7 × 128 + 64 + 32 + 8.
///
/// Every multi-row statement's text depends on its row count, and sqlx prepares and caches
/// one statement per text: with power-of-two chunks there are at most `log2(max) + 1`
/// statement shapes, each prepared once per connection.
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

/// A value bound to a statement, bound as each database stores it (`pg::bind`, `lite::bind`).
#[derive(Debug, Clone, PartialEq)]
enum Arg<'a> {
    Text(&'a str),
    Owned(String),
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
/// much earlier (the time condition itself is checked on every decision).
const ID_TIME_MARGIN_MS: i64 = 1_000;

/// The largest id.
const MAX_ID: Uuid = Uuid::max();

/// A segment: the decisions of one feature from one batch of the writer, in id order, as
/// a JSON array of [`Packed`] decisions (migration `20251207010000_decision_log_segments`).
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    /// Its row.
    seq: i64,
    /// The feature of all its decisions.
    feature: String,
    /// Its smallest decision id.
    first_id: Uuid,
    /// Its largest decision id.
    last_id: Uuid,
    /// Its decisions (a JSON array of [`Packed`]).
    body: String,
    /// The policy sha256 of all its decisions; `None` in a segment written before
    /// migration `20251208010000_decision_log_segment_policy` (each decision names its own).
    policy_sha256: Option<String>,
}

impl Segment {
    /// The decisions of the segment, in id order.
    fn decisions(&self) -> StoreResult<Vec<DecisionRecord>> {
        let packed: Vec<Packed> =
            serde_json::from_str(&self.body).map_err(|e| corrupt("body", format!("segment {}: {e}", self.seq)))?;
        let mut records = packed
            .into_iter()
            .map(|p| {
                p.unpack(&self.feature, self.policy_sha256.as_deref())
                    .map_err(|e| corrupt("body", format!("segment {}: {e}", self.seq)))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        records.sort_by_key(|r| r.id);
        Ok(records)
    }

    /// The ids of its decisions, in the order stored, read without decoding the rest of
    /// each decision (the writer's check for decisions already logged: one pass over the
    /// body, whatever the number of ids checked against it).
    fn ids(&self) -> StoreResult<Vec<Uuid>> {
        let firsts: Vec<FirstElement> =
            serde_json::from_str(&self.body).map_err(|e| corrupt("body", format!("segment {}: {e}", self.seq)))?;
        Ok(firsts.into_iter().map(|f| f.0).collect())
    }
}

/// The id of a decision as a segment stores it ([`Packed`]): its first element, the
/// others skipped (parsed, not built).
struct FirstElement(Uuid);

impl<'de> Deserialize<'de> for FirstElement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FirstElement;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decision: an array whose first element is its id")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<FirstElement, A::Error> {
                let id = seq.next_element::<Uuid>()?.ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FirstElement(id))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// A decision as a segment stores it: a JSON array of its fields in the order of
/// [`DecisionRecord`]'s, without the feature (the segment's) and with the time in Unix
/// microseconds. Positional and without the field names, a decision takes about a third
/// less room than its export line, and the writer copies, checksums and checkpoints every
/// byte of it (the view `rollout_decisions` names the positions).
#[derive(Deserialize)]
struct Packed(
    Uuid,
    i64,
    DecisionKind,
    i64,
    Option<serde_json::Value>,
    Option<String>,
    String,
    bool,
    Option<String>,
    Option<serde_json::Value>,
    Option<String>,
    Option<String>,
    bool,
    String,
    u8,
    Option<String>,
    i64,
);

/// A decision's fields as a segment stores them ([`PackedDecision::new`] writes them as the
/// JSON array `Packed` reads back), borrowed from wherever they are: a [`DecisionRecord`]
/// ([`PackedDecision::of`]) or, on a decision's path, the decision itself (no record is
/// built: `J` is the job in any form that serialises to the same JSON).
#[derive(Debug, Clone, Copy)]
pub struct DecisionFields<'a, J> {
    /// The decision id.
    pub id: Uuid,
    /// When it was decided, in Unix microseconds.
    pub time_us: i64,
    /// Which decision function answered.
    pub kind: DecisionKind,
    /// [`DecisionRecord::config_version`].
    pub config_version: i64,
    /// [`DecisionRecord::overrides`].
    pub overrides: Option<&'a serde_json::Value>,
    /// [`DecisionRecord::repository_id`].
    pub repository_id: &'a str,
    /// [`DecisionRecord::masked`].
    pub masked: bool,
    /// [`DecisionRecord::category`].
    pub category: Option<&'a str>,
    /// [`DecisionRecord::job`], in a form that serialises to its JSON.
    pub job: Option<J>,
    /// [`DecisionRecord::processor`].
    pub processor: Option<&'a str>,
    /// [`DecisionRecord::rule`].
    pub rule: Option<&'a str>,
    /// [`DecisionRecord::eligible`].
    pub eligible: bool,
    /// [`DecisionRecord::reason`].
    pub reason: &'a str,
    /// [`DecisionRecord::bucket`].
    pub bucket: u8,
    /// [`DecisionRecord::fallback`].
    pub fallback: Option<&'a str>,
    /// [`DecisionRecord::duration_us`].
    pub duration_us: i64,
}

impl<J: Serialize> Serialize for DecisionFields<'_, J> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = serializer.serialize_tuple(17)?;
        t.serialize_element(&self.id)?;
        t.serialize_element(&self.time_us)?;
        t.serialize_element(&self.kind)?;
        t.serialize_element(&self.config_version)?;
        t.serialize_element(&self.overrides)?;
        // the policy sha256: the segment's (`PackedDecision::policy_sha256`), named once
        t.serialize_element(&())?;
        t.serialize_element(self.repository_id)?;
        t.serialize_element(&self.masked)?;
        t.serialize_element(&self.category)?;
        t.serialize_element(&self.job)?;
        t.serialize_element(&self.processor)?;
        t.serialize_element(&self.rule)?;
        t.serialize_element(&self.eligible)?;
        t.serialize_element(self.reason)?;
        t.serialize_element(&self.bucket)?;
        t.serialize_element(&self.fallback)?;
        t.serialize_element(&self.duration_us)?;
        t.end()
    }
}

/// The policy sha256 of queued decisions, held once by whatever names it (the serving
/// policy version on a decision's path, a `String` for a decision read back) and shared by
/// every entry of it: no copy per decision.
pub trait PolicySha: std::fmt::Debug + Send + Sync {
    /// The lowercase hex sha256 (or `native`, or `none` when no policy was loaded).
    fn sha256(&self) -> &str;
}

impl PolicySha for String {
    fn sha256(&self) -> &str {
        self
    }
}

/// A decision encoded for the log, as the writer's queue holds it: its JSON as a segment
/// stores it, and what the writer needs to place it (its id, feature, policy, repository
/// and rule). One allocation for the JSON instead of a record's dozen strings and JSON
/// nodes, each allocated on the decision's path and freed by the writer.
#[derive(Debug, Clone)]
pub struct PackedDecision {
    /// The decision id.
    pub id: Uuid,
    /// The feature (shared by every entry of it).
    pub feature: std::sync::Arc<str>,
    /// The policy sha256 (shared by every entry of its version): the segment's, so the
    /// writer puts decisions of different policies in different segments.
    pub policy_sha256: std::sync::Arc<dyn PolicySha>,
    /// The repository id as logged.
    pub repository_id: String,
    /// The rule the decision is found by: the routing rule of a route decision, the
    /// eligibility reason of an eligibility one.
    pub rule: Option<std::borrow::Cow<'static, str>>,
    /// The JSON array of its fields (`DecisionFields`).
    pub json: String,
}

impl PartialEq for PackedDecision {
    fn eq(&self, other: &Self) -> bool {
        (self.id, &self.feature, self.policy_sha256.sha256(), &self.repository_id, &self.rule, &self.json)
            == (other.id, &other.feature, other.policy_sha256.sha256(), &other.repository_id, &other.rule, &other.json)
    }
}

impl Eq for PackedDecision {}

impl<J: Serialize> DecisionFields<'_, J> {
    /// The JSON array a segment stores for this decision ([`PackedDecision::json`]).
    pub fn encode(&self) -> StoreResult<String> {
        serde_json::to_string(self).map_err(|e| corrupt("body", format!("decision `{}`: {e}", self.id)))
    }
}

impl PackedDecision {
    /// `fields` of a decision of `feature` made by policy `policy_sha256`, encoded; `rule`
    /// as [`PackedDecision::rule`]. (On a decision's path the service builds the entry
    /// itself from [`DecisionFields::encode`], moving the repository id it owns rather than
    /// copying it, and sharing the policy version's sha256.)
    pub fn new<J: Serialize>(
        feature: &str,
        policy_sha256: &str,
        rule: Option<std::borrow::Cow<'static, str>>,
        fields: &DecisionFields<'_, J>,
    ) -> StoreResult<PackedDecision> {
        Ok(PackedDecision {
            id: fields.id,
            feature: feature.into(),
            policy_sha256: std::sync::Arc::new(policy_sha256.to_owned()),
            repository_id: fields.repository_id.to_owned(),
            rule,
            json: fields.encode()?,
        })
    }

    /// `record`, encoded.
    pub fn of(r: &DecisionRecord) -> StoreResult<PackedDecision> {
        let fields = DecisionFields {
            id: r.id,
            time_us: r.time.timestamp_micros(),
            kind: r.kind,
            config_version: r.config_version,
            overrides: r.overrides.as_ref(),
            repository_id: &r.repository_id,
            masked: r.masked,
            category: r.category.as_deref(),
            job: r.job.as_ref(),
            processor: r.processor.as_deref(),
            rule: r.rule.as_deref(),
            eligible: r.eligible,
            reason: &r.reason,
            bucket: r.bucket,
            fallback: r.fallback.as_deref(),
            duration_us: r.duration_us,
        };
        PackedDecision::new(&r.feature, &r.policy_sha256, rule_of(r).map(|rule| rule.to_owned().into()), &fields)
    }
}

impl Packed {
    /// The decision, of `feature`, in a segment of policy `segment_sha256` (a decision
    /// names its own only in a segment that names none).
    fn unpack(self, feature: &str, segment_sha256: Option<&str>) -> Result<DecisionRecord, String> {
        let Packed(
            id,
            micros,
            kind,
            config_version,
            overrides,
            policy_sha256,
            repository_id,
            masked,
            category,
            job,
            processor,
            rule,
            eligible,
            reason,
            bucket,
            fallback,
            duration_us,
        ) = self;
        let time = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| format!("decision `{id}`: `{micros}` µs is out of range"))?;
        let policy_sha256 = match (policy_sha256, segment_sha256) {
            (Some(own), _) => own,
            (None, Some(segment)) => segment.to_owned(),
            (None, None) => return Err(format!("decision `{id}` names no policy sha256, nor does its segment")),
        };
        Ok(DecisionRecord {
            id,
            time,
            feature: feature.to_owned(),
            kind,
            config_version,
            overrides,
            policy_sha256,
            repository_id,
            masked,
            category,
            job,
            processor,
            rule,
            eligible,
            reason,
            bucket,
            fallback,
            duration_us,
        })
    }
}

/// A segment about to be written: the columns of `rollout_decision_segments` but `seq`.
#[derive(Debug, Clone, PartialEq)]
struct NewSegment {
    feature: String,
    first_id: Uuid,
    last_id: Uuid,
    rows: i64,
    repositories: String,
    rules: String,
    body: String,
    policy_sha256: String,
}

/// The rule `r` is found by ([`DecisionKind::found_by`]).
fn rule_of(r: &DecisionRecord) -> Option<&str> {
    r.kind.found_by(r.rule.as_deref(), &r.reason)
}

/// `values`, distinct, each followed by a newline after a leading one (`\na\nb\n`: a
/// segment holds `x` when the text contains `\nx\n`).
fn newline_set<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = String::from("\n");
    for value in values {
        if seen.insert(value) {
            out.push_str(value);
            out.push('\n');
        }
    }
    out
}

/// The text [`newline_set`] holds when it holds `value`.
fn newline_member(value: &str) -> String {
    format!("\n{value}\n")
}

/// The segment of `records` (one feature and policy, in id order, at least one).
fn encode(records: &[&PackedDecision]) -> StoreResult<NewSegment> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(corrupt("body", "a segment of no decision"));
    };
    let mut body = String::with_capacity(records.iter().map(|r| r.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&r.json);
    }
    body.push(']');
    Ok(NewSegment {
        feature: first.feature.to_string(),
        first_id: first.id,
        last_id: last.id,
        rows: i64::try_from(records.len()).unwrap_or(i64::MAX),
        repositories: newline_set(records.iter().map(|r| r.repository_id.as_str())),
        rules: newline_set(records.iter().filter_map(|r| r.rule.as_deref())),
        body,
        policy_sha256: first.policy_sha256.sha256().to_owned(),
    })
}

/// The statement writing `segment`.
fn insert_statement(segment: NewSegment) -> (&'static str, Vec<Arg<'static>>) {
    (sql::INSERT, insert_args(segment))
}

/// The arguments of [`sql::INSERT`] for `segment`.
fn insert_args(segment: NewSegment) -> Vec<Arg<'static>> {
    vec![
        Arg::Owned(segment.feature),
        Arg::Id(segment.first_id),
        Arg::Id(segment.last_id),
        Arg::Int(segment.rows),
        Arg::Owned(segment.repositories),
        Arg::Owned(segment.rules),
        Arg::Owned(segment.body),
        Arg::Owned(segment.policy_sha256),
    ]
}

/// Most segments one statement of [`Store::insert_packed`] writes ([`sql::INSERT_ARGS`]
/// arguments each: far under SQLite's 32,766 and Postgres's 65,535).
const SEGMENTS_PER_STATEMENT: usize = 64;

/// Most decisions in one segment: a read decodes whole segments, so a page of the newest
/// decisions decodes at most this many per segment it touches (about 2 ms in release).
const SEGMENT_ROWS: usize = 1_000;

/// The segments of `records`: per feature and policy, in id order, [`SEGMENT_ROWS`] at
/// most each.
fn segments_of(records: &[&PackedDecision]) -> StoreResult<Vec<NewSegment>> {
    let mut groups: std::collections::BTreeMap<(&str, &str), Vec<&PackedDecision>> = std::collections::BTreeMap::new();
    for r in records {
        groups.entry((&r.feature, r.policy_sha256.sha256())).or_default().push(r);
    }
    let mut segments = Vec::new();
    for mut group in groups.into_values() {
        group.sort_by_key(|r| r.id);
        for chunk in group.chunks(SEGMENT_ROWS) {
            segments.push(encode(chunk)?);
        }
    }
    Ok(segments)
}

/// Whether `r` is one of the decisions `filter` asks for (every condition but the limit).
fn matches(filter: &DecisionFilter, r: &DecisionRecord) -> bool {
    filter.feature.as_ref().is_none_or(|f| *f == r.feature)
        && filter.repository_id.as_ref().is_none_or(|id| *id == r.repository_id)
        && filter.since.is_none_or(|since| r.time >= since)
        && filter.until.is_none_or(|until| r.time < until)
        && filter.rule.as_deref().is_none_or(|rule| r.rule.as_deref() == Some(rule) || rule_of(r) == Some(rule))
        && filter.before.is_none_or(|before| r.id < before)
        && filter.after.is_none_or(|after| r.id > after)
}

/// The ids `filter` can match, inclusive: from its cursor and its time window (ids are
/// UUIDv7, their order is time order).
fn id_range(filter: &DecisionFilter) -> (Uuid, Uuid) {
    let mut lo = filter.after.unwrap_or(Uuid::nil());
    let mut hi = filter.before.unwrap_or(MAX_ID);
    if let Some(since) = filter.since {
        lo = lo.max(first_id_at(since.timestamp_millis() - ID_TIME_MARGIN_MS));
    }
    if let Some(until) = filter.until {
        hi = hi.min(first_id_at(until.timestamp_millis() + 1));
    }
    (lo, hi)
}

/// The next segments `filter` may find decisions in (`$n` placeholders, `postgres` choosing
/// the dialect), in the order it reads them (newest last id first, or oldest first id first
/// when `filter.after` is set), after `cursor` (the sort key and `seq` of the last segment
/// read), at most `page` of them.
fn segment_page(
    filter: &DecisionFilter,
    cursor: Option<(Uuid, i64)>,
    page: i64,
    postgres: bool,
) -> (String, Vec<Arg<'_>>) {
    let (lo, hi) = id_range(filter);
    let mut args: Vec<Arg<'_>> = vec![Arg::Id(lo), Arg::Id(hi)];
    let mut sql = format!("{} WHERE last_id >= $1 AND first_id <= $2", sql::SEGMENT);
    let mut add = |condition: &str, arg| {
        args.push(arg);
        sql.push_str(" AND ");
        sql.push_str(&condition.replace("{}", &format!("${}", args.len())));
    };
    if let Some(feature) = &filter.feature {
        add("feature = {}", Arg::Text(feature));
    }
    let contains = if postgres { "strpos(COLUMN, {}) > 0" } else { "instr(COLUMN, {}) > 0" };
    if let Some(repository_id) = &filter.repository_id {
        add(&contains.replace("COLUMN", "repositories"), Arg::Owned(newline_member(repository_id)));
    }
    if let Some(rule) = &filter.rule {
        add(&contains.replace("COLUMN", "rules"), Arg::Owned(newline_member(rule)));
    }
    let ascending = filter.after.is_some();
    let (key, compare, order) = if ascending { ("first_id", ">", "ASC") } else { ("last_id", "<", "DESC") };
    if let Some((at, seq)) = cursor {
        args.push(Arg::Id(at));
        let n = args.len();
        args.push(Arg::Int(seq));
        sql.push_str(&format!(" AND ({key}, seq) {compare} (${n}, ${})", n + 1));
    }
    args.push(Arg::Int(page));
    sql.push_str(&format!(" ORDER BY {key} {order}, seq {order} LIMIT ${}", args.len()));
    (sql, args)
}

/// Segments read per statement by [`Store::decisions`] at first (a page of the newest
/// decisions is usually in the newest segment); each further statement reads twice as many,
/// up to [`MAX_SEGMENT_PAGE`].
const FIRST_SEGMENT_PAGE: i64 = 2;

/// Most segments read per statement.
const MAX_SEGMENT_PAGE: i64 = 64;

/// Decisions deleted per round by [`Store::prune_decisions`] beyond the newest rows (each
/// round reads them to find the last one).
const PRUNE_ROUND: u64 = 100_000;

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

    /// A segment from a row of [`sql::SEGMENT`].
    pub(super) fn segment(row: &PgRow) -> StoreResult<Segment> {
        Ok(Segment {
            seq: column(row, "seq")?,
            feature: column(row, "feature")?,
            first_id: column(row, "first_id")?,
            last_id: column(row, "last_id")?,
            body: column(row, "body")?,
            policy_sha256: column(row, "policy_sha256")?,
        })
    }

    /// A linked outcome from a row of [`sql::LINKED`].
    pub(super) fn linked(row: &PgRow) -> StoreResult<(Uuid, bool)> {
        Ok((column(row, "decision_id")?, column(row, "success")?))
    }

    /// `sql` with `args` bound as Postgres keeps them.
    pub(super) fn bind<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> Query<'q, Postgres, PgArguments> {
        args.into_iter().fold(sqlx::query(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Owned(text) => query.bind(text),
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

    fn id(row: &SqliteRow, name: &'static str) -> StoreResult<Uuid> {
        let text: &str = column(row, name)?;
        Uuid::parse_str(text).map_err(|e| corrupt(name, format!("`{text}`: {e}")))
    }

    /// A segment from a row of [`sql::SEGMENT`].
    pub(super) fn segment(row: &SqliteRow) -> StoreResult<Segment> {
        Ok(Segment {
            seq: column(row, "seq")?,
            feature: column(row, "feature")?,
            first_id: id(row, "first_id")?,
            last_id: id(row, "last_id")?,
            body: column(row, "body")?,
            policy_sha256: column(row, "policy_sha256")?,
        })
    }

    /// A linked outcome from a row of [`sql::LINKED`].
    pub(super) fn linked(row: &SqliteRow) -> StoreResult<(Uuid, bool)> {
        Ok((id(row, "decision_id")?, column(row, "success")?))
    }

    /// `sql` (with SQLite's placeholders) with `args` bound as SQLite keeps them.
    pub(super) fn bind<'q>(sql: &'q str, args: Vec<Arg<'q>>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        args.into_iter().fold(sqlx::query(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Owned(text) => query.bind(text),
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
    /// Log a batch of decisions: one segment per feature (and 1,000 decisions), all in one
    /// transaction. An id already logged, or repeated in the batch, is ignored. How many
    /// decisions were new. ([`Store::insert_packed`] of the records, encoded.)
    pub async fn insert_decisions(&self, records: &[DecisionRecord]) -> StoreResult<u64> {
        let packed = records.iter().map(PackedDecision::of).collect::<StoreResult<Vec<_>>>()?;
        self.insert_packed(&packed).await
    }

    /// Log a batch of encoded decisions, as [`Store::insert_decisions`] does.
    ///
    /// The segments already holding ids within the batch's range are read first, to leave
    /// out what they hold: for a batch of new decisions there are none (its ids are newer
    /// than every segment's), so the check is one index seek. An empty batch makes no
    /// round trip.
    pub async fn insert_packed(&self, records: &[PackedDecision]) -> StoreResult<u64> {
        let (Some(lo), Some(hi)) = (records.iter().map(|r| r.id).min(), records.iter().map(|r| r.id).max()) else {
            return Ok(0);
        };
        let context = || match (records.first(), records.last()) {
            (Some(first), Some(last)) if records.len() > 1 => {
                format!("log {} decisions (`{}` … `{}`)", records.len(), first.id, last.id)
            }
            _ => format!("log decision `{lo}`"),
        };
        let overlapping = self.segments(sql::OVERLAPPING, vec![Arg::Id(lo), Arg::Id(hi)], context()).await?;
        let mut ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let fresh: Vec<&PackedDecision> = if overlapping.is_empty() && ids.windows(2).all(|w| w[0] < w[1]) {
            // the common case: new ids, each once (no set to build, per decision)
            records.iter().collect()
        } else {
            // a batch overlaps one written before when two threads queued their decisions
            // out of id order across the batches (the background writer waits for that to
            // settle, `service::decision_log::SETTLE`), or when it is retried or another
            // writer's: the ids of a segment whose range holds one of the batch's are read
            // (one pass over its body; searching the body for each such id took 5.6 % of
            // the server's CPU with every decision logged)
            let mut known: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
            for segment in &overlapping {
                // (`ids` is sorted: the first at or after the segment's first id)
                let first_inside = ids.get(ids.partition_point(|id| *id < segment.first_id));
                if first_inside.is_some_and(|id| *id <= segment.last_id) {
                    known.extend(segment.ids()?);
                }
            }
            records.iter().filter(|r| known.insert(r.id)).collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        // one statement per [`SEGMENTS_PER_STATEMENT`] segments: a round trip to the
        // database's connection each, not one per segment
        let mut segments = segments_of(&fresh)?.into_iter().peekable();
        let (mut texts, mut args): (Vec<String>, Vec<Vec<Arg<'static>>>) = (Vec::new(), Vec::new());
        while segments.peek().is_some() {
            let chunk: Vec<NewSegment> = segments.by_ref().take(SEGMENTS_PER_STATEMENT).collect();
            texts.push(sql::insert_many(chunk.len()));
            args.push(chunk.into_iter().flat_map(insert_args).collect());
        }
        self.write_all(texts.iter().map(String::as_str).zip(args).collect(), context()).await?;
        Ok(u64::try_from(fresh.len()).unwrap_or(u64::MAX))
    }

    /// The decision `id`, if logged.
    pub async fn decision(&self, id: Uuid) -> StoreResult<Option<DecisionRecord>> {
        let context = format!("read decision `{id}`");
        for segment in self.segments(sql::OVERLAPPING, vec![Arg::Id(id), Arg::Id(id)], context).await? {
            if let Some(found) = segment.decisions()?.into_iter().find(|r| r.id == id) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Decisions matching `filter`: newest first, or oldest first when `filter.after` is set.
    ///
    /// `filter.rule` matches the routing rule, or the eligibility reason of eligibility
    /// decisions. At most `filter.limit` rows (none when it is 0); the caller caps the limit.
    ///
    /// Segments are read in the order asked (by last id down, or by first id up), skipping
    /// those whose feature, repositories or rules cannot match, and their decisions
    /// filtered; reading stops once `filter.limit` decisions are found and the next segment
    /// can hold none that sorts before the last of them.
    pub async fn decisions(&self, filter: &DecisionFilter) -> StoreResult<Vec<DecisionRecord>> {
        let limit = filter.limit as usize;
        let ascending = filter.after.is_some();
        let mut found: Vec<DecisionRecord> = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        let postgres = matches!(self, Store::Postgres(_));
        let mut cursor = None;
        let mut page = FIRST_SEGMENT_PAGE;
        loop {
            let (sql, args) = segment_page(filter, cursor, page, postgres);
            let segments = self.segments(&sql, args, "list decisions".to_owned()).await?;
            for segment in &segments {
                if let Some(edge) = found.get(limit - 1) {
                    let done = if ascending { segment.first_id > edge.id } else { segment.last_id < edge.id };
                    if done {
                        return Ok(found);
                    }
                }
                cursor = Some((if ascending { segment.first_id } else { segment.last_id }, segment.seq));
                found.extend(segment.decisions()?.into_iter().filter(|r| matches(filter, r)));
                if ascending {
                    found.sort_unstable_by_key(|r| r.id);
                } else {
                    found.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
                }
                found.truncate(limit);
            }
            if i64::try_from(segments.len()).unwrap_or(i64::MAX) < page {
                return Ok(found);
            }
            page = (page * 2).min(MAX_SEGMENT_PAGE);
        }
    }

    /// Delete decisions decided before `before`, then the oldest beyond the newest
    /// `keep_rows`; how many were deleted. Outcome links recorded before `before` go too
    /// (not counted): a link outlives its decision by at most the retention.
    ///
    /// Whole segments are deleted; a segment holding decisions on both sides of the line
    /// is written again with the decisions kept.
    pub async fn prune_decisions(&self, before: DateTime<Utc>, keep_rows: u64) -> StoreResult<u64> {
        let first_kept = first_id_at(before.timestamp_millis());
        let by_age = self.prune_ids(first_kept, false, format!("prune decisions made before `{before}`")).await?;
        self.write_all(
            vec![(sql::PRUNE_LINKS, vec![Arg::Time(before)])],
            format!("prune outcome links recorded before `{before}`"),
        )
        .await?;
        let context = || format!("prune decisions beyond the newest `{keep_rows}`");
        let mut by_rows = 0;
        loop {
            let logged = self.rows(context()).await?;
            let excess = logged.saturating_sub(keep_rows).min(PRUNE_ROUND);
            if excess == 0 {
                break;
            }
            let oldest = DecisionFilter {
                after: Some(Uuid::nil()),
                limit: u32::try_from(excess).unwrap_or(u32::MAX),
                ..DecisionFilter::default()
            };
            let Some(last) = self.decisions(&oldest).await?.last().map(|r| r.id) else { break };
            let deleted = self.prune_ids(last, true, context()).await?;
            by_rows += deleted;
            if deleted == 0 {
                break;
            }
        }
        Ok(by_age + by_rows)
    }

    /// Delete the decisions with an id below `line` (through it when `through`); how many.
    async fn prune_ids(&self, line: Uuid, through: bool, context: String) -> StoreResult<u64> {
        let whole = if through { sql::PRUNE_THROUGH } else { sql::PRUNE_BEFORE };
        let deleted: Vec<i64> = match self {
            Store::Postgres(pool) => {
                let rows = pg::bind(whole, vec![Arg::Id(line)]).fetch_all(pool).await;
                let rows = rows.map_err(StoreError::db(context.clone()))?;
                rows.iter().map(|row| column(row, "rows")).collect::<StoreResult<_>>()?
            }
            Store::Sqlite(pool) => {
                let sql = sql::lite(whole);
                let rows = lite::bind(&sql, vec![Arg::Id(line)]).fetch_all(pool).await;
                let rows = rows.map_err(StoreError::db(context.clone()))?;
                rows.iter().map(|row| column(row, "rows")).collect::<StoreResult<_>>()?
            }
        };
        let mut count: u64 = deleted.iter().map(|&n| u64::try_from(n).unwrap_or(0)).sum();
        // the segments across the line (their first id is before it, their last after)
        let keep = |id: Uuid| if through { id > line } else { id >= line };
        let across = self.segments(sql::OVERLAPPING, vec![Arg::Id(line), Arg::Id(line)], context.clone()).await?;
        for segment in across.iter().filter(|s| keep(s.last_id) && !keep(s.first_id)) {
            let decisions = segment.decisions()?;
            let kept = decisions.iter().filter(|r| keep(r.id)).map(PackedDecision::of);
            let kept = kept.collect::<StoreResult<Vec<_>>>()?;
            let mut statements = vec![(sql::DELETE_ONE, vec![Arg::Int(segment.seq)])];
            statements.extend(segments_of(&kept.iter().collect::<Vec<_>>())?.into_iter().map(insert_statement));
            // a segment another process trimmed first is left to it
            if self.write_first(statements, context.clone()).await? {
                count += u64::try_from(decisions.len() - kept.len()).unwrap_or(0);
            }
        }
        Ok(count)
    }

    /// How many decisions are logged.
    async fn rows(&self, context: String) -> StoreResult<u64> {
        let n: i64 = match self {
            Store::Postgres(pool) => sqlx::query_scalar(sql::ROWS).fetch_one(pool).await,
            Store::Sqlite(pool) => sqlx::query_scalar(sql::ROWS).fetch_one(pool).await,
        }
        .map_err(StoreError::db(context))?;
        Ok(u64::try_from(n).unwrap_or(0))
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
    ///
    /// The decisions are looked up in the segments that span the linked ids; only the
    /// policy and configuration version of each are decoded.
    pub async fn outcomes_by_decision_version(
        &self,
        feature: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionVersionOutcomes>> {
        let context = || format!("count the outcomes of `{feature}` by deciding version");
        let args = vec![Arg::Text(feature), Arg::Time(since)];
        let linked: Vec<(Uuid, bool)> = match self {
            Store::Postgres(pool) => {
                let rows = pg::bind(sql::LINKED, args).fetch_all(pool).await.map_err(StoreError::db(context()))?;
                rows.iter().map(pg::linked).collect::<StoreResult<_>>()?
            }
            Store::Sqlite(pool) => {
                let sql = sql::lite(sql::LINKED);
                let rows = lite::bind(&sql, args).fetch_all(pool).await.map_err(StoreError::db(context()))?;
                rows.iter().map(lite::linked).collect::<StoreResult<_>>()?
            }
        };
        let mut wanted: Vec<Uuid> = linked.iter().map(|(id, _)| *id).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let (Some(&lo), Some(&hi)) = (wanted.first(), wanted.last()) else { return Ok(Vec::new()) };
        let mut versions: std::collections::HashMap<Uuid, (String, i64)> = std::collections::HashMap::new();
        for head in self.segments(sql::OVERLAPPING_HEADS, vec![Arg::Id(lo), Arg::Id(hi)], context()).await? {
            // a segment none of whose ids is wanted is not read
            let from = wanted.partition_point(|id| *id < head.first_id);
            if wanted.get(from).is_none_or(|id| *id > head.last_id) {
                continue;
            }
            for segment in self.segments(sql::ONE, vec![Arg::Int(head.seq)], context()).await? {
                for r in segment.decisions()? {
                    if wanted.binary_search(&r.id).is_ok() {
                        versions.insert(r.id, (r.policy_sha256, r.config_version));
                    }
                }
            }
        }
        let mut counts: std::collections::BTreeMap<(std::cmp::Reverse<i64>, String), (u64, u64)> =
            std::collections::BTreeMap::new();
        for (id, success) in linked {
            let Some((policy, version)) = versions.get(&id) else { continue };
            let entry = counts.entry((std::cmp::Reverse(*version), policy.clone())).or_default();
            if success {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        Ok(counts
            .into_iter()
            .map(|((version, policy_sha256), (successes, failures))| DecisionVersionOutcomes {
                policy_sha256,
                config_version: version.0,
                successes,
                failures,
            })
            .collect())
    }

    /// The segments `sql` (`$n` placeholders, selecting [`sql::SEGMENT`]'s columns) reads
    /// with `args`; `context` names what was being read.
    async fn segments(&self, sql: &str, args: Vec<Arg<'_>>, context: String) -> StoreResult<Vec<Segment>> {
        match self {
            Store::Postgres(pool) => {
                let rows = pg::bind(sql, args).fetch_all(pool).await.map_err(StoreError::db(context))?;
                rows.iter().map(pg::segment).collect()
            }
            Store::Sqlite(pool) => {
                let sql = sql::lite(sql);
                let rows = lite::bind(&sql, args).fetch_all(pool).await.map_err(StoreError::db(context))?;
                rows.iter().map(lite::segment).collect()
            }
        }
    }

    /// Run `statements` (`$n` placeholders) in one transaction (a single one alone).
    async fn write_all(&self, statements: Vec<(&str, Vec<Arg<'_>>)>, context: String) -> StoreResult<()> {
        self.run(statements, false, context).await.map(|_| ())
    }

    /// Run `statements` in one transaction if the first changes a row; whether it did (when
    /// it did not, nothing is written).
    async fn write_first(&self, statements: Vec<(&str, Vec<Arg<'_>>)>, context: String) -> StoreResult<bool> {
        self.run(statements, true, context).await
    }

    /// Run `statements` in one transaction; with `first_must_change`, roll back (and answer
    /// false) when the first changes no row.
    async fn run(
        &self,
        statements: Vec<(&str, Vec<Arg<'_>>)>,
        first_must_change: bool,
        context: String,
    ) -> StoreResult<bool> {
        let err = || StoreError::db(context.clone());
        match self {
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(err())?;
                for (i, (sql, args)) in statements.into_iter().enumerate() {
                    let done = pg::bind(sql, args).execute(&mut *tx).await.map_err(err())?;
                    if i == 0 && first_must_change && done.rows_affected() == 0 {
                        tx.rollback().await.map_err(err())?;
                        return Ok(false);
                    }
                }
                tx.commit().await.map_err(err())?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(err())?;
                for (i, (sql, args)) in statements.into_iter().enumerate() {
                    let sql = sql::lite(sql);
                    let done = lite::bind(&sql, args).execute(&mut *tx).await.map_err(err())?;
                    if i == 0 && first_must_change && done.rows_affected() == 0 {
                        tx.rollback().await.map_err(err())?;
                        return Ok(false);
                    }
                }
                tx.commit().await.map_err(err())?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> DecisionFilter {
        DecisionFilter { limit: 10, ..DecisionFilter::default() }
    }

    #[test]
    fn a_segment_page_numbers_its_placeholders_in_the_order_of_its_arguments() {
        let plain = filter();
        let (sql, args) = segment_page(&plain, None, 2, true);
        assert!(
            sql.ends_with("WHERE last_id >= $1 AND first_id <= $2 ORDER BY last_id DESC, seq DESC LIMIT $3"),
            "{sql}"
        );
        assert_eq!(args, vec![Arg::Id(Uuid::nil()), Arg::Id(MAX_ID), Arg::Int(2)]);

        let id = Uuid::now_v7();
        let f = DecisionFilter {
            feature: Some("f".into()),
            repository_id: Some("r".into()),
            rule: Some("u".into()),
            after: Some(id),
            ..filter()
        };
        let (sql, args) = segment_page(&f, Some((id, 7)), 4, false);
        assert!(
            sql.ends_with(
                "WHERE last_id >= $1 AND first_id <= $2 AND feature = $3 AND instr(repositories, $4) > 0 \
                 AND instr(rules, $5) > 0 AND (first_id, seq) > ($6, $7) ORDER BY first_id ASC, seq ASC LIMIT $8"
            ),
            "{sql}"
        );
        assert_eq!(
            args,
            vec![
                Arg::Id(id),
                Arg::Id(MAX_ID),
                Arg::Text("f"),
                Arg::Owned("\nr\n".into()),
                Arg::Owned("\nu\n".into()),
                Arg::Id(id),
                Arg::Int(7),
                Arg::Int(4)
            ]
        );
        assert!(!sql::lite(&sql).contains('$'));
        let (sql, _) = segment_page(&f, None, 4, true);
        assert!(sql.contains("strpos(repositories, $4) > 0 AND strpos(rules, $5) > 0"), "{sql}");
    }

    #[test]
    fn many_segments_are_inserted_by_one_statement_numbering_their_arguments_in_turn() {
        assert_eq!(sql::insert_many(1), sql::INSERT);
        let two = sql::insert_many(2);
        let values = "VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16)";
        assert!(two.ends_with(values), "{two}");
        assert!(sql::lite(&two).ends_with("(?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"));
        let segment = NewSegment {
            feature: "f".into(),
            first_id: Uuid::nil(),
            last_id: Uuid::nil(),
            rows: 1,
            repositories: String::new(),
            rules: String::new(),
            body: String::new(),
            policy_sha256: String::new(),
        };
        assert_eq!(insert_args(segment).len(), sql::INSERT_ARGS, "an argument per placeholder");
    }

    #[test]
    fn time_filters_bound_the_ids() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T18:00:00.250Z").map(|t| t.with_timezone(&Utc));
        let at = at.expect("a time");
        let ms = at.timestamp_millis();
        // the bound sorts below every id of its millisecond and above every earlier one
        let id = crate::service::decision_log::new_decision_id();
        assert_eq!(id_ms(first_id_at(id_ms(id))), id_ms(id));
        assert!(first_id_at(id_ms(id)) <= id && id < first_id_at(id_ms(id) + 1));
        assert!(first_id_at(ms).to_string() < first_id_at(ms + 1).to_string(), "text order is id order");

        let f = DecisionFilter { since: Some(at), until: Some(at), ..filter() };
        assert_eq!(id_range(&f), (first_id_at(ms - ID_TIME_MARGIN_MS), first_id_at(ms + 1)));
        let (before, after) = (first_id_at(ms - 5), first_id_at(ms - 9_000));
        let f = DecisionFilter { before: Some(before), after: Some(after), ..f };
        assert_eq!(id_range(&f), (first_id_at(ms - ID_TIME_MARGIN_MS), before));
    }

    #[test]
    fn a_segment_names_its_repositories_and_rules_once_each() {
        let record = |i: u8, kind, rule: Option<&str>, reason: &str| DecisionRecord {
            id: Uuid::from_u128(u128::from(i)),
            time: DateTime::from_timestamp(1_764_720_000, 0).expect("a time"),
            feature: "f".into(),
            kind,
            config_version: 1,
            // (nested arrays and a quoted id in a string: skipped when only ids are read)
            overrides: (i == 2)
                .then(|| serde_json::json!({"x": [[1], ["\"],[\"00000000-0000-0000-0000-000000000009"]]})),
            policy_sha256: "native".into(),
            repository_id: format!("repo-{}", i % 2),
            masked: false,
            category: None,
            job: None,
            processor: None,
            rule: rule.map(str::to_owned),
            eligible: true,
            reason: reason.into(),
            bucket: i,
            fallback: None,
            duration_us: 1,
        };
        let records = [
            record(1, DecisionKind::Route, Some("a"), "percentage"),
            record(2, DecisionKind::Eligibility, None, "whitelist"),
            record(3, DecisionKind::Route, None, "percentage"),
            record(4, DecisionKind::Route, Some("a"), "percentage"),
        ];
        let packed: Vec<PackedDecision> = records.iter().map(|r| PackedDecision::of(r).expect("encoded")).collect();
        let segment = encode(&packed.iter().collect::<Vec<_>>()).expect("a segment");
        assert_eq!(segment.repositories, "\nrepo-1\nrepo-0\n");
        assert_eq!(segment.rules, "\na\nwhitelist\n", "a route decision is found by its rule, not its reason");
        assert_eq!((segment.first_id, segment.last_id, segment.rows), (records[0].id, records[3].id, 4));
        let back = Segment {
            seq: 1,
            feature: segment.feature.clone(),
            first_id: segment.first_id,
            last_id: segment.last_id,
            body: segment.body.clone(),
            policy_sha256: Some(segment.policy_sha256.clone()),
        };
        assert_eq!(back.decisions().expect("decoded"), records.to_vec());
        // the policy is named once, by the segment, not by each decision
        assert_eq!(segment.policy_sha256, "native");
        assert!(!segment.body.contains("native"), "{}", segment.body);
        let unnamed = Segment { policy_sha256: None, ..back.clone() };
        assert!(unnamed.decisions().is_err(), "a decision whose policy nobody names is corrupt");
        // a segment written before the policy moved to the segment: each decision names its own
        let own = segment.body.replace("null,\"repo-", "\"ab12\",\"repo-");
        let older = Segment { body: own, policy_sha256: None, ..back.clone() };
        let as_before: Vec<DecisionRecord> =
            records.iter().map(|r| DecisionRecord { policy_sha256: "ab12".into(), ..r.clone() }).collect();
        assert_eq!(older.decisions().expect("decoded"), as_before);
        // the writer's check for decisions already logged reads every id, in order
        assert_eq!(back.ids().expect("ids"), records.iter().map(|r| r.id).collect::<Vec<_>>());
        let not_a_decision = Segment { body: "[[1,2]]".into(), ..back.clone() };
        assert!(not_a_decision.ids().is_err(), "a first element that is no id is a corrupt segment");
        assert!(segment.repositories.contains(&newline_member("repo-1")));
        assert!(!segment.repositories.contains(&newline_member("repo")));

        // decisions of two policies in one batch go to two segments, each naming its own
        let mut other = PackedDecision::of(&records[1]).expect("encoded");
        other.policy_sha256 = std::sync::Arc::new("cd34".to_owned());
        let split = segments_of(&[&packed[0], &other, &packed[2]]).expect("segments");
        let named: Vec<(&str, i64)> = split.iter().map(|s| (s.policy_sha256.as_str(), s.rows)).collect();
        assert_eq!(named, vec![("cd34", 1), ("native", 2)]);

        let rule_b = DecisionFilter { rule: Some("whitelist".into()), ..filter() };
        assert!(matches(&rule_b, &records[1]) && !matches(&rule_b, &records[0]));
        assert!(encode(&[]).is_err(), "no empty segment");
    }

    #[test]
    fn outcome_links_are_written_in_few_statement_shapes() {
        let lengths = |n: usize| shaped_chunks(&vec![0u8; n], 128).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(lengths(1000), vec![128, 128, 128, 128, 128, 128, 128, 64, 32, 8]);
        assert_eq!(lengths(1), vec![1]);
        assert!(lengths(0).is_empty());
        let shapes: std::collections::BTreeSet<usize> = (1..=2000).flat_map(lengths).collect();
        assert_eq!(shapes.into_iter().collect::<Vec<_>>(), vec![1, 2, 4, 8, 16, 32, 64, 128]);
    }
}
