-- JOB_RETENTION (scheduler_server/retention.py, issue 11): the jobs retention may delete, by
-- when they finished. The predicate is the one delete_expired_jobs (sql/retention.sql) uses,
-- word for word, so the planner walks this index oldest first and never steps over the dead
-- letters (FAILED, not purged) it keeps.
CREATE INDEX jobs_expirable_idx ON jobs (finished_at)
 WHERE status IN ('SUCCEEDED', 'CANCELLED') OR (status = 'FAILED' AND dead_letter_purged_at IS NOT NULL);
