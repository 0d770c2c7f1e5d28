-- WatchJob by push (scheduler_server/watch.py, issue 11). A change to a watched job sends
-- NOTIFY job_events with its id; each server's watch hub LISTENs on one connection.
--
-- Only watched jobs notify. NOTIFY takes a cluster-wide lock from before its transaction's
-- commit until after it (so that notifications queue in commit order), and with fsync on
-- that serializes every notifying commit behind the one before: measured here, 16 clients
-- updating one row each went from ~1,100-1,600 commits/s to ~100-135/s when every commit
-- notified. So each server records the jobs it watches in watched_jobs, and the trigger
-- notifies for those only; a job nobody watches costs one index probe of a small table.
--
-- A trigger rather than a NOTIFY in each statement: every statement that changes a job,
-- today's and tomorrow's (claims, settles, cancels, recovery, DLQ retry), notifies without
-- having to remember to.
--
-- UNLOGGED: after a crash PostgreSQL empties it; the hubs register again when they
-- reconnect. `until`: a row its server failed to remove (it was killed) stops mattering
-- at WATCH_MAX_LIFE, and is deleted by the next hub that registers.
CREATE UNLOGGED TABLE watched_jobs (
    job_id  uuid NOT NULL,
    server  text NOT NULL,
    until   timestamptz NOT NULL,
    PRIMARY KEY (job_id, server)
);

CREATE FUNCTION notify_watchers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM watched_jobs WHERE job_id = NEW.id AND until > now()) THEN
        PERFORM pg_notify('job_events', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

-- Every change a watcher sees moves updated_at (status, attempt, exit code, output).
CREATE TRIGGER jobs_notify_watchers AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_watchers();
