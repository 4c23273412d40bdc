-- rollout: the four tables of the seed design, fixed (SPEC §3), plus `repositories`
-- (created only if absent) and `policy_versions` — the SQLite twin of
-- migrations/postgres/20250710010000_rollout_infrastructure.sql (see the decisions there).
--
-- SQLite representations: UUIDs are canonical lowercase hyphenated TEXT; id lists and
-- metadata are JSON TEXT; timestamps are fixed-width UTC TEXT `YYYY-MM-DDTHH:MM:SS.ffffffZ`
-- (the store writes every timestamp in this form, so text order is time order).
-- SQLite has no roles: row level security is a Postgres-only feature.

CREATE TABLE IF NOT EXISTS repositories (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    stargazers_count INTEGER NOT NULL DEFAULT 0 CHECK (stargazers_count >= 0),
    contributor_count INTEGER NOT NULL DEFAULT 0 CHECK (contributor_count >= 0),
    pull_request_count INTEGER NOT NULL DEFAULT 0 CHECK (pull_request_count >= 0),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE UNIQUE INDEX IF NOT EXISTS repositories_owner_name_key ON repositories (lower(owner), lower(name));

CREATE TABLE rollout_configuration (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    feature_name TEXT NOT NULL UNIQUE CHECK (length(feature_name) BETWEEN 1 AND 100),
    rollout_percentage INTEGER NOT NULL DEFAULT 0
        CHECK (rollout_percentage >= 0 AND rollout_percentage <= 100),
    is_active INTEGER NOT NULL DEFAULT 0 CHECK (is_active IN (0, 1)),
    target_repositories TEXT NOT NULL DEFAULT '[]'
        CHECK (json_valid(target_repositories) AND json_type(target_repositories) = 'array'),
    excluded_repositories TEXT NOT NULL DEFAULT '[]'
        CHECK (json_valid(excluded_repositories) AND json_type(excluded_repositories) = 'array'),
    rollout_strategy TEXT NOT NULL DEFAULT 'percentage'
        CHECK (rollout_strategy IN ('percentage', 'whitelist', 'repository_size')),
    max_error_rate REAL NOT NULL DEFAULT 5.0 CHECK (max_error_rate >= 0 AND max_error_rate <= 100),
    monitoring_window_hours INTEGER NOT NULL DEFAULT 24 CHECK (monitoring_window_hours > 0),
    auto_rollback_enabled INTEGER NOT NULL DEFAULT 1 CHECK (auto_rollback_enabled IN (0, 1)),
    emergency_stop INTEGER NOT NULL DEFAULT 0 CHECK (emergency_stop IN (0, 1)),
    min_jobs_for_rollback INTEGER NOT NULL DEFAULT 10 CHECK (min_jobs_for_rollback >= 0),
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    state_changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);

CREATE TABLE repository_categories (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    repository_id TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL CHECK (category IN ('test', 'small', 'medium', 'large', 'enterprise')),
    priority_level INTEGER NOT NULL DEFAULT 0 CHECK (priority_level >= 0 AND priority_level <= 100),
    is_test_repository INTEGER NOT NULL DEFAULT 0 CHECK (is_test_repository IN (0, 1)),
    star_count INTEGER NOT NULL DEFAULT 0,
    contributor_count INTEGER NOT NULL DEFAULT 0,
    pr_count INTEGER NOT NULL DEFAULT 0,
    monthly_activity_score INTEGER NOT NULL DEFAULT 0,
    last_categorized_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX repository_categories_category_idx ON repository_categories (category);

CREATE TABLE rollout_metrics (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    rollout_config_id TEXT NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    repository_id TEXT NOT NULL,
    processor_type TEXT NOT NULL CHECK (processor_type IN ('inngest', 'github_actions')),
    success_count INTEGER NOT NULL DEFAULT 0 CHECK (success_count >= 0),
    error_count INTEGER NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    total_jobs INTEGER NOT NULL DEFAULT 0 CHECK (total_jobs = success_count + error_count),
    total_processing_time_ms INTEGER NOT NULL DEFAULT 0 CHECK (total_processing_time_ms >= 0),
    timed_jobs INTEGER NOT NULL DEFAULT 0 CHECK (timed_jobs >= 0),
    average_processing_time REAL GENERATED ALWAYS AS (
        CASE WHEN timed_jobs > 0 THEN round(CAST(total_processing_time_ms AS REAL) / timed_jobs, 2) END
    ) VIRTUAL,
    last_error_message TEXT,
    last_error_at TEXT,
    metrics_window_start TEXT NOT NULL,
    metrics_window_end TEXT NOT NULL CHECK (metrics_window_end > metrics_window_start),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    UNIQUE (rollout_config_id, repository_id, processor_type, metrics_window_start)
);
CREATE INDEX rollout_metrics_config_window_idx ON rollout_metrics (rollout_config_id, metrics_window_start);

CREATE TABLE rollout_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    rollout_config_id TEXT REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    action TEXT NOT NULL CHECK (action IN (
        'created', 'updated', 'rollback', 'emergency_stop', 'resume', 'whitelist_add',
        'whitelist_remove', 'exclude_add', 'exclude_remove', 'env_override',
        'policy_activated', 'policy_reverted')),
    previous_percentage INTEGER,
    new_percentage INTEGER,
    reason TEXT,
    triggered_by TEXT CHECK (length(triggered_by) <= 100),
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX rollout_history_config_idx ON rollout_history (rollout_config_id, seq DESC);

CREATE TABLE policy_versions (
    sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    bytes BLOB NOT NULL,
    name TEXT,
    semver TEXT NOT NULL,
    notes TEXT,
    uploaded_by TEXT CHECK (length(uploaded_by) <= 100),
    uploaded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    activated_at TEXT
);
CREATE UNIQUE INDEX policy_versions_one_active ON policy_versions (active) WHERE active = 1;

-- updated_at maintained (unless the statement set it itself)
CREATE TRIGGER repositories_updated_at AFTER UPDATE ON repositories
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE repositories SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' WHERE id = NEW.id;
END;
CREATE TRIGGER rollout_configuration_updated_at AFTER UPDATE ON rollout_configuration
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE rollout_configuration SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' WHERE id = NEW.id;
END;
CREATE TRIGGER repository_categories_updated_at AFTER UPDATE ON repository_categories
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE repository_categories SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' WHERE id = NEW.id;
END;
CREATE TRIGGER rollout_metrics_updated_at AFTER UPDATE ON rollout_metrics
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE rollout_metrics SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' WHERE id = NEW.id;
END;

-- The seed row (idempotent) and its `created` history row (only once).
INSERT INTO rollout_configuration (feature_name, rollout_percentage, is_active, rollout_strategy,
                                   max_error_rate, monitoring_window_hours, auto_rollback_enabled,
                                   emergency_stop, min_jobs_for_rollback)
VALUES ('hybrid_progressive_capture', 0, 1, 'percentage', 5.0, 24, 1, 0, 10)
ON CONFLICT (feature_name) DO NOTHING;

INSERT INTO rollout_history (rollout_config_id, action, previous_percentage, new_percentage, reason, triggered_by)
SELECT c.id, 'created', NULL, c.rollout_percentage, 'seed configuration', 'migration'
FROM rollout_configuration c
WHERE c.feature_name = 'hybrid_progressive_capture'
  AND NOT EXISTS (SELECT 1 FROM rollout_history h WHERE h.rollout_config_id = c.id AND h.action = 'created');
