from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Job(_message.Message):
    __slots__ = ("id", "command", "created_at", "name", "description", "max_retries", "timeout_seconds", "run_at_ms", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    command: str
    created_at: int
    name: str
    description: str
    max_retries: int
    timeout_seconds: float
    run_at_ms: int
    idempotency_key: str
    def __init__(self, id: _Optional[str] = ..., command: _Optional[str] = ..., created_at: _Optional[int] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., run_at_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class JobResponse(_message.Message):
    __slots__ = ("job_id", "success", "message", "duplicate")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    success: bool
    message: str
    duplicate: bool
    def __init__(self, job_id: _Optional[str] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class JobId(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "worker_id", "started_at_ms", "finished_at_ms", "exit_code", "error", "output_truncated")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    number: int
    worker_id: str
    started_at_ms: int
    finished_at_ms: int
    exit_code: int
    error: str
    output_truncated: bool
    def __init__(self, number: _Optional[int] = ..., worker_id: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., output_truncated: _Optional[bool] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("id", "status", "output", "created_at", "updated_at", "name", "description", "command", "exit_code", "attempts", "max_retries", "timeout_seconds", "run_at_ms", "idempotency_key", "created_at_ms", "updated_at_ms", "started_at_ms", "finished_at_ms", "worker_id", "last_error", "output_truncated", "attempt_history", "submitted_via")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_VIA_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    output: str
    created_at: int
    updated_at: int
    name: str
    description: str
    command: str
    exit_code: int
    attempts: int
    max_retries: int
    timeout_seconds: float
    run_at_ms: int
    idempotency_key: str
    created_at_ms: int
    updated_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    worker_id: str
    last_error: str
    output_truncated: bool
    attempt_history: _containers.RepeatedCompositeFieldContainer[Attempt]
    submitted_via: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., output: _Optional[str] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., command: _Optional[str] = ..., exit_code: _Optional[int] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., run_at_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., worker_id: _Optional[str] = ..., last_error: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., attempt_history: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., submitted_via: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("status", "ids", "page_size", "page_token", "include_output")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    status: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    include_output: bool
    def __init__(self, status: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_output: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobStatus]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
