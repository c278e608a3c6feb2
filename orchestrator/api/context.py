"""What a view reaches: the services of the app handling the current request, and
who is calling."""

from __future__ import annotations

from flask import current_app, g, request

from ..access import Principal
from ..audit import set_actor
from ..errors import Unauthorized
from ..services import Services

TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name
TOKEN_COOKIE = "fabric_token"  # noqa: S105 - a cookie name


def services() -> Services:
    return current_app.config["SERVICES"]


def request_token() -> tuple[str | None, bool]:
    """The request's token and whether it came from the cookie (header first)."""
    header = request.headers.get(TOKEN_HEADER)
    if header:
        return header.strip(), False
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie, True
    return None, False


def principal(*, required: bool = False) -> Principal:
    """Who makes this request. With auth off: the anonymous admin. With auth on: the
    user of the request's token (the token rule has checked it for every call that
    changes state); a read without a token is an unauthenticated reader, unless
    ``required`` (a view about the caller themselves): then 401."""
    auth = services().auth
    if not auth.enabled:
        return auth.principal(None)
    user = g.get("auth_user")
    if user is None:
        token, _ = request_token()
        if token:
            user = auth.check(token)  # 401/403 for a bad one
            known_user(user)
        elif required:
            raise Unauthorized("a token is required: send it in the X-Auth-Token header")
    return auth.principal(user)


def known_user(user: str | None) -> None:
    """The caller became known during the request (a view checked their credentials):
    they are the actor of its events (orchestrator/audit.py)."""
    if user:
        g.auth_user = user
        set_actor(user)
