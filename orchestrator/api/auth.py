"""Tokens (``POST /token``, ``GET``/``DELETE /token/<t>``) and the rule every request passes.

When auth is enabled (``auth.enabled`` in the config), a request that changes
state needs a valid token in the ``X-Auth-Token`` header or in the
``fabric_token`` cookie (the dashboard's): without one it gets 401, with a bad,
expired or revoked one 403. State-changing means any method but GET, HEAD and
OPTIONS, plus the original API's GETs that act (``LEGACY_WRITES``). With
``open_reads: false`` every other call needs a token too, and reads about the
caller (``CALLER_READS``: their quota, their keys) always do. Paths in
``EXEMPT_PATHS``/``EXEMPT_PREFIXES`` never need one: they either change nothing
secret or check credentials themselves (``/token``, the dashboard's login page).

Who may do what once the caller is known is the services' business (see
orchestrator/access.py).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from ..auth import AuthService
from ..errors import FabricError, Forbidden, NotFound, Unauthorized
from .context import known_user, request_token
from .errors import error_response, shaped
from .params import PATH, Text, takes

bp = Blueprint("auth", __name__)

REALM = 'realm="fabric"'
TOKEN = Text(name="token", where=PATH)

V3_PREFIX = "/api/v3"  # vmpooler's API (api/v3.py)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# GETs of the original API (and the first reservation seed) that change state.
LEGACY_WRITES = frozenset(
    {
        "/vm/create",
        "/vm/destroy",
        "/volume/create",
        "/volume/destroy",
        "/volume/attach",
        "/volume/detach",
        "/vms/api/v1.0/checkout",
    }
)
# Reads about the caller themselves (their quota, their keys, their events): always a token.
CALLER_READS = frozenset({"/quota", "/keys", "/events"})
# Never behind the token rule, whatever the method: liveness, the API description,
# metrics for scrapers, views that take credentials themselves, and the dashboard's
# log-out (it only forgets the cookie's own token, so a stale cookie can leave).
# vmpooler's API v3 (api/v3.py): its token calls take basic credentials themselves,
# its healthcheck is liveness.
EXEMPT_PATHS = frozenset(
    {
        "/healthz",
        "/token",
        "/openapi.json",
        "/metrics",
        "/ui/login",
        "/ui/logout",
        "/api/v3/token",
        "/api/v3/healthcheck",
    }
)
EXEMPT_PREFIXES = ("/token/", "/ui/static/", "/api/v3/token/")


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def changes_state(method: str, path: str) -> bool:
    """Whether a call with this method on this route (or path) changes state."""
    method = method.upper()
    if method not in SAFE_METHODS:
        return True
    return method != "OPTIONS" and path in LEGACY_WRITES


def needs_token(method: str, path: str, open_reads: bool = True) -> bool:
    """Whether the rule asks for a token (when auth is enabled)."""
    if is_exempt(path):
        return False
    return changes_state(method, path) or not open_reads or path in CALLER_READS


def auth_service() -> AuthService:
    return current_app.config["SERVICES"].auth


def _same_origin() -> bool:
    """A cookie-borne token may only change state from our own pages (no CSRF)."""
    site = request.headers.get("Sec-Fetch-Site")  # set by the browser; proxies keep it
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (those carry Origin)
    return origin != "null" and urlsplit(origin).netloc == request.host


def _deny(e: FabricError, *, scheme: str = "Token", ok_field: bool = False) -> Response:
    """The refusal, in the shape of the API the request is for (vmpooler's under
    /api/v3: ``{"ok": false, "message": ...}``)."""
    retry = getattr(e, "retry_after", None)
    resp = shaped(e.status, e.message, retry)
    if resp is None:
        body = {"ok": False, "error": e.message} if ok_field else {"error": e.message}
        resp = error_response(e.status, body, retry)
    if e.status == 401:
        resp.headers["WWW-Authenticate"] = f"{scheme} {REALM}"
    return resp


@bp.before_app_request
def enforce() -> ResponseReturnValue | None:
    auth = auth_service()
    if not auth.enabled:
        return None
    path = request.path
    rule = request.url_rule.rule if request.url_rule is not None else path
    if is_exempt(path) or is_exempt(rule):
        return None
    writes = changes_state(request.method, rule) or changes_state(request.method, path)
    if not writes and auth.open_reads and rule not in CALLER_READS:
        return None
    token, from_cookie = request_token()
    try:
        g.auth_user = auth.check(token)
    except (Unauthorized, Forbidden) as e:
        if path.startswith(V3_PREFIX + "/"):
            # vmpooler: a missing or bad token where one is needed is a 401
            return _deny(Unauthorized(e.message))
        return _deny(e)
    if writes and from_cookie and not _same_origin():
        return _deny(Forbidden("a cross-site request may not use the session cookie"))
    return None


# -- tokens (vmpooler's shapes, seed 002) ------------------------------------


def _basic_user() -> str | None:
    """The user of a request's basic credentials (checked, and counted on failure)."""
    creds = request.authorization
    if creds is None or creds.type != "basic" or creds.username is None:
        return None
    return auth_service().authenticate(creds.username, creds.password or "", request.remote_addr)


def _caller() -> str:
    """Who asks: basic credentials, or else a valid token of theirs."""
    user = _basic_user()
    if user is None:
        token, _ = request_token()
        if not token:
            raise Unauthorized("send basic credentials or the token in X-Auth-Token")
        user = auth_service().check(token)
    known_user(user)
    return user


def _enabled() -> AuthService:
    auth = auth_service()
    if not auth.enabled:
        raise NotFound("authentication is not enabled on this fabric")
    return auth


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/token", methods=["POST"])
def issue() -> ResponseReturnValue:
    """A new token for the basic credentials' user: ``{"ok": true, "token": "..."}``."""
    try:
        auth = _enabled()
        creds = request.authorization
        if creds is None or creds.type != "basic" or not creds.username:
            raise Unauthorized("POST /token needs HTTP basic credentials")
        token = auth.login(creds.username, creds.password or "", request.remote_addr)
    except FabricError as e:
        return _deny(e, scheme="Basic", ok_field=True)
    return _no_store(jsonify({"ok": True, "token": token}))


def _own_token(token: str) -> dict:
    auth = _enabled()
    user = _caller()
    info = auth.info(token)
    if not hmac.compare_digest(info["user"].encode(), user.encode()):
        raise NotFound("no such token")  # someone else's: do not confirm that it exists
    return info


@bp.route("/token/<token>", methods=["GET"])
@takes(TOKEN)
def show() -> ResponseReturnValue:
    """``{"ok": true, "<token>": {"user", "created", "expires", "last_used"}}``."""
    token = TOKEN.value()
    try:
        info = _own_token(token)
    except FabricError as e:
        return _deny(e, scheme="Basic", ok_field=True)
    return _no_store(jsonify({"ok": True, token: info}))


@bp.route("/token/<token>", methods=["DELETE"])
@takes(TOKEN)
def revoke() -> ResponseReturnValue:
    """Revoke a token at once: basic credentials of its user, or a token of theirs."""
    token = TOKEN.value()
    try:
        _own_token(token)
        auth_service().revoke(token)
    except FabricError as e:
        return _deny(e, scheme="Basic", ok_field=True)
    return jsonify({"ok": True})
