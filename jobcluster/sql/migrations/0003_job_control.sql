-- Job control: retrying a dead-lettered job gives it a fresh retry budget while
-- its attempt numbers (the fencing tokens, and the keys of job_attempts) keep counting.
-- A job's attempts that count against max_retries: attempts - interruptions - attempts_base.
ALTER TABLE jobs ADD COLUMN attempts_base integer NOT NULL DEFAULT 0;
CREATE INDEX jobs_schedule_created_idx ON jobs (schedule_id, created_at DESC) WHERE schedule_id IS NOT NULL;
