"""Reconciliation's view of Redis: which ids it holds, and putting back the ones it lost.

PostgreSQL's side (jobs that should be waiting) is :mod:`jobcluster.store.reconcile`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis

from jobcluster import keys
from jobcluster.queue import reconcile_scripts as lua
from jobcluster.queue.base import OP_TIMEOUT, Part, bounded, processing_lists

#: Ids per dead-letter restore script (each LPOS scans dlq_tasks, kept short after a data loss).
DEAD_CHUNK = 500
#: Ids per LRANGE when reading ``dlq_tasks`` whole.
DEAD_READ = 1000
#: Most list entries one dead-letter insert script may walk past (each LINSERT walks from the head to its
#: pivot; Redis here walks about 18,000 ids a millisecond on a quiet machine): about 14 ms a script.
INSERT_WALK = 250_000
#: Dead letters put back among the oldest TAIL_SEGMENT entries of ``dlq_tasks`` (where a loss of older
#: entries lands) are put back by rewriting that tail in one script (LTRIM, then RPUSH of it merged with
#: them: linear in the segment, whatever the number put back), not by LINSERT (a walk from the head each).
TAIL_SEGMENT = 20_000
#: Most list entries the inserts of one sweep pass may walk past (the rest wait for the next pass), so a
#: large loss in the middle of a long list is put back over several passes, never blocking Redis long:
#: about 140 ms of Redis a pass (every RECONCILE_AFTER / 2) at most.
PASS_WALK = 10 * INSERT_WALK
#: Ids per LRANGE / ZRANGE when reading every id Redis holds: a page of 10,000 costs Redis about 2 ms,
#: so a queue of 100,000 is read without blocking it for long.
HELD_READ = 10_000

#: A waiting job as reconciliation restores it: (id, due unix ms or 0 for now, its lane).
Waiting = tuple[str, int, str]


class DataLost(RuntimeError):
    """Redis lost its data (the reconciled mark is gone) after a pass found it kept: the pass's restores,
    meant for ids lost one by one, stop (nothing was pushed by the refused script), and the next pass
    rebuilds everything in order."""

    def __init__(self) -> None:
        super().__init__("Redis lost its data during this reconciliation pass")


@dataclass
class DeadLettersSeen:
    """``dlq_tasks`` as one read saw it: its ids, its length (plus what was pushed since) and ``dlq_moves``;
    ``at``: each id's place counted from the tail (0: the oldest), for where inserts go and what they cost."""

    held: set[str]
    length: int
    moves: str
    at: dict[str, int] = field(default_factory=dict)


class Reconcile(Part):
    """Every id Redis holds, restoring missing ones, and the mark that says Redis kept its data."""

    def __init__(self, redis: aioredis.Redis, op_timeout: float = OP_TIMEOUT) -> None:
        super().__init__(redis, op_timeout)
        self._restore_since = self.redis.register_script(lua.RESTORE_SINCE)
        self._restore_dead_since = self.redis.register_script(lua.RESTORE_DEAD_SINCE)
        self._insert_dead = self.redis.register_script(lua.INSERT_DEAD)
        self._rewrite_dead_tail = self.redis.register_script(lua.REWRITE_DEAD_TAIL)

    @bounded
    async def kept_data(self) -> bool:
        """Whether Redis still holds the mark :meth:`mark_kept` set (gone: Redis lost its data)."""
        return bool(await self.redis.exists(keys.RECONCILED))

    @bounded
    async def mark_kept(self) -> None:
        """Set the mark whose loss tells reconciliation that Redis lost its data."""
        await self.redis.set(keys.RECONCILED, str(int(time.time() * 1000)))

    @bounded
    async def missing_dead(self, job_ids: Sequence[str]) -> list[str]:
        """Those of these ids that ``dlq_tasks`` lacks (one LPOS each, pipelined; recent dead letters are
        near the head, so each is cheap; a missing one scans the list)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lpos(keys.DLQ, job_id)
            found = await pipe.execute()
        return [job_id for job_id, at in zip(job_ids, found) if at is None]

    @bounded
    async def dead_letters_read(self, tries: int = 3) -> DeadLettersSeen | None:
        """Every id in ``dlq_tasks``, read in pages from its oldest end, for :meth:`restore_dead_since`;
        None when a retry or purge kept moving the list (``dlq_moves`` changed) during ``tries`` reads:
        pages of a list being rotated skip ids, which would then look missing."""
        for _ in range(tries):
            moves = cast(str | None, await self.redis.get(keys.DLQ_MOVES)) or "0"
            at: dict[str, int] = {}
            length = 0
            while True:
                page = cast(list[str], await self.redis.lrange(keys.DLQ, -length - DEAD_READ, -length - 1))
                at.update((job_id, length + len(page) - 1 - n) for n, job_id in enumerate(page))
                length += len(page)
                if len(page) < DEAD_READ:
                    break
            if (cast(str | None, await self.redis.get(keys.DLQ_MOVES)) or "0") == moves:
                return DeadLettersSeen(set(at), length, moves, at)
        return None

    @bounded
    async def restore_dead_since(
        self, job_ids: Sequence[str], seen: DeadLettersSeen, *, kept: bool = False
    ) -> int | None:
        """LPUSH to ``dlq_tasks`` these ids, which it lacked when ``seen`` was read, unless one was pushed
        since (checked atomically among the newest entries only). Returns how many were pushed, or None
        (pushing no more) once a retry or purge has moved the list since ``seen``: what it lacked then
        proves nothing now. ``seen.length`` counts the ids pushed here. ``kept``: the caller found Redis
        kept its data, and :class:`DataLost` stops the pushes once the mark is gone."""
        pushed = 0
        for start in range(0, len(job_ids), DEAD_CHUNK):
            done = int(
                await self._restore_dead_since(
                    keys=[keys.DLQ, keys.DLQ_MOVES, *([keys.RECONCILED] if kept else [])],
                    args=[seen.length, seen.moves, *job_ids[start : start + DEAD_CHUNK]],
                )
            )
            if done == -2:
                raise DataLost()
            if done < 0:
                return None
            seen.length += done
            pushed += done
        return pushed

    @bounded
    async def place_dead(self, placed: Sequence[tuple[str, str]], seen: DeadLettersSeen) -> int | None:
        """Put back dead letters ``dlq_tasks`` lacked when ``seen`` was read, each at its place in the order
        of deaths: ``(id, pivot)``, oldest first, the pivot an older dead letter the list holds (or one put
        back before it in ``placed``), just before which the id goes, or '' (the tail). Those whose place
        is among the oldest TAIL_SEGMENT entries go back in one rewrite of that tail; the others by
        :meth:`insert_dead`. Returns how many went in, or None once the list moved since ``seen``."""
        tail_of: dict[str, bool] = {"": True}
        near_tail: list[tuple[str, str]] = []
        elsewhere: list[tuple[str, str]] = []
        for job_id, pivot in placed:
            tail = tail_of.get(pivot, pivot in seen.at and seen.at[pivot] < TAIL_SEGMENT)
            tail_of[job_id] = tail
            (near_tail if tail else elsewhere).append((job_id, pivot))
        done = 0
        if elsewhere:  # first: inserts above the tail leave its entries where the read saw them
            inserted = await self.insert_dead(elsewhere, seen)
            if inserted is None:
                return None
            done += inserted
        if near_tail:
            k = max((seen.at[p] + 1 for _, p in near_tail if p in seen.at), default=0)
            segment = sorted((job_id for job_id, at in seen.at.items() if at < k), key=seen.at.__getitem__)
            after: dict[str, list[str]] = {}
            for job_id, pivot in near_tail:
                after.setdefault(pivot, []).append(job_id)
            tail_first: list[str] = []

            # Tail first: each entry, then what goes just before it (nearer the head), depth first.
            stack = [*reversed(segment), *reversed(after.get("", ()))]
            while stack:
                job_id = stack.pop()
                tail_first.append(job_id)
                stack.extend(reversed(after.get(job_id, ())))
            reply = await self._rewrite_dead_tail(
                keys=[keys.DLQ, keys.DLQ_MOVES], args=[seen.moves, k, *reversed(tail_first)]
            )
            if int(reply[0]) < 0:
                return done or None
            done += int(reply[0])
            seen.moves = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            seen.length += int(reply[0])
        return done

    @bounded
    async def insert_dead(self, placed: Sequence[tuple[str, str]], seen: DeadLettersSeen) -> int | None:
        """Put back dead letters ``dlq_tasks`` lacked when ``seen`` was read, each at its place in the order
        of deaths: ``(id, pivot)``, oldest first, the pivot an older dead letter the list holds (just
        before which the id goes) or '' (the tail). In scripts that walk at most INSERT_WALK entries each,
        and PASS_WALK in all: the rest is left for a later pass. Returns how many went in, or None (none
        more) once a retry, purge or another pass moved the list since ``seen``."""
        done = 0
        walked = 0
        start = 0
        while start < len(placed) and walked < PASS_WALK:
            chunk: list[str] = []
            walk = 0
            while start < len(placed) and len(chunk) < 2 * DEAD_CHUNK:
                job_id, pivot = placed[start]
                cost = seen.length - seen.at.get(pivot, 0) if pivot else 1  # LINSERT walks from the head
                if chunk and walk + cost > INSERT_WALK:
                    break
                chunk += [job_id, pivot]
                walk += cost
                start += 1
            reply = await self._insert_dead(keys=[keys.DLQ, keys.DLQ_MOVES], args=[seen.moves, *chunk])
            if int(reply[0]) < 0:
                return None if done == 0 else done
            done += int(reply[0])
            seen.moves = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            seen.length += int(reply[0])
            walked += walk
        return done

    @bounded
    async def restore_dead(self, job_ids: Sequence[str], *, kept: bool = False) -> int:
        """LPUSH to ``dlq_tasks`` the ids it lacks (checked atomically), oldest dead letter first. ``kept``:
        as for :meth:`restore_dead_since`."""
        pushed = 0
        for start in range(0, len(job_ids), DEAD_CHUNK):
            # known length 0: every entry counts as new, so the whole list is searched
            done = int(
                await self._restore_dead_since(
                    keys=[keys.DLQ, keys.DLQ_MOVES, *([keys.RECONCILED] if kept else [])],
                    args=[0, "", *job_ids[start : start + DEAD_CHUNK]],
                )
            )
            if done == -2:
                raise DataLost()
            pushed += done
        return pushed

    @bounded
    async def retry_in_flight(self) -> bool:
        """Whether a retry of dead letters is moving the jobs it made QUEUED to their lanes (``dlq_retrying``)."""
        return bool(await self.redis.exists(keys.DLQ_RETRYING))

    @bounded
    async def held_and_lengths(self) -> tuple[set[str], dict[str, int]]:
        """Every id Redis holds anywhere (every lane, delayed, processing lists), with how many ids each lane
        had when read (for :meth:`restore_since`).

        Read HELD_READ ids per command from each list's head (where ids are pushed, so a push meanwhile
        only makes an id be read twice, and a take from the tail moves nothing that is still to be read)."""
        held: set[str] = set()
        lengths: dict[str, int] = {}
        registry = cast(set[str], await self.redis.smembers(keys.LANES))
        for lane in [keys.PENDING, *sorted(registry)]:
            lengths[lane] = await self._read_list(lane, held)
        start = 0
        while True:
            page = cast(list[str], await self.redis.zrange(keys.DELAYED, start, start + HELD_READ - 1))
            held.update(page)
            start += len(page)
            if len(page) < HELD_READ:
                break
        for key in await processing_lists(self.redis):
            await self._read_list(key, held)
        return held, lengths

    async def _read_list(self, key: str, into: set[str]) -> int:
        """Add every id of one list to ``into``, a page at a time from its head; returns how many were read."""
        read = 0
        while True:
            page = cast(list[str], await self.redis.lrange(key, read, read + HELD_READ - 1))  # decoded: str
            into.update(page)
            read += len(page)
            if len(page) < HELD_READ:
                return read

    @bounded
    async def restore_since(
        self, jobs: Sequence[Waiting], known: Mapping[str, int], *, kept: bool = False
    ) -> tuple[int, dict[str, int]]:
        """Put back ids Redis held nowhere when each lane was as long as ``known`` says, unless one came back
        since (checked atomically, among each lane's newest entries only; a lane not in ``known`` is
        searched whole); ``(id, due ms or 0, lane)``, in chunks. Returns (pushed in all, the lane lengths
        the caller knows now). ``kept``: the caller found Redis kept its data, and :class:`DataLost` stops
        the pushes once the mark is gone."""
        lengths = dict(known)
        pushed = 0
        now = time.time() * 1000
        processing = await processing_lists(self.redis)
        for start in range(0, len(jobs), DEAD_CHUNK):
            chunk = jobs[start : start + DEAD_CHUNK]
            table = [keys.PENDING, *sorted((set(lengths) | {lane for _, _, lane in chunk}) - {keys.PENDING})]
            index = {lane: n for n, lane in enumerate(table, start=1)}
            args: list[str | int] = [len(table), int(kept), *(lengths.get(lane, 0) for lane in table)]
            for job_id, due_ms, lane in chunk:
                args += [job_id, due_ms if due_ms > now else 0, index[lane]]
            later, *ready = await self._restore_since(
                keys=[
                    keys.DELAYED,
                    keys.DELAYED_LANES,
                    keys.LANES,
                    *table,
                    *(keys.lane_bell(k) for k in table),
                    keys.RECONCILED,
                    *processing,
                ],
                args=args,
            )
            if int(later) < 0:
                raise DataLost()
            for lane, n in zip(table, ready):
                lengths[lane] = lengths.get(lane, 0) + int(n)
            pushed += int(later) + sum(int(n) for n in ready)
        return pushed, lengths

    @bounded
    async def restore(self, jobs: Iterable[Waiting]) -> int:
        """Put back ids Redis holds nowhere (checked atomically per id, against every lane whole);
        ``(id, due ms or 0, lane)``."""
        batch = list(jobs)
        if not batch:
            return 0
        registry = cast(set[str], await self.redis.smembers(keys.LANES))
        return (await self.restore_since(batch, {lane: 0 for lane in [keys.PENDING, *registry]}))[0]
