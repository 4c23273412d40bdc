-- Alerts that reach someone (issue 12). Every event — a configuration change, a policy
-- activation or revert, a rollback, a change of health level — is written here in the
-- transaction of the change itself, so an event exists if and only if its change committed.
-- A notifier (`rollout serve --alert-webhook URL`) claims due rows, posts them to every
-- configured webhook with the row's `idempotency_key`, and records the outcome: `delivered`
-- once every webhook accepted it, `pending` with a later `next_attempt_at` (exponential
-- backoff) while one refuses, `dead` after the last attempt. `claimed_until` is a lease, so
-- two instances do not post the same event at the same time and a crashed instance's
-- claim expires. `delivered_targets` lists digests of the webhooks that accepted it (never
-- the URLs, which carry secrets), so a retry goes only to the ones that refused.
CREATE TABLE rollout_alert_events (
    seq BIGSERIAL PRIMARY KEY,
    idempotency_key UUID NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 50),
    level TEXT NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
    feature_name TEXT,
    summary TEXT NOT NULL,
    details JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ,
    delivered_targets JSONB NOT NULL DEFAULT '[]',
    last_error TEXT,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX rollout_alert_events_due ON rollout_alert_events (next_attempt_at) WHERE state = 'pending';
CREATE INDEX rollout_alert_events_created ON rollout_alert_events (created_at);

-- The last health level recorded per feature: a change of level is an event, written by
-- the instance whose compare-and-set on this row succeeded (one event per transition, however
-- many instances judge the same window).
CREATE TABLE rollout_health_levels (
    feature_name TEXT PRIMARY KEY,
    level TEXT NOT NULL CHECK (level IN ('ok', 'warning', 'critical')),
    changed_at TIMESTAMPTZ NOT NULL
);

-- Everyone reads; only the service role writes (SPEC §3), as on every other table.
ALTER TABLE rollout_alert_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_alert_events_read ON rollout_alert_events FOR SELECT USING (true);
CREATE POLICY rollout_alert_events_service_write ON rollout_alert_events FOR ALL TO rollout_service
    USING (true) WITH CHECK (true);
GRANT SELECT ON rollout_alert_events TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON rollout_alert_events TO rollout_service;
GRANT USAGE ON SEQUENCE rollout_alert_events_seq_seq TO rollout_service;

ALTER TABLE rollout_health_levels ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_health_levels_read ON rollout_health_levels FOR SELECT USING (true);
CREATE POLICY rollout_health_levels_service_write ON rollout_health_levels FOR ALL TO rollout_service
    USING (true) WITH CHECK (true);
GRANT SELECT ON rollout_health_levels TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON rollout_health_levels TO rollout_service;
