"""``python -m client``: submit jobs to a jobcluster and follow them to the end.

  python -m client -file jobs.json          submit every job in the file, follow, summarize
  python -m client -cmd 'ls -la'            one command
  python -m client -status ID [ID...]       show jobs (status, attempts, output)
  python -m client -list [STATUS]           the newest jobs

Exit status: 0 all jobs succeeded, 1 a job did not, 2 bad input or a refused token, 3 no server answered.
AUTH_TOKEN and TLS_CA (TLS_CLIENT_CERT, TLS_CLIENT_KEY) come from the environment or .env.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from client import display
from client.follow import follow
from client.jobsfile import JobEntry, JobsFileError, entry_from_flags, load_jobs, parse_run_at, to_message
from client.servers import AUTH_HINTS, channel_security, resolve
from jobcluster.channels import ChannelSecurity, SecurityError
from jobcluster.durations import parse_duration
from jobcluster.failover import CALL_TIMEOUT, Channels, Pool, ServerDown
from jobcluster.limits import MAX_BATCH_BYTES
from jobcluster.model import Status
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pbjson import to_dict
from jobcluster.wording import plain

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: Most jobs in one SubmitJobs call (the server takes up to 10,000).
BATCH_JOBS = 1000


def build_parser(prog: str = "python -m client", *, mode_required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=plain(__doc__), allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    what = p.add_mutually_exclusive_group(required=mode_required)
    what.add_argument("-file", "--file", metavar="JOBS_JSON", help="jobs file to submit")
    what.add_argument("-cmd", "--cmd", metavar="COMMAND", help="one shell command to submit")
    what.add_argument("-status", "--status", nargs="+", metavar="ID", help="show these jobs")
    what.add_argument("-list", "--list", nargs="?", const="", metavar="STATUS", help="list the newest jobs")
    what.add_argument("-schedules", "--schedules", action="store_true", help="list the cron schedules")
    what.add_argument(
        "-cluster", "--cluster", action="store_true", help="show the leader, servers, workers and queue depths"
    )
    what.add_argument("-pause-schedule", "--pause-schedule", metavar="NAME", help="pause a cron schedule")
    what.add_argument("-resume-schedule", "--resume-schedule", metavar="NAME", help="resume a cron schedule")
    what.add_argument("-delete-schedule", "--delete-schedule", metavar="NAME", help="delete a cron schedule")
    what.add_argument(
        "-run-schedule", "--run-schedule", metavar="NAME", help="submit one job of a cron schedule now, and follow it"
    )
    what.add_argument("-watch", "--watch", metavar="ID", help="follow one job, printing its output as it comes")
    what.add_argument("-cancel", "--cancel", nargs="+", metavar="ID", help="cancel jobs")
    what.add_argument("-dlq", "--dlq", action="store_true", help="list the dead letters (dlq_tasks)")
    what.add_argument(
        "-retry-dlq",
        "--retry-dlq",
        nargs="+",
        metavar="ID",
        help="send dead-lettered jobs back to the queue ('all' for every one)",
    )
    what.add_argument(
        "-purge-dlq",
        "--purge-dlq",
        nargs="+",
        metavar="ID",
        help="remove ids from dlq_tasks ('all' for every one); the jobs stay FAILED",
    )
    p.add_argument("-servers", "--servers", help="host:port,... (default SERVERS, then .servers, then localhost:50051)")
    p.add_argument("-submit-server", "--submit-server", help="submit to this server (default SUBMIT_SERVER)")
    p.add_argument("-status-servers", "--status-servers", help="ask these for status (default STATUS_SERVERS)")
    p.add_argument("-name", "--name", default="", help="with -cmd: the job's name")
    p.add_argument("-max-retries", "--max-retries", type=int, help="with -cmd: retries after the first attempt")
    p.add_argument("-timeout", "--timeout", help="with -cmd: e.g. 30s, 5m; 0 for none")
    p.add_argument("-run-at", "--run-at", help="with -cmd: ISO 8601 time or unix seconds")
    p.add_argument("-idempotency-key", "--idempotency-key", default="", help="with -cmd: same key, same job")
    p.add_argument(
        "-queue",
        "--queue",
        default="",
        help="with -cmd: the job's queue (default: default); with -list: only jobs of this queue",
    )
    p.add_argument("-priority", "--priority", type=int, help="with -cmd: 0-9, higher runs first")
    p.add_argument(
        "-constraint",
        "--constraint",
        action="append",
        default=[],
        metavar="TAG",
        help="with -cmd: a tag the worker must have (gpu, region=eu); repeat, or a comma list",
    )
    p.add_argument(
        "-concurrency-key",
        "--concurrency-key",
        default="",
        help="with -cmd: jobs sharing this key run at most -max-concurrency at once",
    )
    p.add_argument("-max-concurrency", "--max-concurrency", type=int, help="with -cmd: the key's limit")
    p.add_argument(
        "-json",
        "--json",
        action="store_true",
        help="print one JSON object on stdout (watch: one per event) instead of text, for scripts",
    )
    p.add_argument("-no-wait", "--no-wait", action="store_true", help="print the ids and exit, do not follow")
    p.add_argument(
        "-force",
        "--force",
        action="store_true",
        help="with -run-schedule: run even while the job of an overlap=forbid schedule has not ended "
        "(needs an admin token)",
    )
    p.add_argument("-limit", "--limit", type=int, default=20, help="with -list: how many")
    p.add_argument("-text", "--text", default="", help="with -list: only jobs whose command or name contains this")
    p.add_argument("-schedule", "--schedule", default="", help="with -list: only jobs of this cron schedule")
    p.add_argument(
        "-since",
        "--since",
        default="",
        help="with -list: only jobs created since this long ago (1h, 30m) or this time (ISO 8601)",
    )
    return p


def _since_ms(value: str) -> int:
    """``-since``: a duration back from now, or an ISO 8601 time; 0 when not given."""
    if not value:
        return 0
    try:
        return int((time.time() - parse_duration(value)) * 1000)
    except ValueError:
        pass
    try:
        return parse_run_at(value)
    except ValueError:
        raise JobsFileError(f"-since {value!r}: give a duration (1h, 30m) or an ISO 8601 time") from None


def submit_all(pool: Pool, entries: list[JobEntry]) -> list[tuple[str, JobEntry]]:
    submitted = []
    for entry in entries:
        msg = to_message(entry)
        resp, server = pool.call(lambda stub: stub.SubmitJob(msg, timeout=CALL_TIMEOUT))
        note = " (existing job, same idempotency key)" if resp.duplicate else ""
        display.say(f"submitted {resp.job_id} {entry.name or entry.command[:40]!r} via {server}{note}")
        submitted.append((resp.job_id, entry))
    return submitted


class EntryRefused(Exception):
    """A server refused one entry of a jobs file; the message names it and what was saved before it."""


def save_schedules(pool: Pool, entries: list[JobEntry]) -> None:
    """CreateSchedule for each cron entry. The file was checked first (every entry, cron expressions
    included), so a refusal here is the server's own rule (CRON_MIN_INTERVAL, MAX_SCHEDULES):
    EntryRefused says which entry, and which schedules were saved before it."""
    saved_names: list[str] = []
    for entry in entries:
        msg = pb.Schedule(
            name=entry.name,
            cron=entry.cron,
            timezone=entry.timezone,
            command=entry.command,
            description=entry.description,
            catchup=entry.catchup,
            overlap=entry.overlap,
            **entry.routing(),
        )
        if entry.max_retries is not None:
            msg.max_retries = entry.max_retries
        if entry.timeout_seconds is not None:
            msg.timeout_seconds = entry.timeout_seconds
        if entry.enabled is not None:
            msg.enabled = entry.enabled
        try:
            saved, server = pool.call(lambda stub: stub.CreateSchedule(msg, timeout=CALL_TIMEOUT))
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise
            before = f"saved before it: {', '.join(saved_names)}" if saved_names else "no schedule was saved"
            raise EntryRefused(f"{entry.where}: {exc.details()} ({before}; no job was submitted)") from None
        saved_names.append(saved.name)
        if saved.enabled:
            state = f"next run {display.when(saved.next_run_ms)}"
        elif entry.enabled is None:
            state = 'paused, and kept paused (add "enabled": true to the entry to resume it)'
        else:
            state = "paused"
        display.say(f"schedule {saved.name!r} saved via {server}: {saved.cron!r} ({saved.timezone}), {state}")


def batches(
    entries: list[JobEntry], max_jobs: int = BATCH_JOBS, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[tuple[list[JobEntry], pb.JobBatch]]:
    """Consecutive SubmitJobs batches of at most ``max_jobs`` jobs and about ``max_bytes`` bytes
    (a batch holds at least one job)."""
    chunk: list[JobEntry] = []
    batch = pb.JobBatch()
    size = 0
    for entry in entries:
        msg = to_message(entry)
        grown = size + msg.ByteSize() + 8  # a repeated field adds a tag and a length to each job
        if chunk and (len(chunk) >= max_jobs or grown > max_bytes):
            yield chunk, batch
            chunk, batch, grown = [], pb.JobBatch(), msg.ByteSize() + 8
        chunk.append(entry)
        batch.jobs.append(msg)
        size = grown
    if chunk:
        yield chunk, batch


def submit_batch(pool: Pool, entries: list[JobEntry]) -> list[tuple[str, JobEntry]]:
    """A jobs file goes in SubmitJobs calls of up to 1000 jobs and 3 MiB (each call all or nothing)."""
    submitted = []
    for chunk, batch in batches(entries):
        resp, server = pool.call(lambda stub: stub.SubmitJobs(batch, timeout=CALL_TIMEOUT))
        for entry, r in zip(chunk, resp.jobs):
            note = " (existing job, same idempotency key)" if r.duplicate else ""
            display.say(f"submitted {r.job_id} {entry.name or entry.command[:40]!r} via {server}{note}")
            submitted.append((r.job_id, entry))
    return submitted


def cancel(pool: Pool, ids: list[str]) -> int:
    code = EXIT_OK
    done: list[pb.JobStatus] = []
    for job_id in ids:
        try:
            job, _ = pool.call(lambda stub: stub.CancelJob(pb.JobId(id=job_id), timeout=CALL_TIMEOUT))
            done.append(job)
            if not display.JSON:
                print(f"job {job.id} {job.status}")
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            print(display.rpc_error(exc), file=sys.stderr)
            code = EXIT_USAGE
    if display.JSON:
        display.emit({"jobs": [to_dict(job) for job in done]})
    return code


def dead_letter_command(pool: Pool, args: argparse.Namespace) -> int:
    ids = args.retry_dlq or args.purge_dlq
    req = pb.DeadLettersRequest(all=True) if ids == ["all"] else pb.DeadLettersRequest(ids=ids)
    if args.retry_dlq:
        res, _ = pool.call(lambda stub: stub.RetryDeadLetters(req, timeout=CALL_TIMEOUT))
        text = f"{res.count} job(s) back in the queue: {' '.join(res.ids)}".rstrip(": ")
    else:
        res, _ = pool.call(lambda stub: stub.PurgeDeadLetters(req, timeout=CALL_TIMEOUT))
        text = f"{res.count} id(s) removed from dlq_tasks"
    if display.JSON:
        display.emit(to_dict(res))
    else:
        print(text)
    return EXIT_OK


def schedule_command(pool: Pool, args: argparse.Namespace) -> int:
    if args.pause_schedule:
        name, call, verb = args.pause_schedule, "PauseSchedule", "paused"
    elif args.resume_schedule:
        name, call, verb = args.resume_schedule, "ResumeSchedule", "resumed"
    else:
        name, call, verb = args.delete_schedule, "DeleteSchedule", "deleted"
    ref = pb.ScheduleRef(name=name)
    sch, _ = pool.call(lambda stub: getattr(stub, call)(ref, timeout=CALL_TIMEOUT))
    extra = f", next run {display.when(sch.next_run_ms)}" if verb == "resumed" else ""
    if display.JSON:
        display.emit(to_dict(sch))
    else:
        print(f"schedule {sch.name!r} {verb}{extra}")
    return EXIT_OK


def _read_entries(args: argparse.Namespace) -> list[JobEntry]:
    """The jobs to submit: a jobs file's entries, or the one -cmd; [] for the other commands."""
    if args.file:
        return load_jobs(args.file)
    if args.cmd is not None:
        return [entry_from_flags(args)]
    return []


def _show(pool: Pool, args: argparse.Namespace, since_ms: int) -> int | None:
    """Run a read-only command on the status servers; None when the command is not one."""
    if args.status:
        return display.show_jobs(pool, args.status)
    if args.list is not None:
        return display.list_jobs(
            pool, args.list, args.limit, text=args.text, schedule=args.schedule, since_ms=since_ms, queue=args.queue
        )
    if args.watch:
        return display.watch(pool, args.watch)
    if args.dlq:
        return display.list_dead_letters(pool)
    if args.schedules:
        return display.list_schedules(pool)
    if args.cluster:
        return display.show_cluster(pool)
    return None


def _change(
    pool: Pool, args: argparse.Namespace, entries: list[JobEntry]
) -> int | Sequence[tuple[str, JobEntry | None]]:
    """Run a command that changes something on the submit servers: an exit status, or the jobs to follow."""
    if args.pause_schedule or args.resume_schedule or args.delete_schedule:
        return schedule_command(pool, args)
    if args.cancel:
        return cancel(pool, args.cancel)
    if args.retry_dlq or args.purge_dlq:
        return dead_letter_command(pool, args)
    if args.run_schedule:
        ref = pb.ScheduleRef(name=args.run_schedule, force=args.force)
        resp, server = pool.call(lambda stub: stub.RunScheduleNow(ref, timeout=CALL_TIMEOUT))
        display.say(f"submitted {resp.job_id} (schedule {args.run_schedule}) via {server}")
        return [(resp.job_id, None)]
    save_schedules(pool, [e for e in entries if e.cron])
    jobs = [e for e in entries if not e.cron]
    return submit_batch(pool, jobs) if args.file and jobs else submit_all(pool, jobs)


def _run(
    args: argparse.Namespace,
    entries: list[JobEntry],
    since_ms: int,
    servers: tuple[list[str], list[str]],
    security: ChannelSecurity,
) -> int:
    submit_servers, status_servers = servers
    with contextlib.closing(Pool(status_servers, Channels(security))) as status_pool:
        shown = _show(status_pool, args, since_ms)
        if shown is not None:
            return shown
        with contextlib.closing(Pool(submit_servers, Channels(security))) as submit_pool:
            outcome = _change(submit_pool, args, entries)
        if isinstance(outcome, int):
            return outcome
        if args.no_wait or not outcome:
            if display.JSON:
                display.emit({"jobs": [{"id": job_id} for job_id, _ in outcome]})
            return EXIT_OK
        final = follow(status_pool, [job_id for job_id, _ in outcome], out=sys.stderr if display.JSON else sys.stdout)
        display.summary(final)
        return EXIT_OK if all(j.status == Status.SUCCEEDED for j in final) else EXIT_FAILED


#: Flags that belong to some modes only -> those modes (the dest of each mode's flag). Any other flag goes
#: with every mode.
MODE_FLAGS: dict[str, tuple[str, ...]] = {
    **{
        flag: ("cmd",)
        for flag in (
            "name",
            "max_retries",
            "timeout",
            "run_at",
            "idempotency_key",
            "priority",
            "constraint",
            "concurrency_key",
            "max_concurrency",
        )
    },
    "queue": ("cmd", "list"),
    "no_wait": ("cmd", "file", "run_schedule"),
    "force": ("run_schedule",),
    **{flag: ("list",) for flag in ("limit", "text", "schedule", "since")},
}


def _misplaced_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """An error naming the flags given that the chosen mode does not use ('' when none): they were
    silently ignored before (``-list -cmd-only-flag``)."""
    modes = {a.dest: a for a in parser._mutually_exclusive_groups[0]._group_actions}
    mode = next(dest for dest in modes if getattr(args, dest) not in (None, False))
    wrong = []
    for dest, allowed in MODE_FLAGS.items():
        if mode not in allowed and getattr(args, dest) != parser.get_default(dest):
            flag = f"-{dest.replace('_', '-')}"
            wrong.append(f"{flag} goes with {' or '.join('-' + m.replace('_', '-') for m in allowed)}")
    if not wrong:
        return ""
    return f"{'; '.join(wrong)}, not with -{mode.replace('_', '-')}"


def _unknown_flags(argv: list[str], prog: str) -> str:
    """An error naming the flags of ``argv`` that no mode knows ('' when all are known): argparse itself
    would first complain that no mode was given, without naming the mistyped flag."""
    lenient = build_parser(prog, mode_required=False)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its own errors come again from the real parse
            _, unknown = lenient.parse_known_args(argv)
    except SystemExit:
        return ""
    flags = [u for u in unknown if u.startswith("-") and not u.lstrip("-").replace(".", "").isdigit()]
    if not flags:
        return ""
    known = list(lenient._option_string_actions)
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=1)
        hints.append(f"{flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    return f"unknown flag{'s' if len(flags) > 1 else ''}: {', '.join(hints)}"


def main(argv: list[str] | None = None, prog: str = "python -m client") -> int:
    argv = sys.argv[1:] if argv is None else argv
    unknown = _unknown_flags(argv, prog)
    if unknown:
        print(f"{prog}: error: {unknown}\n({prog} -h lists every flag)", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    display.JSON = args.json
    misplaced = _misplaced_flags(args, parser)
    if misplaced:
        print(f"{prog}: error: {misplaced}", file=sys.stderr)
        return EXIT_USAGE
    try:
        since = _since_ms(args.since)
        entries = _read_entries(args)
    except JobsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.file or args.cmd is not None:
            print("nothing was submitted", file=sys.stderr)
        return EXIT_USAGE
    servers = resolve(args.servers, args.submit_server, args.status_servers)
    security = channel_security([*servers[0], *servers[1]])
    try:
        return _run(args, entries, since, servers, security)
    except SecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EntryRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServerDown as exc:
        print(f"error: {exc}\nhint: {security.hint()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except grpc.RpcError as exc:
        print(display.rpc_error(exc), file=sys.stderr)
        if exc.code() in AUTH_HINTS:
            print(f"hint: {AUTH_HINTS[exc.code()]}", file=sys.stderr)
        return (
            EXIT_USAGE
            if exc.code()
            in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
                *AUTH_HINTS,
            )
            else EXIT_UNREACHABLE
        )
    except KeyboardInterrupt:
        print("\ninterrupted: jobs already submitted keep running", file=sys.stderr)
        return 130


def run(entry: Callable[[], int] = main) -> None:
    """Exit with ``entry``'s status; a reader that stops early (``| head``) ends the output quietly."""
    try:
        code = entry()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":
    run()
