"""RPCs of the dead-letter list: list, retry, purge (the moves themselves: :mod:`jobcluster.lifecycle.dead_letters`)."""

from __future__ import annotations

import logging

from jobcluster.limits import MAX_REPLY_BYTES
from jobcluster.model import InvalidJob
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.errors import rpc

log = logging.getLogger("server")

#: Most dead letters in one ListDeadLetters page.
MAX_PAGE = 1000
#: A reply lists at most this many ids (``count`` is always exact), to stay under MAX_REPLY_BYTES.
MAX_IDS_IN_REPLY = MAX_REPLY_BYTES // 40


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
        retried = await self.life.dead_letters.retry(None if request.all else await self._named_ids(request))
        log.info("%d dead-lettered job(s) retried", len(retried))
        return _result(retried)

    @rpc
    async def PurgeDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        if request.all:
            n = await self.life.dead_letters.purge_all()
            log.info("dlq_tasks purged: %d id(s)", n)
            return pb.DeadLettersResult(count=n)
        purged = await self.life.dead_letters.purge(await self._named_ids(request))
        return _result(purged)
