-- Leader fencing, cron schedules, and the link from a job to its schedule tick.

-- The newest leader term PostgreSQL has seen (its etcd fencing token). Leader
-- writes run in a transaction that share-locks this row and checks the token,
-- so a deposed leader's late write fails instead of landing.
CREATE TABLE leader_fence (
    id      integer PRIMARY KEY CHECK (id = 1),
    token   bigint NOT NULL,
    holder  text NOT NULL,
    since   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO leader_fence (id, token, holder) VALUES (1, 0, '');

CREATE TABLE schedules (
    id               uuid PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    cron             text NOT NULL,
    timezone         text NOT NULL DEFAULT 'UTC',
    command          text NOT NULL,
    description      text NOT NULL DEFAULT '',
    max_retries      integer NOT NULL CHECK (max_retries >= 0),
    timeout_seconds  double precision NOT NULL CHECK (timeout_seconds >= 0),
    -- catchup: what a tick later than the misfire grace does: 'skip' it, or
    -- run 'once' for all the missed ticks. overlap: 'forbid' skips a tick while
    -- the previous job of this schedule has not finished.
    catchup          text NOT NULL DEFAULT 'skip' CHECK (catchup IN ('skip', 'once')),
    overlap          text NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'forbid')),
    enabled          boolean NOT NULL DEFAULT true,
    next_run_at      timestamptz NOT NULL,
    last_run_at      timestamptz,
    last_job_id      uuid,
    last_skip_at     timestamptz,
    last_skip_reason text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled;

ALTER TABLE jobs
    ADD COLUMN schedule_id   uuid REFERENCES schedules (id) ON DELETE SET NULL,
    ADD COLUMN scheduled_for timestamptz;
-- One job per (schedule, tick), whoever leads and however often it retries.
CREATE UNIQUE INDEX jobs_schedule_tick_uidx ON jobs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;
CREATE INDEX jobs_waiting_idx ON jobs (updated_at) WHERE status IN ('QUEUED', 'PENDING');
