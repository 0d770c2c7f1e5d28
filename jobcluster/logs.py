"""Logging for every program: one line per event, readable text or JSON (LOG_FORMAT=json).

A JSON line carries, where they apply, the ``job_id`` and ``attempt`` a worker's slot is busy with, the
``worker_id``, and the ``rpc`` a server is answering: set in context variables (:data:`JOB`, :data:`RPC`,
:func:`set_fields`), so every line logged meanwhile, by any module, has them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

#: The job (and its attempt, once claimed) the current task works on: {"job_id": ..., "attempt": ...}.
JOB: ContextVar[dict[str, Any] | None] = ContextVar("job", default=None)
#: The gRPC method the current task answers.
RPC: ContextVar[str] = ContextVar("rpc", default="")
_FIELDS: dict[str, Any] = {}


def set_fields(**fields: Any) -> None:
    """Fields every line of this process carries from now on (a worker's ``worker_id``)."""
    _FIELDS.update(fields)


class ContextFields(logging.Filter):
    """Puts :data:`JOB`, :data:`RPC` and :func:`set_fields` on each record (JSON shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.items():
            setattr(record, key, value)
        job = JOB.get()
        if job:
            for key, value in job.items():
                setattr(record, key, value)
        rpc = RPC.get()
        if rpc:
            record.rpc = rpc
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, program, logger, message and any ``extra`` fields."""

    _std = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "program": self.program,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._std})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(program: str, level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(program))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ContextFields())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
