-- A monotonic version per configuration (see
-- migrations/postgres/20250720010000_config_version.sql): the store writes `before + 1`
-- together with `updated_at`; an UPDATE that sets neither gets `updated_at` from
-- rollout_configuration_updated_at, whose own UPDATE then bumps the version here; one that
-- sets `updated_at` only gets the version bumped directly. Each write bumps it exactly once.
-- rollout_configuration_updated_at is recreated so that the version trigger's own UPDATE
-- does not stamp `updated_at` over a value the statement set itself.
ALTER TABLE rollout_configuration
    ADD COLUMN config_version INTEGER NOT NULL DEFAULT 1 CHECK (config_version > 0);

DROP TRIGGER rollout_configuration_updated_at;
CREATE TRIGGER rollout_configuration_updated_at AFTER UPDATE ON rollout_configuration
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at AND NEW.config_version = OLD.config_version
BEGIN
    UPDATE rollout_configuration SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' WHERE id = NEW.id;
END;

CREATE TRIGGER rollout_configuration_version AFTER UPDATE ON rollout_configuration
    FOR EACH ROW WHEN NEW.config_version = OLD.config_version AND NEW.updated_at <> OLD.updated_at
BEGIN
    UPDATE rollout_configuration SET config_version = OLD.config_version + 1 WHERE id = NEW.id;
END;
