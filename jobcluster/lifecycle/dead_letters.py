"""Dead letters retried (FAILED jobs back to their lanes) or purged (gone from ``dlq_tasks`` for good).

Both are linear in the length of ``dlq_tasks`` and never block Redis for long: one pass from the oldest
id, :data:`~jobcluster.queue.dead_letters.CHUNK` ids per Redis script. PostgreSQL goes first, as for every
transition: a job is QUEUED in PostgreSQL before its id moves to its lane, and a purge is recorded before
the id leaves (reconciliation, rebuilding ``dlq_tasks``, would otherwise bring it back).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence

from jobcluster import keys
from jobcluster.lifecycle.policy import hint
from jobcluster.queue import Queue
from jobcluster.queue.dead_letters import CHUNK
from jobcluster.store import Store

#: Ids per PostgreSQL statement of a retry: fewer, larger statements (a statement may scan every
#: FAILED job, whatever the batch), while Redis still moves CHUNK ids per script.
BATCH = 10 * CHUNK

Choose = Callable[[list[str]], Awaitable[Collection[str]]]


class DeadLetterMoves:
    """Retry and purge of dead letters."""

    def __init__(self, store: Store, queue: Queue) -> None:
        self.store = store
        self.queue = queue

    async def retry(self, ids: Sequence[str] | None) -> list[str]:
        """FAILED jobs back to their lanes with a fresh retry budget, oldest dead letter first (``ids``: these,
        each in ``dlq_tasks``; None: all); ids whose job is not FAILED stay. Returns those retried.

        While it runs, ``dlq_retrying`` holds reconciliation back: the jobs it made QUEUED in PostgreSQL are
        on their way to their lanes, a chunk at a time, and must not be pushed a second time."""
        token = uuid.uuid4().hex
        await self.queue.dead_letters.mark_retrying(token)
        try:
            return await self._retry(ids, token)
        finally:
            await hint("dlq_retrying: unmark", lambda: self.queue.dead_letters.unmark_retrying(token))

    async def _retry(self, ids: Sequence[str] | None, token: str) -> list[str]:
        if ids is None:
            # Chunk by chunk: PostgreSQL makes the chunk's FAILED jobs QUEUED, then Redis moves their ids.
            return await self._sweep(
                lambda chunk: self.store.dead_letters.retry(list(set(chunk))), to_queue=True, token=token
            )
        queued: set[str] = set()
        for start in range(0, len(ids), BATCH):
            await self.queue.dead_letters.mark_retrying(token)
            queued.update(await self.store.dead_letters.retry(list(ids[start : start + BATCH])))

        async def picked(chunk: list[str]) -> list[str]:
            return [i for i in chunk if i in queued]

        retried = await self._sweep(picked, to_queue=True, token=token)
        moved = set(retried)
        lost = [i for i in ids if i in queued and i not in moved]
        if lost:  # left dlq_tasks while we worked: PostgreSQL has queued them, so Redis must too
            lanes = await self.store.jobs.routes(lost)
            await self.queue.jobs.enqueue_many([(i, 0, lanes.get(i, keys.PENDING)) for i in lost])
            retried += lost
        return retried

    async def purge_all(self) -> int:
        """Every dead letter purged: recorded in PostgreSQL, then ``dlq_tasks`` emptied. Returns how many ids."""
        await self.store.dead_letters.purged_all()
        return await self.queue.dead_letters.purge_all()

    async def purge(self, ids: Sequence[str]) -> list[str]:
        """These dead letters (each in ``dlq_tasks``) purged; returns those that left the list."""
        for start in range(0, len(ids), BATCH):
            await self.store.dead_letters.purged(list(ids[start : start + BATCH]))
        wanted = set(ids)

        async def picked(chunk: list[str]) -> list[str]:
            return [i for i in chunk if i in wanted]

        return await self._sweep(picked, to_queue=False)

    async def _sweep(self, choose: Choose, *, to_queue: bool, token: str = "") -> list[str]:
        """One pass over ``dlq_tasks`` from its oldest id: ``choose`` picks from each batch of BATCH ids
        (one PostgreSQL statement) the ids that leave the list, for their lanes when ``to_queue``;
        Redis moves them CHUNK ids per script, and the rest stay, in order. Returns the ids that left,
        each once, oldest first."""
        gone: dict[str, None] = {}
        remaining = await self.queue.dead_letters.count()
        while remaining > 0:
            batch = await self.queue.dead_letters.oldest(min(BATCH, remaining))
            if not batch:
                break
            if token:  # renewed before each batch's PostgreSQL step
                await self.queue.dead_letters.mark_retrying(token)
            picked = set(await choose(batch))
            for start in range(0, len(batch), CHUNK):
                chunk = batch[start : start + CHUNK]
                chosen = [i for i in dict.fromkeys(chunk) if i in picked]  # in the list's order, each once
                fresh = [i for i in chosen if i not in gone]
                again = [i for i in chosen if i in gone]  # a repeated id leaves, and is queued once
                if to_queue:
                    lanes = await self.store.jobs.routes(fresh) if fresh else {}
                    await self.queue.dead_letters.take_oldest(len(chunk), to_queue=lanes, away=again)
                else:
                    await self.queue.dead_letters.take_oldest(len(chunk), away=chosen)
                gone.update(dict.fromkeys(fresh))
            remaining -= len(batch)
        return list(gone)
