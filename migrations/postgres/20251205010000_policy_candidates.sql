-- Policy candidates (shadow evaluation and canary share of a policy version beside the
-- serving one): an append-only log of every step an operator or the canary guard took.
-- The newest row is the current state: `state` is the candidate (JSON: the sha256, the
-- mode, the sample rate or share, the guard's limits, the remaining schedule) or NULL when
-- there is none. A write is a compare-and-set on the newest `seq` (the store locks the
-- table), so of several instances judging the same canary exactly one records a revert or
-- a step; every write notifies `rollout_changes` so every instance follows at once.
CREATE TABLE policy_candidate_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256 CHAR(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    action VARCHAR(30) NOT NULL CHECK (action IN (
        'shadow_started', 'canary_started', 'canary_step', 'canary_reverted', 'promoted', 'stopped')),
    state JSONB,
    reason TEXT,
    triggered_by VARCHAR(100) NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Row level security as on every table: everyone reads, the service role appends. The
-- service never updates or deletes an event; UPDATE is granted (matched by no policy, so
-- it changes no row) because the store's compare-and-set takes `LOCK TABLE … SHARE ROW
-- EXCLUSIVE`, which needs it.
ALTER TABLE policy_candidate_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY policy_candidate_events_read ON policy_candidate_events FOR SELECT USING (true);
CREATE POLICY policy_candidate_events_service_insert ON policy_candidate_events FOR INSERT TO rollout_service
    WITH CHECK (true);
GRANT SELECT ON policy_candidate_events TO PUBLIC;
GRANT INSERT, UPDATE ON policy_candidate_events TO rollout_service;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rollout_service;
