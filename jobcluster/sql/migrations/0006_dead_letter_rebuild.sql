-- dlq_tasks can be rebuilt from PostgreSQL (issue 9).
-- A purge (PurgeDeadLetters) is recorded here, so rebuilding the DLQ does not undo it;
-- RetryDeadLetters clears it. Reconciliation finds FAILED jobs missing from dlq_tasks
-- through the partial index: only dead letters that were not purged, by last change.
ALTER TABLE jobs ADD COLUMN dead_letter_purged_at timestamptz;
CREATE INDEX jobs_dead_letters_idx ON jobs (updated_at, id)
 WHERE status = 'FAILED' AND dead_letter_purged_at IS NULL;

-- How far reconciliation has checked dead letters against dlq_tasks (PostgreSQL's clock).
-- No row: never checked (a new or upgraded database; its first pass only starts counting,
-- since dead letters purged before this migration were not recorded as purged).
CREATE TABLE dead_letter_checks (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    checked_to timestamptz NOT NULL
);

-- After Redis lost its data the leader pages through every waiting job in (updated_at, id) order:
-- a batch submit gives thousands of jobs one updated_at, so the index carries the id too.
DROP INDEX jobs_waiting_idx;
CREATE INDEX jobs_waiting_idx ON jobs (updated_at, id) WHERE status IN ('QUEUED', 'PENDING');
