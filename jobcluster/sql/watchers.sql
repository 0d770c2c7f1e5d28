-- The jobs each server's watch hub watches (watched_jobs, migration 0010): only they NOTIFY
-- job_events when they change. Loaded by jobcluster/store/watchers.py; one statement a block.

-- name: register
-- $1 the job ids this server ($2) starts watching, until $3 seconds from now. Other servers'
-- rows past their time (their server was killed before it removed them) go too.
WITH stale AS (
    DELETE FROM watched_jobs WHERE until < now() AND server <> $2
)
INSERT INTO watched_jobs (job_id, server, until)
SELECT id, $2, now() + $3::float8 * interval '1 second' FROM unnest($1::uuid[]) AS k(id)
ON CONFLICT (job_id, server) DO UPDATE SET until = EXCLUDED.until;

-- name: unregister
DELETE FROM watched_jobs WHERE job_id = ANY($1::uuid[]) AND server = $2;

-- name: unregister_server
-- Everything this server watched (its hub starts afresh: an earlier run of it may have died).
DELETE FROM watched_jobs WHERE server = $1;
