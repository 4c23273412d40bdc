-- Configuration versions as data (issue 14): an immutable snapshot of every configuration a
-- feature ever had, addressed by (configuration, `config_version`), written in the
-- transaction of the write it describes. See the Postgres migration of the same name for the
-- meaning of every column. Timestamps are fixed-width UTC text, JSON is text.
CREATE TABLE rollout_config_versions (
    rollout_config_id TEXT NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    config_version INTEGER NOT NULL CHECK (config_version > 0),
    config TEXT NOT NULL CHECK (json_valid(config) AND json_type(config) = 'object'),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    PRIMARY KEY (rollout_config_id, config_version)
) WITHOUT ROWID;

-- SQLite has no roles: snapshots are kept immutable by refusing every UPDATE.
CREATE TRIGGER rollout_config_versions_immutable BEFORE UPDATE ON rollout_config_versions
BEGIN
    SELECT RAISE(ABORT, 'rollout_config_versions: a configuration snapshot is immutable');
END;

-- Backfill: one snapshot of the current row of every configuration (the JSON the store
-- writes: booleans as JSON booleans, id lists and metadata as JSON, times as stored).
INSERT INTO rollout_config_versions (rollout_config_id, config_version, config, created_at)
SELECT c.id, c.config_version,
       json_object(
           'feature_name', c.feature_name,
           'rollout_percentage', c.rollout_percentage,
           'is_active', json(CASE WHEN c.is_active THEN 'true' ELSE 'false' END),
           'target_repositories', json(c.target_repositories),
           'excluded_repositories', json(c.excluded_repositories),
           'rollout_strategy', c.rollout_strategy,
           'max_error_rate', c.max_error_rate,
           'monitoring_window_hours', c.monitoring_window_hours,
           'auto_rollback_enabled', json(CASE WHEN c.auto_rollback_enabled THEN 'true' ELSE 'false' END),
           'emergency_stop', json(CASE WHEN c.emergency_stop THEN 'true' ELSE 'false' END),
           'min_jobs_for_rollback', c.min_jobs_for_rollback,
           'metadata', json(c.metadata),
           'id', c.id,
           'config_version', c.config_version,
           'rolled_back', json(CASE WHEN c.rolled_back THEN 'true' ELSE 'false' END),
           'state_changed_at', c.state_changed_at,
           'created_at', c.created_at,
           'updated_at', c.updated_at),
       c.updated_at
FROM rollout_configuration c
WHERE true
ON CONFLICT (rollout_config_id, config_version) DO NOTHING;
