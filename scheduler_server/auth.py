"""Who may call what: bearer tokens with roles, checked by one server interceptor for every RPC.

Tokens come from ``AUTH_TOKENS_FILE`` (``token role name`` a line) or, when no
file is set, ``AUTH_TOKEN`` (one token, role admin). A client sends gRPC
metadata ``authorization: Bearer <token>``. A missing or unknown token gets
UNAUTHENTICATED, a role too weak PERMISSION_DENIED; health and reflection stay
open. With no token configured every call is let through, as before tokens
existed (the server then only listens on loopback: :func:`check_exposure`).

Tokens shorter than 32 characters are refused at start. Wrong tokens slow
their peer down (:class:`WrongTokens`): after a few, each waits longer before
its UNAUTHENTICATED, and the peer's other calls wait their turn behind it.
Refused calls are logged once per peer per minute (:class:`RefusalLog`);
every change is audited (:mod:`scheduler_server.audit`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from jobcluster.credentials import PROBE_PREFIX
from jobcluster.settings import Settings, is_loopback
from scheduler_server import audit
from scheduler_server.tokens import (
    ANONYMOUS,
    JOB_SERVICE,
    OPEN_SERVICES,
    RPC_ROLES,
    AuthConfigError,
    Role,
    Token,
    Tokens,
    bearer,
)

log = logging.getLogger("auth")


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5555`` -> ``ipv4:10.0.0.1``: each connection has a new port, the host stays."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class RefusalLog:
    """Logs a refused call at most once per peer host per ``window`` seconds, with how many it held back."""

    MAX_PEERS = 10_000

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._peers: dict[str, tuple[float, int]] = {}  # host -> (when last logged, refusals not logged since)

    def refused(self, peer: str, rpc: str, code: grpc.StatusCode, reason: str) -> bool:
        """Note one refused call; True when it was logged."""
        host, now = peer_host(peer), self._clock()
        logged_at, held = self._peers.get(host, (None, 0))
        if logged_at is not None and now - logged_at < self.window:
            self._peers[host] = (logged_at, held + 1)
            return False
        if len(self._peers) >= self.MAX_PEERS:
            self._forget(now)
        self._peers[host] = (now, 0)
        more = f" (and {held} more refused call(s) from this peer since the last such line)" if held else ""
        log.warning(
            "refused %s from %s: %s %s%s",
            rpc,
            peer,
            code.name,
            reason,
            more,
            extra={"peer": peer, "rpc": rpc, "code": code.name},
        )
        return True

    def _forget(self, now: float) -> None:
        """Drop peers whose window is over; if that is not enough, all of them (a few lines repeat)."""
        self._peers = {h: v for h, v in self._peers.items() if now - v[0] < self.window}
        if len(self._peers) >= self.MAX_PEERS:
            self._peers.clear()


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class Crowded(Exception):
    """So many calls of one peer host wait behind its wrong tokens that this one is refused at once."""


@dataclass
class _Line:
    """The calls of one peer host waiting to be answered, one at a time, behind a wrong token's delay."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls: int = 0  # holding the lock or waiting for it


class WrongTokens:
    """Wrong tokens per peer host: how long each waits before its answer, and the line its host's calls wait in.

    A host's first ``FREE`` wrong tokens are answered at once; each one more waits twice as long as the one
    before (``FIRST_DELAY``, 0.2 s, 0.4 s ... up to ``MAX_DELAY``), and meanwhile every later call of that
    host, right token or wrong, waits its turn behind it: sending many at once gains nothing, and a right
    guess cannot be answered ahead of the wrong ones and give itself away. More than ``QUEUE`` waiting calls:
    the next is refused at once (its token unread). One wrong token is forgiven every ``FORGIVE`` seconds.
    Other hosts never wait, and nothing blocks the event loop.
    """

    FREE = 5
    FIRST_DELAY = 0.1
    MAX_DELAY = 2.0
    FORGIVE = 6.0
    QUEUE = 10
    MAX_PEERS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._scores: dict[str, tuple[float, float]] = {}  # host -> (wrong tokens not forgiven yet, as of when)
        self._lines: dict[str, _Line] = {}
        #: A score past this waits MAX_DELAY anyway; capped here, a host is forgiven within a minute or so.
        self._cap = self.FREE + 1 + math.ceil(math.log2(self.MAX_DELAY / self.FIRST_DELAY))

    @property
    def busy(self) -> bool:
        """Whether any host has a call waiting (else a right token needs no turn)."""
        return bool(self._lines)

    def failed(self, host: str) -> float:
        """Count one wrong token of ``host``: the seconds its answer waits."""
        now = self._clock()
        held, since = self._scores.get(host, (0.0, now))
        score = min(max(0.0, held - (now - since) / self.FORGIVE) + 1, self._cap)
        if len(self._scores) >= self.MAX_PEERS and host not in self._scores:
            self._scores = {h: v for h, v in self._scores.items() if v[0] - (now - v[1]) / self.FORGIVE > 0}
            while len(self._scores) >= self.MAX_PEERS:
                del self._scores[next(iter(self._scores))]
        self._scores[host] = (score, now)
        if score <= self.FREE:
            return 0.0
        return min(self.MAX_DELAY, self.FIRST_DELAY * 2 ** (math.ceil(score - self.FREE) - 1))

    async def wait_turn(self, host: str, wrong: bool) -> None:
        """Return when this call of ``host`` may be answered: after the host's calls already waiting and,
        for a ``wrong`` token, after its own delay. :class:`Crowded` when too many wait already."""
        line = self._lines.get(host)
        if line is None and not wrong:
            return
        if line is None:
            line = self._lines[host] = _Line()
        elif line.calls > self.QUEUE:
            raise Crowded()
        line.calls += 1
        try:
            async with line.lock:  # first come, first served
                delay = self.failed(host) if wrong else 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            line.calls -= 1
            if line.calls == 0 and self._lines.get(host) is line:
                del self._lines[host]


@dataclass(frozen=True)
class Verdict:
    """What a call's token says, decided when it arrives and told when its turn comes."""

    who: str = ANONYMOUS
    code: grpc.StatusCode | None = None  # None: the call goes ahead
    reason: str = ""
    wrong: bool = False  # a token that is not one of ours: a guess, counted and slowed down
    waits: bool = True  # takes its turn behind its host's wrong tokens (no token at all tells nothing: it need not)


#: Given when too many calls of one peer host already wait behind its wrong tokens.
CROWDED = (
    "too many wrong tokens from this address lately: its calls are answered one at a time, and too "
    "many are waiting; try again in a few seconds"
)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the token and role of every call, slows down wrong tokens per peer host, and audits the calls
    that change something."""

    def __init__(self, tokens: Tokens, refusals: RefusalLog | None = None, wrong: WrongTokens | None = None) -> None:
        self.tokens = tokens
        self.refusals = refusals or RefusalLog()
        self.wrong = wrong or WrongTokens()

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        rpc = method.rsplit("/", 1)[-1]
        who = ANONYMOUS
        if self.tokens.required:
            verdict = self._verdict(method, rpc, bearer(details.invocation_metadata))
            handler = self._in_turn(handler, rpc, verdict)
            if verdict.code is not None:
                return handler
            who = verdict.who
        if rpc in audit.ACTIONS and method.startswith(JOB_SERVICE):
            return self._audited(handler, rpc, who)
        return handler

    def _verdict(self, method: str, rpc: str, presented: str | None) -> Verdict:
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        if presented is None:
            return Verdict(
                code=unauthenticated,
                waits=False,
                reason="no token: send gRPC metadata `authorization: Bearer <token>` (clients: set AUTH_TOKEN)",
            )
        token = self.tokens.find(presented)
        if token is None:
            probe = presented.startswith(PROBE_PREFIX)  # never a token (token_problem): not a guess
            return Verdict(
                code=unauthenticated,
                wrong=not probe,
                waits=not probe,
                reason="the token is not one this server accepts (AUTH_TOKEN)",
            )
        need = RPC_ROLES.get(rpc, Role.ADMIN) if method.startswith(JOB_SERVICE) else Role.ADMIN
        if token.role < need:
            return Verdict(
                token.name,
                grpc.StatusCode.PERMISSION_DENIED,
                f"the token of {token.name} has role {token.role.name.lower()}; {rpc} needs role {need.name.lower()}",
            )
        return Verdict(token.name)

    async def _turn(self, context: grpc.aio.ServicerContext, rpc: str, verdict: Verdict) -> None:
        """Wait for this call's turn, then end it if ``verdict`` refuses it (noting it for the log)."""
        code, reason = verdict.code, verdict.reason
        if verdict.waits and (verdict.wrong or self.wrong.busy):
            try:
                await self.wrong.wait_turn(peer_host(context.peer()), verdict.wrong)
            except Crowded:
                code, reason = grpc.StatusCode.RESOURCE_EXHAUSTED, CROWDED
        if code is not None:
            self.refusals.refused(context.peer(), rpc, code, reason)
            await context.abort(code, reason)

    def _in_turn(self, handler: Any, rpc: str, verdict: Verdict) -> Any:
        """A handler of the same shape that first waits its turn (:meth:`_turn`), then runs if allowed."""
        kind = ("stream_" if handler.request_streaming else "unary_") + (
            "stream" if handler.response_streaming else "unary"
        )
        behavior: Behavior = getattr(handler, kind)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._turn(context, rpc, verdict)
            return await behavior(request, context)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._turn(context, rpc, verdict)
            answer = behavior(request, context)
            if inspect.isawaitable(answer):  # a handler that writes with context.write and returns
                await answer
                return
            async for item in answer:
                yield item

        return handler._replace(**{kind: stream if handler.response_streaming else unary})

    @staticmethod
    def _audited(handler: Any, rpc: str, who: str) -> Any:
        """The same unary handler, followed by an audit line when it succeeds."""
        behavior: Behavior = handler.unary_unary

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reply = await behavior(request, context)
            audit.record(rpc, who, context.peer(), request, reply)
            return reply

        return handler._replace(unary_unary=call)


def check_exposure(host: str, tokens: Sequence[Token], tls: bool) -> None:
    """Refuse to listen off loopback unless callers need a token and the wire is encrypted."""
    if is_loopback(host):
        return
    missing = ([] if tokens else ["a token (AUTH_TOKEN or AUTH_TOKENS_FILE)"]) + (
        [] if tls else ["TLS (TLS_CERT and TLS_KEY)"]
    )
    if missing:
        raise AuthConfigError(
            f"refusing to listen on SERVER_HOST={host}: anyone who can reach this address could run commands. "
            f"A server off loopback needs both a token (AUTH_TOKEN or AUTH_TOKENS_FILE) and TLS (TLS_CERT and "
            f"TLS_KEY); missing: {' and '.join(missing)}. Or set SERVER_HOST=127.0.0.1"
        )


def _read_pem(path: str, name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise AuthConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise AuthConfigError(f"{name}: {path} is not a PEM file")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the listening port from TLS_CERT/TLS_KEY (client certificates required with TLS_CLIENT_CA)."""
    if not settings.tls_cert:
        return None
    cert = _read_pem(settings.tls_cert, "TLS_CERT")
    key = _read_pem(settings.tls_key, "TLS_KEY")
    client_ca = _read_pem(settings.tls_client_ca, "TLS_CLIENT_CA") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
