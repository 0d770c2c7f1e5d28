-- Routing (issue 10): a job's queue, priority, the tags a worker must have (constraints),
-- and a concurrency key with its limit. A cron schedule carries the same fields for the jobs
-- it fires. The defaults are the seed's behaviour: queue 'default' (Redis list pending_jobs),
-- priority 0, no constraints, no key. Constraints are stored sorted and without repeats
-- (jobcluster.model.validate_routing), so equal sets compare equal.
-- max_concurrency 0: the key's limit comes from the per-key setting or its default.
ALTER TABLE jobs
    ADD COLUMN queue           text     NOT NULL DEFAULT 'default',
    ADD COLUMN priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    ADD COLUMN constraints     text[]   NOT NULL DEFAULT '{}',
    ADD COLUMN concurrency_key text     NOT NULL DEFAULT '',
    ADD COLUMN max_concurrency integer  NOT NULL DEFAULT 0 CHECK (max_concurrency BETWEEN 0 AND 10000);

ALTER TABLE schedules
    ADD COLUMN queue           text     NOT NULL DEFAULT 'default',
    ADD COLUMN priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    ADD COLUMN constraints     text[]   NOT NULL DEFAULT '{}',
    ADD COLUMN concurrency_key text     NOT NULL DEFAULT '',
    ADD COLUMN max_concurrency integer  NOT NULL DEFAULT 0 CHECK (max_concurrency BETWEEN 0 AND 10000);

-- How many jobs of a key run now (the limit's check, and a job's waiting_reason).
CREATE INDEX jobs_running_key_idx ON jobs (concurrency_key) WHERE status = 'RUNNING' AND concurrency_key <> '';

-- ListJobs' queue filter, newest first. Partial: most jobs are on 'default', and a listing of
-- 'default' reads jobs_created_idx; a submit to 'default' pays for no extra index entry.
CREATE INDEX jobs_queue_created_idx ON jobs (queue, created_at DESC, id DESC) WHERE queue <> 'default';
