-- `average_processing_time DECIMAL(10, 2)` held means below 100,000,000 ms only: one outcome
-- of 100,000,000 ms (or a saturated sum) made the generated value overflow, failing the
-- whole group-commit upsert it was part of. The mean becomes a double precision, which
-- holds any quotient of two BIGINTs (still rounded to 2 decimals). Sums are computed so
-- that they cannot overflow by the store (saturating at the BIGINT maximum).
ALTER TABLE rollout_metrics DROP COLUMN average_processing_time;
ALTER TABLE rollout_metrics ADD COLUMN average_processing_time DOUBLE PRECISION GENERATED ALWAYS AS (
    CASE WHEN timed_jobs > 0 THEN round(total_processing_time_ms::numeric / timed_jobs, 2)::float8 END
) STORED;
