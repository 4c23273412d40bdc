-- A monotonic version per configuration, instead of the clock, to order reads of a row.
--
-- `updated_at` is stamped by its trigger with now(), which is the start of the writing
-- transaction: a change that waited on the row lock of an earlier one commits later with an
-- older stamp, and a reader keeping "the newest" by `updated_at` refused the newer row.
-- `config_version` grows by exactly 1 with every update: the store writes
-- `before + 1` under the row lock, and this trigger bumps it for any other UPDATE that does
-- not set it (an operator's manual statement), so versions order every write.
ALTER TABLE rollout_configuration
    ADD COLUMN config_version BIGINT NOT NULL DEFAULT 1 CHECK (config_version > 0);

CREATE OR REPLACE FUNCTION rollout_bump_config_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.config_version IS NOT DISTINCT FROM OLD.config_version THEN
        NEW.config_version := OLD.config_version + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER rollout_configuration_version BEFORE UPDATE ON rollout_configuration
    FOR EACH ROW EXECUTE FUNCTION rollout_bump_config_version();
