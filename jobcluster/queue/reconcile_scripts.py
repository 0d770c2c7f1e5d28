"""The Lua scripts of reconciliation (:mod:`jobcluster.queue.reconcile`): each one atomic in Redis, naming
its keys in KEYS[]."""

from __future__ import annotations

from jobcluster.queue.lanes import RING

# KEYS[1] dlq_tasks, KEYS[2] dlq_moves, KEYS[3] (optional) the reconciled mark; ARGV[1] how long the caller
# knows the list to be (its length when the caller read it whole, plus what the caller pushed since; 0:
# search it all), ARGV[2] dlq_moves then ('' : do not check), ARGV[3..] ids it found missing then, oldest
# first. Only the entries pushed to the head since (by workers) are searched, so a rebuild after a loss
# stays linear; that holds only while no retry or purge took ids out or rotated the list, so a changed
# dlq_moves pushes nothing and returns -1. Given the mark, pushes nothing and returns -2 when it is gone
# (Redis lost its data since the caller found it kept). Returns how many were pushed.
RESTORE_DEAD_SINCE = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
if ARGV[2] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return -1 end
local fresh = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
local pushed = 0
for i = 3, #ARGV do
  if fresh <= 0 or not redis.call('LPOS', KEYS[1], ARGV[i], 'MAXLEN', fresh) then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    pushed = pushed + 1
  end
end
return pushed
"""


# KEYS[1] dlq_tasks, KEYS[2] dlq_moves; ARGV[1] dlq_moves as the caller read the list, ARGV[2..] pairs
# (id, pivot), the oldest dead letter first: each id goes just before (nearer the head than) its pivot, an
# older dead letter the list holds, or at the tail when the pivot is '' (no older one is held), so the list
# keeps the order of deaths. Nothing is done when dlq_moves changed since the read (a retry or purge moved
# the list, or another pass inserted): the caller's read no longer says what is missing or where. An id
# whose pivot has gone is left for a later pass. Counts itself in dlq_moves (so a second leader's stale
# read inserts nothing). Returns {inserted, dlq_moves now} or {-1}.
INSERT_DEAD = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return {-1} end
local done = 0
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    done = done + 1
  elseif redis.call('LINSERT', KEYS[1], 'BEFORE', ARGV[i + 1], ARGV[i]) > 0 then
    done = done + 1
  end
end
if done == 0 then return {0, ARGV[1]} end
return {done, tostring(redis.call('INCR', KEYS[2]))}
"""


# KEYS[1] dlq_tasks, KEYS[2] dlq_moves; ARGV[1] dlq_moves as the caller read the list, ARGV[2] how many
# entries to take off the tail (its oldest, as read), ARGV[3..] those entries merged with the dead letters
# to put back among them, head to tail. Nothing is done when dlq_moves changed since the read (only then
# can the tail differ from the read: workers push at the head). Returns {put back, dlq_moves now} or {-1}.
REWRITE_DEAD_TAIL = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return {-1} end
local k = tonumber(ARGV[2])
if k > 0 then redis.call('LTRIM', KEYS[1], 0, -k - 1) end
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return {#ARGV - 2 - k, tostring(redis.call('INCR', KEYS[2]))}
"""


# KEYS[1] delayed, KEYS[2] delayed_lanes, KEYS[3] lanes registry, KEYS[4..3+n] every lane (KEYS[4]
# pending_jobs), KEYS[4+n..3+2n] their bells, KEYS[4+2n] the reconciled mark, KEYS[5+2n..] every
# processing list; ARGV[1] n, ARGV[2] '1' when the mark must be there (else pushes nothing and returns
# {-1}: Redis lost its data since the caller found it kept), ARGV[3..2+n] how long the caller knows each
# lane to be (read whole, plus its own pushes; 0: search it all), then triples (id, due ms or 0, index of
# its lane) of ids Redis held nowhere then. Searches only each lane's entries pushed since (so a rebuild
# stays linear), delayed_jobs and the processing lists; then pushes the rest, each to its lane (or
# delayed_jobs, remembering its lane). Returns {to delayed, pushed to lane 1, ..., lane n}.
RESTORE_SINCE = (
    RING
    + """
local n = tonumber(ARGV[1])
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[4 + 2 * n]) == 0 then return {-1} end
local fresh = {}
for k = 1, n do fresh[k] = redis.call('LLEN', KEYS[3 + k]) - tonumber(ARGV[2 + k]) end
local ready, later = {}, 0
for i = 3 + n, #ARGV, 3 do
  local id, due, k = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local held = redis.call('ZSCORE', KEYS[1], id)
  local j = 1
  while not held and j <= n do
    if fresh[j] > 0 then held = redis.call('LPOS', KEYS[3 + j], id, 'MAXLEN', fresh[j]) end
    j = j + 1
  end
  j = 5 + 2 * n
  while not held and j <= #KEYS do
    held = redis.call('LPOS', KEYS[j], id)
    j = j + 1
  end
  if not held then
    if k > 1 then redis.call('SADD', KEYS[3], KEYS[3 + k]) end
    if due > 0 then
      redis.call('ZADD', KEYS[1], due, id)
      if k > 1 then redis.call('HSET', KEYS[2], id, KEYS[3 + k]) end
      later = later + 1
    else
      ready[k] = ready[k] or {}
      table.insert(ready[k], id)
    end
  end
end
local out = {later}
for k = 1, n do
  local ids = ready[k]
  out[k + 1] = 0
  if ids then
    redis.call('LPUSH', KEYS[3 + k], unpack(ids))
    ring(KEYS[3 + n + k], #ids)
    out[k + 1] = #ids
  end
end
return out
"""
)
