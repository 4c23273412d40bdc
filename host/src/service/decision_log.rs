//! The decision log's writing side: which decisions are logged, the bounded queue they wait
//! in, and the background writer that drains it into the store's segments (issue 14).
//!
//! Never on a decision's critical path:
//! - every decision gets a UUIDv7 id ([`new_decision_id`]); whether it is logged is a pure
//!   function of that id and the feature's sample rate ([`sampled`]), so a sample rate of
//!   0 (the default) costs one id and one comparison;
//! - a logged decision is offered to a bounded in-memory queue ([`DecisionLog::offer`]):
//!   bounded by entries and by bytes, it never waits; a full queue drops the entry and
//!   counts it (`rollout_decision_log_dropped_total{reason="queue_full"}`);
//! - the writer ([`DecisionLog::run`]) drains the queue in batches of
//!   [`DecisionLogOptions::batch`], taking decisions once they are [`SETTLE`] old, in id
//!   order (so a batch does not overlap the segment written before it); a batch the
//!   database refuses is put back while it fits the bounds and retried after a pause, and dropped (counted, `write_failed`) when it
//!   does not — a database outage costs log entries, never decisions;
//! - retention: every [`PRUNE_EVERY`] the writer deletes rows older than
//!   [`DecisionLogOptions::retention`] and beyond [`DecisionLogOptions::max_rows`].
//!
//! Settings per feature live in the configuration's `metadata.decision_log` object
//! (`sample_rate` 0–1, `mask_repository_id`), so a change is an audited configuration change
//! that every instance follows ([`LogSettings`]). Masking replaces the repository id by
//! `hmac-sha256:<hex>` under the operator's key (`ROLLOUT_DECISION_LOG_KEY`); a process
//! asked to mask without a key logs nothing for that feature (counted, `no_mask_key`) rather
//! than store the ids it was told not to.

use crate::store::{DecisionRecord, PackedDecision, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// How often the writer deletes expired rows.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How old a decision is (by its id's millisecond) before the background writer takes it,
/// and the least time between two of its writes ([`DecisionLog::run`]).
///
/// Two threads queue decisions in about, not exactly, id order: a decision made a few
/// microseconds before another may be queued after it. A batch that took the later one
/// without the earlier one leaves the earlier one to a batch whose range overlaps the
/// segment just written, and such a batch must read that segment's ids to leave out any it
/// holds (`Store::insert_packed`) — every batch, with every decision logged at full load
/// (2 % of the server's CPU measured). Taking only decisions this old, sorted, leaves the
/// next batch decisions made after them, but for one delayed longer than this between its id
/// and its queueing (still written once: the check remains).
pub const SETTLE: Duration = Duration::from_millis(100);

/// An id more than this far ahead of the clock is taken at once (the clock went back: its
/// decisions would otherwise wait for it to catch up).
const CLOCK_SKEW_MS: i64 = 10_000;

/// The environment variable holding the masking key.
pub const MASK_KEY_VARIABLE: &str = "ROLLOUT_DECISION_LOG_KEY";

/// Shortest masking key accepted, in bytes.
pub const MIN_MASK_KEY_BYTES: usize = 16;

/// How the decision log behaves in a process; [`DecisionLogOptions::default`] is what
/// `rollout serve` uses.
#[derive(Clone)]
pub struct DecisionLogOptions {
    /// Most entries waiting for the writer (default 100,000).
    pub queue_entries: usize,
    /// Most bytes of entries waiting for the writer (default 64 MiB; each entry counts an
    /// estimate of its size in memory).
    pub queue_bytes: usize,
    /// Entries per insert (default 10,000): one transaction, writing one segment per feature
    /// and 1,000 decisions ([`crate::store::Store::insert_decisions`]).
    ///
    /// Large, so the writer wakes seldom under load; a segment costs one row whatever its
    /// size, so the cost per decision is the encoding (measured in `docs/operations.md` §6).
    pub batch: usize,
    /// How long the writer waits for a batch to fill (default 500 ms).
    pub flush_every: Duration,
    /// Rows older than this are deleted (default 7 days).
    pub retention: Duration,
    /// At most this many rows are kept, the oldest deleted first (default 10,000,000).
    pub max_rows: u64,
    /// The masking key (`ROLLOUT_DECISION_LOG_KEY`); `None`: this process cannot mask.
    pub mask_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for DecisionLogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLogOptions")
            .field("queue_entries", &self.queue_entries)
            .field("queue_bytes", &self.queue_bytes)
            .field("batch", &self.batch)
            .field("flush_every", &self.flush_every)
            .field("retention", &self.retention)
            .field("max_rows", &self.max_rows)
            .field("mask_key", &self.mask_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for DecisionLogOptions {
    fn default() -> Self {
        DecisionLogOptions {
            queue_entries: 100_000,
            queue_bytes: 64 << 20,
            batch: 10_000,
            flush_every: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_rows: 10_000_000,
            mask_key: None,
        }
    }
}

/// The masking key from its configured text: at least [`MIN_MASK_KEY_BYTES`] bytes after
/// trimming; `None` when unset.
pub fn mask_key(raw: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let key = raw.trim();
    if key.len() < MIN_MASK_KEY_BYTES {
        return Err(format!(
            "{MASK_KEY_VARIABLE} has {} bytes: a masking key has at least {MIN_MASK_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(Some(key.as_bytes().to_vec()))
}

/// A feature's decision-log settings, from `metadata.decision_log`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LogSettings {
    /// The share of decisions logged, 0 to 1.
    pub sample_rate: f64,
    /// Whether repository ids are masked.
    pub mask_repository_id: bool,
}

/// The key of the settings object in a configuration's metadata.
pub const METADATA_KEY: &str = "decision_log";

impl LogSettings {
    /// The settings in `metadata` (a configuration's `metadata` object); a missing or
    /// invalid value is the default (0, not masked): a bad setting never logs more.
    pub fn from_metadata(metadata: &serde_json::Value) -> LogSettings {
        let Some(o) = metadata.get(METADATA_KEY) else { return LogSettings::default() };
        let sample_rate = o
            .get("sample_rate")
            .and_then(serde_json::Value::as_f64)
            .filter(|r| r.is_finite() && (0.0..=1.0).contains(r))
            .unwrap_or(0.0);
        let mask_repository_id = o.get("mask_repository_id").and_then(serde_json::Value::as_bool).unwrap_or(false);
        LogSettings { sample_rate, mask_repository_id }
    }
}

/// Check a sample rate given by an operator.
pub fn check_sample_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("`{rate}` is out of range: allowed a number from 0 to 1 (0.1 logs one decision in ten)"))
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(Uuid::new_v4().as_u64_pair().0 | 1);
}

/// 64 random bits from a per-thread xorshift generator seeded from the OS (ids need to be
/// unique, not secret).
fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A fresh decision id: a UUIDv7 (48 bits of Unix milliseconds, then random bits), so ids
/// sort by time.
pub fn new_decision_id() -> Uuid {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let (a, b) = (random_u64(), random_u64());
    let rand_a = u16::try_from(a & 0x0fff).unwrap_or(0);
    let bytes = {
        let mut out = [0u8; 16];
        let Some(ts) = ms.to_be_bytes().get(2..8).map(<[u8]>::to_vec) else { return Uuid::nil() };
        for (o, t) in out.iter_mut().zip(ts) {
            *o = t;
        }
        let [ha, la] = (0x7000 | rand_a).to_be_bytes();
        out[6] = ha;
        out[7] = la;
        let tail = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        for (o, t) in out.iter_mut().skip(8).zip(tail.to_be_bytes()) {
            *o = t;
        }
        out
    };
    Uuid::from_bytes(bytes)
}

/// Whether the decision `id` is logged at `rate`: its 62 random low bits, as a fraction of
/// 2^62, below the rate. The same id gives the same answer on every instance.
pub fn sampled(id: Uuid, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let low = id.as_u64_pair().1 & 0x3fff_ffff_ffff_ffff;
    (low as f64) < rate * (1u64 << 62) as f64
}

/// The masked form of a repository id under `key`: `hmac-sha256:<hex>`.
pub fn mask(key: &[u8], repository_id: &str) -> String {
    let mut out = String::with_capacity(12 + 64);
    out.push_str("hmac-sha256:");
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(repository_id.as_bytes());
            for b in mac.finalize().into_bytes() {
                out.push_str(&format!("{b:02x}"));
            }
        }
        // HMAC takes keys of any length; keep the form if that ever changes.
        Err(_) => out.push_str("unavailable"),
    }
    out
}

/// A queued decision and its size estimate ([`entry_bytes`]).
type Entry = (PackedDecision, usize);

/// `entries` split into the decisions settled at `now_ms` (made at least [`SETTLE`] before
/// it, or implausibly far after it), in id order, and the young ones, in queue order.
fn split_settled(entries: Vec<Entry>, now_ms: i64) -> (Vec<Entry>, Vec<Entry>) {
    let settle_ms = i64::try_from(SETTLE.as_millis()).unwrap_or(i64::MAX);
    let (mut settled, young): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(r, _)| {
        let ms = crate::store::id_ms(r.id);
        ms <= now_ms.saturating_sub(settle_ms) || ms > now_ms.saturating_add(CLOCK_SKEW_MS)
    });
    settled.sort_unstable_by_key(|(r, _)| r.id);
    (settled, young)
}

/// An estimate of an entry's size in memory, for the byte bound.
fn entry_bytes(r: &PackedDecision) -> usize {
    std::mem::size_of::<PackedDecision>()
        + r.feature.len()
        + r.repository_id.len()
        + r.rule.as_ref().map_or(0, |rule| rule.len())
        + r.json.len()
}

/// Why an entry was not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was at its bound.
    QueueFull,
    /// The database refused the batch and it did not fit back in the queue.
    WriteFailed,
    /// Masking was asked and this process has no key.
    NoMaskKey,
    /// A policy swap happened while the decision was made, so which version decided is
    /// not known.
    PolicySwapped,
}

impl DropReason {
    /// Every reason, in the order of [`DecisionLogFigures::dropped`].
    pub const ALL: [DropReason; 4] =
        [DropReason::QueueFull, DropReason::WriteFailed, DropReason::NoMaskKey, DropReason::PolicySwapped];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteFailed => "write_failed",
            DropReason::NoMaskKey => "no_mask_key",
            DropReason::PolicySwapped => "policy_swapped",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::QueueFull => 0,
            DropReason::WriteFailed => 1,
            DropReason::NoMaskKey => 2,
            DropReason::PolicySwapped => 3,
        }
    }
}

/// The decision log's figures (`/metrics`, the status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecisionLogFigures {
    /// Entries written to the database.
    pub written: u64,
    /// Entries dropped, per [`DropReason::ALL`].
    pub dropped: [u64; 4],
    /// Entries waiting.
    pub queued: u64,
    /// Bytes of entries waiting (estimated).
    pub queued_bytes: u64,
    /// Rows deleted by retention.
    pub pruned: u64,
}

impl DecisionLogFigures {
    /// Entries dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.index()).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// The queue and its counters; one per process, shared by every feature.
pub struct DecisionLog {
    options: DecisionLogOptions,
    queue: Mutex<Queue>,
    wake: Notify,
    written: AtomicU64,
    dropped: [AtomicU64; 4],
    pruned: AtomicU64,
    warned_no_key: AtomicBool,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").field("options", &self.options).finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// An empty log.
    pub fn new(options: DecisionLogOptions) -> DecisionLog {
        DecisionLog {
            options,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            written: AtomicU64::new(0),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            pruned: AtomicU64::new(0),
            warned_no_key: AtomicBool::new(false),
        }
    }

    /// The options.
    pub fn options(&self) -> &DecisionLogOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count an entry not logged.
    pub fn drop_entry(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.dropped.get(reason.index()) {
            c.fetch_add(n, Relaxed);
        }
        if reason == DropReason::NoMaskKey && !self.warned_no_key.swap(true, Relaxed) {
            tracing::warn!(
                "a feature asks to mask repository ids in the decision log but {MASK_KEY_VARIABLE} is not set on this \
                 process: its decisions are not logged here"
            );
        }
    }

    /// The repository id as logged under `settings`: masked with this process's key, or
    /// `None` when masking is asked and there is no key (the entry must not be logged).
    pub fn logged_repository_id(&self, settings: &LogSettings, canonical: String) -> Option<(String, bool)> {
        if !settings.mask_repository_id {
            return Some((canonical, false));
        }
        match &self.options.mask_key {
            Some(key) => Some((mask(key, &canonical), true)),
            None => {
                self.drop_entry(DropReason::NoMaskKey, 1);
                None
            }
        }
    }

    /// Queue `record` for the writer ([`DecisionLog::offer_packed`] of it, encoded).
    pub fn offer(&self, record: DecisionRecord) -> bool {
        match PackedDecision::of(&record) {
            Ok(packed) => self.offer_packed(packed),
            Err(_) => {
                self.drop_entry(DropReason::WriteFailed, 1);
                false
            }
        }
    }

    /// Queue an encoded decision for the writer; `false` (counted) when the queue is at its
    /// bound. Never waits.
    pub fn offer_packed(&self, record: PackedDecision) -> bool {
        let size = entry_bytes(&record);
        let wake = {
            let mut q = self.lock();
            if q.entries.len() >= self.options.queue_entries || q.bytes + size > self.options.queue_bytes {
                drop(q);
                self.drop_entry(DropReason::QueueFull, 1);
                return false;
            }
            q.entries.push_back((record, size));
            q.bytes += size;
            q.entries.len() >= self.options.batch
        };
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Take up to `max` entries, oldest first. When they are all taken the queue is swapped
    /// for an empty one, so the lock is held for no copy (offers wait on it).
    fn take(&self, max: usize) -> Vec<Entry> {
        let batch: Vec<Entry> = {
            let mut q = self.lock();
            if q.entries.len() <= max {
                q.bytes = 0;
                std::mem::take(&mut q.entries).into()
            } else {
                let batch: Vec<Entry> = q.entries.drain(..max).collect();
                q.bytes -= batch.iter().map(|(_, s)| s).sum::<usize>();
                batch
            }
        };
        batch
    }

    /// Put a refused batch back at the front while it fits the bounds; the rest is dropped
    /// (counted).
    fn put_back(&self, batch: Vec<Entry>) {
        let mut lost = 0u64;
        {
            let mut q = self.lock();
            for (record, size) in batch.into_iter().rev() {
                if q.entries.len() < self.options.queue_entries && q.bytes + size <= self.options.queue_bytes {
                    q.entries.push_front((record, size));
                    q.bytes += size;
                } else {
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            self.drop_entry(DropReason::WriteFailed, lost);
        }
    }

    /// Write what is queued, in batches, until the queue is empty or the database refuses
    /// (the refused batch is put back, [`DecisionLog::put_back`]). How many were written.
    pub async fn flush(&self, store: &Store) -> Result<u64, crate::store::StoreError> {
        let mut total = 0;
        loop {
            // (at the end of time every decision is settled)
            match self.flush_settled(store, i64::MAX).await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Write the queued decisions made at least [`SETTLE`] before `now_ms` (Unix
    /// milliseconds), in id order, in batches; the younger ones stay queued, ahead of any
    /// queued since. How many were written; on a refused write, the rest is put back.
    async fn flush_settled(&self, store: &Store, now_ms: i64) -> Result<u64, crate::store::StoreError> {
        // the whole queue at once (swapped out: the lock is held for no copy), the young
        // put back
        let (settled, young) = split_settled(self.take(usize::MAX), now_ms);
        self.put_back(young);
        let mut total = 0;
        let mut rest = settled.into_iter().peekable();
        while rest.peek().is_some() {
            let batch: Vec<_> = rest.by_ref().take(self.options.batch.max(1)).collect();
            match self.write(store, batch).await {
                Ok(n) => total += n,
                Err(e) => {
                    // (the rest goes back too, older than the young put back before)
                    self.put_back(rest.collect());
                    return Err(e);
                }
            }
        }
        Ok(total)
    }

    /// Write `batch`; refused, it is put back at the front of the queue.
    async fn write(&self, store: &Store, batch: Vec<Entry>) -> Result<u64, crate::store::StoreError> {
        let (records, sizes): (Vec<PackedDecision>, Vec<usize>) = batch.into_iter().unzip();
        match store.insert_packed(&records).await {
            Ok(_) => {
                let n = records.len() as u64;
                self.written.fetch_add(n, Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.put_back(records.into_iter().zip(sizes).collect());
                Err(e)
            }
        }
    }

    /// Delete rows past the retention; how many.
    pub async fn prune(&self, store: &Store) -> Result<u64, crate::store::StoreError> {
        let age = chrono::Duration::from_std(self.options.retention).unwrap_or(chrono::Duration::days(7));
        let n = store.prune_decisions(chrono::Utc::now() - age, self.options.max_rows).await?;
        self.pruned.fetch_add(n, Relaxed);
        Ok(n)
    }

    /// The figures now.
    pub fn figures(&self) -> DecisionLogFigures {
        let (queued, queued_bytes) = {
            let q = self.lock();
            (q.entries.len() as u64, q.bytes as u64)
        };
        DecisionLogFigures {
            written: self.written.load(Relaxed),
            dropped: std::array::from_fn(|i| self.dropped.get(i).map_or(0, |c| c.load(Relaxed))),
            queued,
            queued_bytes,
            pruned: self.pruned.load(Relaxed),
        }
    }

    /// The writer: every [`DecisionLogOptions::flush_every`] (sooner when a batch is full,
    /// never twice within [`SETTLE`]) write the decisions at least [`SETTLE`] old, pause a
    /// second after a refused write, prune every [`PRUNE_EVERY`]; on stop, one last flush of
    /// everything queued.
    pub async fn run(&self, store: Store, mut stop: watch::Receiver<bool>) {
        let mut last_prune = tokio::time::Instant::now() - PRUNE_EVERY + Duration::from_secs(30);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.flush_every) => {}
            }
            if *stop.borrow() {
                break;
            }
            let pause = match self.flush_settled(&store, chrono::Utc::now().timestamp_millis()).await {
                Ok(_) => SETTLE,
                Err(e) => {
                    tracing::warn!("decision log: writing failed, retrying in 1 s: {e}");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(pause) => {}
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = self.prune(&store).await {
                    tracing::warn!("decision log: retention failed: {e}");
                }
            }
        }
        if let Err(e) = self.flush(&store).await {
            let lost = self.take(usize::MAX).len() as u64;
            self.drop_entry(DropReason::WriteFailed, lost);
            tracing::warn!("decision log: the last flush failed, {lost} entries lost: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DecisionKind;

    fn record(n: u128) -> DecisionRecord {
        DecisionRecord {
            id: Uuid::from_u128(n),
            time: chrono::Utc::now(),
            feature: "f".into(),
            kind: DecisionKind::Eligibility,
            config_version: 1,
            overrides: None,
            policy_sha256: "native".into(),
            repository_id: Uuid::from_u128(n).to_string(),
            masked: false,
            category: None,
            job: None,
            processor: None,
            rule: None,
            eligible: true,
            reason: "in_percentage".into(),
            bucket: 3,
            fallback: None,
            duration_us: 1,
        }
    }

    #[test]
    fn ids_are_v7_time_ordered_and_unique() {
        let ids: Vec<Uuid> = (0..10_000).map(|_| new_decision_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7), "version 7");
        assert!(ids.iter().all(|id| id.get_variant() == uuid::Variant::RFC4122), "variant");
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len(), "unique");
        let later = {
            std::thread::sleep(Duration::from_millis(2));
            new_decision_id()
        };
        assert!(ids.iter().all(|id| *id < later), "a later millisecond sorts after");
        let ms = chrono::Utc::now().timestamp_millis() as u128;
        let id_ms = later.as_u128() >> 80;
        assert!(ms.abs_diff(id_ms) < 5_000, "the id's time is now: {id_ms} vs {ms}");
    }

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let ids: Vec<Uuid> = (0..100_000).map(|_| new_decision_id()).collect();
        for rate in [0.0, 0.01, 0.1, 0.5, 1.0] {
            let n = ids.iter().filter(|id| sampled(**id, rate)).count() as f64;
            let expected = rate * ids.len() as f64;
            let sd = (ids.len() as f64 * rate * (1.0 - rate)).sqrt();
            assert!((n - expected).abs() <= 5.0 * sd + 1e-9, "rate {rate}: {n} sampled, expected {expected}");
            assert!(ids.iter().all(|id| sampled(*id, rate) == sampled(*id, rate)));
        }
        // monotone: a decision logged at a rate is logged at every higher rate
        assert!(ids.iter().filter(|id| sampled(**id, 0.1)).all(|id| sampled(*id, 0.2)));
    }

    #[test]
    fn masking_is_keyed_and_stable() {
        let a = mask(b"0123456789abcdef", "3f0c5a42-0000-4000-8000-000000000001");
        let b = mask(b"0123456789abcdeX", "3f0c5a42-0000-4000-8000-000000000001");
        assert!(a.starts_with("hmac-sha256:") && a.len() == 12 + 64, "{a}");
        assert_ne!(a, b, "another key, another mask");
        assert_eq!(a, mask(b"0123456789abcdef", "3f0c5a42-0000-4000-8000-000000000001"));
        assert!(!a.contains("3f0c5a42"));
        // RFC 4231 test case 2
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(mask(b"Jefe", "what do ya want for nothing?"), format!("hmac-sha256:{hex}"));
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn settings_read_from_metadata_and_bad_values_log_nothing() {
        let s = |v: serde_json::Value| LogSettings::from_metadata(&serde_json::json!({ "decision_log": v }));
        assert_eq!(s(serde_json::json!({"sample_rate": 0.25})).sample_rate, 0.25);
        assert_eq!(s(serde_json::json!({"sample_rate": 2})).sample_rate, 0.0);
        assert_eq!(s(serde_json::json!({"sample_rate": "0.5"})).sample_rate, 0.0);
        assert!(s(serde_json::json!({"mask_repository_id": true})).mask_repository_id);
        assert_eq!(LogSettings::from_metadata(&serde_json::json!({})), LogSettings::default());
        assert!(check_sample_rate(1.5).unwrap_err().contains("from 0 to 1"));
        assert!(check_sample_rate(f64::NAN).is_err());
    }

    #[test]
    fn the_queue_is_bounded_by_entries_and_bytes_and_counts_drops() {
        let log = DecisionLog::new(DecisionLogOptions { queue_entries: 3, ..DecisionLogOptions::default() });
        for n in 0..5 {
            let _ = log.offer(record(n));
        }
        let f = log.figures();
        assert_eq!((f.queued, f.dropped(DropReason::QueueFull)), (3, 2));

        let one = entry_bytes(&PackedDecision::of(&record(0)).expect("encoded"));
        let log = DecisionLog::new(DecisionLogOptions { queue_bytes: one * 2 + 1, ..DecisionLogOptions::default() });
        assert!(log.offer(record(1)) && log.offer(record(2)));
        assert!(!log.offer(record(3)));
        assert_eq!(log.figures().dropped(DropReason::QueueFull), 1);

        // a refused batch goes back to the front, in order; what does not fit is counted
        let batch = log.take(10);
        assert_eq!(log.figures().queued_bytes, 0);
        assert!(log.offer(record(9)));
        log.put_back(batch);
        let f = log.figures();
        assert_eq!((f.queued, f.dropped(DropReason::WriteFailed)), (2, 1));
        let order: Vec<u128> = log.take(10).iter().map(|(r, _)| r.id.as_u128()).collect();
        assert_eq!(order, vec![2, 9]);
    }

    #[test]
    fn the_writer_takes_settled_decisions_in_id_order_and_leaves_the_young_in_queue_order() {
        let now_ms = 1_764_720_000_000;
        let at = |ms: i64, n: u128| {
            let mut r = record(n);
            r.id = Uuid::from_u128(crate::store::first_id_at(ms).as_u128() | n);
            (PackedDecision::of(&r).expect("encoded"), n as usize)
        };
        let settle = i64::try_from(SETTLE.as_millis()).expect("ms");
        let queued = vec![
            at(now_ms - 5, 1),                     // young
            at(now_ms - settle - 1, 2),            // settled
            at(now_ms - settle - 3, 3),            // settled, queued after a newer one
            at(now_ms - 1, 4),                     // young
            at(now_ms + CLOCK_SKEW_MS + 1_000, 5), // the clock went back: taken
            at(now_ms - settle, 6),                // exactly settled
        ];
        let (settled, young) = split_settled(queued, now_ms);
        let ns = |v: &[(PackedDecision, usize)]| v.iter().map(|(_, n)| *n).collect::<Vec<_>>();
        assert_eq!(ns(&settled), vec![3, 2, 6, 5], "in id order");
        assert_eq!(ns(&young), vec![1, 4], "in queue order");
    }

    #[test]
    fn masking_without_a_key_logs_nothing() {
        let log = DecisionLog::new(DecisionLogOptions::default());
        let settings = LogSettings { sample_rate: 1.0, mask_repository_id: true };
        assert_eq!(log.logged_repository_id(&settings, "x".into()), None);
        assert_eq!(log.figures().dropped(DropReason::NoMaskKey), 1);
        let log = DecisionLog::new(DecisionLogOptions {
            mask_key: Some(b"0123456789abcdef".to_vec()),
            ..DecisionLogOptions::default()
        });
        let (id, masked) = log.logged_repository_id(&settings, "x".into()).expect("masked");
        assert!(masked && id.starts_with("hmac-sha256:"));
    }
}
