"""What the web UI needs to know about itself: its names, whether it serves TLS, and how people log in.

Built once by ``python -m webui`` from the settings; :func:`ui_config` refuses
(``ConfigError``, exit status 2) a UI that would listen beyond loopback with
no way to log in, or on every address with no name to be reached by, a short
AUTH_TOKEN, and a WEBUI_TRUSTED_PROXIES entry that is not an address or network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from jobcluster.credentials import token_problem
from jobcluster.settings import ConfigError, Settings, is_loopback

#: Names a browser on this machine uses for loopback.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Addresses that mean "every interface"; they include loopback.
WILDCARDS = ("0.0.0.0", "::")
MIN_PASSWORD_CHARS = 8


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host without brackets, port); ConfigError naming WEBUI_ADDR."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"WEBUI_ADDR must be host:port, got {addr!r}")
    return host.strip("[]").lower(), int(port)


def bare_host(name: str) -> str:
    """A name as compared with a Host header's: lower case, no brackets, no trailing dot."""
    return name.strip().strip("[]").rstrip(".").lower()


def password_digest(password: str) -> bytes:
    """What is kept of the password: its SHA-256, so comparing digests also hides its length."""
    return hashlib.sha256(password.encode()).digest()


@dataclass(frozen=True)
class UIConfig:
    """The web UI's own address, names, TLS and login; the default is the loopback UI without a login."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Host names (lower case, no port, no brackets) a request may be addressed to.
    names: frozenset[str] = frozenset(LOOPBACK_NAMES)
    tls_cert: str = ""
    tls_key: str = ""
    #: SHA-256 of the login password (WEBUI_PASSWORD_FILE); None: no password login.
    password: bytes | None = field(default=None, repr=False)
    #: Whether a server token (checked by the servers) logs in.
    token_login: bool = False
    session_ttl: float = 12 * 3600.0
    #: Networks (``10.0.0.5/32``) whose X-Forwarded-For and X-Forwarded-Proto are believed; empty: nobody's.
    trusted_proxies: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def login_required(self) -> bool:
        """Beyond loopback always (``ui_config`` ensures a way exists); on loopback when a password is set
        or the cluster uses tokens: else every local user, and every job, would act with the UI's own token."""
        return not is_loopback(self.host) or self.password is not None or self.token_login

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def own_names(host: str, extra: tuple[str, ...]) -> frozenset[str]:
    """The names the UI answers to: its host, the loopback names when it listens on loopback, ``extra``."""
    names = {bare_host(n) for n in extra if bare_host(n)}
    if host not in WILDCARDS:
        names.add(host)
    if host in WILDCARDS or is_loopback(host):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def read_password_file(path: str) -> str:
    """The password in ``path`` (one line); ConfigError naming WEBUI_PASSWORD_FILE when it is unusable."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"WEBUI_PASSWORD_FILE: cannot read {path!r}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"WEBUI_PASSWORD_FILE {path!r} can be read by other users "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    if len(password) < MIN_PASSWORD_CHARS or "\n" in password:
        raise ConfigError(
            f"WEBUI_PASSWORD_FILE {path!r} must hold one line of at least {MIN_PASSWORD_CHARS} characters"
        )
    return password


def trusted_proxies(entries: Sequence[str]) -> tuple[str, ...]:
    """WEBUI_TRUSTED_PROXIES as networks; ConfigError naming an entry that is neither address nor network."""
    networks = []
    for entry in entries:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip("[]"), strict=False)))
        except ValueError:
            raise ConfigError(
                f"WEBUI_TRUSTED_PROXIES: {entry!r} is not an address or a network; list the "
                "addresses of the proxies in front of the web UI (e.g. 10.0.0.5,10.1.0.0/16)"
            ) from None
    return tuple(networks)


def ui_config(settings: Settings, addr: str, password: str | None = None) -> UIConfig:
    """The UI on ``addr`` as ``settings`` describe it; ``password`` stands in for the file (tests)."""
    host, port = split_addr(addr)
    if password is None and settings.webui_password_file:
        password = read_password_file(settings.webui_password_file)
    if settings.webui_session_ttl <= 0:
        raise ConfigError(f"WEBUI_SESSION_TTL must be positive, got {settings.webui_session_ttl:g}s")
    problem = token_problem(settings.auth_token) if settings.auth_token else None
    if problem:
        raise ConfigError(f"AUTH_TOKEN: {problem}")
    config = UIConfig(
        host=host,
        port=port,
        names=own_names(host, settings.webui_hosts),
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        password=password_digest(password) if password is not None else None,
        token_login=bool(settings.auth_token or settings.auth_tokens_file),
        session_ttl=settings.webui_session_ttl,
        trusted_proxies=trusted_proxies(settings.webui_trusted_proxies),
    )
    if not is_loopback(host) and config.password is None and not config.token_login:
        raise ConfigError(
            f"WEBUI_ADDR={addr} is not loopback, so the web UI needs a login: set "
            "WEBUI_PASSWORD_FILE (a file holding the password), or AUTH_TOKEN or AUTH_TOKENS_FILE "
            "(then a server token logs in), or listen on 127.0.0.1"
        )
    if host in WILDCARDS and not settings.webui_hosts:
        raise ConfigError(
            f"WEBUI_ADDR={addr} listens on every address: set WEBUI_HOSTS to the names "
            "browsers will use for it (e.g. WEBUI_HOSTS=jobs.example.com,192.0.2.10)"
        )
    return config
