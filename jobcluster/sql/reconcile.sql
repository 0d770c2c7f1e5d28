-- Reconciliation: jobs that should be waiting in Redis.
-- Loaded by jobcluster/store/reconcile.py; each block is one statement.

-- name: waiting_jobs
-- Jobs that should be in Redis (QUEUED or PENDING) and have not changed for a while.
SELECT id, status, not_before FROM jobs
 WHERE status IN ('QUEUED', 'PENDING') AND updated_at < now() - make_interval(secs => $1)
 ORDER BY updated_at
 LIMIT $2;

-- name: still_waiting
SELECT id, status, not_before FROM jobs
 WHERE id = ANY($1::uuid[]) AND status IN ('QUEUED', 'PENDING');
