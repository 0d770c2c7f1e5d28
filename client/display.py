"""What the client prints: the summary table, one job's story, a job list."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

from jobcluster.failover import CALL_TIMEOUT, Pool
from jobcluster.model import Status
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pbjson import to_dict
from jobcluster.wording import plural

#: Most output ``-status`` prints per job (its end); ``-json`` has all the server sent.
STATUS_OUTPUT_CHARS = 64 * 1024
#: ``--json``: each command prints one JSON object on stdout (``watch``: one per event) instead of text;
#: what is said along the way ("submitted ...") goes to stderr.
JSON = False


def emit(obj: dict[str, Any], out=sys.stdout) -> None:
    """One JSON document, on one line."""
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def rpc_error(exc: grpc.RpcError) -> str:
    """How every refused call is reported: ``error: CODE: what the server said``."""
    return f"error: {exc.code().name}: {exc.details()}"


def say(text: str) -> None:
    """A progress line: stdout, or stderr under ``--json`` (stdout then holds only the JSON)."""
    print(text, file=sys.stderr if JSON else sys.stdout, flush=True)


def _duration(job: pb.JobStatus) -> str:
    if not job.started_at_ms or not job.finished_at_ms:
        return "-"
    secs = (job.finished_at_ms - job.started_at_ms) / 1000
    return f"{secs * 1000:.0f}ms" if secs < 1 else f"{secs:.1f}s"


def _first_line(text: str, width: int = 50) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _exit(job: pb.JobStatus) -> str:
    return str(job.exit_code) if job.HasField("exit_code") else "-"


def routing(job: pb.JobStatus | pb.Schedule) -> str:
    """Queue, priority, constraints and concurrency key in one short phrase."""
    text = f"{job.queue or 'default'}, priority {job.priority}"
    if job.constraints:
        text += f", needs {', '.join(job.constraints)}"
    if job.concurrency_key:
        limit = f" (at most {job.max_concurrency})" if job.max_concurrency else ""
        text += f", concurrency key {job.concurrency_key}{limit}"
    return text


def table(rows: Sequence[Sequence[str]], out=sys.stdout) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def summary(jobs: Sequence[pb.JobStatus], out=sys.stdout) -> None:
    """The table printed after following: id, name, status, attempts, exit code, duration, output."""
    ok = sum(j.status == Status.SUCCEEDED for j in jobs)
    if JSON:
        emit({"jobs": [to_dict(j) for j in jobs], "succeeded": ok, "total": len(jobs)}, out)
        return
    rows = [("ID", "NAME", "STATUS", "ATTEMPTS", "EXIT", "DURATION", "OUTPUT")]
    for j in jobs:
        rows.append(
            (
                j.id,
                j.name or "-",
                j.status,
                str(j.attempts),
                _exit(j),
                _duration(j),
                _first_line(j.output) or (_first_line(j.last_error) if j.last_error else ""),
            )
        )
    table(rows, out)
    out.write(f"{ok}/{len(jobs)} succeeded\n")


def when(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def show_jobs(pool: Pool, ids: Sequence[str], out=sys.stdout) -> int:
    """Everything about each job; exit 2 if one is unknown."""
    code = 0
    found: list[dict[str, Any]] = []
    for job_id in ids:
        try:
            job, _ = pool.call(lambda stub: stub.GetJobStatus(pb.JobId(id=job_id), timeout=CALL_TIMEOUT))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            print(rpc_error(exc), file=sys.stderr)
            code = 2
            continue
        if JSON:
            found.append(to_dict(job))
            continue
        out.write(f"job {job.id}  {job.status}\n")
        if job.waiting_reason:
            out.write(f"  {'waiting':<14}{job.waiting_reason}\n")
        for label, value in (
            ("name", job.name),
            ("command", job.command),
            ("queue", routing(job)),
            ("attempts", f"{job.attempts} (max retries {job.max_retries})"),
            ("exit code", _exit(job)),
            ("created", when(job.created_at_ms)),
            ("started", when(job.started_at_ms)),
            ("finished", when(job.finished_at_ms)),
            ("worker", job.worker_id or "-"),
            ("last error", job.last_error or "-"),
            ("submitted via", job.submitted_via),
        ):
            out.write(f"  {label:<14}{value}\n")
        for a in job.attempt_history:
            ec = str(a.exit_code) if a.HasField("exit_code") else "-"
            error = "" if not a.error or a.error == f"exit code {ec}" else f", {a.error}"
            out.write(
                f"  attempt {a.number}: worker {a.worker_id}, started {when(a.started_at_ms)}, exit {ec}{error}\n"
            )
        trunc = " (truncated by the worker: earlier output dropped)" if job.output_truncated else ""
        output = job.output
        if len(output) > STATUS_OUTPUT_CHARS:
            cut = output[-STATUS_OUTPUT_CHARS:]
            output = cut[cut.find("\n") + 1 :] if "\n" in cut else cut
            trunc += (
                f" (the last {len(output) // 1024} KiB of {len(job.output) // 1024} KiB shown; all of it: "
                f"-json, or the web UI)"
            )
        out.write(f"  output{trunc}:\n")
        for line in output.splitlines() or ["(none)"]:
            out.write(f"    {line}\n")
    if JSON:
        emit({"jobs": found}, out)
    return code


def list_jobs(
    pool: Pool,
    status: str,
    limit: int,
    out=sys.stdout,
    text: str = "",
    schedule: str = "",
    since_ms: int = 0,
    queue: str = "",
) -> int:
    req = pb.ListJobsRequest(
        status=status, page_size=limit, text=text, schedule=schedule, created_after_ms=since_ms, queue=queue
    )
    resp, _ = pool.call(lambda stub: stub.ListJobs(req, timeout=CALL_TIMEOUT))
    if JSON:
        emit(to_dict(resp), out)
        return 0
    rows = [("ID", "NAME", "STATUS", "QUEUE", "PRIO", "ATTEMPTS", "EXIT", "CREATED", "COMMAND")]
    for j in resp.jobs:
        rows.append(
            (
                j.id,
                j.name or "-",
                j.status,
                j.queue or "default",
                str(j.priority),
                str(j.attempts),
                _exit(j),
                when(j.created_at_ms),
                _first_line(j.command, 40),
            )
        )
    table(rows, out)
    for j in resp.jobs:
        if j.waiting_reason:
            out.write(f"{j.id} waits: {j.waiting_reason}\n")
    return 0


def _ago(ms: int) -> str:
    if not ms:
        return "never"
    return f"{max(0.0, time.time() - ms / 1000):.1f}s ago"


def list_schedules(pool: Pool, out=sys.stdout) -> int:
    resp, _ = pool.call(lambda stub: stub.ListSchedules(pb.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
    if JSON:
        emit(to_dict(resp), out)
        return 0
    if not resp.schedules:
        out.write('no schedules (add a jobs.json entry with "cron", see the README)\n')
        return 0
    rows = [("NAME", "CRON", "TIMEZONE", "STATE", "NEXT RUN", "LAST RUN", "LAST JOB", "POLICIES", "QUEUE", "COMMAND")]
    for s in resp.schedules:
        last = f"{s.last_job_id[:8]} {s.last_job_status}" if s.last_job_id else "-"
        rows.append(
            (
                s.name,
                s.cron,
                s.timezone,
                "enabled" if s.enabled else "paused",
                when(s.next_run_ms) if s.enabled else "-",
                when(s.last_run_ms),
                last,
                f"catchup={s.catchup} overlap={s.overlap}",
                routing(s),
                _first_line(s.command, 40),
            )
        )
    table(rows, out)
    for s in resp.schedules:
        if s.last_skip_reason:
            out.write(f"{s.name}: {s.last_skip_reason} ({when(s.last_skip_ms)})\n")
    return 0


def worker_state(w: pb.WorkerInfo) -> str:
    """alive; DEAD (no heartbeat yet past WORKER_DEAD_AFTER); GONE: the leader gave its jobs back."""
    if w.gone_ms:
        return f"GONE {_ago(w.gone_ms)} ({w.gone_reason})" if w.gone_reason else f"GONE {_ago(w.gone_ms)}"
    return "alive" if w.alive else "DEAD (no heartbeat)"


def show_cluster(pool: Pool, out=sys.stdout) -> int:
    info, server = pool.call(lambda stub: stub.GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT))
    if JSON:
        emit({**to_dict(info), "answered_by": server}, out)
        return 0
    if info.leader:
        out.write(f"leader    {info.leader} since {when(info.leader_since_ms)} (term {info.leader_term})\n")
    elif info.election == "off":
        out.write("leader    none: election is off (ETCD_ENDPOINTS empty); cron, cleanup and reconciliation are off\n")
    else:
        out.write(f"leader    none right now ({info.election})\n")
    out.write(
        f"queues    pending_jobs={info.pending} processing={info.processing} "
        f"delayed_jobs={info.delayed} dlq_tasks={info.dlq}\n"
    )
    rows: list[tuple[str, ...]] = [("SERVER", "PID", "HEARTBEAT", "ROLE")]
    for s in info.servers:
        rows.append((s.address, str(s.pid), _ago(s.last_heartbeat_ms), "leader" if s.leader else "follower"))
    table(rows, out)
    rows = [("WORKER", "PID", "HEARTBEAT", "SLOTS", "RUNNING", "DONE", "QUEUES", "TAGS", "STATE")]
    for w in info.workers:
        rows.append(
            (
                w.id,
                str(w.pid),
                _ago(w.last_heartbeat_ms),
                str(w.slots),
                str(w.running),
                str(w.jobs_done),
                ",".join(w.queues) or "default",
                ",".join(w.tags) or "-",
                worker_state(w),
            )
        )
    table(rows, out)
    out.write(f"(answered by {server})\n")
    return 0


def watch(pool: Pool, job_id: str, out=sys.stdout) -> int:
    """Print a job's output as it is produced, then its end; exit 0 only if it SUCCEEDED.

    A stream that ends without a final event reached the server's WATCH_MAX_LIFE: watch again.
    """
    printed = ""
    status = ""
    final = None
    while final is None:
        stream = pool.call(lambda stub: stub.WatchJob(pb.JobId(id=job_id)))[0]
        for event in stream:
            if JSON:
                emit(to_dict(event), out)
                if event.final:
                    final = event.job
                continue
            if event.job.status != status and not event.final:  # the final line below says how it ended
                status = event.job.status
                print(
                    f"[{status}{_waiting(pool, job_id) if status == Status.QUEUED else ''}]",
                    file=sys.stderr,
                    flush=True,
                )
            text = event.job.output if event.final else event.live_output
            if text.startswith(printed):
                out.write(text[len(printed) :])
            else:  # the kept tail moved past what we printed
                out.write(text)
            out.flush()
            printed = text
            if event.final:
                final = event.job
    if JSON:
        return 0 if final.status == Status.SUCCEEDED else 1
    ec = f", exit {final.exit_code}" if final.HasField("exit_code") else ""
    print(f"[{final.status} after {plural(final.attempts, 'attempt')}{ec}]", file=sys.stderr)
    return 0 if final.status == Status.SUCCEEDED else 1


def _waiting(pool: Pool, job_id: str) -> str:
    """': <why>' for a QUEUED job that cannot start now (its waiting_reason), else ''."""
    job, _ = pool.call(lambda stub: stub.GetJobStatus(pb.JobId(id=job_id), timeout=CALL_TIMEOUT))
    return f": {job.waiting_reason}" if job.waiting_reason else ""


def dead_letters(pool: Pool) -> list[pb.DeadLetter]:
    """Every dead letter, newest first, page by page (each reply is bounded)."""
    found: list[pb.DeadLetter] = []
    token = ""
    while True:
        req = pb.DeadLettersRequest(page_token=token)
        resp, _ = pool.call(lambda stub: stub.ListDeadLetters(req, timeout=CALL_TIMEOUT))
        found += resp.dead_letters
        token = resp.next_page_token
        if not token:
            return found


def list_dead_letters(pool: Pool, out=sys.stdout) -> int:
    dead = dead_letters(pool)
    if JSON:
        emit({"dead_letters": [to_dict(d) for d in dead]}, out)
        return 0
    if not dead:
        out.write("dlq_tasks is empty\n")
        return 0
    rows = [("ID", "NAME", "ATTEMPTS", "EXIT", "FINISHED", "REASON", "LAST ERROR")]
    for d in dead:
        rows.append(
            (
                d.id,
                d.name or "-",
                str(d.attempts),
                str(d.exit_code) if d.HasField("exit_code") else "-",
                when(d.finished_at_ms),
                d.reason,
                _first_line(d.last_error, 40),
            )
        )
    table(rows, out)
    return 0
