-- Processing-time histograms (percentiles in the stats). Each row counts the timed jobs of
-- one configuration and processor whose processing time fell in one bucket, in one metrics
-- window: the same window starts as `rollout_metrics` (the hour, or the state change inside
-- it), so the stats read both over the same window. Buckets are fixed (host
-- `store::latency`): 0..=31 one millisecond each, then 16 per power of two, 336 open-ended
-- (at least 2^24 ms). Sparse: only buckets with jobs have a row. Written in the transaction
-- of the outcome metrics, by `job_count = job_count + delta` upserts (no read-modify-write);
-- counts saturate at the INTEGER maximum.
CREATE TABLE rollout_latency_buckets (
    rollout_config_id TEXT NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    processor_type TEXT NOT NULL CHECK (processor_type IN ('inngest', 'github_actions')),
    metrics_window_start TEXT NOT NULL,
    metrics_window_end TEXT NOT NULL CHECK (metrics_window_end > metrics_window_start),
    bucket INTEGER NOT NULL CHECK (bucket BETWEEN 0 AND 336),
    job_count INTEGER NOT NULL CHECK (job_count > 0),
    PRIMARY KEY (rollout_config_id, processor_type, metrics_window_start, bucket)
) WITHOUT ROWID;
