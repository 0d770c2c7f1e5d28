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
 RETURNING id, command, timeout_seconds, max_retries, attempts,
           interruptions + attempts_base AS interruptions
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
       SET status = CASE WHEN j.attempts - j.interruptions - j.attempts_base > j.max_retries
                         THEN 'FAILED' ELSE 'QUEUED' END,
           last_error = $2, worker_id = NULL, not_before = now(), updated_at = now(),
           finished_at = CASE WHEN j.attempts - j.interruptions - j.attempts_base > j.max_retries
                              THEN now() ELSE NULL END
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
-- ($3 created_at, $4 id) or NULLs, $5 page size, $6 include output,
-- $7 text in the command or name (NULL: any), $8 schedule id or name (NULL: any),
-- $9 / $10 created at or after / before (NULL: open).
SELECT j.*, CASE WHEN $6::boolean THEN a.output ELSE '' END AS output
  FROM jobs j
  LEFT JOIN job_attempts a ON $6::boolean AND a.job_id = j.id AND a.attempt = j.attempts
 WHERE ($1::text IS NULL OR j.status = $1
        OR ($1 = 'QUEUED' AND j.status = 'PENDING' AND j.not_before <= now()))
   AND ($1::text IS DISTINCT FROM 'PENDING' OR j.not_before > now())
   AND ($2::uuid[] IS NULL OR j.id = ANY($2::uuid[]))
   AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4::uuid))
   AND ($7::text IS NULL OR strpos(lower(j.command), lower($7)) > 0 OR strpos(lower(j.name), lower($7)) > 0)
   AND ($8::text IS NULL OR j.schedule_id IN (SELECT id FROM schedules WHERE name = $8 OR id::text = $8))
   AND ($9::timestamptz IS NULL OR j.created_at >= $9)
   AND ($10::timestamptz IS NULL OR j.created_at < $10)
 ORDER BY j.created_at DESC, j.id DESC
 LIMIT $5;

-- name: status_counts
SELECT status, count(*) AS n FROM jobs GROUP BY status;


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

-- name: upsert_schedule
-- Create a schedule, or update the one with this name (and re-enable it).
INSERT INTO schedules (id, name, cron, timezone, command, description, max_retries, timeout_seconds,
                       catchup, overlap, enabled, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11)
ON CONFLICT (name) DO UPDATE
   SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, command = EXCLUDED.command,
       description = EXCLUDED.description, max_retries = EXCLUDED.max_retries,
       timeout_seconds = EXCLUDED.timeout_seconds, catchup = EXCLUDED.catchup, overlap = EXCLUDED.overlap,
       enabled = true, next_run_at = EXCLUDED.next_run_at, updated_at = now()
RETURNING *;

-- name: list_schedules
SELECT s.*, j.status AS last_job_status FROM schedules s
  LEFT JOIN jobs j ON j.id = s.last_job_id
 ORDER BY s.name;

-- name: get_schedule
SELECT s.*, j.status AS last_job_status FROM schedules s
  LEFT JOIN jobs j ON j.id = s.last_job_id
 WHERE s.name = $1 OR s.id::text = $1;

-- name: delete_schedule
DELETE FROM schedules WHERE name = $1 OR id::text = $1 RETURNING *;

-- name: set_schedule_enabled
-- Pause, or resume (a resumed schedule starts again from its next tick after now: $3).
UPDATE schedules SET enabled = $2, updated_at = now(),
       next_run_at = CASE WHEN $2 AND NOT enabled THEN $3 ELSE next_run_at END
 WHERE name = $1 OR id::text = $1
RETURNING *;

-- name: due_schedules
SELECT * FROM schedules WHERE enabled AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2;

-- name: schedule_busy
-- The schedule's latest job has not finished (overlap = forbid).
SELECT EXISTS (SELECT 1 FROM jobs WHERE schedule_id = $1
                 AND status IN ('PENDING', 'QUEUED', 'RUNNING'));

-- name: insert_cron_job
-- One job for one (schedule, tick); the unique index makes a second try insert nothing.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  idempotency_key, submitted_via, schedule_id, scheduled_for)
VALUES ($1, $2, $3, $4, 'QUEUED', $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: advance_schedule
-- Move a schedule past the ticks just handled; guarded by the next_run_at that was read.
UPDATE schedules
   SET next_run_at = $3, updated_at = now(),
       last_run_at = COALESCE($4, last_run_at), last_job_id = COALESCE($5, last_job_id),
       last_skip_at = CASE WHEN $6 <> '' THEN now() ELSE last_skip_at END,
       last_skip_reason = CASE WHEN $6 <> '' THEN $6 ELSE last_skip_reason END
 WHERE id = $1 AND next_run_at = $2;

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
-- The worker killed a cancelled job: record how its last attempt ended.
WITH job AS (
    UPDATE jobs SET exit_code = $3, output_truncated = $6, updated_at = now()
     WHERE id = $1 AND attempts = $2 AND status = 'CANCELLED'
 RETURNING id
)
UPDATE job_attempts
   SET finished_at = now(), exit_code = $3, error = $4, output = $5, output_truncated = $6
 WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL AND EXISTS (SELECT 1 FROM job)
RETURNING job_id;

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

-- name: insert_jobs
-- Many new jobs in one statement (SubmitJobs); idempotency keys already taken, or
-- repeated within the batch, insert nothing for that row.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  run_at, not_before, idempotency_key, submitted_via)
SELECT id, name, description, command, status, max_retries, timeout_seconds,
       run_at, COALESCE(run_at, now()), idempotency_key, $11
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
              $7::float8[], $8::timestamptz[], $9::text[], $10::int[])
       AS b(id, name, description, command, status, max_retries, timeout_seconds, run_at, idempotency_key, ord)
 ORDER BY ord
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, status, not_before;

-- name: jobs_by_idempotency_keys
SELECT id, status, not_before, not_before <= now() AS due, idempotency_key FROM jobs
 WHERE idempotency_key = ANY($1::text[]);
