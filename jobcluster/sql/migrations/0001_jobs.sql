-- Jobs and their attempts. PostgreSQL is the record; Redis holds ids only.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    command          text NOT NULL,
    -- PENDING: waiting for not_before (run_at or a retry backoff); QUEUED: ready;
    -- RUNNING; and the terminal SUCCEEDED, FAILED (dead-lettered), CANCELLED.
    status           text NOT NULL CHECK (status IN
                       ('PENDING', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    max_retries      integer NOT NULL CHECK (max_retries >= 0),
    timeout_seconds  double precision NOT NULL CHECK (timeout_seconds >= 0),
    run_at           timestamptz,
    not_before       timestamptz NOT NULL DEFAULT now(),
    idempotency_key  text UNIQUE,
    -- attempts: attempts started, the fencing token of the running attempt.
    -- interruptions: attempts stopped by a worker's graceful shutdown; they do
    -- not use up retries.
    attempts         integer NOT NULL DEFAULT 0,
    interruptions    integer NOT NULL DEFAULT 0,
    exit_code        integer,
    output_truncated boolean NOT NULL DEFAULT false,
    last_error       text NOT NULL DEFAULT '',
    worker_id        text,
    submitted_via    text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_running_worker_idx ON jobs (worker_id) WHERE status = 'RUNNING';

CREATE TABLE job_attempts (
    job_id           uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    worker_id        text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    exit_code        integer,
    output           text NOT NULL DEFAULT '',
    output_truncated boolean NOT NULL DEFAULT false,
    error            text NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, attempt)
);
