"""Celery's side of `make bench`: prefork, concurrency 2, a private Redis broker, one task `sh -c true`.

This file is also the Celery app the worker imports (``celery -A bench_celery worker``): the broker
and result backend come from BENCH_CELERY_REDIS (db 0 the broker, db 1 the results). Celery is a
bench-only dependency (``make bench`` installs it); nothing else imports this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import Celery

from bench_stats import Cpu, Latency, Rate, pct

_REDIS = os.environ.get("BENCH_CELERY_REDIS", "127.0.0.1:6379")
app = Celery("bench_celery", broker=f"redis://{_REDIS}/0", backend=f"redis://{_REDIS}/1")


@app.task(name="bench.true")
def run_true(sent: float) -> float:
    """Run `true` through a shell, as a jobcluster job does; return how long after ``sent`` it started."""
    started = time.time()
    subprocess.run("true", shell=True)
    return started - sent


class CeleryBench:
    """One Celery worker on ``redis_addr``, started and stopped per round; the figures of one round."""

    def __init__(self, redis_addr: str, log_dir: Path, redis_pid: int = 0) -> None:
        self.redis_addr = redis_addr
        self.redis_pid = redis_pid  # the broker's process: its CPU counts in Celery's CPU per task
        self.log_dir = log_dir
        self.results = redis.Redis.from_url(f"redis://{redis_addr}/1")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """The worker, as `celery -A bench_celery worker --pool prefork --concurrency 2`; returns once it answers."""
        env = {**os.environ, "BENCH_CELERY_REDIS": self.redis_addr, "PYTHONPATH": str(Path(__file__).resolve().parent)}
        with open(self.log_dir / "celery.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench_celery",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "WARNING",
                ],
                cwd=self.log_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        app.conf.broker_url = f"redis://{self.redis_addr}/0"
        app.conf.result_backend = f"redis://{self.redis_addr}/1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the Celery worker exited ({self.proc.returncode}); see {self.log_dir}/celery.log")
            if app.control.ping(timeout=0.5):
                return
        raise SystemExit(f"the Celery worker did not answer within {timeout:.0f}s; see {self.log_dir}/celery.log")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _reset(self) -> None:
        self.results.flushdb()

    def _wait_done(self, n: int, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.results.dbsize() >= n:
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"Celery: only {self.results.dbsize()} of {n} tasks done")

    def end_to_end(self, n: int) -> tuple[Rate, float]:
        """``n`` tasks sent one by one from this client, until every result is stored; the rate, and the
        CPU per task (µs) of every process of the system (the worker and its children, Redis) and this
        client."""
        assert self.proc is not None
        self._reset()
        cpu = Cpu([self.proc.pid, *([self.redis_pid] if self.redis_pid else [])])
        t = time.monotonic()
        for _ in range(n):
            run_true.delay(time.time())
        done = self._wait_done(n)
        return Rate(n, done - t), cpu.total_per(n)

    def start_latency(self, rate: int, n: int) -> Latency:
        """Tasks sent at ``rate`` per second; each measures from its sending to its start."""
        self._reset()
        t0 = time.perf_counter()
        for i in range(n):
            run_true.delay(time.time())
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self._wait_done(n)
        waits = [
            float(json.loads(self.results.get(key) or b"{}")["result"]) * 1000
            for key in self.results.scan_iter("celery-task-meta-*")
        ]
        return Latency(pct(waits, 0.5), pct(waits, 0.99))
