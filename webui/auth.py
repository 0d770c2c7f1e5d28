"""Who may use the web UI: the password and token checks, and the middleware that asks for a login.

When the UI requires a login (:attr:`webui.config.UIConfig.login_required`),
every request but the login page, the static files, ``/api/health`` and ``/metrics`` needs a
session cookie, or for the JSON API ``Authorization: Bearer <token>``. Pages
without one are sent to ``/login``; the API and the live events answer 401.

A token is checked by the servers, never by the UI: it must be accepted by
``GetClusterInfo`` on a server that refuses a made-up token on the same
connection first, so a UI in front of servers that check no token cannot be
entered with any string.

Each try with a password or token (a login, an API call with a bearer token)
is counted before it is checked (:meth:`Auth.login_attempt`), against the
client's address: the peer's, or behind a proxy in WEBUI_TRUSTED_PROXIES the
client's it forwards (``X-Forwarded-For``; :func:`webui.app.create_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobcluster.credentials import PROBE_PREFIX, token_problem
from jobcluster.failover import CALL_TIMEOUT, AioPool, ServerDown
from jobcluster.pb import scheduler_pb2 as pb
from jobcluster.pb import scheduler_pb2_grpc as pb_grpc
from webui.caller import as_caller
from webui.config import UIConfig, password_digest
from webui.errors import describe
from webui.guard import refused
from webui.sessions import Clock, FailedLogins, Session, Sessions, TooManyFailures, TrustedTokens
from webui.web import UserError

log = logging.getLogger("webui")
SESSION_COOKIE = "jobcluster_session"
#: Open without a login: the login itself, the stylesheet and script, and the load balancers' health check.
OPEN_PATHS = frozenset({"/login", "/logout", "/api/health", "/metrics", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
MAX_TOKEN_CHARS = 4096
Sleep = Callable[[float], Awaitable[None]]


class LoginRefused(UserError):
    """Wrong password or token: shown to the person with 401, and counted against their address."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 401)


@dataclass
class Auth:
    """The UI's login state: its configuration, the sessions, failed logins, and lately verified tokens."""

    config: UIConfig
    sessions: Sessions
    failures: FailedLogins
    trusted: TrustedTokens
    #: How a try waits out the slowdown (tests: one that records the wait and returns at once).
    sleep: Sleep = asyncio.sleep

    @classmethod
    def create(cls, config: UIConfig, clock: Clock) -> Auth:
        return cls(config, Sessions(config.session_ttl, clock), FailedLogins(clock), TrustedTokens(clock))

    def check_password(self, password: str) -> None:
        """Nothing when ``password`` is the login password (compared in constant time); else LoginRefused."""
        expected = self.config.password
        if expected is None or not hmac.compare_digest(password_digest(password), expected):
            raise LoginRefused("Wrong password.")

    async def check_token(self, pool: AioPool, token: str) -> None:
        """Nothing when the servers accept ``token`` (and refuse a made-up one); else LoginRefused.

        ServerDown or another gRPC error when no server can tell.
        """
        if not self.config.token_login:
            raise LoginRefused("This web UI does not take server tokens (AUTH_TOKEN is not set for it).")
        if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
            raise LoginRefused("The servers refused this token.")  # it could not even be sent as metadata
        if token_problem(token):
            raise LoginRefused("The servers refused this token.")  # too short: they take no such token
        if self.trusted.trusted(token):
            return
        await pool.call(lambda stub: _token_accepted(stub, token))
        self.trusted.add(token)

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    @contextlib.asynccontextmanager
    async def login_attempt(self, address: str) -> AsyncIterator[None]:
        """One try from ``address`` with a password or token, counted before the body checks it.

        UserError 429 when the address failed too often lately (or has as many tries still being checked);
        else the try waits out the slowdown of all, if any, and a LoginRefused raised in the body counts
        as a failure. Any other end (success, a bad form, no server answering) counts nothing.
        """
        try:
            delay = self.failures.begin(address)
        except TooManyFailures as exc:
            raise UserError(
                f"Too many failed logins from {address}: try again in {math.ceil(exc.wait)} s.", 429
            ) from None
        failed = False
        try:
            if delay > 0:
                await self.sleep(delay)
            yield
        except LoginRefused:
            failed = True
            raise
        finally:
            self.failures.end(address, failed)


async def _token_accepted(stub: pb_grpc.JobServiceStub, token: str) -> None:
    """On one server: a made-up token must be refused, then ``token`` accepted."""
    made_up = PROBE_PREFIX + secrets.token_urlsafe(24)
    try:
        await as_caller(stub, made_up).GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
    else:
        raise LoginRefused(
            "The servers accepted a made-up token, so they check no tokens and a token proves "
            "nothing: log in with the password (WEBUI_PASSWORD_FILE), or give the servers "
            "AUTH_TOKEN or AUTH_TOKENS_FILE."
        )
    try:
        await as_caller(stub, token).GetClusterInfo(pb.ClusterInfoRequest(), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise LoginRefused("The servers refused this token.") from None
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            raise LoginRefused(
                "This token may not even read the cluster; use one with the read role or more."
            ) from None
        raise


def auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


def client_address(request: Request) -> str:
    """The address failed logins are counted against: the peer's (behind a trusted proxy, the client's it
    forwarded); an IPv6 one by its /64, which one host usually has all of."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def wants_json(path: str) -> bool:
    """The JSON API and the live events answer errors as JSON; pages, as pages."""
    return path.startswith("/api/") or path.endswith("/events")


class RequireLogin:
    """ASGI middleware: a session (or, for the API, a bearer token) before anything but the open paths.

    Puts ``session`` and ``caller_token`` (the token the servers are called
    with for this request; None for the UI's own) in the request's state.
    """

    def __init__(self, app: ASGIApp, auth: Auth, pool: AioPool) -> None:
        self.app = app
        self.auth = auth
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        state = scope.setdefault("state", {})
        session = self.auth.session_of(request)
        state["session"], state["caller_token"] = session, session.token if session else None
        path = scope["path"]
        token = bearer_token(request) if path.startswith("/api/") else None
        if token is not None and (self.auth.config.token_login or self.auth.config.login_required):
            try:
                await self._check_bearer(request, token)
            except (UserError, ServerDown, grpc.aio.AioRpcError) as exc:
                await _bearer_refused(exc, path)(scope, receive, send)
                return
            state["caller_token"] = token
        elif (
            session is None
            and self.auth.config.login_required
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
        ):
            await _login_first(request)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check_bearer(self, request: Request, token: str) -> None:
        address = client_address(request)
        try:
            async with self.auth.login_attempt(address):
                await self.auth.check_token(self.pool, token)
        except LoginRefused as exc:
            log.warning("API token refused from %s: %s", address, exc)
            raise


def _bearer_refused(exc: Exception, path: str) -> Response:
    message, status = describe(exc)
    return refused(path, message, status)


def _login_first(request: Request) -> Response:
    """401 for the API and the live events; the login page, then back here, for a page."""
    path = request.url.path
    if wants_json(path):
        return JSONResponse(
            {"error": "Log in first: open /login in a browser, or send Authorization: Bearer <token>."},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="jobcluster"'},
        )
    back = path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" if request.method != "GET" or back == "/" else f"/login?next={quote(back, safe='')}"
    return RedirectResponse(target, status_code=303)
