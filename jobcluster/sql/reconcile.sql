-- Reconciliation: jobs that should be waiting in Redis.
-- Loaded by jobcluster/store/reconcile.py; each block is one statement.

-- name: still_waiting
-- The caller keeps the QUEUED/PENDING ones. No status here: with statistics from before a burst the
-- planner would take the partial index jobs_waiting_idx and read every waiting job, per call.
SELECT id, status, not_before, queue, priority, constraints FROM jobs WHERE id = ANY($1::uuid[]);

-- name: dead_letter_window
-- How far dead letters were checked against dlq_tasks (NULL: never), and the end of this
-- pass's window: dead letters unchanged for $1 seconds (so a worker between its FAILED
-- and its push to dlq_tasks is never touched). One clock: PostgreSQL's.
SELECT (SELECT checked_to FROM dead_letter_checks) AS checked_to,
       now() - make_interval(secs => $1) AS upto;

-- name: set_dead_letter_checked_to
INSERT INTO dead_letter_checks (checked_to) VALUES ($1)
    ON CONFLICT (singleton) DO UPDATE
   SET checked_to = GREATEST(dead_letter_checks.checked_to, EXCLUDED.checked_to);

-- name: dead_letters_between
-- Dead letters (FAILED, not purged) last changed in [$1, $2), after ($3, $4) in
-- (updated_at, id) order; at most $5. Reads the partial index jobs_dead_letters_idx.
SELECT id, updated_at FROM jobs
 WHERE status = 'FAILED' AND dead_letter_purged_at IS NULL
   AND updated_at >= $1 AND updated_at < $2 AND (updated_at, id) > ($3, $4)
 ORDER BY updated_at, id
 LIMIT $5;

-- name: still_dead
-- The caller keeps the dead letters; no status here, for the reason given at still_waiting.
SELECT id, status, dead_letter_purged_at IS NOT NULL AS purged FROM jobs WHERE id = ANY($1::uuid[]);

-- name: waiting_submitted_via
-- A server's own waiting jobs last changed before it started ($2 seconds ago): at its start,
-- those Redis may lack (its last run died between INSERT and push). Newest first, at most $3.
-- Read once per start; it scans the waiting jobs (jobs_waiting_idx), not every job.
SELECT id, status, not_before, queue, priority, constraints FROM jobs
 WHERE status IN ('QUEUED', 'PENDING') AND submitted_via = $1
   AND updated_at < now() - make_interval(secs => $2)
 ORDER BY updated_at DESC
 LIMIT $3;

-- name: waiting_jobs_after
-- Every waiting job unchanged for $1 seconds, after ($2, $3) in (updated_at, id) order; at most $4.
-- The leader's reconciliation pages through them all, a page a pass (jobs_waiting_idx).
SELECT id, status, not_before, queue, priority, constraints, updated_at FROM jobs
 WHERE status IN ('QUEUED', 'PENDING') AND updated_at < now() - make_interval(secs => $1)
   AND updated_at >= $2 AND (updated_at, id) > ($2, $3)
 ORDER BY updated_at, id
 LIMIT $4;

-- name: dead_letters_recorded_since
-- Since when every purge is recorded (dead_letter_purged_at came with migration 0006): dead letters
-- that died before may have been purged unrecorded, so the sweep leaves them alone. NULL: unknown.
SELECT applied_at FROM schema_migrations WHERE version = '0006_dead_letter_rebuild';

-- name: dead_letters_after
-- The sweep: dead letters (FAILED, not purged) that died at or after $1 and are unchanged for $2
-- seconds, after ($3, $4) in (updated_at, id) order (the order they died in); at most $5.
-- Reads the partial index jobs_dead_letters_idx.
SELECT id, updated_at FROM jobs
 WHERE status = 'FAILED' AND dead_letter_purged_at IS NULL
   AND updated_at >= $1 AND updated_at < now() - make_interval(secs => $2)
   AND (updated_at, id) > ($3, $4)
 ORDER BY updated_at, id
 LIMIT $5;

-- name: dead_letters_before
-- The $3 dead letters that died just before ($1, $2), newest first: where an older one missing
-- from dlq_tasks goes back (just nearer the head than the first of them the list holds).
SELECT id FROM jobs
 WHERE status = 'FAILED' AND dead_letter_purged_at IS NULL AND (updated_at, id) < ($1, $2)
 ORDER BY updated_at DESC, id DESC
 LIMIT $3;
