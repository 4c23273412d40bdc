-- Exactly-once outcome batches. Every submission of outcomes carries a key its caller made
-- once and reuses on a retry; the metrics upsert records the keys it applies here in the
-- same transaction and skips the submissions whose key is present, so a batch committed
-- just before the connection dropped is not counted again when retried. Keys are kept a
-- day (deleted by the store now and then).
CREATE TABLE rollout_applied_batches (
    batch_id UUID PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rollout_applied_batches_applied_at_idx ON rollout_applied_batches (applied_at);

ALTER TABLE rollout_applied_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_applied_batches_read ON rollout_applied_batches FOR SELECT USING (true);
CREATE POLICY rollout_applied_batches_service_write ON rollout_applied_batches FOR ALL TO rollout_service
    USING (true) WITH CHECK (true);
GRANT SELECT ON rollout_applied_batches TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON rollout_applied_batches TO rollout_service;
