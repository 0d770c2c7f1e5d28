"""Bearer tokens and roles: what ``AUTH_TOKENS_FILE`` / ``AUTH_TOKEN`` hold, and the role each RPC needs.

The interceptor that checks them on every call is :mod:`scheduler_server.auth`.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobcluster.credentials import PROBE_PREFIX, token_problem
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.settings import Settings

log = logging.getLogger("auth")

JOB_SERVICE = "/" + pb.DESCRIPTOR.services_by_name["JobService"].full_name + "/"
#: Anyone may call these: load balancers check health, tools discover the API.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
ANONYMOUS = "anonymous"


class Role(enum.IntEnum):
    """What a token may do; each role may do everything the ones below it may."""

    READ = 1
    SUBMIT = 2
    ADMIN = 3


#: The least role each RPC of scheduler.JobService needs (tests/unit/test_auth.py: every RPC is here).
RPC_ROLES: dict[str, Role] = {
    "GetJobStatus": Role.READ,
    "ListJobs": Role.READ,
    "WatchJob": Role.READ,
    "ListDeadLetters": Role.READ,
    "ListSchedules": Role.READ,
    "GetClusterInfo": Role.READ,
    "GetStats": Role.READ,
    "SubmitJob": Role.SUBMIT,
    "SubmitJobs": Role.SUBMIT,
    "CancelJob": Role.SUBMIT,
    "RunScheduleNow": Role.SUBMIT,
    "CreateSchedule": Role.ADMIN,
    "DeleteSchedule": Role.ADMIN,
    "PauseSchedule": Role.ADMIN,
    "ResumeSchedule": Role.ADMIN,
    "RetryDeadLetters": Role.ADMIN,
    "PurgeDeadLetters": Role.ADMIN,
}


class AuthConfigError(RuntimeError):
    """The token or TLS settings cannot be used; the server refuses to start with this message."""


@dataclass(frozen=True)
class Token:
    """One accepted token; ``name`` is who it belongs to, as the logs say."""

    secret: bytes
    role: Role
    name: str


def _check_secret(secret: str, where: str) -> None:
    if not secret.isascii() or not secret.isprintable() or " " in secret:
        raise AuthConfigError(f"{where}: a token must be printable ASCII without spaces")
    problem = token_problem(secret)
    if problem:
        raise AuthConfigError(f"{where}: {problem}")


def parse_tokens(text: str, source: str) -> list[Token]:
    """The tokens of an AUTH_TOKENS_FILE: ``token role name`` lines, blank lines and ``#`` comments
    (a whole line, or after the three fields)."""
    tokens: list[Token] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = re.sub(r"(^|\s)#.*", "", line).split()
        if not fields:
            continue
        where = f"{source} line {number}"
        if len(fields) != 3:
            raise AuthConfigError(f"{where}: expected `token role name`, got {len(fields)} field(s)")
        secret, role, name = fields
        if role.upper() not in Role.__members__:
            raise AuthConfigError(
                f"{where}: unknown role {role!r}; roles are " + ", ".join(r.name.lower() for r in Role)
            )
        if secret in seen:
            raise AuthConfigError(f"{where}: the same token as line {seen[secret]}; each token must be unique")
        _check_secret(secret, where)
        seen[secret] = number
        tokens.append(Token(secret.encode(), Role[role.upper()], name))
    return tokens


def load_tokens(settings: Settings) -> list[Token]:
    """The tokens this server accepts, from AUTH_TOKENS_FILE or AUTH_TOKEN; [] when neither is set."""
    if settings.auth_tokens_file:
        path = settings.auth_tokens_file
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            mode = os.stat(path).st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"AUTH_TOKENS_FILE: cannot read {path}: {exc}") from None
        tokens = parse_tokens(text, f"AUTH_TOKENS_FILE {path}")
        if not tokens:
            raise AuthConfigError(f"AUTH_TOKENS_FILE {path} holds no token: add `token role name` lines")
        if mode & 0o077:
            log.warning("AUTH_TOKENS_FILE %s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    elif settings.auth_token:
        _check_secret(settings.auth_token, "AUTH_TOKEN")
        tokens = [Token(settings.auth_token.encode(), Role.ADMIN, "AUTH_TOKEN")]
    else:
        return []
    return tokens


class Tokens:
    """The accepted tokens, looked up in constant time."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self._tokens = list(tokens)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def find(self, presented: str) -> Token | None:
        """The token equal to ``presented``; every one is compared, so the time says nothing of which."""
        if presented.startswith(PROBE_PREFIX):
            return None  # no token may start so (token_problem)
        given = presented.encode()
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.secret, given):
                found = token
        return found


def bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if there is one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
