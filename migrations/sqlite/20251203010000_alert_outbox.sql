-- Alerts that reach someone (issue 12): the event outbox and the last health level per
-- feature. See the Postgres migration of the same name for the meaning of every column.
-- Timestamps are fixed-width UTC text, JSON is text.
CREATE TABLE rollout_alert_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 50),
    level TEXT NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
    feature_name TEXT,
    summary TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT NOT NULL,
    claimed_until TEXT,
    delivered_targets TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(delivered_targets)),
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX rollout_alert_events_due ON rollout_alert_events (next_attempt_at) WHERE state = 'pending';
CREATE INDEX rollout_alert_events_created ON rollout_alert_events (created_at);

CREATE TABLE rollout_health_levels (
    feature_name TEXT PRIMARY KEY,
    level TEXT NOT NULL CHECK (level IN ('ok', 'warning', 'critical')),
    changed_at TEXT NOT NULL
) WITHOUT ROWID;
