-- rollout: the four tables of the seed design, fixed (SPEC §3), plus `repositories`
-- (created only if absent) and `policy_versions`.
--
-- Decisions recorded here:
-- * `feature_name` is UNIQUE; the seed row is inserted with ON CONFLICT DO NOTHING and its
--   `created` history row only when none exists, so re-running this file changes nothing.
-- * the rules live in the policy component only: no categorize/eligibility SQL functions.
-- * metrics are buckets keyed UNIQUE (config, repository, processor, window start). A bucket
--   starts at the hour, or at the last change of the rollout's percentage/strategy/stop
--   (`rollout_configuration.state_changed_at`) when that falls inside the hour, so the health
--   window (SPEC §2.5) can begin exactly at a change. Sum and count of timed jobs are kept,
--   so `average_processing_time` (a generated column) is exact.
-- * `rollout_metrics.repository_id` and `repository_categories.repository_id` have NO foreign
--   key to `repositories`: an outcome for an unknown repository must never fail, and
--   `repositories` may be a table owned by another application.
-- * row level security is on for every table: SELECT for everyone, writes only for the
--   `rollout_service` role. Table owners bypass RLS (no FORCE): the host connects as the
--   owner (the role that ran the migrations) or as a login role granted `rollout_service`.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rollout_service') THEN
        CREATE ROLE rollout_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rollout_reader') THEN
        CREATE ROLE rollout_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rollout_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- The minimal repositories table, only when the application has none.
DO $$
BEGIN
    IF to_regclass('repositories') IS NULL THEN
        CREATE TABLE repositories (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            stargazers_count INTEGER NOT NULL DEFAULT 0 CHECK (stargazers_count >= 0),
            contributor_count INTEGER NOT NULL DEFAULT 0 CHECK (contributor_count >= 0),
            pull_request_count INTEGER NOT NULL DEFAULT 0 CHECK (pull_request_count >= 0),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX repositories_owner_name_key ON repositories (lower(owner), lower(name));
        CREATE TRIGGER repositories_updated_at BEFORE UPDATE ON repositories
            FOR EACH ROW EXECUTE FUNCTION rollout_set_updated_at();
        ALTER TABLE repositories ENABLE ROW LEVEL SECURITY;
        CREATE POLICY repositories_read ON repositories FOR SELECT USING (true);
        CREATE POLICY repositories_service_write ON repositories FOR ALL TO rollout_service
            USING (true) WITH CHECK (true);
        GRANT SELECT ON repositories TO PUBLIC;
        GRANT INSERT, UPDATE, DELETE ON repositories TO rollout_service;
    END IF;
END
$$;

CREATE TABLE rollout_configuration (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    feature_name VARCHAR(100) NOT NULL CONSTRAINT rollout_configuration_feature_name_key UNIQUE
        CHECK (length(feature_name) > 0),
    rollout_percentage INTEGER NOT NULL DEFAULT 0
        CHECK (rollout_percentage >= 0 AND rollout_percentage <= 100),
    is_active BOOLEAN NOT NULL DEFAULT false,
    target_repositories TEXT[] NOT NULL DEFAULT '{}',
    excluded_repositories TEXT[] NOT NULL DEFAULT '{}',
    rollout_strategy VARCHAR(50) NOT NULL DEFAULT 'percentage'
        CONSTRAINT rollout_configuration_strategy_check
        CHECK (rollout_strategy IN ('percentage', 'whitelist', 'repository_size')),
    max_error_rate DECIMAL(5, 2) NOT NULL DEFAULT 5.0 CHECK (max_error_rate >= 0 AND max_error_rate <= 100),
    monitoring_window_hours INTEGER NOT NULL DEFAULT 24 CHECK (monitoring_window_hours > 0),
    auto_rollback_enabled BOOLEAN NOT NULL DEFAULT true,
    emergency_stop BOOLEAN NOT NULL DEFAULT false,
    min_jobs_for_rollback INTEGER NOT NULL DEFAULT 10 CHECK (min_jobs_for_rollback >= 0),
    metadata JSONB NOT NULL DEFAULT '{}',
    -- last change of the percentage, the strategy or the stop: the health window starts
    -- no earlier than this (SPEC §2.5)
    state_changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TRIGGER rollout_configuration_updated_at BEFORE UPDATE ON rollout_configuration
    FOR EACH ROW EXECUTE FUNCTION rollout_set_updated_at();

CREATE TABLE repository_categories (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    repository_id UUID NOT NULL CONSTRAINT repository_categories_repository_id_key UNIQUE,
    category VARCHAR(20) NOT NULL
        CHECK (category IN ('test', 'small', 'medium', 'large', 'enterprise')),
    priority_level INTEGER NOT NULL DEFAULT 0 CHECK (priority_level >= 0 AND priority_level <= 100),
    is_test_repository BOOLEAN NOT NULL DEFAULT false,
    star_count INTEGER NOT NULL DEFAULT 0,
    contributor_count INTEGER NOT NULL DEFAULT 0,
    pr_count INTEGER NOT NULL DEFAULT 0,
    monthly_activity_score INTEGER NOT NULL DEFAULT 0,
    last_categorized_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX repository_categories_category_idx ON repository_categories (category);
CREATE TRIGGER repository_categories_updated_at BEFORE UPDATE ON repository_categories
    FOR EACH ROW EXECUTE FUNCTION rollout_set_updated_at();

CREATE TABLE rollout_metrics (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    rollout_config_id UUID NOT NULL REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    repository_id UUID NOT NULL,
    processor_type VARCHAR(20) NOT NULL CHECK (processor_type IN ('inngest', 'github_actions')),
    success_count BIGINT NOT NULL DEFAULT 0 CHECK (success_count >= 0),
    error_count BIGINT NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    total_jobs BIGINT NOT NULL DEFAULT 0 CHECK (total_jobs = success_count + error_count),
    -- sum and count of the jobs that reported a processing time (milliseconds)
    total_processing_time_ms BIGINT NOT NULL DEFAULT 0 CHECK (total_processing_time_ms >= 0),
    timed_jobs BIGINT NOT NULL DEFAULT 0 CHECK (timed_jobs >= 0),
    average_processing_time DECIMAL(10, 2) GENERATED ALWAYS AS (
        CASE WHEN timed_jobs > 0 THEN round(total_processing_time_ms::numeric / timed_jobs, 2) END
    ) STORED,
    last_error_message TEXT,
    last_error_at TIMESTAMPTZ,
    metrics_window_start TIMESTAMPTZ NOT NULL,
    metrics_window_end TIMESTAMPTZ NOT NULL CHECK (metrics_window_end > metrics_window_start),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT rollout_metrics_bucket_key
        UNIQUE (rollout_config_id, repository_id, processor_type, metrics_window_start)
);
CREATE INDEX rollout_metrics_config_window_idx ON rollout_metrics (rollout_config_id, metrics_window_start);

CREATE TABLE rollout_history (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- insertion order, for "newest first" without ties
    seq BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT rollout_history_seq_key UNIQUE,
    rollout_config_id UUID REFERENCES rollout_configuration (id) ON DELETE CASCADE,
    action VARCHAR(50) NOT NULL CONSTRAINT rollout_history_action_check CHECK (action IN (
        'created', 'updated', 'rollback', 'emergency_stop', 'resume', 'whitelist_add',
        'whitelist_remove', 'exclude_add', 'exclude_remove', 'env_override',
        'policy_activated', 'policy_reverted')),
    previous_percentage INTEGER,
    new_percentage INTEGER,
    reason TEXT,
    triggered_by VARCHAR(100),
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rollout_history_config_idx ON rollout_history (rollout_config_id, seq DESC);

CREATE TABLE policy_versions (
    sha256 CHAR(64) PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes BYTEA NOT NULL,
    name TEXT,
    semver TEXT NOT NULL,
    notes TEXT,
    uploaded_by VARCHAR(100),
    uploaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    active BOOLEAN NOT NULL DEFAULT false,
    activated_at TIMESTAMPTZ
);
-- at most one active policy
CREATE UNIQUE INDEX policy_versions_one_active ON policy_versions (active) WHERE active;

-- Row level security: read for everyone, writes only for the service role.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['rollout_configuration', 'repository_categories', 'rollout_metrics',
                             'rollout_history', 'policy_versions']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT USING (true)', t || '_read', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO rollout_service USING (true) WITH CHECK (true)',
                       t || '_service_write', t);
        EXECUTE format('GRANT SELECT ON %I TO PUBLIC', t);
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %I TO rollout_service', t);
    END LOOP;
END
$$;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rollout_service;

-- The seed row (idempotent) and its `created` history row (only once).
INSERT INTO rollout_configuration (feature_name, rollout_percentage, is_active, rollout_strategy,
                                   max_error_rate, monitoring_window_hours, auto_rollback_enabled,
                                   emergency_stop, min_jobs_for_rollback)
VALUES ('hybrid_progressive_capture', 0, true, 'percentage', 5.0, 24, true, false, 10)
ON CONFLICT (feature_name) DO NOTHING;

INSERT INTO rollout_history (rollout_config_id, action, previous_percentage, new_percentage, reason, triggered_by)
SELECT c.id, 'created', NULL, c.rollout_percentage, 'seed configuration', 'migration'
FROM rollout_configuration c
WHERE c.feature_name = 'hybrid_progressive_capture'
  AND NOT EXISTS (SELECT 1 FROM rollout_history h WHERE h.rollout_config_id = c.id AND h.action = 'created');
