-- The decision log (issue 14): every decision served over HTTP, as the policy received and
-- answered it, and the outcomes that name the decision they followed. See the Postgres
-- migration of the same name for the meaning of every column. UUIDs are canonical lowercase
-- text (so text order is UUIDv7 order), timestamps fixed-width UTC text (text order is time
-- order), JSON is text, booleans 0 or 1. No foreign keys, as on Postgres.
CREATE TABLE rollout_decisions (
    id TEXT PRIMARY KEY NOT NULL,
    time TEXT NOT NULL,
    feature TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('eligibility', 'route')),
    config_version INTEGER NOT NULL,
    overrides TEXT CHECK (overrides IS NULL OR json_valid(overrides)),
    policy_sha256 TEXT NOT NULL,
    repository_id TEXT NOT NULL,
    masked INTEGER NOT NULL CHECK (masked IN (0, 1)),
    category TEXT,
    job TEXT CHECK (job IS NULL OR json_valid(job)),
    processor TEXT,
    rule TEXT,
    eligible INTEGER NOT NULL CHECK (eligible IN (0, 1)),
    reason TEXT NOT NULL,
    bucket INTEGER NOT NULL CHECK (bucket BETWEEN 0 AND 99),
    fallback TEXT,
    duration_us INTEGER NOT NULL
);
-- The decisions of one feature, newest first (and the cursor: `id < $before`).
CREATE INDEX rollout_decisions_feature ON rollout_decisions (feature, id DESC);
-- The decisions of one repository, newest first.
CREATE INDEX rollout_decisions_repository ON rollout_decisions (repository_id, id DESC);
-- Pruning by age, and the since/until filters.
CREATE INDEX rollout_decisions_time ON rollout_decisions (time);

CREATE TABLE rollout_decision_outcomes (
    decision_id TEXT NOT NULL,
    feature TEXT NOT NULL,
    success INTEGER NOT NULL CHECK (success IN (0, 1)),
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (decision_id, recorded_at, success)
) WITHOUT ROWID;
-- The outcomes of one feature since a time.
CREATE INDEX rollout_decision_outcomes_feature ON rollout_decision_outcomes (feature, recorded_at);

-- SQLite has no roles: logged decisions and their outcomes are kept immutable by refusing
-- every UPDATE (inserting and deleting stay allowed, as for the Postgres service role).
CREATE TRIGGER rollout_decisions_immutable BEFORE UPDATE ON rollout_decisions
BEGIN
    SELECT RAISE(ABORT, 'rollout_decisions: a logged decision is immutable');
END;
CREATE TRIGGER rollout_decision_outcomes_immutable BEFORE UPDATE ON rollout_decision_outcomes
BEGIN
    SELECT RAISE(ABORT, 'rollout_decision_outcomes: a linked outcome is immutable');
END;
