-- Exactly-once outcome batches (see migrations/postgres/20250720030000_applied_batches.sql).
CREATE TABLE rollout_applied_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX rollout_applied_batches_applied_at_idx ON rollout_applied_batches (applied_at);
