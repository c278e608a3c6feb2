"""The audit trail and the fabric's history: ``GET /events``, newest first, filtered and
paged.

Filters (all optional, combined with AND): ``vmid``, ``pmid``, ``volumeid`` or
``object=TYPE[:ID]`` (``vm:3``, ``host:2``, ``schedule:7``, ``token``); ``user`` (the
actor: a user, ``anonymous`` or ``system``); ``kind`` (a prefix: ``vm.``,
``api.request``); ``op`` (a prefix of an API request's operation, ``POST /vm/``);
``outcome`` (ok, refused, failed); ``since``/``until`` (ISO 8601; at or after,
before). Paging: ``limit`` (default 100, at most 1000: more is taken as 1000) and
one cursor, ``before=<id>`` (older than that event: the next page back) or
``after=<id>`` (the oldest events newer than that one: the next page forward).

Who reads what: an admin (and anyone with authentication off) every event; any
other user the events of their own actions and of what was theirs when it
happened (the event's ``owner``: the VMs they made, the VM they held, their
volumes, schedules and keys), even once it is gone.
With authentication on, ``/events`` always needs a token (it is about the
caller, like ``/quota``), whatever ``open_reads`` says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..access import Principal
from ..audit import OUTCOMES
from ..clock import as_utc
from ..errors import BadRequest, Unauthorized
from ..registry.events import MAX_PAGE, EventFilter
from ..registry.tables import EventRow
from .context import principal, services
from .params import QUERY, Int, Param, takes

bp = Blueprint("events", __name__)

DEFAULT_LIMIT = 100
_OBJECT = re.compile(r"([a-z][a-z_]{0,31})(?::([A-Za-z0-9_.@-]{1,128}))?")


@dataclass(frozen=True, kw_only=True)
class Instant(Param):
    """A point in time, ISO 8601 (``2026-11-29T03:00:00Z``; no zone means UTC)."""

    required: bool = False
    where: str = QUERY

    def is_absent(self, value: Any) -> bool:
        return value is None or str(value).strip() == ""

    def parse(self, value: Any) -> datetime:
        text = str(value).strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(
                f"{self.shown} must be an ISO 8601 time such as 2026-11-29T03:00:00Z, "
                f"got {text[:40]!r}"
            ) from None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def type_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


@dataclass(frozen=True, kw_only=True)
class Word(Param):
    """A short string matched as sent (a user name, a kind prefix, an object)."""

    required: bool = False
    where: str = QUERY
    max_length: int = 128
    pattern: str | None = None
    enum: tuple[str, ...] | None = None

    def parse(self, value: Any) -> str:
        text = str(value)
        if len(text) > self.max_length:
            raise BadRequest(f"{self.shown} is longer than {self.max_length} characters")
        if self.enum is not None and text not in self.enum:
            raise BadRequest(f"{self.shown} must be one of {', '.join(self.enum)}, got {text!r}")
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            raise BadRequest(f"{self.shown} must look like {self.description}, got {text[:40]!r}")
        return text

    def type_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return out


VMID = Int(name="vmid", required=False, where=QUERY, description="events about this VM")
PMID = Int(name="pmid", required=False, where=QUERY, description="events about this host")
VOLUMEID = Int(name="volumeid", required=False, where=QUERY, description="events about this volume")
OBJECT = Word(
    name="object",
    pattern=_OBJECT.pattern,
    description="TYPE or TYPE:ID (vm:3, host:2, volume:4, schedule:7, key:1)",
)
USER = Word(name="user", description="who acted: a user, anonymous or system")
KIND = Word(name="kind", max_length=64, description="a prefix of the kind (vm., api.request)")
OP = Word(name="op", max_length=256, description="a prefix of the operation (POST /vm/)")
OUTCOME = Word(name="outcome", enum=OUTCOMES, description="ok, refused or failed")
SINCE = Instant(name="since", description="at or after this time (ISO 8601)")
UNTIL = Instant(name="until", description="before this time (ISO 8601)")
LIMIT = Int(
    name="limit",
    required=False,
    where=QUERY,
    description=f"events per page (default {DEFAULT_LIMIT}, at most {MAX_PAGE})",
)
BEFORE = Int(name="before", required=False, where=QUERY, description="older than this event id")
AFTER = Int(
    name="after",
    required=False,
    where=QUERY,
    description="the oldest events newer than this event id (paging forward)",
)
PARAMS = (VMID, PMID, VOLUMEID, OBJECT, USER, KIND, OP, OUTCOME, SINCE, UNTIL, LIMIT, BEFORE, AFTER)


@dataclass(frozen=True)
class Query:
    where: EventFilter
    before: int | None
    after: int | None
    limit: int
    given: dict[str, str]  # the filters as sent (for links and forms)


def parse_query(raw: Callable[[Param], Any], by: Principal) -> Query:
    """The filters and cursor of a request: ``raw(param)`` is a parameter as sent.
    A bad value is a 400 naming the parameter."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for p in PARAMS:
        value = raw(p)
        if p.is_absent(value):
            continue
        values[p.name] = p.parse(value)
        given[p.name] = str(value)
    if "before" in values and "after" in values:
        raise BadRequest("give before or after, not both")
    since, until = values.get("since"), values.get("until")
    if since is not None and until is not None and until < since:
        raise BadRequest("until must not be before since")
    obj_type = obj_id = None
    vm_id, host_id = values.get("vmid"), values.get("pmid")
    if "object" in values:
        m = _OBJECT.fullmatch(values["object"])
        assert m is not None  # the parameter's pattern
        obj_type, obj_id = m.group(1), m.group(2)
        if obj_type in ("vm", "host") and obj_id is not None:
            if not obj_id.isdigit() or len(obj_id) > 16:
                raise BadRequest(f"object: a {obj_type} id is a positive integer, got {obj_id!r}")
            if obj_type == "vm":
                vm_id = _same(vm_id, int(obj_id), "vmid")
            else:
                host_id = _same(host_id, int(obj_id), "pmid")
            obj_type = obj_id = None
    if "volumeid" in values:
        if obj_type is not None and (obj_type, obj_id) != ("volume", str(values["volumeid"])):
            raise BadRequest("volumeid and object name different objects")
        obj_type, obj_id = "volume", str(values["volumeid"])
    if not by.admin and not by.name:
        raise Unauthorized("a token is required: send it in the X-Auth-Token header")
    where = EventFilter(
        vm_id=vm_id,
        host_id=host_id,
        object_type=obj_type,
        object_id=obj_id,
        actor=values.get("user"),
        kind=values.get("kind"),
        operation=values.get("op"),
        outcome=values.get("outcome"),
        since=since,
        until=until,
        visible_to=None if by.admin else by.name,
    )
    limit = min(values.get("limit", DEFAULT_LIMIT), MAX_PAGE)
    return Query(where, values.get("before"), values.get("after"), limit, given)


def _same(current: int | None, new: int, name: str) -> int:
    if current is not None and current != new:
        raise BadRequest(f"{name} and object name different objects")
    return new


def event_json(e: EventRow) -> dict[str, Any]:
    at = as_utc(e.at)
    return {
        "id": e.id,
        "at": at.isoformat().replace("+00:00", "Z") if at else None,
        "kind": e.kind,
        "actor": e.actor,
        "operation": e.operation,
        "object": {"type": e.object_type, "id": e.object_id} if e.object_type else None,
        "outcome": e.outcome,
        "status": e.status,
        "owner": e.owner,
        "vmid": e.vm_id,
        "pmid": e.host_id,
        "duration": e.duration,
        "detail": e.detail,
    }


def run(q: Query) -> dict[str, Any]:
    """The page of events a query asks for, with the cursors of the next pages."""
    rows = services().registry.events.page(q.where, before=q.before, after=q.after, limit=q.limit)
    older = rows[-1].id if rows and len(rows) == q.limit and q.after is None else None
    newer = rows[0].id if rows else q.after
    return {"events": [event_json(e) for e in rows], "before": older, "after": newer}


@bp.route("/events", methods=["GET"])
@takes(*PARAMS)
def list_events() -> ResponseReturnValue:
    """Events, newest first (see the module's description)."""
    by = principal(required=services().auth.enabled)
    return jsonify(run(parse_query(lambda p: p.given(), by)))
