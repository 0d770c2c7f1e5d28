-- Workers PostgreSQL believes are running jobs, and taking back the jobs of one that is gone.
-- Loaded by jobcluster/store/liveness.py; each block is one statement.

-- name: running_workers
-- Workers PostgreSQL believes are running jobs, with their oldest start.
SELECT worker_id, min(started_at) AS since FROM jobs
 WHERE status = 'RUNNING' AND worker_id IS NOT NULL
 GROUP BY worker_id;

-- name: recover_worker_jobs
-- Jobs a worker was running when it died or restarted: close their open attempt
-- as lost, counting it, and send each back (QUEUED) or to the DLQ (FAILED) when
-- its retries are used up; the open attempt of a job cancelled meanwhile is closed
-- too. Returns id and new status of each job moved.
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
), cancelled AS (
    -- a job cancelled while this worker ran it: its attempt ended with the worker (a late write of it
    -- from a worker that only seemed dead then finds it closed, and records nothing)
    UPDATE job_attempts a SET finished_at = now(), error = 'cancelled; ' || $2
      FROM jobs j
     WHERE j.status = 'CANCELLED' AND j.worker_id = ANY($1::text[])
       AND a.job_id = j.id AND a.attempt = j.attempts AND a.finished_at IS NULL
)
SELECT id, status FROM moved;

-- name: job_owners
-- Who holds each of these jobs now: a worker checks that its running attempts are still its own.
SELECT id, status, attempts, worker_id FROM jobs WHERE id = ANY($1::uuid[]);

-- name: store_now
-- PostgreSQL's clock: the one due times, claims and cron ticks are judged by.
SELECT now() AS now;
