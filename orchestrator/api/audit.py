"""The audit trail of the API: one event per state-changing request, whatever its
view, and the actor of every event a service records while serving it.

Three hooks (``install`` adds the last two first, so that the after-request one
runs after every other hook and sees the answer the client gets; ``install_actor``
adds the first after every blueprint, so that it runs after the token rule):

- before each request: the request's actor, read by ``EventStore.record`` and
  every ``EventRow`` a store adds (orchestrator/audit.py): the token's user, or
  ``anonymous`` (authentication off, or no valid token); and whose the request's
  object is before the view runs (a destroy leaves no row to ask afterwards);
- after each request that changes state (``auth.changes_state``, the token rule's
  own classification, so a new endpoint is covered without doing anything): an
  ``api.request`` event with the actor, the ``operation`` (method and route as in
  the OpenAPI description, e.g. ``DELETE /schedules/{id}``), the object (from the
  route, the parameters or the answer), its owner, the status and the outcome (ok,
  refused for 4xx, failed for 5xx) with the answer's error message;
- at teardown: the actor back to ``system``.

Nothing secret is ever recorded: the object's id is only taken from parameters
that name objects (``vmid``, ``volumeid``, ``pmid``, ``pool``, route ids), never
from a token, password, reservation id or key, and an error message has every
secret value the request carried blanked out. Requests that match no route
(404, 405) change nothing and are not recorded.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, current_app, g, request, session

from ..audit import (
    ANONYMOUS,
    FAILED,
    OK,
    REFUSED,
    begin_request,
    end_request,
    outcome_of,
    touched_objects,
)
from ..services import Services
from .auth import changes_state
from .context import TOKEN_COOKIE, TOKEN_HEADER

log = logging.getLogger(__name__)

KIND = "api.request"
MAX_ERROR = 500  # characters of an error message kept
MAX_ID = 128
# Parameters that name an object, and its type.
OBJECT_PARAMS = (
    ("volumeid", "volume"),
    ("vmid", "vm"),
    ("VMID", "vm"),
    ("pmid", "host"),
    ("hostid", "host"),
    ("pool", "pool"),
)
# A route's first segment -> the type of its objects (for ``/x/<id>`` and new ids).
SEGMENT_TYPES = {
    "vm": "vm",
    "vms": "vm",
    "volume": "volume",
    "volumes": "volume",
    "pm": "host",
    "pms": "host",
    "host": "host",
    "hosts": "host",
    "schedules": "schedule",
    "schedule": "schedule",
    "keys": "key",
    "token": "token",
    "tokens": "token",
    "pool": "pool",
    "pools": "pool",
    "reservations": "reservation",
    "events": "event",
    "physical_machines": "host",
}
# Parameter names whose values are secrets (never an object id; blanked in messages).
SECRET_NAMES = frozenset(
    {"token", "password", "reservation_id", "ReservationID", "ssh_key", "key", "secret"}
)
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Endpoints that take credentials and make the caller known only on success.
LOGIN_ENDPOINTS = frozenset({"auth.issue", "dashboard.login"})
# Endpoints whose service records, in its own transaction, an event about the object
# with its owner before the change (a check-in: the holder's): the owner comes from
# that event, not from a read before every request. One that recorded none was
# refused and changed nothing: its owner is read when its event is written.
OWNER_FROM_EVENT = frozenset({"reservations.checkin"})


def operation_path(rule: str) -> str:
    """A Flask rule as the OpenAPI description writes it: ``/keys/<int:id>`` ->
    ``/keys/{id}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def _services() -> Services:
    return current_app.config["SERVICES"]


def _params() -> dict[str, Any]:
    """The request's parameters: query string, form and JSON body (never raises)."""
    out: dict[str, Any] = {}
    try:
        out.update(request.args.to_dict())
        if request.mimetype == "application/x-www-form-urlencoded":
            out.update(request.form.to_dict())
        if request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                out.update(body)
    except Exception:  # noqa: BLE001 - an unreadable body names no object
        log.debug("audit: the request's parameters are unreadable", exc_info=True)
    return out


def _safe_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).strip()
    return text if _SAFE_ID.fullmatch(text) else None


def _answer(resp: Response) -> dict[str, Any]:
    if not resp.is_json or resp.direct_passthrough:
        return {}
    try:
        body = resp.get_json(silent=True)
    except Exception:  # noqa: BLE001
        return {}
    return body if isinstance(body, dict) else {}


def _objects(segment_type: str, params: dict[str, Any], answer: dict[str, Any]) -> dict[str, str]:
    """type -> id of the objects a request names (route first, then parameters, then
    what a successful answer made)."""
    found: dict[str, str] = {}
    for name, value in (request.view_args or {}).items():
        if name in SECRET_NAMES:
            found.setdefault(SEGMENT_TYPES.get(name, name), "")
            continue
        kind = dict(OBJECT_PARAMS).get(name, segment_type)
        ident = _safe_id(value)
        if ident is not None:
            found.setdefault(kind, ident)
    for source in (params, answer):
        for name, kind in OBJECT_PARAMS:
            ident = _safe_id(source.get(name))
            if ident is not None and ident != "0":
                found.setdefault(kind, ident)
    if segment_type not in found:
        ident = _safe_id(answer.get("id"))
        if ident is not None:
            found[segment_type] = ident
    return found


def _secrets(params: dict[str, Any]) -> list[str]:
    """Every secret value the request carried (to blank out of messages)."""
    out = [str(v) for k, v in params.items() if k in SECRET_NAMES and v]
    out.extend(str(v) for k, v in (request.view_args or {}).items() if k in SECRET_NAMES and v)
    header = request.headers.get(TOKEN_HEADER)
    if header:
        out.append(header.strip())
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        out.append(cookie)
    creds = request.authorization
    if creds is not None and creds.password:
        out.append(creds.password)
    if request.mimetype == "application/x-www-form-urlencoded":
        try:
            pw = request.form.get("password")
        except Exception:  # noqa: BLE001
            pw = None
        if pw:
            out.append(pw)
    return sorted((s for s in out if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "[secret]")
    return text[:MAX_ERROR]


def _claimed_user(params: dict[str, Any]) -> str | None:
    """Who a login says they are: a configured user's name, or ``(unknown user)`` (what
    was typed may be a password in the wrong field: it is not kept)."""
    if request.endpoint == "auth.issue":
        creds = request.authorization
        user = creds.username if creds is not None and creds.username else None
    else:
        value = params.get("user")
        user = value.strip() if isinstance(value, str) and value.strip() else None
    if user is None:
        return None
    return user if user in _services().auth.users else "(unknown user)"


def _form_error() -> str | None:
    """The error a dashboard form flashed before redirecting (its answer is a 302)."""
    try:
        flashes = session.get("_flashes") or []
    except Exception:  # noqa: BLE001
        return None
    for category, message in flashes[g.get("audit_flashes", 0) :]:
        if category == "error":
            return str(message)
    return None


def _number(ident: str | None) -> int | None:
    return int(ident) if ident and ident.isdigit() and len(ident) < 16 else None


def _target(
    rule: str, params: dict[str, Any], answer: dict[str, Any]
) -> tuple[str, str | None, int | None, int | None]:
    """The object a request is about (type, id), and the VM and host it names."""
    path = operation_path(rule)
    parts = path.strip("/").split("/")
    segment = parts[0]
    if segment == "ui":  # the dashboard's forms: /ui/vm/create
        segment = parts[1] if len(parts) > 1 else "ui"
    segment_type = SEGMENT_TYPES.get(segment, segment[:32] or "fabric")
    objects = _objects(segment_type, params, answer)
    if segment_type in objects:
        obj_type, obj_id = segment_type, objects[segment_type]
    elif objects:
        obj_type, obj_id = next(iter(objects.items()))
    else:
        obj_type, obj_id = segment_type, ""
    return obj_type[:32], obj_id or None, _number(objects.get("vm")), _number(objects.get("host"))


def _owner_before() -> str | None:
    """Whose the request's object is before the view runs."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    if rule is None:
        return None
    obj_type, obj_id, vm, _ = _target(rule, _params(), {})
    events = _services().registry.events
    owner = events.owner_of(obj_type, obj_id)
    if owner is None and vm is not None and obj_type != "vm":
        owner = events.owner_of("vm", str(vm))
    return owner


def record(resp: Response) -> None:
    """The audit event of this (state-changing) request."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    if rule is None:
        return  # no such endpoint (404/405): nothing could change
    params = _params()
    answer = _answer(resp)
    status = resp.status_code
    outcome = outcome_of(status)
    actor = g.get("auth_user") or ANONYMOUS
    detail: dict[str, Any] = {}
    secrets = _secrets(params)
    # the fabric's answers say why in "error", vmpooler's (/api/v3) in "message"
    error = (answer.get("error") or answer.get("message")) if status >= 400 else None
    if error is None and rule.startswith("/ui/"):
        error = _form_error()  # a form answers with a redirect or a page, and a flash
        if error is not None and outcome == OK:
            outcome = FAILED if error.startswith("Internal error") else REFUSED
    if error is None and status >= 400:
        error = resp.status  # a page, not JSON: "400 BAD REQUEST"
    if error is not None:
        detail["error"] = scrub(str(error), secrets)
    claimed = _claimed_user(params) if request.endpoint in LOGIN_ENDPOINTS else None
    if claimed and outcome == OK and actor == ANONYMOUS:
        actor = claimed  # signed in: the credentials were theirs
    elif claimed:
        detail["user"] = scrub(claimed, secrets)  # who tried
    obj_type, obj_id, vm, host = _target(rule, params, answer if status < 400 else {})
    owner = g.get("audit_owner")  # whose it was before (a destroy leaves no row)
    if request.endpoint in OWNER_FROM_EVENT:
        said = [o for t, i, o in touched_objects() if (t, i) == (obj_type, obj_id)]
        owner = said[0] if said else None
    if obj_id is None:  # the answer did not say (a form, a check-in by address)
        seen = next(((i, o) for t, i, o in touched_objects() if t == obj_type), None)
        if seen is not None:
            obj_id, owner = seen[0], owner or seen[1]
        if obj_type == "vm" and vm is None:
            vm = _number(obj_id)
    # in one transaction with the audit events of the requests ending at the same time
    _services().registry.events.grouped.add(
        KIND,
        vm_id=vm,
        host_id=host,
        detail=detail or None,
        actor=actor,
        operation=f"{request.method} {operation_path(rule)}"[:256],
        object_type=obj_type,
        object_id=obj_id,
        outcome=outcome,
        status=status,
        owner=owner,
    )


def _audited() -> bool:
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    if rule.startswith("/ui/static/"):
        return False
    return changes_state(request.method, rule) or changes_state(request.method, request.path)


def install(app: Flask) -> None:
    """The recording hook; call it before any other hook is added, so that it runs
    after all the others and records the answer the client gets (after-request
    hooks run in the reverse order of their registration)."""

    @app.after_request
    def _audit(resp: Response) -> Response:
        if _audited():
            try:
                record(resp)
            except Exception:  # noqa: BLE001 - the answer stands; the operator's log says why
                log.exception("audit event of %s %s failed", request.method, request.path)
        return resp

    @app.teardown_request
    def _system(_exc: BaseException | None) -> None:
        end_request()


def install_actor(app: Flask) -> None:
    """The actor hook; call it after every blueprint is registered, so that it runs
    after the token rule (whose checked user is the actor)."""

    @app.before_request
    def _actor() -> None:
        begin_request(g.get("auth_user") or ANONYMOUS)
        if not _audited() or request.endpoint in OWNER_FROM_EVENT:
            return
        try:
            g.audit_owner = _owner_before()
        except Exception:  # noqa: BLE001 - the request goes on; its event says no owner
            log.exception("audit: the owner of %s %s", request.method, request.path)
        if request.path.startswith("/ui/"):
            try:
                g.audit_flashes = len(session.get("_flashes") or [])
            except Exception:  # noqa: BLE001
                g.audit_flashes = 0
