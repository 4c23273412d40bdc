-- The policy sha256 named once per segment (issue 14: logging every decision costs at most
-- 15 % of throughput). See the Postgres migration of the same name.
ALTER TABLE rollout_decision_segments ADD COLUMN policy_sha256 TEXT;

DROP VIEW rollout_decisions;

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
    coalesce(s.policy_sha256, json_extract(d.value, '$[5]')) AS policy_sha256,
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
