"""The OpenAPI 3.0 description of the HTTP API, as Python data (served at /openapi.json).

It follows ../shared/API.md: legacy GETs take query parameters, calls that change
state also take a form or JSON body, and failures keep the original's zero value
next to an ``error`` message (``{"vmid": 0, "error": "..."}``). A test checks that
every route the app registers (HTML pages and static files aside) is described here.

What each call takes is not written here: it is what its view declares
(``@takes`` in orchestrator/api/params.py), turned into the operation's
``parameters`` and ``requestBody``. Summaries, descriptions and responses are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .api import auth, hosts, reservations, schedules, status, vms, volumes
from .api.params import PATH, QUERY, REQUEST, RESERVATION_ID, Int, Param, declared

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# Paths the app serves that are not part of the JSON API (HTML pages, static files).
HTML_PATHS = ("/", "/docs")
HTML_PREFIXES = ("/ui/", "/static/")


def is_html_path(path: str) -> bool:
    return path in HTML_PATHS or path.startswith(HTML_PREFIXES)


# -- schema helpers ------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


# -- parameters and bodies (from the views' declarations) --------------------------


def _documented(view: Callable[..., Any]) -> list[Param]:
    return [p for p in declared(view) if p.documented]


def _parameter(p: Param, where: str) -> dict[str, Any]:
    return {"name": p.name, "in": where, "required": p.required, "schema": p.schema()}


def _parameters(view: Callable[..., Any], *, body: bool = False) -> list[dict[str, Any]]:
    """A view's path and query parameters; with ``body``, its request parameters are
    the body's (a POST), not the query string's."""
    out = []
    for p in _documented(view):
        if p.where == PATH:
            out.append(_parameter(p, "path"))
        elif p.where == QUERY or (p.where == REQUEST and not body):
            out.append(_parameter(p, "query"))
    return out


def _fields(view: Callable[..., Any]) -> dict[str, Any]:
    """The object a view's request parameters make, as a form or JSON body."""
    fields = [p for p in _documented(view) if p.where == REQUEST]
    return _obj({p.name: p.schema() for p in fields}, [p.name for p in fields if p.required])


def _body(view: Callable[..., Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A form or JSON body of a view's request parameters (``schema``: a $ref to them)."""
    fields = _fields(view)
    return {
        "required": bool(fields.get("required")),
        "content": {t: {"schema": schema or fields} for t in (JSON, FORM)},
    }


ID = Int(name="id").type_schema()  # any id, as the parameters declare one
INT = {"type": "integer"}
STR = {"type": "string"}
NSTR = {"type": "string", "nullable": True}
TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}


def _zero(key: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A legacy failure body: the endpoint's zero value and a message."""
    return _obj(
        {key: {"type": "integer", "enum": [0]}, "error": STR, **(extra or {})},
        [key, "error"],
        description=f'`{{"{key}": 0, "error": "..."}}`',
    )


RESOURCES = {"cpu": INT, "ram": {**INT, "description": "MB"}, "disk": {**INT, "description": "GB"}}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR}, ["error"], description="every failure carries a message"),
    "VmidFailure": _zero("vmid"),
    "VmCreateFailure": _zero(
        "vmid",
        {
            "filters": {
                "type": "array",
                "description": "per scheduler filter: what it removed and why",
                "items": {"type": "object"},
            },
            "pools": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    ),
    "StatusFailure": _zero("status"),
    "PmidFailure": _zero("pmid"),
    "VmidsFailure": _zero("vmids"),
    "VolumeidFailure": _zero("volumeid"),
    "PoolFailure": _zero("pool"),
    "Ok": _obj({"status": {"type": "integer", "enum": [1]}}, ["status"]),
    "Ssh": _obj({"host": STR, "port": INT, "user": STR}, ["host", "port", "user"]),
    "Vm": _obj(
        {
            "vmid": ID,
            "name": STR,
            "instance_type": INT,
            "pmid": {**INT, "description": "0 while the VM has no host"},
            "status": STR,
            "image_id": INT,
            "ip": NSTR,
            "domain": NSTR,
            "ssh": _ref("Ssh"),
            "pool": STR,
            "expires_at": TIME,
            "error_detail": STR,
        },
        ["vmid", "name", "instance_type", "pmid"],
    ),
    "VmType": _obj(
        {"tid": ID, **RESOURCES, "name": STR},
        ["tid", "cpu", "ram", "disk"],
        description="ram in MB, disk in GB",
    ),
    "Resources": _obj(RESOURCES, ["cpu", "ram", "disk"]),
    "Host": _obj(
        {
            "pmid": ID,
            "capacity": _ref("Resources"),
            "free": _ref("Resources"),
            "vms": INT,
            "name": STR,
            "uri": STR,
            "status": STR,
            "reason": NSTR,
            "enabled": {"type": "boolean"},
            "arch": NSTR,
        },
        ["pmid", "capacity", "free", "vms"],
        description="capacity after overcommit and reserved amounts; free is capacity "
        "minus what placed VMs claim",
    ),
    "Image": _obj({"id": ID, "name": STR}, ["id", "name"]),
    "Volume": _obj(
        {
            "volumeid": ID,
            "name": STR,
            "size": {**INT, "description": "GB"},
            "status": {"type": "string", "description": "available, attached, error, ..."},
            "vmid": {**INT, "description": "only while attached"},
            "pmid": {"type": "integer", "nullable": True},
            "device": {"type": "string", "example": "/dev/vdb"},
            "error_detail": STR,
        },
        ["volumeid", "name", "size", "status"],
    ),
    "Checkout": _obj(
        {
            "vmid": ID,
            "ip": NSTR,
            "ssh": _ref("Ssh"),
            "reservation_id": RESERVATION_ID.schema(),
            "expires_at": {**TIME, "nullable": True},
            "pool": STR,
        },
        ["vmid", "ip", "reservation_id", "expires_at"],
    ),
    "CheckoutMany": _obj(
        {"vms": {"type": "array", "items": _ref("Checkout")}},
        ["vms"],
        description="when count > 1 (all or nothing)",
    ),
    "Pool": _obj(
        {
            "name": STR,
            "instance_type": INT,
            "image_id": INT,
            "size": INT,
            "max": INT,
            "lifetime": {"type": "number"},
            "lifetime_max": {"type": "number"},
            "cleanup": {"type": "string", "enum": ["tmp", "reset"]},
            "ready_check": {"type": "string", "enum": ["ssh", "none"]},
            "ready": INT,
            "in_use": INT,
            "cleaning": INT,
            "building": INT,
            "failed": INT,
            "unreachable": INT,
            "total": INT,
        },
        ["name", "ready", "in_use", "cleaning", "building", "failed"],
    ),
    "PoolDetail": {
        "allOf": [
            _ref("Pool"),
            _obj(
                {
                    "recent_failures": {
                        "type": "array",
                        "items": _obj({"vmid": INT, "at": TIME, "reason": STR}),
                    }
                },
                ["recent_failures"],
            ),
        ]
    },
    "SeedCheckout": _obj(
        {
            "IP": NSTR,
            "LoginID": STR,
            "LoginPassword": STR,
            "ReservationID": STR,
            "Port": {"type": "integer", "nullable": True},
            "VMID": INT,
        },
        ["IP", "LoginID", "LoginPassword", "ReservationID"],
    ),
    "AuthFailure": _obj(
        {"ok": {"type": "boolean", "enum": [False]}, "error": STR},
        ["ok", "error"],
        description='`{"ok": false, "error": "..."}`',
    ),
    "TokenIssued": _obj(
        {
            "ok": {"type": "boolean", "enum": [True]},
            "token": {"type": "string", "description": "shown once; stored hashed"},
        },
        ["ok", "token"],
    ),
    "TokenInfo": {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean", "enum": [True]}},
        "additionalProperties": _obj(
            {"user": STR, "created": TIME, "expires": TIME, "last_used": {**TIME, "nullable": True}}
        ),
        "description": '`{"ok": true, "<token>": {"user", "created", "expires", "last_used"}}`',
    },
    "TokenRevoked": _obj({"ok": {"type": "boolean", "enum": [True]}}, ["ok"]),
    "Status": _obj(
        {
            "ok": {"type": "boolean", "description": "false when any pool is empty"},
            "message": {"type": "string", "description": "names the empty pools"},
            "capacity": _obj(
                {"current": INT, "total": INT, "percent": {"type": "number"}},
                ["current", "total", "percent"],
                description="ready VMs over what the pools keep ready",
            ),
            "queue": {
                "type": "object",
                "description": "per pool: VMs building, ready, in use and cleaning",
                "additionalProperties": _obj(
                    {"building": INT, "ready": INT, "in_use": INT, "cleaning": INT}
                ),
            },
            "hosts": _obj(
                {
                    "up": {"type": "array", "items": STR},
                    "down": {
                        "type": "array",
                        "items": _obj({"name": STR, "reason": STR}, ["name", "reason"]),
                    },
                },
                ["up", "down"],
            ),
            "empty": {"type": "array", "items": STR, "description": "pools with no ready VM"},
            "servers": _obj(
                {
                    "alive": {**INT, "description": "fabric servers sharing the registry"},
                    "this": {**STR, "description": "the id of the server answering"},
                },
                ["alive", "this"],
            ),
        },
        ["ok", "capacity", "queue", "hosts", "empty", "servers"],
        description="the fabric at a glance (vmpooler's /status is the model)",
    ),
    "Cluster": _obj(
        {
            "server": {**STR, "description": "the id of the server answering"},
            "heartbeat": {"type": "number", "description": "seconds between heartbeats"},
            "dead_after": {
                "type": "number",
                "description": "a server silent this long is dead; its work moves",
            },
            "servers": {
                "type": "array",
                "items": _obj(
                    {
                        "id": STR,
                        "host": STR,
                        "pid": INT,
                        "started_at": STR,
                        "heartbeat_at": STR,
                        "alive": {"type": "boolean"},
                        "me": {"type": "boolean"},
                    },
                    ["id", "host", "pid", "started_at", "heartbeat_at", "alive", "me"],
                ),
            },
            "leases": {
                "type": "array",
                "items": _obj(
                    {
                        "name": {**STR, "description": "pool-worker, schedules or discovery"},
                        "holder": {**NSTR, "description": "server id; null when free or expired"},
                        "expires_at": STR,
                        "fence": {**INT, "description": "grows at every change of holder"},
                    },
                    ["name", "holder", "expires_at", "fence"],
                ),
            },
        },
        ["server", "servers", "leases"],
        description="fabric servers sharing one registry, and who runs background work",
    ),
    "Durations": _obj(
        {k: {"type": "number"} for k in ("average", "min", "max", "total")},
        description="seconds",
    ),
    "SummaryKind": _obj(
        {
            "duration": _ref("Durations"),
            "count": _obj({k: {"type": "number"} for k in ("average", "min", "max", "total")}),
        },
        ["duration", "count"],
    ),
    "Summary": _obj(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            **{k: _ref("SummaryKind") for k in ("clone", "boot", "cleanup")},
            "daily": {
                "type": "array",
                "items": _obj(
                    {
                        "date": {"type": "string", "format": "date"},
                        **{k: _ref("SummaryKind") for k in ("clone", "boot", "cleanup")},
                    },
                    ["date"],
                ),
            },
        },
        ["from", "to", "clone", "boot", "cleanup", "daily"],
        description="per day (UTC): clone (create), boot and cleanup durations and counts",
    ),
    "ScheduleInput": {
        **_fields(schedules.create_schedule),
        "description": "what to add (instance_type and image_id, or pool) and when (start "
        "and end, or cron and duration_minutes); other fields are refused",
        "additionalProperties": False,
    },
    "Schedule": _obj(
        {
            "id": ID,
            "name": STR,
            "instance_type": INT,
            "image_id": INT,
            "pool": STR,
            "count": INT,
            "start": {**TIME, "nullable": True},
            "end": {**TIME, "nullable": True},
            "cron": STR,
            "duration_minutes": INT,
            "state": {"type": "string", "enum": ["pending", "active", "done"]},
            "skipped": {"type": "boolean"},
            "cancelled": {"type": "boolean"},
            "next_start": {**TIME, "nullable": True},
            "progress": {
                "nullable": True,
                **_obj(
                    {
                        "window_start": TIME,
                        "window_end": TIME,
                        "phase": STR,
                        "wanted": INT,
                        "made": INT,
                        "last_error": NSTR,
                        "vmids": {"type": "array", "items": INT},
                    }
                ),
            },
        },
        ["id", "name", "count", "state"],
    ),
    "IdFailure": _zero("id"),
}


# -- responses -----------------------------------------------------------------

RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}

WWW_AUTH = {"WWW-Authenticate": {"description": "the scheme to use: Token or Basic", "schema": STR}}

WHY = {
    400: "bad or missing parameter",
    401: "no credentials, or they are not valid (when authentication is on)",
    403: "the caller does not hold what the call needs",
    404: "unknown id",
    409: "conflict with the current state",
    429: "too many failed logins; wait Retry-After seconds",
    502: "a physical machine failed",
    503: "no capacity right now; retry after Retry-After seconds",
    504: "a physical machine timed out",
}


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _responses(
    ok: dict[str, Any] | str,
    failure: str = "Error",
    codes: tuple[int, ...] = (400,),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """200 with ``ok``, and each failure code with the ``failure`` body."""
    out: dict[str, Any] = {"200": _json(_ref(ok) if isinstance(ok, str) else ok, "success")}
    for code in codes:
        headers = RETRY_AFTER if code in (429, 503) else WWW_AUTH if code == 401 else None
        out[str(code)] = _json(_ref(failure), WHY[code], headers)
    out.update(extra or {})
    return out


def _op(
    summary: str,
    tag: str,
    responses: dict,
    *,
    takes: Callable[..., Any] | None = None,
    body: bool = False,
    body_schema: dict[str, Any] | None = None,
    security: list | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation; ``takes`` is its view, whose declared parameters it documents
    (with ``body``, a POST: its request parameters as a form or JSON body)."""
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if takes is not None:
        params = _parameters(takes, body=body)
        if params:
            op["parameters"] = params
        if body and _fields(takes)["properties"]:
            op["requestBody"] = _body(takes, body_schema)
    if security is not None:
        op["security"] = security
    return op


def _legacy(
    summary: str,
    tag: str,
    takes: Callable[..., Any],
    ok: Any,
    failure: str,
    codes: tuple[int, ...],
    *,
    post: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """A legacy call: GET with query parameters; POST with a form or JSON body too."""
    responses = _responses(ok, failure, codes)
    item = {"get": _op(summary, tag, responses, takes=takes, description=description)}
    if post:
        item["post"] = _op(
            summary,
            tag,
            copy.deepcopy(responses),
            takes=takes,
            body=True,
            description=description,
        )
    return item


# -- the paths -----------------------------------------------------------------

HOST_FAILURES = (502, 504)
NO_AUTH: list = []
BASIC = [{"basicAuth": []}]
BASIC_OR_TOKEN = [{"basicAuth": []}, {"tokenAuth": []}]


def _paths() -> dict[str, Any]:
    vmids = _obj({"vmids": {"type": "array", "items": ID}}, ["vmids"])
    p: dict[str, Any] = {}
    # VM API (original)
    p["/vm/create"] = _legacy(
        "Create a VM",
        "vms",
        vms.create,
        _obj({"vmid": ID}, ["vmid"]),
        "VmCreateFailure",
        (400, 404, 409, 503, *HOST_FAILURES),
        description="The scheduler places it; a refusal explains itself per filter "
        "(503 with Retry-After when no host can fit it).",
    )
    p["/vm/query"] = _legacy(
        "Describe a VM", "vms", vms.query, "Vm", "VmidFailure", (400, 404), post=False
    )
    p["/vm/destroy"] = _legacy(
        "Destroy a VM",
        "vms",
        vms.destroy,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
        description="`force=1` destroys a checked-out VM (operators).",
    )
    p["/vm/types"] = {
        "get": _op(
            "List VM types",
            "vms",
            _responses(
                _obj({"types": {"type": "array", "items": _ref("VmType")}}, ["types"]), codes=()
            ),
        )
    }
    p["/vm/list"] = {"get": _op("List VM ids", "vms", _responses(vmids, codes=()))}
    # Resource API (original)
    p["/pm/list"] = {
        "get": _op(
            "List physical machines",
            "hosts",
            _responses(_obj({"pmids": {"type": "array", "items": ID}}, ["pmids"]), codes=()),
        )
    }
    p["/pm/listvms"] = _legacy(
        "VMs on a physical machine",
        "hosts",
        hosts.pm_listvms,
        vmids,
        "VmidsFailure",
        (400, 404),
        post=False,
    )
    p["/pm/query"] = _legacy(
        "Describe a physical machine",
        "hosts",
        hosts.pm_query,
        "Host",
        "PmidFailure",
        (400, 404),
        post=False,
    )
    p["/healthz"] = {
        "get": _op(
            "Liveness",
            "meta",
            _responses(_obj({"ok": {"type": "boolean"}}, ["ok"]), codes=()),
            security=NO_AUTH,
        )
    }
    # Image API (original)
    p["/image/list"] = {
        "get": _op(
            "List images",
            "images",
            _responses(
                _obj({"images": {"type": "array", "items": _ref("Image")}}, ["images"]), codes=()
            ),
        )
    }
    # Block storage (original, phase 2)
    p["/volume/create"] = _legacy(
        "Create a volume",
        "volumes",
        volumes.create,
        _obj({"volumeid": ID}, ["volumeid"]),
        "VolumeidFailure",
        (400, 409, 503, *HOST_FAILURES),
    )
    p["/volume/query"] = _legacy(
        "Describe a volume",
        "volumes",
        volumes.query,
        "Volume",
        "Error",
        (400, 404),
        post=False,
        description='An unknown id answers 404 `{"error": "volumeid : N does not exist"}`.',
    )
    p["/volume/destroy"] = _legacy(
        "Destroy a volume",
        "volumes",
        volumes.destroy,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
        description="409 while attached.",
    )
    p["/volume/attach"] = _legacy(
        "Attach a volume to a VM",
        "volumes",
        volumes.attach,
        "Ok",
        "StatusFailure",
        (400, 404, 409, 503, *HOST_FAILURES),
        description="Hot-plugs the next free virtio disk; a host-local volume moves first.",
    )
    p["/volume/detach"] = _legacy(
        "Detach a volume",
        "volumes",
        volumes.detach,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
    )
    p["/volume/list"] = {
        "get": _op(
            "List volume ids",
            "volumes",
            _responses(
                _obj({"volumeids": {"type": "array", "items": ID}}, ["volumeids"]), codes=()
            ),
        )
    }
    # Reservations
    p["/vm/checkout"] = {
        "post": _op(
            "Check out ready VMs",
            "reservations",
            _responses(
                {"oneOf": [_ref("Checkout"), _ref("CheckoutMany")]},
                "VmCreateFailure",
                (400, 404, 503),
            ),
            takes=reservations.checkout,
            body=True,
            description="`count` is all or nothing; when nothing is ready the answer is "
            "immediate (503 with Retry-After) and the refill is triggered.",
        )
    }
    p["/vm/checkin"] = {
        "post": _op(
            "Check a VM in",
            "reservations",
            _responses("Ok", "StatusFailure", (400, 403, 404, 409)),
            takes=reservations.checkin,
            body=True,
            description="`vmid` (or `ip`) and the reservation id; the VM is cleaned, then "
            "served again. 403 wrong reservation, 409 not checked out.",
        )
    }
    p["/vm/extend"] = {
        "post": _op(
            "Extend a reservation",
            "reservations",
            _responses(
                _obj(
                    {"status": {"type": "integer", "enum": [1]}, "expires_at": TIME},
                    ["status", "expires_at"],
                ),
                "StatusFailure",
                (400, 403, 404, 409),
            ),
            takes=reservations.extend,
            body=True,
        )
    }
    p["/pool/list"] = {
        "get": _op(
            "List pools",
            "reservations",
            _responses(
                _obj({"pools": {"type": "array", "items": _ref("Pool")}}, ["pools"]), codes=()
            ),
        )
    }
    p["/pool/query"] = _legacy(
        "Describe a pool",
        "reservations",
        reservations.pool_query,
        "PoolDetail",
        "PoolFailure",
        (400, 404),
        post=False,
    )
    p["/vms/api/v1.0/checkout"] = {
        "get": _op(
            "Check out a VM (first seed)",
            "reservations",
            _responses(
                "SeedCheckout",
                "Error",
                (400,),
                {"404": _json(_ref("Error"), "no VM is available; retry later", RETRY_AFTER)},
            ),
        )
    }
    p["/vms/api/v1.0/checkin"] = {
        "post": _op(
            "Check a VM in (first seed)",
            "reservations",
            _responses(_obj({"status": STR}, ["status"]), "Error", (400, 403, 404, 409)),
            takes=reservations.seed_checkin,
            body=True,
        )
    }
    # Authentication (vmpooler's shapes)
    not_found_why = "404 when authentication is off, or the token is unknown, revoked or not yours."
    p["/token"] = {
        "post": _op(
            "Issue a token",
            "auth",
            _responses("TokenIssued", "AuthFailure", (401, 404, 429)),
            security=BASIC,
            description="HTTP basic auth with a user from the configuration; the token is "
            "shown once. Failed logins are rate limited (429 with Retry-After). " + not_found_why,
        )
    }
    p["/token/{token}"] = {
        "get": _op(
            "Describe a token",
            "auth",
            _responses("TokenInfo", "AuthFailure", (401, 403, 404)),
            takes=auth.show,
            security=BASIC_OR_TOKEN,
            description="Basic credentials of its user, or a token of theirs. " + not_found_why,
        ),
        "delete": _op(
            "Revoke a token",
            "auth",
            _responses("TokenRevoked", "AuthFailure", (401, 403, 404)),
            takes=auth.revoke,
            security=BASIC_OR_TOKEN,
            description="Takes effect at once. " + not_found_why,
        ),
    }
    # Status and metrics
    p["/status"] = {"get": _op("Fabric status", "status", _responses("Status", codes=()))}
    p["/cluster"] = {
        "get": _op(
            "Servers sharing the registry and the leases of background work",
            "status",
            _responses("Cluster", codes=()),
        )
    }
    p["/summary"] = {
        "get": _op(
            "Clone, boot and cleanup durations per day",
            "status",
            _responses("Summary", "Error", (400,)),
            takes=status.summary,
            description="`from` defaults to `to` (or today), `to` to today; at most 366 days.",
        )
    }
    p["/metrics"] = {
        "get": _op(
            "Prometheus metrics",
            "status",
            {
                "200": {
                    "description": "Prometheus text format: requests, placements, durations, "
                    "pool levels, host states",
                    "content": {"text/plain": {"schema": STR}},
                }
            },
            security=NO_AUTH,
        )
    }
    # Scheduled capacity
    p["/schedules"] = {
        "get": _op(
            "List schedules",
            "schedules",
            _responses(
                _obj({"schedules": {"type": "array", "items": _ref("Schedule")}}, ["schedules"]),
                codes=(),
            ),
        ),
        "post": _op(
            "Create a schedule",
            "schedules",
            {
                "201": _json(_ref("Schedule"), "created"),
                "400": _json(_ref("IdFailure"), WHY[400]),
                "404": _json(_ref("IdFailure"), "unknown instance_type, image or pool"),
            },
            takes=schedules.create_schedule,
            body=True,
            body_schema=_ref("ScheduleInput"),
            description="At the start the fabric creates the extra VMs (or raises the "
            "pool's size); at the end it destroys them (or lowers it back).",
        ),
    }
    p["/schedules/{id}"] = {
        "get": _op(
            "Describe a schedule",
            "schedules",
            _responses("Schedule", "IdFailure", (400, 404)),
            takes=schedules.get_schedule,
        ),
        "delete": _op(
            "Delete a schedule",
            "schedules",
            _responses("Ok", "StatusFailure", (400, 404, 409)),
            takes=schedules.delete_schedule,
            description="409 while the schedule is active, unless `force`.",
        ),
    }
    # This description
    p["/openapi.json"] = {
        "get": _op(
            "This OpenAPI description",
            "meta",
            {"200": _json({"type": "object"}, "the OpenAPI document")},
            security=NO_AUTH,
        )
    }
    return p


def build_spec(server_url: str | None = None) -> dict[str, Any]:
    """A fresh copy of the OpenAPI document (callers may change it)."""
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "libvirt fabric",
            "version": "1.0",
            "description": "The fabric's HTTP contract (../shared/API.md): the original "
            "API's URLs and JSON keys kept to the letter, plus reservations, volumes, "
            "tokens, status and schedules. Every answer is JSON, errors too.",
        },
        "tags": [
            {"name": t}
            for t in (
                "vms",
                "hosts",
                "images",
                "volumes",
                "reservations",
                "auth",
                "status",
                "schedules",
                "meta",
            )
        ],
        "paths": _paths(),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "tokenAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "a token from POST /token (when authentication is on)",
                },
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
        },
        # Authentication is off by default; when on, calls carry X-Auth-Token.
        "security": [{"tokenAuth": []}, {}],
    }
    for item in spec["paths"].values():
        for op in item.values():
            if "security" in op:
                continue
            # Under the token scheme: 401 without a valid token, 403 with a wrong one.
            for code in (401, 403):
                headers = WWW_AUTH if code == 401 else None
                op["responses"].setdefault(str(code), _json(_ref("Error"), WHY[code], headers))
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return copy.deepcopy(spec)
