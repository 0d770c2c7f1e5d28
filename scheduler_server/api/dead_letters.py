"""RPCs of the dead-letter list: list, retry, purge."""

from __future__ import annotations

import logging

from jobcluster.model import InvalidJob
from jobcluster.pb import scheduler_pb2 as pb
from scheduler_server import convert
from scheduler_server.api.base import Context, Servicer
from scheduler_server.errors import rpc

log = logging.getLogger("server")


class DeadLetterRpcs(Servicer):
    """ListDeadLetters, RetryDeadLetters, PurgeDeadLetters."""

    async def _dead_ids(self, request: pb.DeadLettersRequest) -> list[str]:
        in_dlq = await self.queue.dead_letters.ids()
        if request.all:
            return in_dlq
        if not request.ids:
            raise InvalidJob("give ids, or all")
        known = set(in_dlq)
        missing = [i for i in request.ids if i not in known]
        if missing:
            raise InvalidJob(f"not in dlq_tasks: {', '.join(missing[:5])}")
        return list(request.ids)

    @rpc
    async def ListDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLetters:
        ids = await self.queue.dead_letters.ids()
        rows = await self.store.dead_letters.jobs(ids) if ids else {}
        return convert.dead_letters(ids, rows)

    @rpc
    async def RetryDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        ids = await self._dead_ids(request)
        retried = await self.store.dead_letters.retry(ids) if ids else []
        await self.queue.dead_letters.retry(retried)
        log.info("%d dead-lettered job(s) retried", len(retried))
        return pb.DeadLettersResult(count=len(retried), ids=retried)

    @rpc
    async def PurgeDeadLetters(self, request: pb.DeadLettersRequest, context: Context) -> pb.DeadLettersResult:
        if request.all:
            n = await self.queue.dead_letters.purge(None)
            log.info("dlq_tasks purged: %d id(s)", n)
            return pb.DeadLettersResult(count=n)
        ids = await self._dead_ids(request)
        n = await self.queue.dead_letters.purge(ids)
        return pb.DeadLettersResult(count=n, ids=ids)
