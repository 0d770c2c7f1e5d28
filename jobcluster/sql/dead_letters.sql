-- Dead-lettered (FAILED) jobs: what the DLQ listing shows, and retrying them.
-- Loaded by jobcluster/store/dead_letters.py; each block is one statement.

-- name: dead_jobs
SELECT id, name, command, attempts, max_retries, exit_code, last_error, finished_at, status
  FROM jobs WHERE id = ANY($1::uuid[]);

-- name: retry_dead_jobs
-- Back to the queue with a fresh retry budget (attempt numbers keep counting).
UPDATE jobs
   SET status = 'QUEUED', attempts_base = attempts - interruptions, not_before = now(),
       finished_at = NULL, last_error = '', exit_code = NULL, worker_id = NULL, updated_at = now()
 WHERE id = ANY($1::uuid[]) AND status = 'FAILED'
RETURNING id;
