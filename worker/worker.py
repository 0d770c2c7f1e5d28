"""A worker: N slots that each take a job id, claim it, run it and settle it.

Lifecycle of one id: ``dequeue → claim → run_shell → settle`` where settle is
``ack`` (succeeded), ``retry_later`` (backoff) or ``dead_letter``. PostgreSQL
is written first, Redis second, so a crash between the two leaves an id that
the next claim drops or re-delays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jobcluster import keys, logs, metrics, model
from jobcluster.aio import retrying
from jobcluster.errors import UNAVAILABLE
from jobcluster.model import Status
from jobcluster.queue import Queue
from jobcluster.queue.lanes import Serving
from jobcluster.queue.live_output import Live
from jobcluster.recovery import recover_worker
from jobcluster.rows import Claimed
from jobcluster.settings import ConfigError, Settings
from jobcluster.store import Store
from jobcluster.store.jobs import Serves, clean_text
from worker import decide
from worker.decide import Refusal
from worker.reaper import wait_for_earlier
from worker.sandbox import Sandbox
from worker.shell import GroupRegistry, OutputTail, ShellResult, job_env, not_started, run_shell

log = logging.getLogger("worker")
T = TypeVar("T")

PROMOTE_INTERVAL = 0.2
#: How often running jobs' output is published (for WatchJob) and cancellations are looked for.
LIVE_INTERVAL = 0.25
#: A running job's output is published again at least this often (its Redis hash lives 60 s).
LIVE_REFRESH = 20.0
#: Most output published per running job (the tail).
LIVE_TAIL_BYTES = 64 * 1024
MAX_OUTAGE_BACKOFF = 5.0
#: Most concurrency keys whose refusals in a row a worker counts (for the backoff of a full key).
MAX_KEYS_REMEMBERED = 10_000
#: How often running attempts are checked against PostgreSQL: one whose job moved on (this worker was
#: declared dead meanwhile) is killed and records nothing.
FENCE_INTERVAL = 0.5


class WorkerIdInUse(RuntimeError):
    """Another live worker heartbeats under the same WORKER_ID."""


class Worker:
    """Runs jobs from ``pending_jobs`` until :meth:`stop` (or, in burst mode, until nothing is left)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        queue: Queue,
        *,
        burst: bool = False,
        sandbox: Sandbox | None = None,
        reaper: GroupRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.reaper = reaper  # kills the jobs' groups if this process dies (worker/reaper.py)
        self.store = store
        self.queue = queue
        self.sandbox = sandbox or Sandbox.from_settings(settings)  # ConfigError: JOB_USER, JOB_WORKDIR_ROOT
        self.worker_id = settings.effective_worker_id()
        self.burst = burst
        self._stopping = asyncio.Event()
        self._busy: set[int] = set()
        self._slots: list[asyncio.Task[None]] = []
        self._started_ms = model.now_ms()
        self.jobs_done = 0
        # job id -> (output so far, set to stop it, its attempt): the jobs running now.
        self._running: dict[str, tuple[OutputTail, asyncio.Event, int]] = {}
        # (job id, attempt) -> set to stop it: the attempts running now (a rerun of a job may start in
        # another slot before the old attempt has ended, so this is keyed by attempt too).
        self._attempts: dict[tuple[str, int], asyncio.Event] = {}
        self._fenced: set[tuple[str, int]] = set()  # (job id, attempt) killed because the job moved on
        queues, tags = serving_of(settings)
        self.serving = Serving(queues=queues, tags=frozenset(tags))  # the lanes it takes from
        self.serves = Serves(queues, tags, dict(settings.concurrency_limits))  # what its claims accept
        self._key_refusals: dict[str, int] = {}  # concurrency key -> its refusals in a row here

    # --- outer loop -------------------------------------------------------------

    async def run(self) -> None:
        """Recover what this worker id left behind, then work until stopped."""
        await self._check_id_free()
        await self._earlier_jobs_gone()
        self.sandbox.remove_leftovers()
        await self._recover_own("worker restarted")
        await self._heartbeat_once()
        side = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._promote_loop(), name="promote-delayed"),
            asyncio.create_task(self._live_loop(), name="live-output"),
            asyncio.create_task(self._fence_loop(), name="fence-check"),
        ]
        self._slots = [
            asyncio.create_task(self._slot(n), name=f"slot-{n}") for n in range(self.settings.worker_concurrency)
        ]
        metrics.WORKER_SLOTS.set(len(self._slots))
        log.info("worker %s started with %d slots; %s", self.worker_id, len(self._slots), self.sandbox.describe())
        slots_ended = asyncio.create_task(asyncio.wait(self._slots), name="slots-wait")
        stop_wait = asyncio.create_task(self._stopping.wait(), name="stop-wait")
        side_failed = asyncio.create_task(_first_failure(side), name="side-watch")
        try:
            done, _ = await asyncio.wait({slots_ended, stop_wait, side_failed}, return_when=asyncio.FIRST_COMPLETED)
            self._stopping.set()
            await self._shutdown_slots()
            if side_failed in done:
                side_failed.result()  # a side task died: stop with its error
        finally:
            for task in (*side, slots_ended, stop_wait, side_failed):
                task.cancel()
            await asyncio.gather(*side, slots_ended, stop_wait, side_failed, return_exceptions=True)
            await self._leave()

    def stop(self) -> None:
        """Begin a graceful stop: take no new work; running jobs get WORKER_SHUTDOWN_GRACE."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: %d job(s) running", self.worker_id, len(self._busy))
            self._stopping.set()

    async def _shutdown_slots(self) -> None:
        for n, task in enumerate(self._slots):
            if n not in self._busy:
                task.cancel()
        pending = [t for t in self._slots if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.worker_shutdown_grace)
            for task in late:
                task.cancel()  # run_shell kills the job; _process records the interruption
            if late:
                log.warning("grace period over: interrupting %d job(s), they go back to the queue", len(late))
                await asyncio.wait(late)
        for task in self._slots:
            if not task.cancelled() and task.exception() is not None:
                log.error("slot %s ended with an error", task.get_name(), exc_info=task.exception())

    async def _leave(self) -> None:
        """Put back whatever is still in our processing list and drop our heartbeat."""
        try:
            async with asyncio.timeout(10):
                await self._recover_own("worker stopped before finishing", retry=False)
                await self.queue.liveness.remove_worker(self.worker_id)
        except UNAVAILABLE as exc:  # TimeoutError is one of them
            log.error("could not tidy up on exit (%s); the next start of %s or the leader will", exc, self.worker_id)
        log.info("worker %s stopped after %d job(s)", self.worker_id, self.jobs_done)

    # --- one slot -----------------------------------------------------------------

    async def _slot(self, n: int) -> None:
        while not self._stopping.is_set():
            job_id = await self._retrying("dequeue", lambda: self.queue.jobs.dequeue(self.worker_id, self.serving))
            if job_id is None:
                if self.burst and await self._nothing_left():
                    self.stop()
                continue
            self._busy.add(n)
            metrics.WORKER_BUSY.set(len(self._busy))
            try:
                await self._process(job_id)
            except Exception:
                # A bug, not an outage (those are retried inside). Keep the slot alive;
                # the id stays in our processing list and is recovered at the next start.
                log.exception("job %s: unexpected error, left for recovery", job_id)
            finally:
                self._busy.discard(n)
                metrics.WORKER_BUSY.set(len(self._busy))

    async def _nothing_left(self) -> bool:
        if self._busy:
            return False
        depths = await self.queue.jobs.depths()
        served = await self.queue.jobs.lanes.depths()
        return (
            sum(served.get(lane, 0) for lane in self.serving.lanes) == 0
            and depths["delayed"] == 0
            and depths["processing"] == 0
        )

    async def _process(self, job_id: str) -> None:
        context = logs.JOB.set({"job_id": job_id})
        try:
            await self._claim_and_run(job_id)
        finally:
            logs.JOB.reset(context)

    async def _claim_and_run(self, job_id: str) -> None:
        token = uuid.uuid4()  # the same for every retry: a lost reply is not a lost claim
        claimed = await self._retrying(
            "claim", lambda: self.store.jobs.claim(job_id, self.worker_id, token, serves=self.serves)
        )
        if claimed is None:
            await self._refuse(job_id)
            return
        if claimed.concurrency_key:
            self._key_refusals.pop(claimed.concurrency_key, None)
        logs.JOB.set({"job_id": job_id, "attempt": claimed.attempt})
        log.info("job %s attempt %d started", job_id, claimed.attempt)
        metrics.JOBS_STARTED.labels(claimed.queue).inc()
        metrics.START_DELAY.labels(claimed.queue).observe(claimed.waited)
        started = time.monotonic()
        tail, stop = OutputTail(self.settings.job_output_limit), asyncio.Event()
        self._running[job_id] = (tail, stop, claimed.attempt)
        self._attempts[(job_id, claimed.attempt)] = stop
        try:
            result = await self._run(claimed, tail, stop)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(claimed))
            raise
        finally:
            self._attempts.pop((job_id, claimed.attempt), None)
            if job_id in self._running and self._running[job_id][1] is stop:  # not a rerun in another slot
                del self._running[job_id]
            metrics.ATTEMPT_SECONDS.labels(claimed.queue).observe(time.monotonic() - started)
        if (job_id, claimed.attempt) in self._fenced:
            self._fenced.discard((job_id, claimed.attempt))
            log.warning(
                "job %s attempt %d was killed: this worker had been declared dead and the job moved "
                "on; nothing recorded for it",
                job_id,
                claimed.attempt,
            )
            return
        if stop.is_set():
            await asyncio.shield(self._cancelled(claimed, result))
            metrics.JOBS_FINISHED.labels(Status.CANCELLED.value, claimed.queue).inc()
        else:
            await asyncio.shield(self._settle(claimed, result))
        self.jobs_done += 1
        if claimed.concurrency_key:
            await self._release_key(claimed.concurrency_key)

    async def _release_key(self, key: str) -> None:
        """A job of this concurrency key ended: the oldest job waiting for the key may start now. A hint
        only: if it fails, the waiting job comes out of delayed_jobs by its backoff."""
        try:
            await self.queue.jobs.release_key(key)
        except UNAVAILABLE as exc:
            log.debug("concurrency key %r: release skipped (%s)", key, exc)

    async def _run(self, claimed: Claimed, tail: OutputTail, stop: asyncio.Event) -> ShellResult:
        """Run the attempt as the job user in a fresh directory, removed however the attempt ends."""
        try:
            scratch = self.sandbox.create(claimed.job_id, claimed.attempt)
        except (OSError, ConfigError) as exc:
            return not_started(f"could not create the job's directory (JOB_WORKDIR_ROOT): {exc}")
        try:
            return await run_shell(
                claimed.command,
                timeout=claimed.timeout_seconds,
                kill_grace=self.settings.job_kill_grace,
                output_limit=self.settings.job_output_limit,
                cwd=scratch.path,
                run_as=self.sandbox.run_as,
                env=self.sandbox.env(
                    job_env(claimed.job_id, claimed.attempt, self.settings.job_env_passthrough), scratch
                ),
                tail=tail,
                stop=stop,
                groups=self.reaper,
            )
        finally:
            await self.sandbox.remove(scratch)

    async def _cancelled(self, claimed: Claimed, result: ShellResult) -> None:
        """CancelJob stopped this attempt: record how it ended; the job stays CANCELLED."""
        await self._retrying(
            "record cancel",
            lambda: self.store.jobs.close_cancelled_attempt(
                claimed, result.exit_code, result.error, clean_text(result.output), result.truncated
            ),
        )
        await self._ack(claimed.job_id)
        how = (
            "process group killed"
            if result.error.startswith("cancelled")
            else f"the command had already ended ({result.error or 'exit 0'})"
        )
        log.warning("job %s attempt %d cancelled: %s", claimed.job_id, claimed.attempt, how)

    async def _settle(self, claimed: Claimed, result: ShellResult) -> None:
        """Record the attempt, then ack, back off or dead-letter the id."""
        job_id = claimed.job_id
        s = decide.settle(
            result, claimed, backoff_base=self.settings.retry_backoff_base, backoff_max=self.settings.retry_backoff_max
        )
        recorded = await self._retrying(
            "record result",
            lambda: self.store.jobs.finish_attempt(
                claimed,
                s.status,
                exit_code=result.exit_code,
                error=s.error,
                output=clean_text(result.output),
                output_truncated=result.truncated,
                retry_delay_ms=s.delay_ms,
            ),
        )
        if recorded:
            ended = "RETRYING" if s.status is Status.PENDING else s.status.value
            metrics.JOBS_FINISHED.labels(ended, claimed.queue).inc()
        if not recorded:
            await self._fenced_off(claimed, result, s.error)
        elif s.status is Status.SUCCEEDED:
            await self._ack(job_id)
            log.info("job %s attempt %d succeeded", job_id, claimed.attempt)
        elif s.status is Status.FAILED:
            await self._retrying("dead-letter", lambda: self.queue.jobs.dead_letter(self.worker_id, job_id))
            log.warning(
                "job %s attempt %d failed (%s): retries used up, dead-lettered", job_id, claimed.attempt, s.error
            )
        else:
            await self._retrying(
                "retry", lambda: self.queue.jobs.retry_later(self.worker_id, job_id, s.delay_ms, claimed.lane)
            )
            log.info(
                "job %s attempt %d failed (%s): retry in %.1fs", job_id, claimed.attempt, s.error, s.delay_ms / 1000
            )

    async def _fenced_off(self, claimed: Claimed, result: ShellResult, error: str) -> None:
        """finish_attempt matched nothing: the job was cancelled after the command ended, or it is
        no longer this attempt's. A cancelled job keeps the result on its attempt, which is closed."""
        job_id = claimed.job_id
        ended = error or f"exit {result.exit_code}"
        note = f"cancelled after the command ended ({ended}), before its result was recorded"
        closed = await self._retrying(
            "record cancel",
            lambda: self.store.jobs.close_cancelled_attempt(
                claimed, result.exit_code, note, clean_text(result.output), result.truncated
            ),
        )
        if closed:
            log.warning(
                "job %s attempt %d: cancelled after its command ended (%s); output and exit code "
                "recorded on the attempt, the job stays CANCELLED",
                job_id,
                claimed.attempt,
                ended,
            )
        else:
            state = await self._retrying("check job", lambda: self.store.jobs.state(job_id))
            log.warning(
                "job %s attempt %d: result discarded (%s): the job is %s, no longer held by this attempt "
                "(its worker was declared lost, or a newer attempt owns it)",
                job_id,
                claimed.attempt,
                ended,
                state.status.value if state else "deleted",
            )
        await self._ack(job_id)

    async def _ack(self, job_id: str) -> None:
        await self._retrying("ack", lambda: self.queue.jobs.ack(self.worker_id, job_id))

    async def _interrupted(self, claimed: Claimed) -> None:
        """A shutdown cut this attempt short: the job goes back to the queue's front, retries unspent."""
        try:
            recorded = await self.store.jobs.finish_attempt(
                claimed,
                Status.QUEUED,
                exit_code=None,
                error="interrupted: worker shut down",
                output="",
                output_truncated=False,
                interrupted=True,
            )
            if recorded:
                await self.queue.jobs.requeue_front(self.worker_id, claimed.job_id, claimed.lane)
                log.warning("job %s attempt %d interrupted by shutdown, requeued", claimed.job_id, claimed.attempt)
            elif await self.store.jobs.close_cancelled_attempt(
                claimed, None, "cancelled; interrupted: worker shut down", "", False
            ):
                await self.queue.jobs.ack(self.worker_id, claimed.job_id)
                log.warning(
                    "job %s attempt %d interrupted by shutdown; the job was cancelled meanwhile",
                    claimed.job_id,
                    claimed.attempt,
                )
        except UNAVAILABLE as exc:
            log.error("job %s: could not requeue on shutdown (%s); recovery will", claimed.job_id, exc)

    async def _refuse(self, job_id: str) -> None:
        """Deal with an id whose job cannot be claimed now."""
        state = await self._retrying("check job", lambda: self.store.jobs.state(job_id))
        action = decide.refuse(state, self.serves.queues, self.serves.tags)
        if state is None:
            log.warning("job %s: unknown id in the queue, dropped", job_id)
        if action is Refusal.DELAY and state is not None:
            wait_ms = state.wait_ms  # PostgreSQL's clock: Redis counts it down on its own (no clocks compared)
            await self._retrying(
                "delay", lambda: self.queue.jobs.retry_later(self.worker_id, job_id, wait_ms, state.lane)
            )
        elif action is Refusal.REROUTE and state is not None:
            log.info(
                "job %s is not for this worker (queue %s, constraints %s): sent to %s",
                job_id,
                state.queue,
                ",".join(state.constraints) or "none",
                state.lane,
            )
            await self._retrying("reroute", lambda: self.queue.jobs.requeue_front(self.worker_id, job_id, state.lane))
        elif action is Refusal.KEY_FULL and state is not None:
            key = state.concurrency_key
            if len(self._key_refusals) >= MAX_KEYS_REMEMBERED and key not in self._key_refusals:
                self._key_refusals.clear()  # keys whose jobs all ran elsewhere: start counting again
            self._key_refusals[key] = self._key_refusals.get(key, 0) + 1
            wait_ms = decide.key_full_wait_ms(self._key_refusals[key])
            log.debug("job %s waits %d ms: concurrency key %r is full", job_id, wait_ms, key)
            await self._retrying(
                "wait for key", lambda: self.queue.jobs.wait_for_key(self.worker_id, job_id, wait_ms, state.lane, key)
            )
        elif action is Refusal.DEAD_LETTER:
            await self._retrying("dead-letter", lambda: self.queue.jobs.dead_letter(self.worker_id, job_id))
        else:
            if state is not None:
                log.debug("job %s is %s: queue entry dropped", job_id, state.status.value)
            await self._ack(job_id)

    # --- background -----------------------------------------------------------------

    async def _check_id_free(self) -> None:
        now, beats = await self._retrying("read heartbeats", self.queue.liveness.workers_now)
        last = beats.get(self.worker_id)
        if last is not None and now - last < 3000 * self.settings.heartbeat_interval:
            raise WorkerIdInUse(
                f"worker id {self.worker_id!r} is in use by a live worker "
                f"(heartbeat {now - last} ms ago); set another WORKER_ID"
            )

    async def _earlier_jobs_gone(self) -> None:
        """A worker restarted at once under this id (a supervisor after a SIGKILL): the jobs of the
        process before may still be dying. Their attempts go back to the queue only once the earlier
        reaper has killed them, or a new attempt would run beside the old one."""
        started = time.monotonic()
        left = await asyncio.to_thread(wait_for_earlier, self.worker_id)
        if left:
            log.error(
                "the job reaper(s) %s of an earlier worker %s are still there after %.1fs (stopped?); "
                "its jobs go back to the queue now and may still be running",
                left,
                self.worker_id,
                time.monotonic() - started,
            )
        elif time.monotonic() - started > 0.05:
            log.info(
                "waited %.2fs for the jobs of an earlier worker %s to be killed",
                time.monotonic() - started,
                self.worker_id,
            )

    async def _recover_own(self, reason: str, retry: bool = True) -> None:
        """Jobs this worker id holds go back to the queue (PostgreSQL first, then Redis)."""

        def attempt(op: Callable[[], Awaitable[T]]) -> Awaitable[T]:
            return self._retrying("recover", op) if retry else op()

        back, dead = await attempt(lambda: recover_worker(self.store, self.queue, self.worker_id, reason))
        if back or dead:
            log.warning(
                "worker %s: %d job(s) it held went back to the queue, %d to the DLQ (%s)",
                self.worker_id,
                back,
                dead,
                reason,
            )

    async def _heartbeat_once(self, within: float | None = None) -> None:
        info: dict[str, str | int | float] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": self.settings.worker_concurrency,
            "running": len(self._busy),
            "started_ms": self._started_ms,
            "jobs_done": self.jobs_done,
            "queues": ",".join(self.serving.queues),
            "tags": ",".join(sorted(self.serving.tags)),
        }
        await self.queue.liveness.heartbeat(
            self.worker_id, info, ttl=max(10.0, 10 * self.settings.heartbeat_interval), within=within
        )

    async def _heartbeat_loop(self) -> None:
        """Beat every HEARTBEAT_INTERVAL, each beat bounded by about that long: a beat that fails is not
        retried with the outage backoff (the next one is due soon anyway), so beats resume within one
        interval of Redis answering again, and nothing else a worker does can hold them up."""
        interval = self.settings.heartbeat_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                # Bounded, so a stalled Redis cannot hold the next beat back for long; not below 0.5 s,
                # so a loaded machine does not drop beats that were merely slow.
                await self._heartbeat_once(within=max(interval, 0.5))
            except UNAVAILABLE as exc:  # TimeoutError is one of them
                if not failing:
                    log.error("heartbeat failed, retrying every %gs: %s", interval, exc or type(exc).__name__)
                failing = True
                continue
            if failing:
                log.info("heartbeats are getting through again")
                failing = False

    async def _fence_loop(self) -> None:
        """Kill running attempts whose job moved on: the leader declared this worker dead (a stall, a
        partition) and requeued them. They must not run beside the reruns, nor record anything."""
        while True:
            await asyncio.sleep(FENCE_INTERVAL)
            running = dict(self._attempts)
            if not running:
                continue
            try:
                owners = await self.store.liveness.job_owners(list({job_id for job_id, _ in running}))
            except UNAVAILABLE as exc:
                log.debug("fence check skipped: %s", exc)
                continue
            for (job_id, attempt), stop in running.items():
                owner = owners.get(job_id)
                if (
                    (job_id, attempt) not in self._attempts
                    or (job_id, attempt) in self._fenced
                    or not decide.fenced(attempt, owner, self.worker_id)
                ):
                    continue
                log.warning(
                    "job %s attempt %d: the job moved on (this worker was declared dead): killing it", job_id, attempt
                )
                self._fenced.add((job_id, attempt))
                stop.set()
                if owner is not None and owner[0] != Status.RUNNING.value:
                    await self._take_back(job_id)  # nobody took it from the queue: maybe Redis never got it

    async def _take_back(self, job_id: str) -> None:
        """A fenced attempt's id still in our processing list (its recovery stopped between PostgreSQL
        and Redis) goes back to the queue, or nothing would ever move it while this worker lives."""
        try:
            lane = (await self.store.jobs.routes([job_id])).get(job_id, keys.PENDING)
            await self.queue.jobs.take_back(self.worker_id, job_id, lane)
        except UNAVAILABLE as exc:
            log.warning("job %s: could not give its id back (%s); reconciliation will", job_id, exc)

    async def _live_loop(self) -> None:
        """Publish running jobs' output (WatchJob reads it) and stop jobs cancelled meanwhile."""
        tick = 0
        # job id -> (bytes written, monotonic time, attempt) when last published; a job is published again
        # when it wrote more, or every LIVE_REFRESH so its hash (60 s TTL) outlives silent stretches.
        published: dict[str, tuple[int, float, int]] = {}
        while True:
            await asyncio.sleep(LIVE_INTERVAL)
            tick += 1
            running = dict(self._running)
            published = {job_id: n for job_id, n in published.items() if job_id in running}
            if not running:
                continue
            now = time.monotonic()
            # A new attempt publishes at once, empty as it may be: its job's hash may still hold the output
            # of an attempt that died with its worker.
            changed = {
                job_id: Live(tail.total, clean_text(bytes(tail.buf[-LIVE_TAIL_BYTES:])), attempt)
                for job_id, (tail, _, attempt) in running.items()
                if published.get(job_id, (-1, 0.0, 0))[0] != tail.total
                or published[job_id][2] != attempt
                or now - published[job_id][1] > LIVE_REFRESH
            }
            try:
                if changed:
                    await self.queue.live_output.publish(changed)
                    published.update({job_id: (live.total, now, live.attempt) for job_id, live in changed.items()})
                if tick % 2 == 0:
                    for job_id in await self.store.jobs.cancelled_among(list(running)):
                        if not running[job_id][1].is_set():
                            log.info("job %s was cancelled: stopping it", job_id)
                            running[job_id][1].set()
            except UNAVAILABLE as exc:
                log.debug("live output / cancel check skipped: %s", exc)

    async def _promote_loop(self) -> None:
        while True:
            await self._retrying("promote", self.queue.jobs.promote_due)
            await asyncio.sleep(PROMOTE_INTERVAL)

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op``, waiting out Redis/PostgreSQL outages with capped exponential backoff."""
        return await retrying(op, what=what, log=log, max_delay=MAX_OUTAGE_BACKOFF)


def serving_of(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """WORKER_QUEUES and WORKER_TAGS, checked like a job's queue and constraints (ConfigError if not)."""
    try:
        queues = tuple(dict.fromkeys(model.check_queue(q, "WORKER_QUEUES") for q in settings.worker_queues))
        tags = model.check_tags(settings.worker_tags, "WORKER_TAGS")
    except model.InvalidJob as exc:
        raise ConfigError(str(exc)) from None
    if not queues:
        raise ConfigError("WORKER_QUEUES names no queue")
    return queues, tags


async def _first_failure(tasks: list[asyncio.Task[None]]) -> None:
    """Finish when the first of ``tasks`` ends (they should not), re-raising its error."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()
    raise RuntimeError(f"side task {next(iter(done)).get_name()} stopped")
