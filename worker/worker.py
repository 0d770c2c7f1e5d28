"""A worker: N slots that each take a job id, claim it, run it and settle it.

Life of one id: ``take → claim → run_shell → settle``. Every transition (and the order of its writes:
PostgreSQL first, then Redis) is the lifecycle's (:mod:`jobcluster.lifecycle.attempts`); the worker runs
the processes, keeps its registry of running attempts (:mod:`worker.running`), and waits out outages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jobcluster import logs, metrics, model
from jobcluster.aio import retrying
from jobcluster.errors import UNAVAILABLE
from jobcluster.lifecycle import Lifecycle
from jobcluster.lifecycle.attempts import Ended
from jobcluster.model import Serving
from jobcluster.queue import Queue
from jobcluster.settings import ConfigError, Settings
from jobcluster.store import Store
from worker.heartbeat import Heartbeat
from worker.launch import Launcher
from worker.launcher import wait_for_earlier
from worker.live import live_loop
from worker.running import Attempt, Running
from worker.sandbox import Sandbox
from worker.shell import ShellResult, job_env, not_started, run_shell

log = logging.getLogger("worker")
T = TypeVar("T")

PROMOTE_INTERVAL = 0.2
MAX_OUTAGE_BACKOFF = 5.0
#: How often running attempts are checked against PostgreSQL: one whose job moved on (this worker was
#: declared dead meanwhile) is killed and records nothing.
FENCE_INTERVAL = 0.5


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
        launcher: Launcher | None = None,
    ) -> None:
        self.settings = settings
        #: Starts the jobs, and kills them if this process dies (worker/launcher.py); without one, run()
        #: starts its own and stops it at the end.
        self.launcher = launcher
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
        self.running = Running()  # the attempts running now
        queues, tags = serving_of(settings)
        self.serving = Serving(queues=queues, tags=frozenset(tags), limits=dict(settings.concurrency_limits))
        life = Lifecycle(settings, store, queue, log=log)
        self.attempts = life.attempts(self.worker_id, self.serving, self._retrying)  # every transition it makes
        self.heartbeat = Heartbeat(settings, queue, self.worker_id, self._beat_info)

    # --- outer loop -------------------------------------------------------------

    async def run(self) -> None:
        """Recover what this worker id left behind, then work until stopped."""
        await self.heartbeat.check_id_free(self._retrying)
        await self._earlier_jobs_gone()
        self.sandbox.remove_leftovers()
        await self.attempts.recover_own("worker restarted")
        await self.heartbeat.once()
        own_launcher = self.launcher is None
        if self.launcher is None:
            self.launcher = Launcher.start(self.worker_id)
        try:
            await self._work()
        finally:
            if own_launcher:
                self.launcher.close()
                self.launcher = None

    async def _work(self) -> None:
        side = [
            asyncio.create_task(self.heartbeat.loop(), name="heartbeat"),
            asyncio.create_task(self._promote_loop(), name="promote-delayed"),
            asyncio.create_task(
                live_loop(self.running, self.queue.live_output, self.attempts.cancelled_among), name="live-output"
            ),
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
                await self.attempts.recover_own("worker stopped before finishing", retry=False)
                await self.queue.liveness.remove_worker(self.worker_id)
        except UNAVAILABLE as exc:  # TimeoutError is one of them
            log.error("could not tidy up on exit (%s); the next start of %s or the leader will", exc, self.worker_id)
        log.info("worker %s stopped after %d job(s)", self.worker_id, self.jobs_done)

    # --- one slot -----------------------------------------------------------------

    async def _slot(self, n: int) -> None:
        while not self._stopping.is_set():
            job_id = await self.attempts.take()
            if job_id is None:
                if self.burst and not self._busy and await self.attempts.nothing_left():
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

    async def _process(self, job_id: str) -> None:
        context = logs.JOB.set({"job_id": job_id})
        try:
            await self._claim_and_run(job_id)
        finally:
            logs.JOB.reset(context)

    async def _claim_and_run(self, job_id: str) -> None:
        (claimed,) = await self.attempts.claim_many([job_id])
        if claimed is None:
            return
        logs.JOB.set({"job_id": job_id, "attempt": claimed.attempt})
        log.debug("job %s attempt %d started", job_id, claimed.attempt)  # counted: jobcluster_jobs_started
        attempt = self.running.start(claimed, self.settings.job_output_limit)
        try:
            result = await self._run(attempt)
        except asyncio.CancelledError:
            await asyncio.shield(self.attempts.interrupt_many([claimed]))
            raise
        finally:
            self.running.end(attempt)
            metrics.ATTEMPT_SECONDS.labels(claimed.queue).observe(time.monotonic() - attempt.started)
        await asyncio.shield(self.attempts.settle_many([Ended(claimed, result, attempt.ending)]))
        self.jobs_done += 1

    async def _run(self, attempt: Attempt) -> ShellResult:
        """Run the attempt as the job user in a fresh directory, removed however the attempt ends."""
        claimed = attempt.claimed
        assert self.launcher is not None  # run() has one
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
                launcher=self.launcher,
                tail=attempt.tail,
                stop=attempt.stop,
            )
        finally:
            await self.sandbox.remove(scratch)

    # --- background -----------------------------------------------------------------

    async def _earlier_jobs_gone(self) -> None:
        """A worker restarted at once under this id (a supervisor after a SIGKILL): the jobs of the
        process before may still be dying. Their attempts go back to the queue only once the earlier
        launcher has killed them, or a new attempt would run beside the old one."""
        started = time.monotonic()
        left = await asyncio.to_thread(wait_for_earlier, self.worker_id)
        if left:
            log.error(
                "the job launcher(s) %s of an earlier worker %s are still there after %.1fs (stopped?); "
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

    def _beat_info(self) -> dict[str, str | int | float]:
        return {
            "slots": self.settings.worker_concurrency,
            "running": len(self._busy),
            "started_ms": self._started_ms,
            "jobs_done": self.jobs_done,
            "queues": ",".join(self.serving.queues),
            "tags": ",".join(sorted(self.serving.tags)),
        }

    async def _fence_loop(self) -> None:
        """Kill running attempts whose job moved on: the leader declared this worker dead (a stall, a
        partition) and requeued them. They must not run beside the reruns, nor record anything."""
        while True:
            await asyncio.sleep(FENCE_INTERVAL)
            try:
                lost = await self.attempts.fenced_among(a.key for a in self.running if not a.fenced)
            except UNAVAILABLE as exc:
                log.debug("fence check skipped: %s", exc)
                continue
            for key in lost:
                attempt = self.running.get(key)
                if attempt is not None:
                    attempt.fenced = True
                    attempt.stop.set()

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
