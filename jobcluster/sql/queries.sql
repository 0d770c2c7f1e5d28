-- Every SQL statement jobcluster runs, in named blocks (loaded by jobcluster.store).
-- Each state change is one statement with its guard in the WHERE clause.

-- name: insert_job
-- One new job; an idempotency key already taken inserts nothing.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  run_at, not_before, idempotency_key, submitted_via)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($8, now()), $9, $10)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, status, not_before;

-- name: job_by_idempotency_key
SELECT id, status, not_before, not_before <= now() AS due FROM jobs WHERE idempotency_key = $1;

-- name: claim_job
-- Take a job for one attempt: QUEUED (or PENDING and due) -> RUNNING, attempts + 1,
-- and open the attempt's row. Returns nothing when the job is not claimable.
WITH claimed AS (
    UPDATE jobs
       SET status = 'RUNNING', attempts = attempts + 1, worker_id = $2,
           started_at = now(), updated_at = now(), finished_at = NULL,
           exit_code = NULL, last_error = ''
     WHERE id = $1 AND status IN ('QUEUED', 'PENDING') AND not_before <= now()
 RETURNING id, command, timeout_seconds, max_retries, attempts, interruptions
), opened AS (
    INSERT INTO job_attempts (job_id, attempt, worker_id)
    SELECT id, attempts, $2 FROM claimed
)
SELECT * FROM claimed;

-- name: claim_refusal
-- Why claim_job returned nothing: the job's state as it is now.
SELECT status, not_before, not_before <= now() AS due FROM jobs WHERE id = $1;

-- name: finish_attempt
-- Close attempt $2 of job $1, fenced by the attempt number: a late write from an
-- older attempt matches no row. $3 is the job's next status: SUCCEEDED, FAILED,
-- PENDING (retry at $8, unix ms) or QUEUED (interrupted, $9 = 1).
WITH job AS (
    UPDATE jobs
       SET status = $3, exit_code = $4, last_error = $5, output_truncated = $7,
           not_before = CASE WHEN $3 = 'PENDING' THEN to_timestamp($8::double precision / 1000)
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

-- name: recover_worker_jobs
-- Jobs a worker was running when it died or restarted: close their open attempt
-- as lost, counting it, and send each back (QUEUED) or to the DLQ (FAILED) when
-- its retries are used up. Returns id and new status of each.
WITH lost AS (
    SELECT id, attempts FROM jobs
     WHERE status = 'RUNNING' AND worker_id = ANY($1::text[])
       FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs j
       SET status = CASE WHEN j.attempts - j.interruptions > j.max_retries THEN 'FAILED' ELSE 'QUEUED' END,
           last_error = $2, worker_id = NULL, not_before = now(), updated_at = now(),
           finished_at = CASE WHEN j.attempts - j.interruptions > j.max_retries THEN now() ELSE NULL END
      FROM lost
     WHERE j.id = lost.id AND j.attempts = lost.attempts
 RETURNING j.id, j.status, j.attempts
), closed AS (
    UPDATE job_attempts a SET finished_at = now(), error = $2
      FROM moved
     WHERE a.job_id = moved.id AND a.attempt = moved.attempts AND a.finished_at IS NULL
)
SELECT id, status FROM moved;

-- name: get_job
SELECT j.*, a.output AS output
  FROM jobs j
  LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts
 WHERE j.id = $1;

-- name: get_attempts
SELECT attempt, worker_id, started_at, finished_at, exit_code, error, output_truncated
  FROM job_attempts WHERE job_id = $1 ORDER BY attempt;

-- name: list_jobs
-- Newest first. $1 status filter or NULL, $2 ids or NULL, keyset cursor
-- ($3 created_at, $4 id) or NULLs, $5 page size, $6 include output.
SELECT j.*, CASE WHEN $6::boolean THEN a.output ELSE '' END AS output
  FROM jobs j
  LEFT JOIN job_attempts a ON $6::boolean AND a.job_id = j.id AND a.attempt = j.attempts
 WHERE ($1::text IS NULL OR j.status = $1
        OR ($1 = 'QUEUED' AND j.status = 'PENDING' AND j.not_before <= now()))
   AND ($1::text IS DISTINCT FROM 'PENDING' OR j.not_before > now())
   AND ($2::uuid[] IS NULL OR j.id = ANY($2::uuid[]))
   AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4::uuid))
 ORDER BY j.created_at DESC, j.id DESC
 LIMIT $5;


-- name: take_fence
-- A new leader term: record its token unless a newer term is already recorded.
UPDATE leader_fence SET token = $1, holder = $2, since = now()
 WHERE id = 1 AND token <= $1
RETURNING token;

-- name: check_fence
SELECT token, holder FROM leader_fence WHERE id = 1 FOR SHARE;

-- name: running_workers
-- Workers PostgreSQL believes are running jobs, with their oldest start.
SELECT worker_id, min(started_at) AS since FROM jobs
 WHERE status = 'RUNNING' AND worker_id IS NOT NULL
 GROUP BY worker_id;

-- name: waiting_jobs
-- Jobs that should be in Redis (QUEUED or PENDING) and have not changed for a while.
SELECT id, status, not_before FROM jobs
 WHERE status IN ('QUEUED', 'PENDING') AND updated_at < now() - make_interval(secs => $1)
 ORDER BY updated_at
 LIMIT $2;

-- name: still_waiting
SELECT id, status, not_before FROM jobs
 WHERE id = ANY($1::uuid[]) AND status IN ('QUEUED', 'PENDING');
