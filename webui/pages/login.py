"""Login (/login) with the password or a server token, and logout (/logout).

A login starts a new session (a random id in an HttpOnly, SameSite=Strict
cookie, Secure over TLS) and ends the browser's old one. Each try is counted
against the client's address before its password or token is read
(:meth:`webui.auth.Auth.login_attempt`); after too many failures the address
waits (429), and many failures from all addresses slow every try down.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from webui.auth import SESSION_COOKIE, LoginRefused, auth_of, client_address
from webui.errors import on_error_render
from webui.sessions import Session
from webui.web import UserError, config_of, read_form, render

log = logging.getLogger("webui")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path of this site only (never ``//host`` or ``/\\host``), else ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return "/"
    return target


async def _form_again(request: Request) -> dict[str, Any]:
    """What the login page shows: the ways to log in, and where to go after."""
    config = config_of(request)
    sent = request.query_params.get("next") or getattr(request.state, "form", {}).get("next")
    return {
        "next": safe_next(sent),
        "password_login": config.password is not None,
        "token_login": config.token_login,
        "session_hours": f"{config.session_ttl / 3600:g}",
    }


async def login_page(request: Request) -> Response:
    auth = auth_of(request)
    if auth.config.password is None and not auth.config.token_login:
        return RedirectResponse("/", status_code=303)  # nothing to log in with: the UI is open (loopback)
    return render(request, "login.html", **await _form_again(request))


async def _start_session(request: Request, values: dict[str, str]) -> Session:
    """A session for the password or the token in ``values``; LoginRefused when it is wrong."""
    auth = auth_of(request)
    password, token = values.get("password", ""), values.get("token", "").strip()
    if password and auth.config.password is not None:
        auth.check_password(password)
        return auth.sessions.start("password")
    if token and auth.config.token_login:
        await auth.check_token(request.app.state.pool, token)
        return auth.sessions.start("token", token)
    wanted = " or ".join(
        w
        for w, on in (("the password", auth.config.password is not None), ("a server token", auth.config.token_login))
        if on
    )
    raise UserError(f"Enter {wanted}.")


@on_error_render("login.html", _form_again)
async def login_submit(request: Request) -> Response:
    auth = auth_of(request)
    address = client_address(request)
    try:
        async with auth.login_attempt(address):
            values = await read_form(request)
            session = await _start_session(request, values)
    except LoginRefused as exc:
        log.warning("login refused from %s: %s", address, exc)
        raise
    log.info("login from %s with %s", address, "a token" if session.how == "token" else "the password")
    auth.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(safe_next(values.get("next")), status_code=303)
    config = config_of(request)
    response.set_cookie(
        SESSION_COOKIE, session.id, max_age=int(config.session_ttl), httponly=True, samesite="strict", secure=config.tls
    )
    return response


@on_error_render("login.html", _form_again)
async def logout(request: Request) -> Response:
    await read_form(request)
    auth_of(request).sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=config_of(request).tls)
    return response


routes = [
    Route("/login", login_page),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
