-- JOB_RETENTION: deleting finished jobs and their attempts, a batch at a time.
-- Loaded by jobcluster/store/retention.py; each block is one statement.

-- name: delete_expired_jobs
-- Up to $2 jobs that finished more than $1 seconds ago (PostgreSQL's clock), oldest first, with
-- their attempts (job_attempts' ON DELETE CASCADE). Deleted: SUCCEEDED, CANCELLED, and FAILED
-- jobs whose dead letter was purged. Kept: dead letters (FAILED, not purged), which dlq_tasks
-- lists and users may still retry; and each schedule's last job, which its schedule shows.
-- SKIP LOCKED: a row another transaction holds (a retry, a cancel) waits for the next batch
-- rather than holding this one up.
WITH doomed AS (
    SELECT j.id FROM jobs j
     WHERE (j.status IN ('SUCCEEDED', 'CANCELLED') OR (j.status = 'FAILED' AND j.dead_letter_purged_at IS NOT NULL))
       AND j.finished_at < now() - $1::float8 * interval '1 second'
       AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.last_job_id = j.id)
     ORDER BY j.finished_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs j USING doomed WHERE j.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone;
