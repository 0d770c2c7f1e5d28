"""Passwords for the backing services, read from files named by ``*_FILE`` settings; what a token must be.

A secret never travels on a command line (``/proc/<pid>/cmdline`` is readable
by every local user) or in a program's environment: a setting such as
``DATABASE_PASSWORD_FILE`` names a file (mode 0600) and the connect code reads
it when it connects. A missing or unreadable file is a :class:`ConfigError`
naming the setting; a file that group or others may read is used, with a
warning (once per file and process).

A token (``AUTH_TOKEN``, a line of ``AUTH_TOKENS_FILE``) has at least
:data:`MIN_TOKEN_CHARS` characters and never starts with :data:`PROBE_PREFIX`
(:func:`token_problem`); the servers refuse to start with one that does not.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field

from jobcluster.settings import ConfigError, Settings

log = logging.getLogger("credentials")

#: Longest secret we read: a password file is one line, not a data file.
MAX_SECRET_BYTES = 4096
#: The fewest characters of a token: 32 random ones cannot be guessed, even at the servers' full speed.
MIN_TOKEN_CHARS = 32
#: Tokens starting with this are made up on purpose (the web UI asks whether the servers refuse one), so
#: no real token may: the servers refuse such a token at once, without counting it as a guess.
PROBE_PREFIX = "not-a-token-"

_warned: set[str] = set()


class LoginRefused(ConnectionError):
    """A service refused our user or password. A ConnectionError, so connecting retries it and says so:
    the programs wait, logging the message, until the password file (re-read each try) is right."""


def read_secret(setting: str, path: str, *, warn: bool = True) -> str:
    """The secret in ``path`` (its first line, without the newline); ``setting`` names it in errors."""
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            raw = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read the password file ({exc.strerror or exc})") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"{setting}={path}: longer than {MAX_SECRET_BYTES} bytes; is it the right file?")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}={path}: not UTF-8 text; is it the right file?") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"{setting}={path}: the password file is empty")
    if warn and mode & 0o077 and path not in _warned:
        _warned.add(path)
        log.warning("%s=%s can be read by group or others (mode %o): chmod 600 %s", setting, path, mode, path)
    return secret


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be one the servers accept (too short, or a probe's), or None when it can."""
    if len(token) < MIN_TOKEN_CHARS:
        return (
            f"the token has {len(token)} characters; a token needs at least {MIN_TOKEN_CHARS} "
            "(make one with `openssl rand -hex 32`)"
        )
    if token.startswith(PROBE_PREFIX):
        return f"a token may not start with {PROBE_PREFIX!r} (kept for made-up tokens)"
    return None


def optional_secret(setting: str, path: str) -> str | None:
    """:func:`read_secret` when ``path`` is set, else None."""
    return read_secret(setting, path) if path else None


def check_password_files(settings: Settings) -> None:
    """Raise ConfigError now if a ``*_FILE`` password setting names a file that cannot be read."""
    for name in ("database_password_file", "redis_password_file", "etcd_password_file"):
        path: str = getattr(settings, name)
        if path:
            read_secret(name.upper(), path, warn=False)


@dataclass(frozen=True)
class EtcdAuth:
    """An etcd user and its password (ETCD_USER, ETCD_PASSWORD_FILE); the password stays out of reprs."""

    user: str
    password: str = field(repr=False)


def etcd_auth(settings: Settings) -> EtcdAuth | None:
    """ETCD_USER with the password read now from ETCD_PASSWORD_FILE; None when ETCD_USER is empty.

    With auth on, etcd answers a wrong password with "authentication failed" and a missing one
    with "user name is empty"; both are ETCD_ERRORS, so the election retries and logs them.
    """
    if not settings.etcd_user:
        return None
    return EtcdAuth(settings.etcd_user, read_secret("ETCD_PASSWORD_FILE", settings.etcd_password_file))
