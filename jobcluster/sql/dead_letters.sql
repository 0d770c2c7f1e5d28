-- Dead-lettered (FAILED) jobs: what the DLQ listing shows, and retrying them.
-- Loaded by jobcluster/store/dead_letters.py; each block is one statement.

-- name: dead_jobs
SELECT id, name, command, attempts, max_retries, exit_code, last_error, finished_at, status
  FROM jobs WHERE id = ANY($1::uuid[]);

-- name: retry_dead_jobs
-- Back to the queue with a fresh retry budget (attempt numbers keep counting).
UPDATE jobs
   SET status = 'QUEUED', attempts_base = attempts - interruptions, not_before = now(),
       finished_at = NULL, last_error = '', exit_code = NULL, worker_id = NULL, updated_at = now(),
       dead_letter_purged_at = NULL
 WHERE id = ANY($1::uuid[]) AND status = 'FAILED'
RETURNING id;

-- name: purge_dead_jobs
-- Record a purge of these dead letters, so rebuilding dlq_tasks leaves them out (they stay FAILED).
UPDATE jobs SET dead_letter_purged_at = now()
 WHERE id = ANY($1::uuid[]) AND status = 'FAILED' AND dead_letter_purged_at IS NULL;

-- name: purge_all_dead_jobs
-- The same for every dead letter, $1 at a time (jobs_dead_letters_idx); returns how many.
WITH batch AS (
    SELECT id FROM jobs WHERE status = 'FAILED' AND dead_letter_purged_at IS NULL LIMIT $1
)
UPDATE jobs j SET dead_letter_purged_at = now() FROM batch WHERE j.id = batch.id;
