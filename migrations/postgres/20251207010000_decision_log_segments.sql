-- The decision log stored as segments (issue 14: logging every decision costs at most 15 %
-- of throughput).
--
-- One row per decision cost the database more than the whole budget: an insert into a
-- table with a primary key and two indexes, per decision, measured at 6 µs of CPU in
-- SQLite's own code alone, against 5 µs allowed for everything logging does. The log is
-- now written as segments: one row per batch the writer drains, per feature and per 1,000
-- decisions, holding them as a JSON array in id order, with what a read needs to skip it.
-- Each decision is itself an array, its fields by position (no names: a third less to
-- write): [id, time in Unix microseconds, kind, config_version, overrides, policy_sha256,
-- repository_id, masked, category, job, processor, rule, eligible, reason, bucket,
-- fallback, duration_us] (`store::decision_log::Packed`; the view below names them).
-- Besides the body a segment has:
--
-- * `first_id` / `last_id`: the smallest and the largest decision id in it (UUIDv7, so a
--   time window and the cursors are id ranges);
-- * `feature`: every decision of a segment is of this feature;
-- * `repositories` / `rules`: the distinct repository ids and rules (the routing rule of a
--   route decision, the eligibility reason of an eligibility one) in it, each between
--   newlines, so `strpos(repositories, E'\n' || $1 || E'\n') > 0` skips a segment without
--   decoding it.
--
-- Reads decode the candidate segments and filter their decisions exactly
-- (`store::decision_log`). The view `rollout_decisions` keeps the old table's columns for
-- SQL written against it (slow: it expands every segment).
CREATE TABLE rollout_decision_segments (
    seq BIGSERIAL PRIMARY KEY,
    feature TEXT NOT NULL,
    first_id UUID NOT NULL,
    last_id UUID NOT NULL CHECK (first_id <= last_id),
    rows BIGINT NOT NULL CHECK (rows > 0),
    repositories TEXT NOT NULL,
    rules TEXT NOT NULL,
    body TEXT NOT NULL
);
-- Newest first (and `decision(id)`: segments whose last id is at or after it), oldest first.
CREATE INDEX rollout_decision_segments_last ON rollout_decision_segments (last_id, seq);
CREATE INDEX rollout_decision_segments_first ON rollout_decision_segments (first_id, seq);
-- The same for one feature.
CREATE INDEX rollout_decision_segments_feature_last ON rollout_decision_segments (feature, last_id, seq);
CREATE INDEX rollout_decision_segments_feature_first ON rollout_decision_segments (feature, first_id, seq);

-- The decisions already logged, a segment per feature and thousand decisions.
INSERT INTO rollout_decision_segments (feature, first_id, last_id, rows, repositories, rules, body)
SELECT feature, (array_agg(id ORDER BY id))[1], (array_agg(id ORDER BY id DESC))[1], count(*),
    E'\n' || string_agg(repository_id, E'\n' ORDER BY id) || E'\n',
    E'\n' || coalesce(string_agg(CASE kind WHEN 'route' THEN rule ELSE reason END, E'\n' ORDER BY id), '') || E'\n',
    '[' || string_agg(json_build_array(
        id, (extract(epoch FROM time) * 1000000)::bigint, kind, config_version, overrides, policy_sha256,
        repository_id, masked, category, job, processor, rule, eligible, reason, bucket, fallback,
        duration_us)::text, ',' ORDER BY id) || ']'
FROM (
    SELECT *, (row_number() OVER (PARTITION BY feature ORDER BY id) - 1) / 1000 AS segment
    FROM rollout_decisions
) numbered
GROUP BY feature, segment;

DROP TABLE rollout_decisions;

-- The old table's columns, one row per logged decision (read only).
CREATE VIEW rollout_decisions AS
SELECT
    (d->>0)::uuid AS id,
    'epoch'::timestamptz + (d->>1)::bigint * interval '1 microsecond' AS time,
    s.feature AS feature,
    d->>2 AS kind,
    (d->>3)::bigint AS config_version,
    NULLIF(d->4, 'null'::jsonb) AS overrides,
    d->>5 AS policy_sha256,
    d->>6 AS repository_id,
    (d->>7)::boolean AS masked,
    d->>8 AS category,
    NULLIF(d->9, 'null'::jsonb) AS job,
    d->>10 AS processor,
    d->>11 AS rule,
    (d->>12)::boolean AS eligible,
    d->>13 AS reason,
    (d->>14)::smallint AS bucket,
    d->>15 AS fallback,
    (d->>16)::bigint AS duration_us
FROM rollout_decision_segments s
CROSS JOIN LATERAL jsonb_array_elements(s.body::jsonb) AS e(d);

-- Immutable as the table was: the service role inserts and deletes segments (retention
-- rewrites a segment it trims as a delete and an insert), never updates.
ALTER TABLE rollout_decision_segments ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_decision_segments_read ON rollout_decision_segments FOR SELECT USING (true);
CREATE POLICY rollout_decision_segments_service_insert ON rollout_decision_segments FOR INSERT TO rollout_service
    WITH CHECK (true);
CREATE POLICY rollout_decision_segments_service_delete ON rollout_decision_segments FOR DELETE TO rollout_service
    USING (true);
GRANT SELECT ON rollout_decision_segments TO PUBLIC;
GRANT INSERT, DELETE ON rollout_decision_segments TO rollout_service;
GRANT USAGE ON SEQUENCE rollout_decision_segments_seq_seq TO rollout_service;
GRANT SELECT ON rollout_decisions TO PUBLIC;
