-- Policy candidates: the SQLite twin of
-- migrations/postgres/20251205010000_policy_candidates.sql (see the decisions there).
CREATE TABLE policy_candidate_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    action TEXT NOT NULL CHECK (action IN (
        'shadow_started', 'canary_started', 'canary_step', 'canary_reverted', 'promoted', 'stopped')),
    state TEXT CHECK (state IS NULL OR json_valid(state)),
    reason TEXT,
    triggered_by TEXT NOT NULL CHECK (length(triggered_by) <= 100),
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at TEXT NOT NULL
);
