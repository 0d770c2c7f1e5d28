"""Group commit for single calls: concurrent SubmitJob calls stored and pushed together.

A call with nothing else in flight is flushed at once (as a group of one). Calls that arrive while a
flush is in flight wait for it and then go out together in the next one, so under load a single
INSERT and a single Redis push carry many calls, and an idle server adds no delay. Each caller gets
its own result or its own exception: the flush function answers item by item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Most items in one flush; more wait for the next one.
MAX_GROUP = 1000

Flush = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]


class Batcher(Generic[T, R]):
    """Run ``flush`` on the items submitted concurrently; ``flush`` answers each item, in order, with its
    result or the exception its caller raises. An exception out of ``flush`` itself is every caller's."""

    def __init__(self, flush: Flush[T, R], *, name: str, max_group: int = MAX_GROUP) -> None:
        self._flush = flush
        self._name = name
        self._max_group = max_group
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.flushes = 0  # groups flushed so far
        self.items = 0  # items flushed so far

    async def submit(self, item: T) -> R:
        """``item``'s result, once a flush carried it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain(), name=f"{self._name}-flush")
        return await future

    async def _drain(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
                await self._flush_group(group)
        except BaseException:  # cancelled (the server stops): nobody is left waiting forever
            for _, future in group + self._waiting:
                future.cancel()
            self._waiting = []
            raise
        finally:
            self._draining = None

    async def _flush_group(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.flushes += 1
        self.items += len(group)
        try:
            answers: Sequence[R | BaseException] = await self._flush([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 -- it is each caller's to raise
            answers = [exc] * len(group)
        if len(answers) != len(group):
            answers = [RuntimeError(f"{self._name}: {len(answers)} answers for {len(group)} items")] * len(group)
        for (_, future), answer in zip(group, answers):
            if future.done():  # its caller went away (cancelled): the item was still flushed
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)
