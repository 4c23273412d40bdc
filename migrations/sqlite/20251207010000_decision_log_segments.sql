-- The decision log stored as segments (issue 14: logging every decision costs at most 15 %
-- of throughput). See the Postgres migration of the same name for the reasons and the
-- meaning of every column and of a decision's position in `body`; here UUIDs are canonical
-- lowercase text (text order is id order).
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
    '[' || group_concat(json_array(
        id,
        CAST(strftime('%s', substr(time, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(time, 21, 6) AS INTEGER),
        kind, config_version, json(overrides), policy_sha256, repository_id,
        json(CASE masked WHEN 1 THEN 'true' ELSE 'false' END), category, json(job), processor, rule,
        json(CASE eligible WHEN 1 THEN 'true' ELSE 'false' END), reason, bucket, fallback, duration_us), ',') || ']'
FROM (
    SELECT *, (row_number() OVER (PARTITION BY feature ORDER BY id) - 1) / 1000 AS segment
    FROM rollout_decisions ORDER BY feature, id
)
GROUP BY feature, segment;

DROP TABLE rollout_decisions;

-- The old table's columns, one row per logged decision (read only).
CREATE VIEW rollout_decisions AS
SELECT
    json_extract(d.value, '$[0]') AS id,
    strftime('%Y-%m-%dT%H:%M:%S', json_extract(d.value, '$[1]') / 1000000, 'unixepoch')
        || printf('.%06dZ', json_extract(d.value, '$[1]') % 1000000) AS time,
    s.feature AS feature,
    json_extract(d.value, '$[2]') AS kind,
    json_extract(d.value, '$[3]') AS config_version,
    json_extract(d.value, '$[4]') AS overrides,
    json_extract(d.value, '$[5]') AS policy_sha256,
    json_extract(d.value, '$[6]') AS repository_id,
    json_extract(d.value, '$[7]') AS masked,
    json_extract(d.value, '$[8]') AS category,
    json_extract(d.value, '$[9]') AS job,
    json_extract(d.value, '$[10]') AS processor,
    json_extract(d.value, '$[11]') AS rule,
    json_extract(d.value, '$[12]') AS eligible,
    json_extract(d.value, '$[13]') AS reason,
    json_extract(d.value, '$[14]') AS bucket,
    json_extract(d.value, '$[15]') AS fallback,
    json_extract(d.value, '$[16]') AS duration_us
FROM rollout_decision_segments s, json_each(s.body) d;

-- Segments are immutable (retention rewrites a segment it trims as a delete and an insert).
CREATE TRIGGER rollout_decision_segments_immutable BEFORE UPDATE ON rollout_decision_segments
BEGIN
    SELECT RAISE(ABORT, 'rollout_decision_segments: a logged decision is immutable');
END;
