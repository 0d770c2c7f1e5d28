-- Charts (GetStats, issue 12): jobs finished per minute by status, and queue depths sampled by the
-- leader (scheduler_server/stats.py). Kept 7 days. The partial index lets the leader count the
-- last minutes' finished jobs without reading the rest.
CREATE TABLE job_minutes (
    minute  timestamptz NOT NULL,
    status  text NOT NULL,
    n       integer NOT NULL,
    PRIMARY KEY (minute, status)
);

CREATE TABLE queue_samples (
    at          timestamptz PRIMARY KEY,
    pending     bigint NOT NULL,
    processing  bigint NOT NULL,
    delayed     bigint NOT NULL,
    dlq         bigint NOT NULL
);

CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
