-- The job lifecycle: submit, claim, settle (finish an attempt), cancel. Each state change
-- is one statement with its guard in the WHERE clause; attempts are fenced by their number.
-- Loaded by jobcluster/store/jobs.py; each block is one statement.

-- name: insert_job
-- One new job; an idempotency key already taken inserts nothing. $11-$15: its routing.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  run_at, not_before, idempotency_key, submitted_via,
                  queue, priority, constraints, concurrency_key, max_concurrency)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($8, now()), $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, status, not_before, queue, priority, constraints, concurrency_key, max_concurrency;

-- name: job_by_idempotency_key
SELECT id, job_shown_status(status, not_before) AS shown_status, not_before,
       queue, priority, constraints, concurrency_key, max_concurrency FROM jobs
 WHERE idempotency_key = $1;

-- name: insert_jobs
-- Many new jobs in one statement (SubmitJobs); idempotency keys already taken, or
-- repeated within the batch, insert nothing for that row. Constraints ($14) come as one
-- string per job, the job's tags joined by ',' (tags hold no comma): unnest cannot take an
-- array of arrays of different lengths.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  run_at, not_before, idempotency_key, submitted_via,
                  queue, priority, constraints, concurrency_key, max_concurrency)
SELECT id, name, description, command, status, max_retries, timeout_seconds,
       run_at, COALESCE(run_at, now()), idempotency_key, $11,
       queue, priority, COALESCE(string_to_array(NULLIF(constraints, ''), ','), '{}'), concurrency_key, max_concurrency
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
              $7::float8[], $8::timestamptz[], $9::text[], $10::int[],
              $12::text[], $13::smallint[], $14::text[], $15::text[], $16::int[])
       AS b(id, name, description, command, status, max_retries, timeout_seconds, run_at, idempotency_key, ord,
            queue, priority, constraints, concurrency_key, max_concurrency)
 ORDER BY ord
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, status, not_before, queue, priority, constraints, concurrency_key, max_concurrency;

-- name: jobs_by_idempotency_keys
SELECT id, job_shown_status(status, not_before) AS shown_status, not_before, idempotency_key,
       queue, priority, constraints, concurrency_key, max_concurrency FROM jobs
 WHERE idempotency_key = ANY($1::text[]);

-- name: claim_job
-- Take a job for one attempt: QUEUED (or PENDING and due) -> RUNNING, attempts + 1,
-- and open the attempt's row. $3 is the claim's token: the same claim asked again
-- (its first reply was lost after the commit) gets the attempt it opened. Returns
-- nothing when the job is not claimable: not waiting, not due, not for this worker
-- (its queue is not among $4, WORKER_QUEUES, or it has a constraint not among $5,
-- WORKER_TAGS; NULL: any), or its concurrency key is full. The key's limit: the job's
-- max_concurrency, else the key's entry in $6/$7 (CONCURRENCY_LIMITS), else 1. waited: seconds
-- from when the job was due (created, run_at or a retry's backoff) to this start.
WITH claimed AS (
    UPDATE jobs
       SET status = 'RUNNING', attempts = attempts + 1, worker_id = $2, claim_token = $3,
           started_at = now(), updated_at = now(), finished_at = NULL,
           exit_code = NULL, last_error = ''
     WHERE id = $1 AND status IN ('QUEUED', 'PENDING') AND not_before <= now()
       AND ($4::text[] IS NULL OR queue = ANY($4::text[])) AND ($5::text[] IS NULL OR constraints <@ $5::text[])
       -- CASE: the function (a lock and a count) runs only for a job with a key
       AND CASE WHEN concurrency_key = '' THEN true
                ELSE concurrency_slot_free(concurrency_key, COALESCE(
                         NULLIF(max_concurrency, 0),
                         (SELECT l.n FROM unnest($6::text[], $7::int[]) AS l(k, n) WHERE l.k = concurrency_key LIMIT 1),
                         1))
           END
 RETURNING id, command, timeout_seconds, max_retries, attempts,
           interruptions + attempts_base AS interruptions, queue, priority, constraints, concurrency_key,
           extract(epoch FROM now() - GREATEST(created_at, not_before))::float8 AS waited
), opened AS (
    INSERT INTO job_attempts (job_id, attempt, worker_id)
    SELECT id, attempts, $2 FROM claimed
), again AS (
    -- reads the row as it was before this statement: only an earlier claim with $3 matches
    SELECT id, command, timeout_seconds, max_retries, attempts,
           interruptions + attempts_base AS interruptions, queue, priority, constraints, concurrency_key,
           extract(epoch FROM started_at - GREATEST(created_at, not_before))::float8 AS waited
      FROM jobs WHERE id = $1 AND status = 'RUNNING' AND worker_id = $2 AND claim_token = $3
)
SELECT * FROM claimed
UNION ALL
SELECT * FROM again;

-- name: claim_refusal
-- Why claim_job returned nothing: the job's state as it is now, how long (ms, by
-- PostgreSQL's clock) until it is due, and its routing (a worker sends an id it may not
-- run to the job's own lane, and backs off a job whose concurrency key is full).
SELECT status, not_before, not_before <= now() AS due,
       GREATEST(0, ceil(extract(epoch FROM not_before - now()) * 1000))::bigint AS wait_ms,
       queue, priority, constraints, concurrency_key
  FROM jobs WHERE id = $1;

-- name: job_routes
-- The routing of these jobs (a gone worker's processing list goes back to its jobs' lanes).
SELECT id, queue, priority, constraints FROM jobs WHERE id = ANY($1::uuid[]);

-- name: finish_attempt
-- Close attempt $2 of job $1, fenced by the attempt number: a late write from an
-- older attempt matches no row. $3 is the job's next status: SUCCEEDED, FAILED,
-- PENDING (retry $8 ms from now, by PostgreSQL's clock, which claim_job judges by too)
-- or QUEUED (interrupted, $9 = 1).
WITH job AS (
    UPDATE jobs
       SET status = $3, exit_code = $4, last_error = $5, output_truncated = $7,
           not_before = CASE WHEN $3 = 'PENDING' THEN now() + $8::bigint * interval '1 millisecond'
                             ELSE not_before END,
           interruptions = interruptions + $9,
           worker_id = CASE WHEN $3 IN ('PENDING', 'QUEUED') THEN NULL ELSE worker_id END,
           finished_at = CASE WHEN $3 IN ('SUCCEEDED', 'FAILED') THEN now() ELSE NULL END,
           updated_at = now()
     WHERE id = $1 AND attempts = $2 AND status = 'RUNNING'
 RETURNING id
)
UPDATE job_attempts
   SET finished_at = now(), exit_code = $4, error = $5, output = $6, output_truncated = $7
 WHERE job_id = $1 AND attempt = $2 AND EXISTS (SELECT 1 FROM job)
RETURNING job_id;

-- name: cancel_job
-- Cancel a job that has not finished. Returns its status before, and its worker.
WITH prev AS (
    SELECT id, status, worker_id, attempts FROM jobs
     WHERE id = $1 AND status IN ('PENDING', 'QUEUED', 'RUNNING')
       FOR UPDATE
)
UPDATE jobs j
   SET status = 'CANCELLED', finished_at = now(), updated_at = now(), last_error = $2
  FROM prev
 WHERE j.id = prev.id
RETURNING prev.status AS was, prev.worker_id, prev.attempts;

-- name: job_state
SELECT status FROM jobs WHERE id = $1;

-- name: cancelled_among
SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'CANCELLED';

-- name: close_cancelled_attempt
-- Close attempt $2 of a CANCELLED job $1 with how it ended: the worker killed it, or its
-- command ended before the cancel reached the worker (finish_attempt then matched nothing,
-- as the job is no longer RUNNING). Fenced by the attempt number; once (the attempt is open).
WITH job AS (
    UPDATE jobs SET exit_code = $3, output_truncated = $6, updated_at = now()
     WHERE id = $1 AND attempts = $2 AND status = 'CANCELLED'
       AND EXISTS (SELECT 1 FROM job_attempts WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL)
 RETURNING id
)
UPDATE job_attempts
   SET finished_at = now(), exit_code = $3, error = $4, output = $5, output_truncated = $6
 WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL AND EXISTS (SELECT 1 FROM job)
RETURNING job_id;
