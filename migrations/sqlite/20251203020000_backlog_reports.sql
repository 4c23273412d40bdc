-- Queue backlog (issue 12): one row per report of a processor's queue depth and the age of
-- its oldest item, kept as a short time series (7 days). See the Postgres migration of the
-- same name for the meaning of every column. Timestamps are fixed-width UTC text, so text
-- order is time order.
CREATE TABLE rollout_backlog_reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_config_id TEXT NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    processor_type TEXT NOT NULL CHECK (processor_type IN ('inngest', 'github_actions')),
    depth INTEGER NOT NULL CHECK (depth >= 0),
    oldest_age_seconds REAL NOT NULL CHECK (oldest_age_seconds >= 0),
    reported_at TEXT NOT NULL
);
-- The window of one configuration (`backlog_window`), oldest first.
CREATE INDEX rollout_backlog_reports_window ON rollout_backlog_reports (rollout_config_id, reported_at);
-- Pruning by age, across configurations.
CREATE INDEX rollout_backlog_reports_reported ON rollout_backlog_reports (reported_at);
