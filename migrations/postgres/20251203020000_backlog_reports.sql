-- Queue backlog (issue 12). Processors, or the code that feeds them, report how many items
-- wait in their queue (`depth`) and how long the oldest of them has waited
-- (`oldest_age_seconds`): `PUT /v1/features/{feature}/backlog`, `rollout backlog report`.
-- Every report is a row, kept as a short time series (reports older than 7 days are pruned
-- by a serving instance), so the health check can see a backlog that grows across its
-- window. `seq` orders reports made at the same instant; `reported_at` is the time the host
-- stored it. Written by a single INSERT that resolves the feature's configuration id in the
-- same statement.
CREATE TABLE rollout_backlog_reports (
    seq BIGSERIAL PRIMARY KEY,
    rollout_config_id UUID NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    processor_type VARCHAR(20) NOT NULL CHECK (processor_type IN ('inngest', 'github_actions')),
    depth BIGINT NOT NULL CHECK (depth >= 0),
    oldest_age_seconds DOUBLE PRECISION NOT NULL CHECK (oldest_age_seconds >= 0),
    reported_at TIMESTAMPTZ NOT NULL
);
-- The window of one configuration (`backlog_window`), oldest first.
CREATE INDEX rollout_backlog_reports_window ON rollout_backlog_reports (rollout_config_id, reported_at);
-- Pruning by age, across configurations.
CREATE INDEX rollout_backlog_reports_reported ON rollout_backlog_reports (reported_at);

ALTER TABLE rollout_backlog_reports ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_backlog_reports_read ON rollout_backlog_reports FOR SELECT USING (true);
CREATE POLICY rollout_backlog_reports_service_write ON rollout_backlog_reports FOR ALL TO rollout_service
    USING (true) WITH CHECK (true);
GRANT SELECT ON rollout_backlog_reports TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON rollout_backlog_reports TO rollout_service;
GRANT USAGE ON SEQUENCE rollout_backlog_reports_seq_seq TO rollout_service;
