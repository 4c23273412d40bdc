-- Safety beats an environment override (SPEC §4): whether an automatic rollback is in force.
--
-- Set by a `rollback` (with the percentage set to 0), cleared by the next change of the
-- percentage by an operator. While it is set, `HYBRID_ROLLOUT_PERCENTAGE` does not apply:
-- the effective percentage is 0 on every instance. Without it, a rollback under the
-- override wrote only a history row, routing stayed at the override, and every later health
-- check asked for a rollback again.
ALTER TABLE rollout_configuration
    ADD COLUMN rolled_back BOOLEAN NOT NULL DEFAULT false;
