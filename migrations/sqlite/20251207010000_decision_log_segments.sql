-- The decision log stored as segments (issue 14: logging every decision costs at most 15 %
-- of throughput). See the Postgres migration of the same name for the reasons and the
-- meaning of every column; here UUIDs are canonical lowercase text (text order is id order).
CREATE TABLE rollout_decision_segments (
    seq INTEGER PRIMARY KEY,
    feature TEXT NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL CHECK (first_id <= last_id),
    rows INTEGER NOT NULL CHECK (rows > 0),
    repositories TEXT NOT NULL,
    rules TEXT NOT NULL,
    body TEXT NOT NULL
);
-- (`seq` is the rowid: every index ends with it)
CREATE INDEX rollout_decision_segments_last ON rollout_decision_segments (last_id);
CREATE INDEX rollout_decision_segments_first ON rollout_decision_segments (first_id);
CREATE INDEX rollout_decision_segments_feature_last ON rollout_decision_segments (feature, last_id);
CREATE INDEX rollout_decision_segments_feature_first ON rollout_decision_segments (feature, first_id);

-- The decisions already logged, a segment per feature and thousand decisions.
INSERT INTO rollout_decision_segments (feature, first_id, last_id, rows, repositories, rules, body)
SELECT feature, min(id), max(id), count(*),
    char(10) || group_concat(repository_id, char(10)) || char(10),
    char(10) || coalesce(group_concat(CASE kind WHEN 'route' THEN rule ELSE reason END, char(10)), '') || char(10),
    '[' || group_concat(json_object(
        'id', id, 'time', time, 'feature', feature, 'kind', kind, 'config_version', config_version,
        'overrides', json(overrides), 'policy_sha256', policy_sha256, 'repository_id', repository_id,
        'masked', json(CASE masked WHEN 1 THEN 'true' ELSE 'false' END), 'category', category,
        'job', json(job), 'processor', processor, 'rule', rule,
        'eligible', json(CASE eligible WHEN 1 THEN 'true' ELSE 'false' END), 'reason', reason,
        'bucket', bucket, 'fallback', fallback, 'duration_us', duration_us), ',') || ']'
FROM (
    SELECT *, (row_number() OVER (PARTITION BY feature ORDER BY id) - 1) / 1000 AS segment
    FROM rollout_decisions ORDER BY feature, id
)
GROUP BY feature, segment;

DROP TABLE rollout_decisions;

-- The old table's columns, one row per logged decision (read only).
CREATE VIEW rollout_decisions AS
SELECT
    json_extract(d.value, '$.id') AS id,
    json_extract(d.value, '$.time') AS time,
    json_extract(d.value, '$.feature') AS feature,
    json_extract(d.value, '$.kind') AS kind,
    json_extract(d.value, '$.config_version') AS config_version,
    json_extract(d.value, '$.overrides') AS overrides,
    json_extract(d.value, '$.policy_sha256') AS policy_sha256,
    json_extract(d.value, '$.repository_id') AS repository_id,
    json_extract(d.value, '$.masked') AS masked,
    json_extract(d.value, '$.category') AS category,
    json_extract(d.value, '$.job') AS job,
    json_extract(d.value, '$.processor') AS processor,
    json_extract(d.value, '$.rule') AS rule,
    json_extract(d.value, '$.eligible') AS eligible,
    json_extract(d.value, '$.reason') AS reason,
    json_extract(d.value, '$.bucket') AS bucket,
    json_extract(d.value, '$.fallback') AS fallback,
    json_extract(d.value, '$.duration_us') AS duration_us
FROM rollout_decision_segments s, json_each(s.body) d;

-- Segments are immutable (retention rewrites a segment it trims as a delete and an insert).
CREATE TRIGGER rollout_decision_segments_immutable BEFORE UPDATE ON rollout_decision_segments
BEGIN
    SELECT RAISE(ABORT, 'rollout_decision_segments: a logged decision is immutable');
END;
