"""The leader's reconciliation, the last resort of the lifecycle's policy (:mod:`jobcluster.lifecycle.policy`):
it rebuilds ``dlq_tasks`` and, after Redis lost its data, every waiting job; while Redis keeps its data it
finds the few ids lost by other means (a Sentinel failover dropping the last writes).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from jobcluster.lifecycle.policy import waiting_entry
from jobcluster.queue import Queue
from jobcluster.queue.reconcile import DeadLettersSeen
from jobcluster.store import Store
from jobcluster.store.reconcile import DeadLetter, WaitingCursor

log = logging.getLogger("server")

#: Dead letters per PostgreSQL page when rebuilding ``dlq_tasks``.
DEAD_PAGE = 5000
#: Waiting jobs a reconciliation pass reads from PostgreSQL (one keyset page).
WAITING_PAGE = 5000
#: Most waiting jobs the leader remembers as seen in Redis; past that it starts remembering afresh.
MAX_SEEN = 200_000
#: However still the queue, every waiting job is looked for in Redis again this often (seconds): an id
#: taken out of Redis by hand, with its data kept, comes back within this (plus a cycle of pages).
FORGET_SEEN_EVERY = 600.0


class WaitingCheck:
    """The leader's reconciliation of waiting jobs while Redis keeps its data (the ``reconciled`` mark is
    there): ids it lost by other means (a Sentinel failover dropping the last writes, a server dead between
    its INSERT and its push) are pushed again.

    Each pass reads the next WAITING_PAGE waiting jobs unchanged for RECONCILE_AFTER, from a cursor that
    cycles through all of them in (last change, id) order, so every waiting job is looked at however long
    the queue. It reads what Redis holds (every lane, paged) only when the page has a job not seen there
    since its last change: a long backlog that stands still costs one PostgreSQL page a pass and nothing
    in Redis; a queue that moves costs one read of Redis a pass, paged. Jobs seen are remembered (at most
    MAX_SEEN, all forgotten every FORGET_SEEN_EVERY).

    A pass during a retry of dead letters (``dlq_retrying``, before it reads PostgreSQL or after it read
    Redis) pushes nothing and looks at the same page next time: a retry makes its jobs QUEUED in PostgreSQL
    a batch at a time, then moves their ids out of ``dlq_tasks`` a chunk at a time, and a job it had made
    QUEUED for RECONCILE_AFTER was otherwise pushed a second time beside the retry's own push (seen in a
    fresh-clone CI run: a 20,000-id retry took longer than the tests' RECONCILE_AFTER of 1 s). The mark of
    a retry that died expires (RETRY_MARK_MS), and the next pass pushes what it left."""

    def __init__(self) -> None:
        self._after: WaitingCursor | None = None
        self._seen: dict[str, dt.datetime | None] = {}
        self._forget_at = time.monotonic() + FORGET_SEEN_EVERY
        self.redis_reads = 0  # passes that read what Redis holds (tests and the bench look)

    def restart(self) -> None:
        """A new term: look at every waiting job again."""
        self._after = None
        self._seen.clear()

    async def run(self, store: Store, queue: Queue, unchanged_for: float) -> int:
        """One pass; returns how many ids were pushed again."""
        if time.monotonic() >= self._forget_at or len(self._seen) > MAX_SEEN:
            self._seen.clear()
            self._forget_at = time.monotonic() + FORGET_SEEN_EVERY
        if await queue.reconcile.retry_in_flight():
            return 0  # a retry's jobs are on their way to their lanes
        page, after = await store.reconcile.waiting_after(unchanged_for, self._after, WAITING_PAGE)
        unseen = [w for w in page if w.job_id not in self._seen or self._seen[w.job_id] != w.changed_at]
        if not unseen:
            self._after = after
            return 0
        self.redis_reads += 1
        held, known = await queue.reconcile.held_and_lengths()
        if await queue.reconcile.retry_in_flight():
            return 0  # a retry began while Redis was read: the same page next pass
        self._after = after
        self._seen.update((w.job_id, w.changed_at) for w in unseen if w.job_id in held)
        missing = [w.job_id for w in unseen if w.job_id not in held]
        if not missing:
            return 0
        # Read again after looking at Redis: a job finished meanwhile is no longer waiting. Restored against
        # that read: each id is searched only among what each lane got since (linear, however long).
        again = await store.reconcile.still_waiting(missing)
        pushed, _ = await queue.reconcile.restore_since([waiting_entry(w) for w in again], known, kept=True)
        back = {w.job_id for w in again}  # each pushed now, or found pushed meanwhile: in Redis either way
        self._seen.update((w.job_id, w.changed_at) for w in unseen if w.job_id in back)
        if pushed:
            log.warning("reconciliation: %d waiting job(s) were missing from Redis and were pushed again", pushed)
        return pushed


async def rebuild_waiting(store: Store, queue: Queue) -> int:
    """After Redis lost its data: every waiting job Redis holds nowhere is pushed again, oldest change
    first, against one read of what Redis holds (linear, however long the queue). Returns how many."""
    held, known = await queue.reconcile.held_and_lengths()
    pushed = 0
    async for page in store.reconcile.all_waiting(0.0, DEAD_PAGE):
        missing = [w.job_id for w in page if w.job_id not in held]
        if missing:
            # Read again after looking at Redis: a job taken or finished meanwhile is no longer waiting.
            order = {job_id: n for n, job_id in enumerate(missing)}
            again = sorted(await store.reconcile.still_waiting(missing), key=lambda w: order[w.job_id])
            done, known = await queue.reconcile.restore_since([waiting_entry(w) for w in again], known)
            pushed += done
    if pushed:
        log.warning("reconciliation: Redis lost its data; %d waiting job(s) were pushed again", pushed)
    return pushed


#: Dead letters that died before one missing from ``dlq_tasks`` looked at for its place, when none of its
#: page is held: past them it goes to the tail.
PIVOT_LOOKBACK = 1000


class DeadLetterSweep:
    """The leader's sweep of every dead letter PostgreSQL holds (FAILED, not purged, since purges are
    recorded) against ``dlq_tasks``, a page a pass: one that went missing after the watermark of
    :func:`reconcile_dead_letters` passed it (lost by Redis while it kept its other keys, or taken out by
    hand) goes back at its place in the order of deaths.

    Like :class:`WaitingCheck`: a keyset cursor cycles through the dead letters in the order they died, a
    page of DEAD_PAGE a pass; ``dlq_tasks`` is read (paged) only when the page has one not seen there
    since it died. Those seen are remembered (at most MAX_SEEN, all forgotten every ``forget_every``), so
    one taken out after it was seen comes back within ``forget_every`` plus one cycle of pages."""

    def __init__(self, forget_every: float = FORGET_SEEN_EVERY) -> None:
        self._after: WaitingCursor | None = None
        self._since: dt.datetime | None = None
        self._seen: dict[str, dt.datetime] = {}
        self._forget_every = forget_every
        self._forget_at = time.monotonic() + forget_every
        self.redis_reads = 0  # passes that read dlq_tasks (tests look)

    def restart(self) -> None:
        """A new term, or Redis lost its data: look at every dead letter again."""
        self._after = None
        self._seen.clear()

    async def run(self, store: Store, queue: Queue, unchanged_for: float) -> int:
        """One pass; returns how many dead letters went back into ``dlq_tasks``."""
        if time.monotonic() >= self._forget_at or len(self._seen) > MAX_SEEN:
            self._seen.clear()
            self._forget_at = time.monotonic() + self._forget_every
        if self._since is None:
            self._since = await store.reconcile.dead_letters_recorded_since()
            if self._since is None:  # no record of when purges began to be recorded: sweep nothing
                return 0
        at = self._after
        page, self._after = await store.reconcile.dead_letters_after(self._since, unchanged_for, at, DEAD_PAGE)
        unseen = [d for d in page if self._seen.get(d.job_id) != d.changed_at]
        if not unseen:
            return 0
        seen = await queue.reconcile.dead_letters_read()
        if seen is None:
            return _dlq_moving()
        self.redis_reads += 1
        self._seen.update((d.job_id, d.changed_at) for d in unseen if d.job_id in seen.held)
        lacking = {d.job_id for d in unseen if d.job_id not in seen.held}
        if not lacking:
            return 0
        # Read again after looking at Redis: a dead letter retried or purged meanwhile stays out.
        lacking &= set(await store.reconcile.still_dead(sorted(lacking)))
        placed = await _places(store, page, lacking, seen)
        pushed = await queue.reconcile.place_dead(placed, seen)
        if pushed is None:
            return _dlq_moving()
        if pushed == len(placed):
            changed = {d.job_id: d.changed_at for d in page}
            self._seen.update((job_id, changed[job_id]) for job_id, _ in placed)
        else:  # a pass walks Redis' list only so far: the next one goes on with this page
            self._after = at
        if pushed:
            log.warning(
                "reconciliation: %d older dead letter(s) were missing from dlq_tasks and were put back "
                "in the order they died",
                pushed,
            )
        return pushed


async def _places(
    store: Store, page: list[DeadLetter], lacking: set[str], seen: DeadLettersSeen
) -> list[tuple[str, str]]:
    """``(id, pivot)`` for each dead letter of ``page`` in ``lacking``, oldest first: the pivot is the
    newest older dead letter the list holds (or one put back before it), '' for the tail."""
    placed: list[tuple[str, str]] = []
    pivot: str | None = None  # the newest held so far in the page, oldest first
    for n, letter in enumerate(page):
        if letter.job_id not in lacking:
            if letter.job_id in seen.held:
                pivot = letter.job_id
            continue
        if pivot is None:
            before = await store.reconcile.dead_letters_before(page[0], PIVOT_LOOKBACK)
            pivot = next((i for i in before if i in seen.held), "")
        placed.append((letter.job_id, pivot))
        pivot = letter.job_id
    return placed


def _dlq_moving() -> int:
    """A retry or purge is moving ``dlq_tasks``: this pass ends without recording how far it got, so the
    next one checks the same dead letters again."""
    log.info("reconciliation: dlq_tasks is being retried or purged; its dead letters are checked next pass")
    return 0


async def reconcile_dead_letters(store: Store, queue: Queue, unchanged_for: float, *, kept: bool) -> int:
    """Dead letters (FAILED jobs not purged) that ``dlq_tasks`` lacks go back into it; returns how many.

    Each pass checks the dead letters that changed since the last one (PostgreSQL remembers how far it
    got), so its cost follows the rate of failures, not the length of the DLQ. When Redis lost its data
    (``kept`` False: the mark is gone) it checks every dead letter once, against one read of the whole
    list (as it does when a pass has more than DEAD_PAGE to check). A database that was never checked (new,
    or just migrated) only starts counting: dead letters purged before the purge was recorded must not come
    back.
    """
    window = await store.reconcile.dead_letter_window(unchanged_for)
    if window.since is None:
        await store.reconcile.dead_letters_checked(window.upto)
        await queue.reconcile.mark_kept()
        return 0
    seen = None if kept else await queue.reconcile.dead_letters_read()
    if not kept and seen is None:
        return _dlq_moving()
    # Kept: look again a little before where the last pass stopped (a slow commit's older updated_at).
    since = window.since - dt.timedelta(seconds=max(unchanged_for, 1.0)) if kept else None
    pushed = 0
    async for page in store.reconcile.dead_letters(since, window.upto, DEAD_PAGE):
        if seen is None and len(page) == DEAD_PAGE:  # many to check (no leader for a while): read it once
            seen = await queue.reconcile.dead_letters_read()
            if seen is None:
                return _dlq_moving()
        if seen is None:  # a few recent dead letters, near the head: one LPOS each, then an atomic push
            missing = await queue.reconcile.missing_dead(page)
            if missing:
                # Read again after looking at Redis: a job retried or purged meanwhile stays out.
                pushed += await queue.reconcile.restore_dead(await store.reconcile.still_dead(missing), kept=kept)
        else:  # against one read of the list: linear in its length
            missing = [i for i in page if i not in seen.held]
            if missing:
                done = await queue.reconcile.restore_dead_since(
                    await store.reconcile.still_dead(missing), seen, kept=kept
                )
                if done is None:
                    return _dlq_moving()
                pushed += done
    if not kept:
        await queue.reconcile.mark_kept()
    await store.reconcile.dead_letters_checked(window.upto)
    if pushed:
        log.warning("reconciliation: %d dead letter(s) were missing from dlq_tasks and were pushed again", pushed)
    return pushed
