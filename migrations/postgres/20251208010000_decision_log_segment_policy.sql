-- The policy sha256 named once per segment (issue 14: logging every decision costs at most
-- 15 % of throughput).
--
-- A logged decision was about 300 bytes of JSON, 67 of them its policy's sha256, the same
-- for nearly every decision of a segment; the writer copies, checksums and (on SQLite)
-- checkpoints every byte. A segment now holds the decisions of one feature *and one policy*
-- and names the policy once, in `policy_sha256`; its decisions hold `null` at that position
-- (index 5 of each decision's array). A segment written before this migration has no
-- `policy_sha256` (NULL) and each of its decisions names its own, as before: both are read
-- (`store::decision_log::Packed::unpack`, and the view below).
ALTER TABLE rollout_decision_segments ADD COLUMN policy_sha256 TEXT;

-- The old table's columns, one row per logged decision (read only; the same columns, so
-- replaced in place with its grants).
CREATE OR REPLACE VIEW rollout_decisions AS
SELECT
    (d->>0)::uuid AS id,
    'epoch'::timestamptz + (d->>1)::bigint * interval '1 microsecond' AS time,
    s.feature AS feature,
    d->>2 AS kind,
    (d->>3)::bigint AS config_version,
    NULLIF(d->4, 'null'::jsonb) AS overrides,
    coalesce(s.policy_sha256, d->>5) AS policy_sha256,
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
