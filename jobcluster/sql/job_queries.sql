-- Reading jobs: one job with its attempts, pages of jobs, counts. Statuses are shown as users
-- see them (job_shown_status, migration 0004).
-- Loaded by jobcluster/store/job_queries.py; each block is one statement.

-- name: get_job
SELECT j.*, job_shown_status(j.status, j.not_before) AS shown_status, a.output AS output
  FROM jobs j
  LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts
 WHERE j.id = $1;

-- name: get_attempts
-- The latest 1,000 attempts, oldest first: a job retried from the DLQ again and again keeps a
-- bounded history in its status reply (every attempt stays in the table).
SELECT * FROM (
    SELECT attempt, worker_id, started_at, finished_at, exit_code, left(error, 2000) AS error, output_truncated
      FROM job_attempts WHERE job_id = $1 ORDER BY attempt DESC LIMIT 1000
) latest ORDER BY attempt;

-- name: list_jobs
-- Newest first. $1 status filter (as shown) or NULL, $2 ids or NULL, keyset cursor
-- ($3 created_at, $4 id) or NULLs, $5 page size, $6 include output,
-- $7 text in the command or name (NULL: any), $8 schedule id or name (NULL: any),
-- $9 / $10 created at or after / before (NULL: open), $11 byte budget of the page,
-- $12 queue (NULL: any).
-- The page stops at the first row that starts past the budget (row_bytes estimates the
-- row's size in a reply); `fetched` says how many rows matched before that cut, which are
-- never sent.
SELECT * FROM (
    SELECT p.*, sum(p.row_bytes) OVER (ORDER BY p.created_at DESC, p.id DESC) AS running_bytes,
           count(*) OVER () AS fetched
      FROM (
        SELECT j.*, job_shown_status(j.status, j.not_before) AS shown_status,
               CASE WHEN $6::boolean THEN a.output ELSE '' END AS output,
               256 + octet_length(j.command) + octet_length(j.name) + octet_length(j.description)
                   + octet_length(j.last_error) + CASE WHEN $6::boolean THEN coalesce(octet_length(a.output), 0)
                                                       ELSE 0 END AS row_bytes
          FROM jobs j
          LEFT JOIN job_attempts a ON $6::boolean AND a.job_id = j.id AND a.attempt = j.attempts
         WHERE ($1::text IS NULL
                -- the IN lets an index on status narrow the rows; job_shown_status decides
                OR (j.status IN ($1, 'PENDING') AND job_shown_status(j.status, j.not_before) = $1))
           AND ($2::uuid[] IS NULL OR j.id = ANY($2::uuid[]))
           AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4::uuid))
           AND ($7::text IS NULL OR strpos(lower(j.command), lower($7)) > 0
                OR strpos(lower(j.name), lower($7)) > 0)
           AND ($8::text IS NULL OR j.schedule_id IN (SELECT id FROM schedules WHERE name = $8 OR id::text = $8))
           AND ($9::timestamptz IS NULL OR j.created_at >= $9)
           AND ($10::timestamptz IS NULL OR j.created_at < $10)
           AND ($12::text IS NULL OR j.queue = $12)
         ORDER BY j.created_at DESC, j.id DESC
         LIMIT $5
      ) p
) page
 WHERE running_bytes - row_bytes < $11
 ORDER BY created_at DESC, id DESC;

-- name: status_counts
-- Counts by status as shown, so each count matches what the status filter lists.
SELECT job_shown_status(status, not_before) AS status, count(*) AS n FROM jobs GROUP BY 1;

-- name: watched_jobs_changed
-- WatchJob's look at the jobs watched on a server that changed (or may have). $1 the job ids, $2 / $3 the shown
-- status and version (updated_at in microseconds) the watchers have seen, NULL when not yet
-- seen. Returns, whole, only the jobs that are new to the watchers or have changed.
SELECT j.*, job_shown_status(j.status, j.not_before) AS shown_status, a.output AS output,
       (extract(epoch FROM j.updated_at) * 1000000)::bigint AS version,
       -- a PENDING job shows as QUEUED from then on, without any write: the hub looks again then
       GREATEST(0, ceil(extract(epoch FROM j.not_before - now()) * 1000))::bigint AS due_in_ms
  FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(id, status, version)
  JOIN jobs j ON j.id = k.id
  LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts
 WHERE k.version IS NULL
    OR k.status IS DISTINCT FROM job_shown_status(j.status, j.not_before)
    OR k.version <> (extract(epoch FROM j.updated_at) * 1000000)::bigint;

-- name: attempts_of_jobs
SELECT job_id, attempt, worker_id, started_at, finished_at, exit_code, error, output_truncated
  FROM job_attempts WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, attempt;

-- name: running_by_key
-- How many jobs of each of these concurrency keys run now (jobs_running_key_idx).
SELECT concurrency_key, count(*) AS n FROM jobs
 WHERE status = 'RUNNING' AND concurrency_key <> '' AND concurrency_key = ANY($1::text[])
 GROUP BY concurrency_key;
