-- The decision log's indexes reshaped for a stream of appends (issue 14: logging every
-- decision costs at most 15 % of throughput).
--
-- `rollout_decisions_repository (repository_id, id DESC)` received its keys in random order:
-- every batch the writer committed dirtied about one index page per row, so the WAL and
-- the checkpoints rewrote the whole index again and again, a cost that grew with the table
-- (measured with the writer's statements on 500,000 rows in batches of 10,000: 16.2 µs of
-- CPU per row with the old indexes, 7.4 µs with these).
--
-- Its replacement is keyed by the second a decision was made, then the repository: the
-- rows of a batch land in the few seconds the batch spans, so an insert touches a small,
-- hot region of the index however large the table grows. A repository's decisions are read
-- by probing its key in each second of the window asked (newest first, a day of seconds per
-- statement: about 0.1 s per day of log when nothing matches; see
-- `store::decision_log::lite::by_repository`).
--
-- `rollout_decisions_time (time)` goes: time filters and pruning by age bound the primary
-- key instead (ids are UUIDv7, and a decision's time is its id's millisecond).
DROP INDEX rollout_decisions_repository;
DROP INDEX rollout_decisions_time;
CREATE INDEX rollout_decisions_repository_second ON rollout_decisions (substr(time, 1, 19), repository_id);
