"""``make systemd``: systemd unit files for one host's servers, workers and web UI (docs/deploy.md).

Writes four files into a directory (default ``.run/systemd``):

- ``jobcluster-server@.service``: a server; the instance is its port (``jobcluster-server@50051``);
- ``jobcluster-worker@.service``: a worker; the instance numbers it (id ``<host>-worker-<n>``);
- ``jobcluster-webui.service``: the web UI;
- ``jobcluster.target``: all of them, so ``systemctl start jobcluster.target`` starts what is enabled.

Settings come from ``EnvironmentFile=`` (``/etc/jobcluster/jobcluster.env`` for every program, then
``/etc/jobcluster/<program>.env`` when present); secrets stay in files the ``*_FILE`` settings name.
The servers and web UI run as an unprivileged user with a tight sandbox. The worker runs as root
with only the capabilities it needs to start jobs as JOB_USER through its job launcher and to clean up after
them, and a sandbox its jobs can live in (they inherit it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from jobcluster.settings import Settings

DEFAULT_OUT = Path(".run/systemd")
ETC = Path("/etc/jobcluster")
#: What a worker needs as root: setuid/setgid for its launcher (switching to JOB_USER and its groups), kill
#: for a job's process group under another uid (timeouts, cancels, the launcher), chown for the scratch
#: directory's owner, dac_override to enter it and remove what a job left in it, fowner for what a job
#: left in a sticky directory of its own. tests/e2e/test_systemd_worker.py shows each one is needed.
WORKER_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE")
#: After the worker's grace (then it SIGKILLs the late jobs' groups at once): requeueing, closing pools, the launcher.
STOP_MARGIN = 15.0
#: A server's stop: NOT_SERVING, resign, in-flight calls (scheduler_server.server.STOP_GRACE, 5 s), pools.
SERVER_STOP_TIMEOUT = 20.0
#: load_or_exit's status on a bad setting: restarting cannot fix it.
CONFIG_ERROR_STATUS = 2
HOME_DIRS = ("/home", "/root", "/run/user")


@dataclass(frozen=True)
class UnitOptions:
    """Where the programs are installed and how they run."""

    venv: Path  # the virtual environment whose bin/ holds jobcluster-server etc.
    user: str = "jobcluster"  # servers and web UI run as this user; the worker runs as root
    etc: Path = ETC  # jobcluster.env and <program>.env live here
    worker_stop_timeout: float = 0.0  # TimeoutStopSec of the worker; 0: from the settings' graces

    @property
    def in_home(self) -> bool:
        return str(self.venv).startswith(HOME_DIRS)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _common(opts: UnitOptions, program: str, description: str) -> list[str]:
    return [
        "[Unit]",
        f"Description={description}",
        f"Documentation=file://{opts.venv.parent}/docs/deploy.md",
        # Ordering only: these engines may run on other hosts, and the programs retry until they answer.
        "After=network-online.target postgresql.service redis-server.service etcd.service",
        "Wants=network-online.target",
        "PartOf=jobcluster.target",
        "",
        "[Service]",
        "Type=exec",
        f"EnvironmentFile={opts.etc}/jobcluster.env",
        f"EnvironmentFile=-{opts.etc}/{program}.env",
        # No .env is read: the working directory holds none.
        "WorkingDirectory=/",
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
        "Restart=on-failure",
        "RestartSec=2s",
        f"RestartPreventExitStatus={CONFIG_ERROR_STATUS}",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
    ]


def _unprivileged(opts: UnitOptions) -> list[str]:
    """The sandbox of a server or the web UI: they need the network and nothing else."""
    return [
        f"User={opts.user}",
        f"Group={opts.user}",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        # A venv below a home directory must stay readable to start at all.
        f"ProtectHome={'read-only' if opts.in_home else 'yes'}",
        "PrivateDevices=yes",
        "ProtectProc=invisible",
        "RestrictNamespaces=yes",
        # AF_NETLINK: glibc's getaddrinfo asks the kernel for the host's addresses through it.
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "UMask=0077",
    ]


def server_unit(opts: UnitOptions) -> str:
    lines = _common(opts, "jobcluster-server", "jobcluster server on port %i")
    lines += [
        f"ExecStart={opts.venv}/bin/jobcluster-server --port %i",
        # SIGTERM: NOT_SERVING, resign the lead, finish in-flight calls, close the pools.
        "KillMode=mixed",
        f"TimeoutStopSec={_seconds(SERVER_STOP_TIMEOUT)}",
        *_unprivileged(opts),
        "",
        "[Install]",
        "WantedBy=jobcluster.target",
    ]
    return "\n".join(lines) + "\n"


def webui_unit(opts: UnitOptions) -> str:
    lines = _common(opts, "jobcluster-webui", "jobcluster web UI")
    lines += [
        f"ExecStart={opts.venv}/bin/jobcluster-webui",
        "KillMode=mixed",
        "TimeoutStopSec=10s",
        *_unprivileged(opts),
        "",
        "[Install]",
        "WantedBy=jobcluster.target",
    ]
    return "\n".join(lines) + "\n"


def worker_stop_timeout(opts: UnitOptions, settings: Settings) -> float:
    """TimeoutStopSec of the worker: running jobs' grace, then a margin to requeue the late ones and close."""
    if opts.worker_stop_timeout > 0:
        return opts.worker_stop_timeout
    return settings.worker_shutdown_grace + STOP_MARGIN


def worker_unit(opts: UnitOptions, settings: Settings) -> str:
    lines = _common(opts, "jobcluster-worker", "jobcluster worker %i")
    lines += [
        f"ExecStart={opts.venv}/bin/jobcluster-worker --id %H-worker-%i",
        # SIGTERM to the worker alone: it stops taking jobs, gives running ones WORKER_SHUTDOWN_GRACE,
        # then kills the late ones' groups and requeues them itself. control-group would SIGTERM every job at once;
        # process would leave jobs running after a timeout. mixed SIGKILLs whatever is left at the end.
        "KillMode=mixed",
        f"TimeoutStopSec={_seconds(worker_stop_timeout(opts, settings))}",
        # Root, so jobs run as JOB_USER (set it in jobcluster-worker.env); only these capabilities.
        "User=root",
        f"CapabilityBoundingSet={' '.join(WORKER_CAPABILITIES)}",
        # Jobs inherit this sandbox: /usr, /boot and /etc read-only, their own /tmp (JOB_WORKDIR_ROOT's
        # default lives there). No PrivateDevices (a gpu worker's jobs need /dev), no ProtectProc (the
        # launcher finds a job's processes of another uid in /proc), no system call or address family filter.
        "ProtectSystem=full",
        "",
        "[Install]",
        "WantedBy=jobcluster.target",
    ]
    return "\n".join(lines) + "\n"


def target_unit() -> str:
    return (
        "\n".join(
            [
                "[Unit]",
                "Description=jobcluster: the servers, workers and web UI enabled on this host",
                "After=network-online.target",
                "Wants=network-online.target",
                "",
                "[Install]",
                "WantedBy=multi-user.target",
            ]
        )
        + "\n"
    )


def render(opts: UnitOptions, settings: Settings) -> dict[str, str]:
    """File name -> contents of every unit."""
    return {
        "jobcluster-server@.service": server_unit(opts),
        "jobcluster-worker@.service": worker_unit(opts, settings),
        "jobcluster-webui.service": webui_unit(opts),
        "jobcluster.target": target_unit(),
    }


def write(out: Path, units: dict[str, str]) -> list[Path]:
    """Write the units into ``out`` (created); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in units.items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m devtools.systemd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory to write into (default %(default)s)")
    p.add_argument(
        "--venv",
        type=Path,
        default=Path(sys.prefix),
        help="the virtual environment to run (default: this one, %(default)s)",
    )
    p.add_argument("--user", default="jobcluster", help="user of the servers and web UI (default %(default)s)")
    p.add_argument("--etc", type=Path, default=ETC, help="directory of the environment files (default %(default)s)")
    p.add_argument(
        "--settings",
        default=".env",
        metavar="ENV_FILE",
        help="read WORKER_SHUTDOWN_GRACE from this file and the environment "
        "(default %(default)s; use the hosts' jobcluster.env)",
    )
    args = p.parse_args(argv)
    settings = Settings.from_env(dotenv_path=args.settings)
    opts = UnitOptions(venv=args.venv.absolute(), user=args.user, etc=args.etc)
    for path in write(args.out, render(opts, settings)):
        print(path)
    print(
        f"install: cp {args.out}/* /etc/systemd/system/ && systemctl daemon-reload\n"
        f"then:    systemctl enable --now jobcluster-server@50051 jobcluster-worker@1 jobcluster-webui "
        f"jobcluster.target   (docs/deploy.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
