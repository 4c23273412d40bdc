-- Configuration versions as data (issue 14): every configuration a feature ever had, kept as
-- an immutable snapshot addressed by (configuration, `config_version`), so that a decision
-- naming the version it saw can be explained and replayed under exactly that configuration.
-- The store writes the snapshot in the transaction of the write it describes — the creation
-- of the row and every applied change, beside its history row — so a snapshot exists if and
-- only if its version committed; a change that rolls back or is skipped leaves none. `config`
-- is the whole row as JSON (host `store::config_versions::snapshot_json`: the columns of
-- `StoredConfig::to_json` plus `id`, `config_version`, `rolled_back` and the three times),
-- decoded by `StoredConfig::from_json`. `created_at` is when the version was written.
-- Snapshots are never updated: the service role may only insert them (a repeated version is
-- ignored by ON CONFLICT DO NOTHING); they go with their configuration (ON DELETE CASCADE).
-- An UPDATE of the row made outside the store (an operator's manual statement) bumps the
-- version through rollout_configuration_version but keeps no snapshot.
CREATE TABLE rollout_config_versions (
    rollout_config_id UUID NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    config_version BIGINT NOT NULL CHECK (config_version > 0),
    config JSONB NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT rollout_config_versions_key PRIMARY KEY (rollout_config_id, config_version)
);

ALTER TABLE rollout_config_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollout_config_versions_read ON rollout_config_versions FOR SELECT USING (true);
CREATE POLICY rollout_config_versions_service_write ON rollout_config_versions FOR INSERT TO rollout_service
    WITH CHECK (true);
GRANT SELECT ON rollout_config_versions TO PUBLIC;
GRANT INSERT ON rollout_config_versions TO rollout_service;

-- Backfill: one snapshot of the current row of every configuration, so every current
-- `config_version` is addressable (the versions before it were never kept). The same JSON
-- the store writes: max_error_rate as a number, the times as RFC 3339 text.
INSERT INTO rollout_config_versions (rollout_config_id, config_version, config, created_at)
SELECT c.id, c.config_version,
       jsonb_build_object(
           'feature_name', c.feature_name,
           'rollout_percentage', c.rollout_percentage,
           'is_active', c.is_active,
           'target_repositories', to_jsonb(c.target_repositories),
           'excluded_repositories', to_jsonb(c.excluded_repositories),
           'rollout_strategy', c.rollout_strategy,
           'max_error_rate', c.max_error_rate::float8,
           'monitoring_window_hours', c.monitoring_window_hours,
           'auto_rollback_enabled', c.auto_rollback_enabled,
           'emergency_stop', c.emergency_stop,
           'min_jobs_for_rollback', c.min_jobs_for_rollback,
           'metadata', c.metadata,
           'id', c.id,
           'config_version', c.config_version,
           'rolled_back', c.rolled_back,
           'state_changed_at', c.state_changed_at,
           'created_at', c.created_at,
           'updated_at', c.updated_at),
       c.updated_at
FROM rollout_configuration c
ON CONFLICT (rollout_config_id, config_version) DO NOTHING;
