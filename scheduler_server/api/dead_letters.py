"""RPCs of the dead-letter list: list, retry, purge.

Retry and purge are linear in the length of ``dlq_tasks`` and never block Redis
for long: one pass from the oldest id, :data:`CHUNK` ids per Redis script
(:mod:`jobcluster.queue.dead_letters`). PostgreSQL goes first, as everywhere:
a job is QUEUED in PostgreSQL before its id moves to ``pending_jobs``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

from jobcluster import keys
from jobcluster.limits import MAX_REPLY_BYTES
from jobcluster.model import InvalidJob
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.queue.dead_letters import CHUNK
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.errors import rpc

log = logging.getLogger("server")

#: Ids per PostgreSQL statement of a retry: fewer, larger statements (a statement may scan every
#: FAILED job, whatever the batch), while Redis still moves CHUNK ids per script.
BATCH = 10 * CHUNK
#: Most dead letters in one ListDeadLetters page.
MAX_PAGE = 1000
#: A reply lists at most this many ids (``count`` is always exact), to stay under MAX_REPLY_BYTES.
MAX_IDS_IN_REPLY = MAX_REPLY_BYTES // 40

Choose = Callable[[list[str]], Awaitable[Collection[str]]]


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidJob("page_size must not be negative")
    return min(requested or MAX_PAGE, MAX_PAGE)


def _page_offset(token: str) -> int:
    """A page token of ListDeadLetters: the position of the page's first id. Positions shift as dead
    letters come and go, so a page can repeat or miss an id next to the page before: fine for a view."""
    if not token:
        return 0
    if not token.isdecimal() or len(token) > 9:
        raise InvalidJob("page_token is not one this server issued")
    return int(token)


def _result(ids: list[str], count: int | None = None) -> pb.DeadLettersResult:
    return pb.DeadLettersResult(count=len(ids) if count is None else count, ids=ids[:MAX_IDS_IN_REPLY])


class DeadLetterRpcs(Servicer):
    """ListDeadLetters, RetryDeadLetters, PurgeDeadLetters."""

    async def _named_ids(self, request: pb.DeadLettersRequest) -> list[str]:
        """The request's ids, each once; INVALID_ARGUMENT unless every one is in ``dlq_tasks``."""
        if not request.ids:
            raise InvalidJob("give ids, or all")
        known = set(await self.queue.dead_letters.ids())
        missing = [i for i in request.ids if i not in known]
        if missing:
            raise InvalidJob(f"not in dlq_tasks: {', '.join(missing[:5])}")
        return list(dict.fromkeys(request.ids))

    async def _sweep(self, choose: Choose, *, to_queue: bool) -> list[str]:
        """One pass over ``dlq_tasks`` from its oldest id: ``choose`` picks from each batch of BATCH ids
        (one PostgreSQL statement) the ids that leave the list, for ``pending_jobs`` when ``to_queue``;
        Redis moves them CHUNK ids per script, and the rest stay, in order. Returns the ids that left,
        each once, oldest first."""
        gone: dict[str, None] = {}
        remaining = await self.queue.dead_letters.count()
        while remaining > 0:
            batch = await self.queue.dead_letters.oldest(min(BATCH, remaining))
            if not batch:
                break
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

    @rpc
    async def ListDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLetters:
        """A page of dead letters, newest first (``ids``: only those of them in ``dlq_tasks``)."""
        size = _page_size(request.page_size)
        offset = _page_offset(request.page_token)
        total = await self.queue.dead_letters.count()
        if request.ids:
            if len(request.ids) > MAX_PAGE:
                raise InvalidJob(f"at most {MAX_PAGE} ids at once, got {len(request.ids)}")
            ids = (await self.queue.dead_letters.present(list(dict.fromkeys(request.ids))))[offset : offset + size]
        else:
            ids = await self.queue.dead_letters.newest(offset, size)
        rows = await self.store.dead_letters.jobs(ids) if ids else {}
        out = convert.dead_letters(ids, rows, MAX_REPLY_BYTES)
        out.total = total
        end = offset + len(out.dead_letters)
        if len(out.dead_letters) < len(ids) or (not request.ids and end < total):
            out.next_page_token = str(end)
        return out

    @rpc
    async def RetryDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        """FAILED jobs back to the queue, oldest dead letter first; ids whose job is not FAILED stay."""
        if request.all:
            # Chunk by chunk: PostgreSQL makes the chunk's FAILED jobs QUEUED, then Redis moves their ids.
            retried = await self._sweep(lambda chunk: self.store.dead_letters.retry(list(set(chunk))), to_queue=True)
        else:
            ids = await self._named_ids(request)
            queued: set[str] = set()
            for start in range(0, len(ids), BATCH):
                queued.update(await self.store.dead_letters.retry(ids[start : start + BATCH]))

            async def picked(chunk: list[str]) -> list[str]:
                return [i for i in chunk if i in queued]

            retried = await self._sweep(picked, to_queue=True)
            moved = set(retried)
            lost = [i for i in ids if i in queued and i not in moved]
            if lost:  # left dlq_tasks while we worked: PostgreSQL has queued them, so Redis must too
                lanes = await self.store.jobs.routes(lost)
                await self.queue.jobs.enqueue_many([(i, 0, lanes.get(i, keys.PENDING)) for i in lost])
                retried += lost
        log.info("%d dead-lettered job(s) retried", len(retried))
        return _result(retried)

    @rpc
    async def PurgeDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        # PostgreSQL first: a purge it does not know of would be undone by reconciliation (rebuilding dlq_tasks).
        if request.all:
            await self.store.dead_letters.purged_all()
            n = await self.queue.dead_letters.purge_all()
            log.info("dlq_tasks purged: %d id(s)", n)
            return pb.DeadLettersResult(count=n)
        named = await self._named_ids(request)
        for start in range(0, len(named), BATCH):
            await self.store.dead_letters.purged(named[start : start + BATCH])
        wanted = set(named)

        async def picked(chunk: list[str]) -> list[str]:
            return [i for i in chunk if i in wanted]

        purged = await self._sweep(picked, to_queue=False)
        return _result(purged)
