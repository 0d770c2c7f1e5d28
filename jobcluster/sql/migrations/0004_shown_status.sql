-- The one definition of the status users see: a PENDING job whose time has come
-- (not_before passed) shows as QUEUED, since it is promoted to pending_jobs or
-- about to be. Every read of a job's status for users goes through this function.
CREATE FUNCTION job_shown_status(status text, not_before timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN status = 'PENDING' AND not_before <= now() THEN 'QUEUED' ELSE status END $$;
