-- Concurrency keys (issue 10): jobs sharing a concurrency_key run at most N at once, across
-- the cluster. claim_job (sql/jobs.sql) asks this function, for a job with a key, whether
-- one more may run. It takes a transaction-scoped advisory lock on the key first and counts
-- RUNNING jobs of the key after it has the lock: a VOLATILE function's statements each take
-- a fresh snapshot (READ COMMITTED), so the count sees every claim of the key committed
-- before the lock was granted, and the lock is held until this claim commits. Two claims of
-- one key are thus serialized; claims of other keys and of jobs without a key are not.
-- A job on a killed worker stays RUNNING until the leader recovers it, so it keeps its
-- place in the count: the limit holds across worker kills.
CREATE OR REPLACE FUNCTION concurrency_slot_free(key text, max_running integer) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- 1,000,010: a lock space of our own (two-int advisory keys), apart from the migration lock.
    PERFORM pg_advisory_xact_lock(1000010, hashtext(key));
    RETURN (SELECT count(*) FROM (
                SELECT 1 FROM jobs
                 WHERE concurrency_key = key AND concurrency_key <> '' AND status = 'RUNNING'
                 LIMIT max_running) AS running) < max_running;
END
$$;
