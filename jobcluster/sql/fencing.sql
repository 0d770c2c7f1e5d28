-- Leader terms: PostgreSQL's record of the newest term, which fences a deposed leader's writes.
-- Loaded by jobcluster/store/fencing.py; each block is one statement.

-- name: take_fence
-- A new leader term: record its token unless a newer term is already recorded.
UPDATE leader_fence SET token = $1, holder = $2, since = now()
 WHERE id = 1 AND token <= $1
RETURNING token;

-- name: check_fence
SELECT token, holder FROM leader_fence WHERE id = 1 FOR SHARE;
