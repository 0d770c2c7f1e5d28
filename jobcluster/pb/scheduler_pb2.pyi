from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Job(_message.Message):
    __slots__ = ("id", "command", "created_at", "name", "description", "max_retries", "timeout_seconds", "run_at_ms", "idempotency_key", "queue", "priority", "constraints", "concurrency_key", "max_concurrency")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    command: str
    created_at: int
    name: str
    description: str
    max_retries: int
    timeout_seconds: float
    run_at_ms: int
    idempotency_key: str
    queue: str
    priority: int
    constraints: _containers.RepeatedScalarFieldContainer[str]
    concurrency_key: str
    max_concurrency: int
    def __init__(self, id: _Optional[str] = ..., command: _Optional[str] = ..., created_at: _Optional[int] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., run_at_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., constraints: _Optional[_Iterable[str]] = ..., concurrency_key: _Optional[str] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("id", "status", "output", "created_at", "updated_at", "name", "description", "command", "exit_code", "attempts", "max_retries", "timeout_seconds", "run_at_ms", "idempotency_key", "created_at_ms", "updated_at_ms", "started_at_ms", "finished_at_ms", "worker_id", "last_error", "output_truncated", "attempt_history", "submitted_via", "schedule_id", "scheduled_for_ms", "queue", "priority", "constraints", "concurrency_key", "max_concurrency", "waiting_reason")
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
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FOR_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
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
    schedule_id: str
    scheduled_for_ms: int
    queue: str
    priority: int
    constraints: _containers.RepeatedScalarFieldContainer[str]
    concurrency_key: str
    max_concurrency: int
    waiting_reason: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., output: _Optional[str] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., command: _Optional[str] = ..., exit_code: _Optional[int] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., run_at_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., worker_id: _Optional[str] = ..., last_error: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., attempt_history: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., submitted_via: _Optional[str] = ..., schedule_id: _Optional[str] = ..., scheduled_for_ms: _Optional[int] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., constraints: _Optional[_Iterable[str]] = ..., concurrency_key: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., waiting_reason: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("status", "ids", "page_size", "page_token", "include_output", "text", "schedule", "created_after_ms", "created_before_ms", "with_counts", "queue")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    WITH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    status: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    include_output: bool
    text: str
    schedule: str
    created_after_ms: int
    created_before_ms: int
    with_counts: bool
    queue: str
    def __init__(self, status: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_output: _Optional[bool] = ..., text: _Optional[str] = ..., schedule: _Optional[str] = ..., created_after_ms: _Optional[int] = ..., created_before_ms: _Optional[int] = ..., with_counts: _Optional[bool] = ..., queue: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "status_counts")
    class StatusCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobStatus]
    next_page_token: str
    status_counts: _containers.ScalarMap[str, int]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., status_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("id", "name", "cron", "timezone", "command", "description", "max_retries", "timeout_seconds", "catchup", "overlap", "enabled", "next_run_ms", "last_run_ms", "last_job_id", "last_job_status", "last_skip_ms", "last_skip_reason", "created_at_ms", "updated_at_ms", "queue", "priority", "constraints", "concurrency_key", "max_concurrency")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SKIP_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    cron: str
    timezone: str
    command: str
    description: str
    max_retries: int
    timeout_seconds: float
    catchup: str
    overlap: str
    enabled: bool
    next_run_ms: int
    last_run_ms: int
    last_job_id: str
    last_job_status: str
    last_skip_ms: int
    last_skip_reason: str
    created_at_ms: int
    updated_at_ms: int
    queue: str
    priority: int
    constraints: _containers.RepeatedScalarFieldContainer[str]
    concurrency_key: str
    max_concurrency: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., cron: _Optional[str] = ..., timezone: _Optional[str] = ..., command: _Optional[str] = ..., description: _Optional[str] = ..., max_retries: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., catchup: _Optional[str] = ..., overlap: _Optional[str] = ..., enabled: _Optional[bool] = ..., next_run_ms: _Optional[int] = ..., last_run_ms: _Optional[int] = ..., last_job_id: _Optional[str] = ..., last_job_status: _Optional[str] = ..., last_skip_ms: _Optional[int] = ..., last_skip_reason: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., queue: _Optional[str] = ..., priority: _Optional[int] = ..., constraints: _Optional[_Iterable[str]] = ..., concurrency_key: _Optional[str] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class ScheduleRef(_message.Message):
    __slots__ = ("name", "id", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class ClusterInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("address", "last_heartbeat_ms", "pid", "host", "leader")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    address: str
    last_heartbeat_ms: int
    pid: int
    host: str
    leader: bool
    def __init__(self, address: _Optional[str] = ..., last_heartbeat_ms: _Optional[int] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., leader: _Optional[bool] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("id", "last_heartbeat_ms", "pid", "host", "slots", "running", "jobs_done", "alive", "queues", "tags", "gone_ms", "gone_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    JOBS_DONE_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    GONE_MS_FIELD_NUMBER: _ClassVar[int]
    GONE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    last_heartbeat_ms: int
    pid: int
    host: str
    slots: int
    running: int
    jobs_done: int
    alive: bool
    queues: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    gone_ms: int
    gone_reason: str
    def __init__(self, id: _Optional[str] = ..., last_heartbeat_ms: _Optional[int] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ..., jobs_done: _Optional[int] = ..., alive: _Optional[bool] = ..., queues: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., gone_ms: _Optional[int] = ..., gone_reason: _Optional[str] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("leader", "leader_since_ms", "leader_term", "election", "servers", "workers", "pending", "processing", "delayed", "dlq", "answered_by")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    ELECTION_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    DLQ_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    leader: str
    leader_since_ms: int
    leader_term: int
    election: str
    servers: _containers.RepeatedCompositeFieldContainer[ServerInfo]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    pending: int
    processing: int
    delayed: int
    dlq: int
    answered_by: str
    def __init__(self, leader: _Optional[str] = ..., leader_since_ms: _Optional[int] = ..., leader_term: _Optional[int] = ..., election: _Optional[str] = ..., servers: _Optional[_Iterable[_Union[ServerInfo, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., pending: _Optional[int] = ..., processing: _Optional[int] = ..., delayed: _Optional[int] = ..., dlq: _Optional[int] = ..., answered_by: _Optional[str] = ...) -> None: ...

class JobBatch(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class JobBatchResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobResponse]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobResponse, _Mapping]]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job", "live_output", "live_output_bytes", "final")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LIVE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LIVE_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    job: JobStatus
    live_output: str
    live_output_bytes: int
    final: bool
    def __init__(self, job: _Optional[_Union[JobStatus, _Mapping]] = ..., live_output: _Optional[str] = ..., live_output_bytes: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class DeadLettersRequest(_message.Message):
    __slots__ = ("ids", "all", "page_size", "page_token")
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    page_size: int
    page_token: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "name", "command", "attempts", "max_retries", "exit_code", "reason", "last_error", "finished_at_ms", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    command: str
    attempts: int
    max_retries: int
    exit_code: int
    reason: str
    last_error: str
    finished_at_ms: int
    status: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., command: _Optional[str] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., last_error: _Optional[str] = ..., finished_at_ms: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class DeadLetters(_message.Message):
    __slots__ = ("dead_letters", "next_page_token", "total")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    total: int
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class DeadLettersResult(_message.Message):
    __slots__ = ("count", "ids")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, count: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("minutes", "status", "text", "schedule", "queue")
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    minutes: int
    status: str
    text: str
    schedule: str
    queue: str
    def __init__(self, minutes: _Optional[int] = ..., status: _Optional[str] = ..., text: _Optional[str] = ..., schedule: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: str
    count: int
    def __init__(self, status: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MinuteStats(_message.Message):
    __slots__ = ("minute_ms", "finished", "has_depths", "pending", "processing", "delayed", "dlq")
    MINUTE_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    HAS_DEPTHS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    DLQ_FIELD_NUMBER: _ClassVar[int]
    minute_ms: int
    finished: _containers.RepeatedCompositeFieldContainer[StatusCount]
    has_depths: bool
    pending: int
    processing: int
    delayed: int
    dlq: int
    def __init__(self, minute_ms: _Optional[int] = ..., finished: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., has_depths: _Optional[bool] = ..., pending: _Optional[int] = ..., processing: _Optional[int] = ..., delayed: _Optional[int] = ..., dlq: _Optional[int] = ...) -> None: ...

class DurationBucket(_message.Message):
    __slots__ = ("up_to_seconds", "count")
    UP_TO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    up_to_seconds: float
    count: int
    def __init__(self, up_to_seconds: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("minutes", "durations", "durations_of")
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_OF_FIELD_NUMBER: _ClassVar[int]
    minutes: _containers.RepeatedCompositeFieldContainer[MinuteStats]
    durations: _containers.RepeatedCompositeFieldContainer[DurationBucket]
    durations_of: int
    def __init__(self, minutes: _Optional[_Iterable[_Union[MinuteStats, _Mapping]]] = ..., durations: _Optional[_Iterable[_Union[DurationBucket, _Mapping]]] = ..., durations_of: _Optional[int] = ...) -> None: ...
