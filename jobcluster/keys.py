"""Every Redis key jobcluster uses, in one place.

Redis holds job ids only; PostgreSQL is the record and Redis can be rebuilt
from it.

==============================  =====  ==================================================
key                             type   what it holds
==============================  =====  ==================================================
``pending_jobs``                list   ids ready to run. LPUSH in, workers take from the
                                       right (FIFO) with BLMOVE.
``processing_jobs:<worker-id>`` list   ids a worker has taken and not yet acked.
``delayed_jobs``                zset   ids waiting for a time (``run_at`` in the future,
                                       or a retry backing off); score = due unix ms.
``dlq_tasks``                   list   ids of dead-lettered (FAILED) jobs, newest first.
``workers``                     zset   worker id -> last heartbeat (unix ms).
``worker:<worker-id>``          hash   that worker's host, pid, slots, running count,
                                       started; expires when heartbeats stop.
``live_output:<job-id>``        hash   a running job's output so far: ``total`` bytes
                                       written, ``tail`` (the last bytes); for WatchJob.
                                       Expires a minute after the job's last write.
``servers``                     zset   server address -> last heartbeat (unix ms).
``server:<host:port>``          hash   that server's pid, host, start time; expires
                                       when its heartbeats stop.
``reconciled``                  string set by the leader's reconciliation (unix ms); when
                                       it is gone, Redis lost its data: every waiting job and
                                       dead letter in PostgreSQL is checked at once.
==============================  =====  ==================================================
"""

from __future__ import annotations

PENDING = "pending_jobs"
PROCESSING_PREFIX = "processing_jobs:"
DELAYED = "delayed_jobs"
DLQ = "dlq_tasks"
WORKERS = "workers"
WORKER_INFO_PREFIX = "worker:"
SERVERS = "servers"
LIVE_OUTPUT_PREFIX = "live_output:"
SERVER_INFO_PREFIX = "server:"
RECONCILED = "reconciled"


def processing(worker_id: str) -> str:
    """The processing list of one worker."""
    return PROCESSING_PREFIX + worker_id


def worker_info(worker_id: str) -> str:
    """The info hash of one worker."""
    return WORKER_INFO_PREFIX + worker_id


def server_info(address: str) -> str:
    """The info hash of one server."""
    return SERVER_INFO_PREFIX + address


def live_output(job_id: str) -> str:
    """The live output hash of one running job."""
    return LIVE_OUTPUT_PREFIX + job_id
