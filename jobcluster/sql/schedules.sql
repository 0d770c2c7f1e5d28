-- Cron schedules and the one job per (schedule, tick).
-- Loaded by jobcluster/store/schedules.py; each block is one statement.

-- name: upsert_schedule
-- Create a schedule, or update the one with this name. $18: enabled or paused (NULL: a new one is
-- enabled, an existing one keeps its state: re-sending a jobs file does not resume a paused schedule).
-- A new name is refused (no row) when $12 schedules exist already; two creates racing may both pass.
-- $13-$17: the routing of the jobs it fires.
INSERT INTO schedules (id, name, cron, timezone, command, description, max_retries, timeout_seconds,
                       catchup, overlap, enabled, next_run_at,
                       queue, priority, constraints, concurrency_key, max_concurrency)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE($18::boolean, true), $11, $13, $14, $15, $16, $17
 WHERE (SELECT count(*) FROM schedules) < $12 OR EXISTS (SELECT 1 FROM schedules WHERE name = $2)
ON CONFLICT (name) DO UPDATE
   SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, command = EXCLUDED.command,
       description = EXCLUDED.description, max_retries = EXCLUDED.max_retries,
       timeout_seconds = EXCLUDED.timeout_seconds, catchup = EXCLUDED.catchup, overlap = EXCLUDED.overlap,
       enabled = COALESCE($18::boolean, schedules.enabled), next_run_at = EXCLUDED.next_run_at, updated_at = now(),
       queue = EXCLUDED.queue, priority = EXCLUDED.priority, constraints = EXCLUDED.constraints,
       concurrency_key = EXCLUDED.concurrency_key, max_concurrency = EXCLUDED.max_concurrency
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

-- name: lock_schedule
-- Hold the schedule's row until the transaction ends, so that deciding on overlap = forbid and inserting
-- the job is one step against every other run of the schedule (a tick of another leader, RunScheduleNow).
-- FOR NO KEY UPDATE does not wait for submits (a job's foreign key takes FOR KEY SHARE). Its overlap
-- policy as it is now; no row: gone.
SELECT overlap FROM schedules WHERE id = $1 FOR NO KEY UPDATE;

-- name: schedule_unfinished_job
-- The oldest job of the schedule that has not ended (overlap = forbid); no row when there is none.
SELECT id, status FROM jobs WHERE schedule_id = $1 AND status IN ('PENDING', 'QUEUED', 'RUNNING')
 ORDER BY created_at LIMIT 1;

-- name: insert_cron_job
-- One job for one (schedule, tick) ($9 NULL: a RunScheduleNow, outside the ticks). The tick's own record,
-- the unique (schedule_id, scheduled_for) index, makes a second try insert nothing; the job has no
-- idempotency key, so nothing a caller submitted can stand in for it (any other conflict is an error,
-- never a silent skip). $10-$14: the schedule's routing, which its jobs inherit.
INSERT INTO jobs (id, name, description, command, status, max_retries, timeout_seconds,
                  submitted_via, schedule_id, scheduled_for,
                  queue, priority, constraints, concurrency_key, max_concurrency)
VALUES ($1, $2, $3, $4, 'QUEUED', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: advance_schedule
-- Move a schedule past the ticks just handled; guarded by the next_run_at that was read.
UPDATE schedules
   SET next_run_at = $3, updated_at = now(),
       last_run_at = COALESCE($4, last_run_at), last_job_id = COALESCE($5, last_job_id),
       last_skip_at = CASE WHEN $6 <> '' THEN now() ELSE last_skip_at END,
       last_skip_reason = CASE WHEN $6 <> '' THEN $6 ELSE last_skip_reason END
 WHERE id = $1 AND next_run_at = $2;
