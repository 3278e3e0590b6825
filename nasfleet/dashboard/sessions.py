"""Who is looking: the dashboard's log-in sessions, kept on the server behind an opaque cookie.

A tenant logs in with one of its API keys, checked exactly as the API checks it
(`nasfleet.server.api.auth.tenant_of_key`). The browser then holds only a random session token, in a
cookie that is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it),
scoped to the dashboard's path and ``Secure`` when the dashboard is served over HTTPS. The key itself
stays in this process's memory and is checked again on every page, so a key revoked with ``nasfleet
tenants revoke-key`` ends its sessions at once. Sessions end on logout, after `SESSION_LIFETIME_S`, or
when the server restarts (they are not stored: logging in again is all it costs).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from nasfleet.server.api.auth import tenant_of_key
from nasfleet.server.api.errors import ApiError
from nasfleet.server.registry import Registry

COOKIE = "nasfleet_session"
SESSION_LIFETIME_S = 8 * 3600
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 4096
BAD_KEY = "That API key is not valid: it is unknown, revoked or mistyped. Keys look like nfk_<id>_<secret>."


class SessionStore:
    """Session tokens to the API keys they were opened with, each until its expiry; thread-safe.

    At most *max_sessions* live at once: opening one more drops the oldest, so that logging in again
    and again cannot grow the server's memory without bound.
    """

    def __init__(self, lifetime_s: float = SESSION_LIFETIME_S, max_sessions: int = MAX_SESSIONS) -> None:
        if not lifetime_s > 0:
            raise ValueError(f"lifetime_s must be > 0, but got {lifetime_s!r}")
        if not (isinstance(max_sessions, int) and max_sessions >= 1):
            raise ValueError(f"max_sessions must be an integer >= 1, but got {max_sessions!r}")
        self.lifetime_s, self.max_sessions = lifetime_s, max_sessions
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, key: str) -> str:
        """A new session for *key* (already verified); its token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = (key, time.monotonic() + self.lifetime_s)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return token

    def key_of(self, token: str | None) -> str | None:
        """The key of a live session, or None (no such token, or it expired: then it is dropped)."""
        if not token:
            return None
        with self._lock:
            found = self._sessions.get(token)
            if found is None:
                return None
            if time.monotonic() >= found[1]:
                del self._sessions[token]
                return None
            return found[0]

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)


def tenant_of_session(request: Request, registry: Registry, store: SessionStore) -> str | None:
    """The tenant of the request's session, its key checked again; None when logged out (or revoked)."""
    token = request.cookies.get(COOKIE)
    key = store.key_of(token)
    if key is None:
        return None
    try:
        return tenant_of_key(registry, key)
    except ApiError:
        store.close(token)
        return None


def check_key(registry: Registry, key: str) -> str | None:
    """The tenant of *key* by the API's own check, or None for a bad key."""
    try:
        return tenant_of_key(registry, key.strip())
    except ApiError:
        return None


async def form_key(request: Request) -> str:
    """The ``api_key`` field of the login form (``application/x-www-form-urlencoded``); "" if absent.

    Read by hand rather than with python-multipart: one small field needs no dependency. Bodies over
    `MAX_FORM_BYTES` are treated as carrying no key.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return ""
    values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return (values.get("api_key") or [""])[0]


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (a cross-site login or logout).

    ``Sec-Fetch-Site`` is what current browsers send; ``Origin`` is checked where it names an origin (a
    browser sends ``null`` under some referrer policies, which proves nothing either way).
    """
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin", "null")
    return origin == "null" or origin == f"{request.url.scheme}://{request.url.netloc}"


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE, token, max_age=SESSION_LIFETIME_S, path=_cookie_path(request), httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=_cookie_path(request), httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")  # fmt: skip


def _cookie_path(request: Request) -> str:
    return (request.scope.get("root_path") or "") + "/"
