-- The decision log (issue 14). Every decision served over HTTP — `is-eligible` or `route` —
-- is a row of `rollout_decisions`: its input as the policy received it (the feature, the
-- repository id or its masked form, the category, the job), its result (eligible, reason,
-- bucket, processor, rule, the fallback when the policy gave no answer) and what made it (the
-- `config_version` of the configuration snapshot, the environment overrides in force, the
-- sha256 of the component), so any decision can be found, explained and replayed
-- (`rollout_config_versions` keeps the configuration of every version).
--
-- `id` is the UUIDv7 returned to the caller (`x-decision-id`): its order is time order, so
-- pages run over `id` (newest first, or oldest first for replay and export). A serving
-- instance writes the rows in batches from a background writer, never on a decision's path
-- (a repeated id is ignored by ON CONFLICT DO NOTHING), and prunes them by age and count.
-- There is deliberately no foreign key to rollout_configuration: a decision is logged
-- whatever happens to the configuration later, the feature name is enough.
--
-- Rows are immutable: the service role may insert and delete (pruning), never update.
CREATE TABLE rollout_decisions (
    id UUID PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    feature TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('eligibility', 'route')),
    config_version BIGINT NOT NULL,
    overrides JSONB,
    policy_sha256 TEXT NOT NULL,
    repository_id TEXT NOT NULL,
    masked BOOLEAN NOT NULL,
    category TEXT,
    job JSONB,
    processor TEXT,
    rule TEXT,
    eligible BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    bucket SMALLINT NOT NULL CHECK (bucket BETWEEN 0 AND 99),
    fallback TEXT,
    duration_us BIGINT NOT NULL
);
-- The decisions of one feature, newest first (and the cursor: `id < $before`).
CREATE INDEX rollout_decisions_feature ON rollout_decisions (feature, id DESC);
-- The decisions of one repository, newest first.
CREATE INDEX rollout_decisions_repository ON rollout_decisions (repository_id, id DESC);
-- Pruning by age, and the since/until filters.
CREATE INDEX rollout_decisions_time ON rollout_decisions (time);

-- Outcomes that name the decision they followed (`POST …/outcomes` with `decision_id`): one
-- row per (decision, time recorded, success), a repeat is ignored. No foreign key to
-- rollout_decisions: the outcome may be stored before the background writer stores its
-- decision (or after the decision was pruned); statistics join the two when they read
-- (`outcomes_by_decision_version`), so an outcome whose decision is not logged counts nowhere.
CREATE TABLE rollout_decision_outcomes (
    decision_id UUID NOT NULL,
    feature TEXT NOT NULL,
    success BOOLEAN NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT rollout_decision_outcomes_key PRIMARY KEY (decision_id, recorded_at, success)
);
-- The outcomes of one feature since a time.
CREATE INDEX rollout_decision_outcomes_feature ON rollout_decision_outcomes (feature, recorded_at);

-- Everyone reads; the service role inserts and deletes, and nobody updates (SPEC §3).
ALTER TABLE rollout_decisions ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_decisions_read ON rollout_decisions FOR SELECT USING (true);
CREATE POLICY rollout_decisions_service_insert ON rollout_decisions FOR INSERT TO rollout_service
    WITH CHECK (true);
CREATE POLICY rollout_decisions_service_delete ON rollout_decisions FOR DELETE TO rollout_service
    USING (true);
GRANT SELECT ON rollout_decisions TO PUBLIC;
GRANT INSERT, DELETE ON rollout_decisions TO rollout_service;

ALTER TABLE rollout_decision_outcomes ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_decision_outcomes_read ON rollout_decision_outcomes FOR SELECT USING (true);
CREATE POLICY rollout_decision_outcomes_service_insert ON rollout_decision_outcomes FOR INSERT TO rollout_service
    WITH CHECK (true);
CREATE POLICY rollout_decision_outcomes_service_delete ON rollout_decision_outcomes FOR DELETE TO rollout_service
    USING (true);
GRANT SELECT ON rollout_decision_outcomes TO PUBLIC;
GRANT INSERT, DELETE ON rollout_decision_outcomes TO rollout_service;
