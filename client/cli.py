"""``jobcluster``: the client as one command with subcommands (installed by ``pip install`` / ``make deps``
as ``.venv/bin/jobcluster``).

Each subcommand is a mode of ``python -m client`` with the same flags and exit codes: this module only
turns ``jobcluster status ID`` into ``-status ID`` and hands the rest to :func:`client.__main__.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from client import __main__ as classic

USAGE = """\
usage: jobcluster COMMAND [ARGS] [FLAGS]

Submit shell-command jobs to a jobcluster, follow them, and look after the cluster.

commands:
  submit COMMAND             one shell command (also: submit -cmd COMMAND); follows it to the end
  run JOBS_JSON              every job and cron schedule in a jobs file (also: run -file JOBS_JSON)
  status ID [ID ...]         everything about these jobs: attempts, exit code, output
  watch ID                   print a job's output as it comes, until it ends
  list [STATUS]              the newest jobs (-limit N, -text T, -schedule NAME, -since 1h, -queue Q)
  cancel ID [ID ...]         cancel jobs (a running one is stopped)
  dlq                        the dead letters (dlq_tasks)
  dlq retry ID ...|all       send dead-lettered jobs back to the queue
  dlq purge ID ...|all       remove ids from dlq_tasks (the jobs stay FAILED)
  schedules                  the cron schedules
  schedules pause|resume|delete|run NAME
                             (run NAME -force: even while its overlap=forbid job runs; admin)
  cluster                    the leader, servers, workers and queue depths

flags (any command):
  -servers host:port,...     servers to use (default SERVERS, then .servers, then localhost:50051)
  -json                      print JSON on stdout (watch: one object per event), for scripts
  -h, --help                 this help; jobcluster COMMAND -h lists every flag

examples:
  jobcluster submit 'echo hello' -name greet -timeout 30s
  jobcluster submit 'make report' -queue reports -priority 5 -no-wait
  jobcluster run jobs.json
  jobcluster list FAILED -since 1h
  jobcluster status 3f0c... -json | jq .jobs[0].exit_code
  jobcluster dlq retry all
  jobcluster schedules pause nightly-backup

exit status: 0 every job succeeded (or the command did what it said), 1 a job did not succeed,
2 bad input, an unknown id or a refused token, 3 no server answered.
AUTH_TOKEN and TLS_CA (TLS_CLIENT_CERT, TLS_CLIENT_KEY) come from the environment or .env.
"""


def _one_or_flag(flag: str) -> Callable[[list[str]], list[str]]:
    """``submit X`` -> ``-cmd X``; ``submit -cmd X`` passes as it is."""

    def translate(args: list[str]) -> list[str]:
        if args and not args[0].startswith("-"):
            return [flag, *args]
        return args

    return translate


def _many(flag: str) -> Callable[[list[str]], list[str]]:
    """``status A B -json`` -> ``-status A B -json``."""

    def translate(args: list[str]) -> list[str]:
        return [flag, *args]

    return translate


def _list(args: list[str]) -> list[str]:
    if args and not args[0].startswith("-"):
        return ["-list", *args]
    return ["-list", "", *args]


def _dlq(args: list[str]) -> list[str]:
    if args and args[0] in ("retry", "purge"):
        if len(args) < 2 or args[1].startswith("-"):
            raise _Usage(f"dlq {args[0]}: give the ids to {args[0]}, or all")
        return [f"-{args[0]}-dlq", *args[1:]]
    if args and not args[0].startswith("-"):
        raise _Usage(f"dlq {args[0]}: unknown; use `dlq`, `dlq retry ID ...|all` or `dlq purge ID ...|all`")
    return ["-dlq", *args]


_SCHEDULE_ACTIONS = {
    "pause": "-pause-schedule",
    "resume": "-resume-schedule",
    "delete": "-delete-schedule",
    "run": "-run-schedule",
}


def _schedules(args: list[str]) -> list[str]:
    if args and args[0] in _SCHEDULE_ACTIONS:
        if len(args) < 2 or args[1].startswith("-"):
            raise _Usage(f"schedules {args[0]}: give the schedule's name")
        return [_SCHEDULE_ACTIONS[args[0]], *args[1:]]
    if args and not args[0].startswith("-"):
        raise _Usage(
            f"schedules {args[0]}: unknown; use `schedules`, or `schedules {'|'.join(_SCHEDULE_ACTIONS)} NAME`"
        )
    return ["-schedules", *args]


COMMANDS: dict[str, Callable[[list[str]], list[str]]] = {
    "submit": _one_or_flag("-cmd"),
    "run": _one_or_flag("-file"),
    "status": _many("-status"),
    "watch": _many("-watch"),
    "list": _list,
    "cancel": _many("-cancel"),
    "dlq": _dlq,
    "schedules": _schedules,
    "cluster": _many("-cluster"),
}


class _Usage(Exception):
    """A command line this module cannot translate; the message says why."""


def translate(argv: list[str]) -> list[str]:
    """``jobcluster`` arguments as ``python -m client`` arguments; _Usage when they name no command."""
    if not argv:
        raise _Usage("give a command")
    command, *rest = argv
    if command not in COMMANDS:
        close = [c for c in COMMANDS if c.startswith(command[:2])] if command else []
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise _Usage(f"unknown command {command!r}{hint}")
    return COMMANDS[command](rest)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return classic.EXIT_OK if args else classic.EXIT_USAGE
    if any(a in ("-h", "--help") for a in args[1:]) and args[0] in COMMANDS:
        return classic.main(["-h"], prog=f"jobcluster {args[0]}")
    try:
        translated = translate(args)
    except _Usage as exc:
        print(f"jobcluster: error: {exc}\n(jobcluster --help lists the commands)", file=sys.stderr)
        return classic.EXIT_USAGE
    return classic.main(translated, prog=f"jobcluster {args[0]}")


def run() -> None:
    classic.run(main)


if __name__ == "__main__":
    run()
