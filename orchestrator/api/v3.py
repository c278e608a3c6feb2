"""Puppet vmpooler's HTTP API v3 under ``/api/v3``, beside the fabric's own API.

The same registry, pools, tokens and reservations: a VM checked out here is
checked out in the fabric's API (``/vm/query`` shows it, ``/vm/checkin`` ends
it) and the reverse. Shapes and status codes follow vmpooler's docs/API-v3.md
(see ../shared/VMPOOLER-API.md): every answer has ``"ok"``; errors are
``{"ok": false}`` with a ``message`` saying why (``failure`` for a bad PUT);
an unknown route is a 404 ``{"ok": false, ...}``, never an HTML page.

Tokens: header ``X-AUTH-TOKEN`` (the fabric's tokens). With authentication on,
every call that changes something needs one (401 ``{"ok": false}`` without or
with a bad one), reads do not (unless ``open_reads`` is off); the token calls
take HTTP basic credentials. With authentication off the token calls answer
404 and everyone is the anonymous admin.

Helpers other v3 blueprints reuse (orchestrator/api/v3_ondemand.py):
``v3_error``, ``v3_principal``, ``v3_body``, ``find_vm``, ``hostname_of``,
``checkout_answer``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .. import tags as tags_rules
from ..access import Principal
from ..bounded import TooDeep, json_loads
from ..clock import as_utc, iso
from ..errors import BadRequest, FabricError, Forbidden, NotFound, Unauthorized
from ..hostnames import LABEL, fqdn, short
from ..model import VmState, is_name
from ..registry import VmRow
from ..volumes import MAX_SIZE_GB
from . import status as fabric_status
from .auth import _own_token, auth_service
from .context import known_user, principal, services
from .errors import shape_errors

PREFIX = "/api/v3"
bp = Blueprint("v3", __name__, url_prefix=PREFIX)

MAX_BODY = 10 * 1024  # bytes of a request body (vmpooler's users rely on a limit)
MAX_DEPTH = 5  # levels of JSON nesting in a body
MAX_PER_POOL = 100  # VMs of one pool in one check-out (the fabric's /vm/checkout's too)
TAG_KEY = re.compile(tags_rules.KEY_PATTERN)  # the fabric's own tag rules (tags.py)
MAX_TAG_VALUE = tags_rules.MAX_VALUE
SNAPSHOT_ID = re.compile(r"[a-z0-9]{1,64}")
_SNAPSHOT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SIZE = re.compile(r"[0-9]{1,6}")
_COUNT = re.compile(r"[0-9]{1,6}")


# -- helpers (shared with the other v3 blueprints) ---------------------------------


def v3_error(status: int, message: str | None = None, **extra: Any) -> Response:
    """vmpooler's error answer: ``{"ok": false}``, with why in ``message``."""
    body: dict[str, Any] = {"ok": False}
    if message:
        body["message"] = message
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Token realm="fabric"'
    return resp


def install(app: Flask) -> None:
    """Every error under /api/v3 (unknown routes, 405, 413, FabricErrors, the
    unexpected) in vmpooler's shape; the uptime /status reports."""
    shape_errors(app, PREFIX, lambda st, msg: v3_error(st, msg))
    app.config.setdefault("V3_STARTED", time.monotonic())


def v3_principal() -> Principal:
    """Who calls (the fabric's rule: with auth on, the token's user; a read without
    one is an unauthenticated reader)."""
    return principal()


def v3_body() -> dict[str, Any]:
    """The request's JSON object: at most 10 KB and 5 levels deep (413/400)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise _TooLarge()
    raw = request.stream.read(MAX_BODY + 1) if length is None else request.get_data()
    if len(raw) > MAX_BODY:
        raise _TooLarge()
    if not raw.strip():
        raise BadRequest("the request body is empty: send a JSON object")
    try:
        data = json_loads(raw, MAX_DEPTH)
    except TooDeep:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
    return data


class _TooLarge(FabricError):
    status = 413

    def __init__(self) -> None:
        super().__init__(f"the request body is too large (at most {MAX_BODY} bytes)")


def domain() -> str | None:
    return services().config.hostnames.domain


def hostname_of(vm: VmRow) -> str:
    """The name a check-out answer gives: the FQDN when a domain is configured."""
    return fqdn(vm.hostname, domain()) or vm.hostname or ""


def find_vm(name: str) -> VmRow:
    """The VM with this hostname (short or FQDN); NotFound (404) otherwise."""
    wanted = short(name, domain())
    if not LABEL.fullmatch(wanted):
        raise NotFound(f"no VM has hostname {name!r}")
    return services().registry.vms.by_hostname(wanted)


def checkout_answer(got: dict[str, list[str]]) -> dict[str, Any]:
    """``{"ok": true, "<pool>": {"hostname": h | [h, ...]}, "domain": ...}``: a string
    for one VM, a list for several."""
    out: dict[str, Any] = {"ok": True}
    for pool, names in got.items():
        out[pool] = {"hostname": names[0] if len(names) == 1 else list(names)}
    if domain():
        out["domain"] = domain()
    return out


def _hours(value: float) -> float | int:
    """Hours as a number: whole ones as integers, else to two decimals."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


def _require_user_of(by: Principal, vm: VmRow, what: str) -> None:
    """The VM's holder, its creator, or an admin (with auth off: anyone)."""
    by.require_writer(what)
    if by.admin:
        return
    if by.name is not None and (vm.held_by == by.name or vm.created_by == by.name):
        return
    raise Forbidden(f"{by.label} may not {what}: it is not theirs")


# -- tokens ----------------------------------------------------------------------


def _auth_on() -> None:
    if not auth_service().enabled:
        raise NotFound("authentication is not enabled on this fabric")


def _basic_user() -> str:
    creds = request.authorization
    if creds is None or creds.type != "basic" or not creds.username:
        raise Unauthorized("send HTTP basic credentials")
    user = auth_service().authenticate(creds.username, creds.password or "", request.remote_addr)
    known_user(user)
    return user


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/token", methods=["POST"])
def token_issue() -> ResponseReturnValue:
    """A new token for the basic credentials' user."""
    _auth_on()
    creds = request.authorization
    if creds is None or creds.type != "basic" or not creds.username:
        raise Unauthorized("POST /token needs HTTP basic credentials")
    token = auth_service().login(creds.username, creds.password or "", request.remote_addr)
    known_user(creds.username)
    return _no_store(jsonify({"ok": True, "token": token}))


@bp.route("/token", methods=["GET"])
def token_list() -> ResponseReturnValue:
    """The basic credentials' user's valid tokens. Tokens are stored hashed: each is
    listed by its SHA-256 (hex), with ``created``, ``last`` and ``expires``."""
    _auth_on()
    user = _basic_user()
    out: dict[str, Any] = {"ok": True}
    for row in auth_service().store.tokens_of(user):
        out[row.digest] = {
            "created": iso(row.created_at),
            "last": iso(row.last_used) if row.last_used else "never",
            "expires": iso(row.expires_at),
        }
    return _no_store(jsonify(out))


@bp.route("/token/<token>", methods=["GET"])
def token_show(token: str) -> ResponseReturnValue:
    """A token (the token itself is the proof, as in vmpooler): its user, times and
    the VMs its user holds (``vms.running``: short hostnames)."""
    auth = auth_service()
    _auth_on()
    try:
        user = auth.check(token)
    except (Unauthorized, Forbidden):
        raise NotFound("no such token") from None
    info = auth.info(token)
    held = [
        vm.hostname
        for vm in services().registry.vms.list(states=[VmState.IN_USE])
        if vm.held_by == user and vm.hostname
    ]
    body = {
        "user": info["user"],
        "created": info["created"],
        "last": info["last_used"] or "never",
        "expires": info["expires"],
        "vms": {"running": held},
    }
    return _no_store(jsonify({"ok": True, token: body}))


@bp.route("/token/<token>", methods=["DELETE"])
def token_delete(token: str) -> ResponseReturnValue:
    """Revoke a token of the caller's (basic credentials, or a token of theirs)."""
    _auth_on()
    _own_token(token)
    auth_service().revoke(token)
    return jsonify({"ok": True})


# -- check-out -------------------------------------------------------------------


@bp.route("/vm", methods=["GET"])
def pool_names() -> ResponseReturnValue:
    return jsonify(list(services().pools.pools))


def _count(pool: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"the count for pool {pool!r} must be a positive integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _COUNT.fullmatch(value.strip()):
        n = int(value.strip())
    else:
        raise BadRequest(f"the count for pool {pool!r} must be a positive integer")
    if not 1 <= n <= MAX_PER_POOL:
        raise BadRequest(f"the count for pool {pool!r} must be from 1 to {MAX_PER_POOL}")
    return n


def check_pools(wanted: dict[str, int]) -> None:
    """404 naming the pools that do not exist."""
    pools = services().pools.pools
    unknown = [p for p in wanted if p not in pools]
    if unknown:
        raise NotFound(f"no such pool: {', '.join(unknown)}")


def take(wanted: dict[str, int], by: Principal) -> dict[str, list[str]]:
    """Check ``wanted`` out for ``by`` (all or nothing): hostnames per pool."""
    got: dict[str, list[str]] = {}
    for c in services().reservations.checkout_pools(wanted, by=by):
        got.setdefault(c.pool, []).append(hostname_of(c.vm))
    return got


@bp.route("/vm/<template>", methods=["POST"])
def checkout_path(template: str) -> ResponseReturnValue:
    """``POST /vm/a+a+b``: two VMs of pool a and one of b."""
    wanted: dict[str, int] = {}
    for name in template.split("+"):
        if not name:
            raise BadRequest("empty pool name in the path")
        wanted[name] = wanted.get(name, 0) + 1
    for name, n in wanted.items():
        if n > MAX_PER_POOL:
            raise BadRequest(f"the count for pool {name!r} must be from 1 to {MAX_PER_POOL}")
    check_pools(wanted)
    return jsonify(checkout_answer(take(wanted, v3_principal())))


@bp.route("/vm", methods=["POST"])
def checkout_body() -> ResponseReturnValue:
    """``POST /vm`` with ``{"pool-a": "2", "pool-b": 1}``."""
    body = v3_body()
    if not body:
        raise BadRequest('name at least one pool: {"<pool>": "<count>"}')
    wanted = {}
    for name, value in body.items():
        if not is_name(name):
            raise NotFound(f"no such pool: {name[:64]}")
        wanted[name] = _count(name, value)
    check_pools(wanted)
    return jsonify(checkout_answer(take(wanted, v3_principal())))


# -- one VM ----------------------------------------------------------------------

_STATES = {
    VmState.IN_USE: "running",
    VmState.READY: "ready",
    VmState.BUILDING: "pending",
    VmState.ACTIVE: "running",
    VmState.CLEANING: "completed",
    VmState.DELETING: "destroyed",
}


def describe(vm: VmRow) -> dict[str, Any]:
    """``GET /vm/<hostname>``'s body for one VM."""
    svc = services()
    pool = svc.pools.pools.get(vm.pool or "")
    out: dict[str, Any] = {"template": vm.pool or vm.name}
    start = as_utc(vm.reserved_at)
    end = as_utc(vm.expires_at)
    if vm.state == VmState.IN_USE and start is not None and end is not None:
        now = datetime.now(UTC)
        out["lifetime"] = _hours((end - start).total_seconds() / 3600)
        out["running"] = _hours(max(0.0, (now - start).total_seconds() / 3600))
        out["remaining"] = _hours(max(0.0, (end - now).total_seconds() / 3600))
        out["start_time"] = iso(start)
        out["end_time"] = iso(end)
    elif pool is not None:
        out["lifetime"] = _hours(pool.lifetime)
    out["state"] = _STATES.get(VmState(vm.state), str(vm.state))
    out["tags"] = dict(vm.tags or {})
    disks = [f"+{v.size}gb" for v in svc.registry.volumes.list(vm_id=vm.id)]
    if disks:
        out["disk"] = disks
    out["ip"] = vm.ip or ""
    out["fqdn"] = hostname_of(vm)
    if vm.host_id is not None:
        host = svc.registry.hosts.get_any(vm.host_id)
        if host is not None:
            out["host"] = host.label
            snaps = svc.fabric.snapshots(vm, host)
            if snaps:
                out["snapshots"] = snaps
    if vm.held_by:
        out["user"] = vm.held_by
    return out


@bp.route("/vm/<hostname>", methods=["GET"])
def vm_show(hostname: str) -> ResponseReturnValue:
    vm = find_vm(hostname)
    return jsonify({"ok": True, vm.hostname: describe(vm)})


def _lifetime(value: Any, cap: float | None, failure: list[str]) -> float | None:
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) <= 20 else None
        except ValueError:
            value = None
    if not isinstance(value, int | float) or value != value or value <= 0:
        failure.append(f"You provided a lifetime ({value!r}) but it must be a positive number.")
        return None
    if cap is not None and value > cap:
        failure.append(
            f"You provided a lifetime ({value:g}) that exceeds the configured maximum of {cap:g}."
        )
        return None
    return float(value)


def _tags(value: Any, failure: list[str]) -> dict[str, str] | None:
    if not isinstance(value, dict):
        failure.append("You provided tags as something other than a hash.")
        return None
    bad = [str(k)[:60] for k in value if not TAG_KEY.fullmatch(str(k))]
    if bad:
        failure.append(
            f"You provided tags with keys that are not {tags_rules.KEY_PATTERN}: {', '.join(bad)}."
        )
    wrong = [k for k, v in value.items() if not isinstance(v, str) or len(v) > MAX_TAG_VALUE]
    if wrong:
        failure.append(
            f"You provided tags whose values are not strings of at most {MAX_TAG_VALUE} "
            f"characters: {', '.join(str(k)[:60] for k in wrong)}."
        )
    return None if bad or wrong else {str(k): v for k, v in value.items()}


@bp.route("/vm/<hostname>", methods=["PUT"])
def vm_modify(hostname: str) -> ResponseReturnValue:
    """``{"lifetime": hours}`` (from check-out, within the pool's ``lifetime_max``)
    and/or ``{"tags": {...}}``: the holder, or an admin."""
    vm = find_vm(hostname)
    try:
        body = v3_body()
    except BadRequest as e:
        return v3_error(400, e.message, failure=[e.message])
    svc = services()
    pool = svc.pools.pools.get(vm.pool or "")
    failure: list[str] = []
    hours = tags = None
    for key, value in body.items():
        if key == "lifetime":
            hours = _lifetime(value, pool.lifetime_max if pool else None, failure)
            if hours is not None and vm.state != VmState.IN_USE:
                failure.append(f"{vm.hostname} is not checked out: it has no lifetime to set.")
        elif key == "tags":
            tags = _tags(value, failure)
        else:
            failure.append(f"Unknown argument {str(key)[:60]}.")
    if failure:
        return v3_error(400, failure[0], failure=failure)
    by = v3_principal()
    _require_user_of(by, vm, f"change {vm.hostname}")
    if hours is not None:
        svc.reservations.set_lifetime(vm, hours, by=by)
    if tags:
        tags_rules.set_tags(svc.registry, vm.id, tags, by=by)
    return jsonify({"ok": True})


@bp.route("/vm/<hostname>", methods=["DELETE"])
def vm_delete(hostname: str) -> ResponseReturnValue:
    """The holder (or an admin) ends the reservation and the VM is destroyed."""
    vm = find_vm(hostname)
    services().reservations.end_and_destroy(vm, by=v3_principal())
    return jsonify({"ok": True})


@bp.route("/vm/<hostname>/disk/<size>", methods=["POST"])
def vm_disk(hostname: str, size: str) -> ResponseReturnValue:
    """A new volume of ``size`` GB from the fabric's block storage, owned by the
    caller, attached to the VM."""
    vm = find_vm(hostname)
    if not _SIZE.fullmatch(size) or not 1 <= int(size) <= MAX_SIZE_GB:
        raise BadRequest(f"the disk size must be a whole number of GB from 1 to {MAX_SIZE_GB}")
    gb = int(size)
    by = v3_principal()
    _require_user_of(by, vm, f"add a disk to {vm.hostname}")
    services().volumes.add_disk(vm, gb, by=by)
    resp = jsonify({"ok": True, vm.hostname: {"disk": f"+{gb}gb"}})
    resp.status_code = 202
    return resp


@bp.route("/vm/<hostname>/snapshot", methods=["POST"])
def vm_snapshot(hostname: str) -> ResponseReturnValue:
    """A libvirt snapshot of the VM now (its disk, and its memory while it runs)."""
    vm = find_vm(hostname)
    by = v3_principal()
    _require_user_of(by, vm, f"snapshot {vm.hostname}")
    name = services().fabric.snapshot(vm, f"vmpooler API v3, by {by.label}")
    resp = jsonify({"ok": True, vm.hostname: {"snapshot": name}})
    resp.status_code = 202
    return resp


@bp.route("/vm/<hostname>/snapshot/<snapshot>", methods=["POST"])
def vm_revert(hostname: str, snapshot: str) -> ResponseReturnValue:
    """Put the VM back to one of its snapshots (404 if it has none such)."""
    vm = find_vm(hostname)
    if not SNAPSHOT_ID.fullmatch(snapshot):
        raise NotFound(f"{vm.hostname} has no snapshot {snapshot[:64]!r}")
    by = v3_principal()
    _require_user_of(by, vm, f"revert {vm.hostname}")
    services().fabric.revert_snapshot(vm, snapshot)
    resp = jsonify({"ok": True})
    resp.status_code = 202
    return resp


# -- status ----------------------------------------------------------------------


def _today_figures(kind: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    figures = fabric_status.summary_of(today, today)[kind]
    return {"duration": figures["duration"], "count": {"total": figures["count"]["total"]}}


@bp.route("/status", methods=["GET"])
def status() -> ResponseReturnValue:
    """vmpooler's status: ``max`` of a pool is its ``size`` (the ready VMs it keeps),
    as vmpooler's is; ``capacity`` is ready VMs over the pools' sizes."""
    pools = services().pools.status()
    current = sum(p["ready"] for p in pools.values())
    total = sum(p["size"] for p in pools.values())
    empty = [name for name, p in pools.items() if p["ready"] == 0 and p["size"] > 0]
    building = sum(p["building"] for p in pools.values())
    running = sum(p["in_use"] for p in pools.values())
    completed = sum(p["cleaning"] for p in pools.values())
    state: dict[str, Any] = {"ok": not empty}
    state["message"] = (
        f"Found {len(empty)} empty pools."
        if empty
        else "Battle station fully armed and operational."
    )
    if empty:
        state["empty"] = empty
    started = current_app.config.get("V3_STARTED", time.monotonic())
    state["uptime"] = round(time.monotonic() - started, 1)
    body = {
        "boot": _today_figures("boot"),
        "capacity": {
            "current": current,
            "total": total,
            "percent": round(100.0 * current / total, 1) if total else 0.0,
        },
        "clone": _today_figures("clone"),
        "pools": {
            name: {
                "ready": p["ready"],
                "running": p["in_use"],
                "pending": p["building"],
                "max": p["size"],
            }
            for name, p in pools.items()
        },
        "queue": {
            "pending": building,
            "cloning": 0,
            "booting": building,
            "ready": current,
            "running": running,
            "completed": completed,
            "total": building + current + running + completed,
        },
        "status": state,
    }
    return jsonify(body)


def _date(name: str) -> date | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"Invalid date format '{value[:20]}', must match YYYY-MM-DD.") from None


def _tag_counts(start: date, end: date) -> tuple[dict, dict[date, dict]]:
    """Per tag key and value: how many times VMs were tagged so, in all and per day."""
    lo = datetime.combine(start, datetime.min.time(), UTC)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC)
    total: dict[str, dict[str, int]] = {}
    daily: dict[date, dict[str, dict[str, int]]] = {}
    for at, detail in services().registry.events.details("vm.tagged", lo, hi):
        day = as_utc(at).date()
        for key, value in ((detail or {}).get("tags") or {}).items():
            if value == "":
                continue  # a tag removed
            for counts in (total, daily.setdefault(day, {})):
                per = counts.setdefault(key, {})
                per[value] = per.get(value, 0) + 1
                per["total"] = per.get("total", 0) + 1
    return total, daily


@bp.route("/summary", methods=["GET"])
def summary() -> ResponseReturnValue:
    """Per day (UTC): boots, clones (durations and counts, from the registry's
    events) and tags set (counts per key and value)."""
    today = datetime.now(UTC).date()
    start, end = _date("from") or today, _date("to") or today
    if end < start:
        raise BadRequest("Date range is invalid, 'to' cannot come before 'from'.")
    if start > today:
        raise BadRequest("Date range is invalid, 'from' must be in the past.")
    figures = fabric_status.summary_of(start, end)
    tags, tags_daily = _tag_counts(start, end)
    daily = []
    for day in figures["daily"]:
        d = date.fromisoformat(day["date"])
        daily.append(
            {
                "date": day["date"],
                "boot": day["boot"],
                "clone": day["clone"],
                "tag": tags_daily.get(d, {}),
            }
        )
    return jsonify(
        {"boot": figures["boot"], "clone": figures["clone"], "tag": tags, "daily": daily}
    )


@bp.route("/poolstat", methods=["GET"])
def poolstat() -> ResponseReturnValue:
    """``?pool=a,b``: their ready VMs and ``max`` (their size, as in /status)."""
    names = [n for n in (request.args.get("pool") or "").split(",") if n]
    pools = services().pools.status()
    return jsonify(
        {
            "pools": {
                n: {"max": pools[n]["size"], "ready": pools[n]["ready"]}
                for n in names
                if n in pools
            }
        }
    )


@bp.route("/totalrunning", methods=["GET"])
def totalrunning() -> ResponseReturnValue:
    """VMs checked out, in all pools."""
    return jsonify({"running": sum(p["in_use"] for p in services().pools.status().values())})


@bp.route("/healthcheck", methods=["GET"])
def healthcheck() -> ResponseReturnValue:
    return jsonify({"ok": True})
