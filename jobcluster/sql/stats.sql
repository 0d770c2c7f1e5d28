-- Charts (GetStats): per-minute counts and queue samples the leader keeps, and job durations.
-- Loaded by jobcluster/store/stats.py; each block is one statement.

-- name: count_minutes
-- Recount the jobs that finished in the minutes from $1 (a minute's start) to now, by status, and
-- store the counts: run again over the same minutes it corrects them (a job whose transaction
-- committed late is counted the next time), down to none: a count whose jobs are no longer there
-- (a dead letter retried, a job deleted) goes. Reads jobs_finished_idx.
WITH counted AS (
  SELECT date_trunc('minute', finished_at) AS minute, status, count(*) AS n FROM jobs
   WHERE finished_at IS NOT NULL AND finished_at >= $1 AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
   GROUP BY 1, 2
), gone AS (
  DELETE FROM job_minutes m
   WHERE m.minute >= $1 AND NOT EXISTS (SELECT 1 FROM counted c WHERE c.minute = m.minute AND c.status = m.status)
)
INSERT INTO job_minutes (minute, status, n) SELECT minute, status, n FROM counted
ON CONFLICT (minute, status) DO UPDATE SET n = EXCLUDED.n;

-- name: sample_queues
INSERT INTO queue_samples (at, pending, processing, delayed, dlq) VALUES (now(), $1, $2, $3, $4)
ON CONFLICT (at) DO NOTHING;

-- name: forget_stats
-- What is older than $1 seconds goes.
WITH m AS (DELETE FROM job_minutes WHERE minute < now() - make_interval(secs => $1))
DELETE FROM queue_samples WHERE at < now() - make_interval(secs => $1);

-- name: minute_counts
SELECT minute, status, n FROM job_minutes WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
 ORDER BY minute;

-- name: minute_depths
-- The last sample of each minute.
SELECT DISTINCT ON (date_trunc('minute', at)) date_trunc('minute', at) AS minute, pending, processing, delayed, dlq
  FROM queue_samples WHERE at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
 ORDER BY date_trunc('minute', at), at DESC;

-- name: now_minute
SELECT date_trunc('minute', now()) AS minute;

-- name: durations
-- Seconds each of the newest $5 finished jobs ran (its last attempt: started_at to finished_at),
-- filtered as ListJobs filters: $1 status (NULL: SUCCEEDED or FAILED), $2 text in the command or
-- name, $3 schedule name or id, $4 queue.
SELECT extract(epoch FROM j.finished_at - j.started_at)::float8 AS seconds FROM jobs j
 WHERE j.finished_at IS NOT NULL AND j.started_at IS NOT NULL
   AND j.status = ANY(CASE WHEN $1::text IS NULL THEN ARRAY['SUCCEEDED', 'FAILED'] ELSE ARRAY[$1::text] END)
   AND ($2::text IS NULL OR strpos(lower(j.command), lower($2)) > 0 OR strpos(lower(j.name), lower($2)) > 0)
   AND ($3::text IS NULL OR j.schedule_id IN (SELECT id FROM schedules WHERE name = $3 OR id::text = $3))
   AND ($4::text IS NULL OR j.queue = $4)
 ORDER BY j.created_at DESC
 LIMIT $5;
