"""Follow submitted jobs until each one ends, showing progress."""

from __future__ import annotations

import sys
import time
from collections import Counter

from jobcluster.failover import CALL_TIMEOUT, Pool
from jobcluster.model import TERMINAL
from jobcluster.pb import scheduler_pb2 as pb

BATCH = 500
MIN_POLL, MAX_POLL = 0.05, 1.0


def fetch(pool: Pool, ids: list[str], include_output: bool = False) -> dict[str, pb.JobStatus]:
    """Current status of these jobs, in ListJobs calls of up to BATCH ids; a server sends a page of
    a bounded size (fewer jobs when they carry much output), and the rest comes page by page."""
    found: dict[str, pb.JobStatus] = {}
    for i in range(0, len(ids), BATCH):
        chunk = ids[i : i + BATCH]
        token = ""
        while True:
            req = pb.ListJobsRequest(ids=chunk, page_size=len(chunk), include_output=include_output, page_token=token)
            resp, _ = pool.call(lambda stub: stub.ListJobs(req, timeout=CALL_TIMEOUT))
            found.update({j.id: j for j in resp.jobs})
            token = resp.next_page_token
            if not token:
                break
    return found


def follow(pool: Pool, ids: list[str], out=sys.stdout) -> list[pb.JobStatus]:
    """Poll until every job is terminal; a live line on a terminal, a line per change otherwise."""
    tty = out.isatty()
    last: dict[str, str] = {}
    waits: dict[str, str] = {}  # a QUEUED job's waiting_reason, as last printed
    open_ids = list(ids)
    delay = MIN_POLL
    while open_ids:
        current = fetch(pool, open_ids)
        changed = False
        for job_id in open_ids:
            job = current.get(job_id)
            status = job.status if job else "UNKNOWN"
            reason = job.waiting_reason if job else ""
            if last.get(job_id) != status or waits.get(job_id, "") != reason:
                changed = True
                last[job_id], waits[job_id] = status, reason
                if not tty:
                    label = f" ({job.name})" if job and job.name else ""
                    print(f"job {job_id}{label} {status}{': ' + reason if reason else ''}", file=out, flush=True)
        if tty:
            counts = Counter(last.values())
            done = sum(counts[s] for s in TERMINAL)
            parts = ", ".join(f"{counts[s]} {s.lower()}" for s in sorted(counts))
            reason = next((waits[j] for j in open_ids if waits.get(j)), "")
            out.write(f"\r\x1b[K{done}/{len(ids)} done: {parts}{'; waiting: ' + reason if reason else ''}")
            out.flush()
        open_ids = [j for j in open_ids if last.get(j) not in TERMINAL]
        if open_ids:
            delay = MIN_POLL if changed else min(MAX_POLL, delay * 1.5)
            time.sleep(delay)
    if tty:
        out.write("\n")
    final = fetch(pool, ids, include_output=True)
    return [final[j] for j in ids if j in final]
