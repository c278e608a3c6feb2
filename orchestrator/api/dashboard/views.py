"""The overview page (``GET /``) and its sections.

Each section reads what it shows from the services and shapes it with the
presenters; one that fails is reported at the top of the page, and the rest of
the page is still shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import current_app, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from ...clock import as_utc, iso
from ...errors import FabricError
from ...model import NAME_PATTERN, VM_ATTACHABLE, VmState
from ...volumes import MAX_SIZE_GB
from .. import presenters
from ..context import services
from .blueprint import auth_on, bp, no_store, reservations, schedules
from .charts import charts
from .login import current_user

log = logging.getLogger(__name__)


def html_pattern(pattern: str) -> str:
    """A regular expression for an input's ``pattern`` attribute. Browsers compile it
    with the ``v`` flag, where a ``-`` that ends a character class must be escaped."""
    return pattern.replace("-]", r"\-]")


@bp.route("/", methods=["GET"])
def overview() -> ResponseReturnValue:
    user = current_user()
    if user is None:
        return redirect(url_for("dashboard.login"))
    errors: list[str] = []

    def section(name: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one broken section does not take the page down
            log.exception("dashboard section %s failed", name)
            msg = e.message if isinstance(e, FabricError) else "internal error"
            errors.append(f"{name}: {msg}")
            return default

    hosts = section("hosts", _hosts, [])
    catalog = section("catalog", _catalog, {"types": [], "images": []})
    vms = section("VMs", lambda: _vms(hosts, catalog), [])
    pools = section("pools", _pools, None)
    vols = section("volumes", lambda: _volumes(hosts), [])
    scheduled = section("schedules", _schedules, {"rows": [], "error": None})
    drawn = section("charts", lambda: charts(services().registry.events, pools or {}), {})
    servers = section("servers", _servers, [])
    waiting = section("requests", lambda: _requests(user), [])
    ctx = {
        "auth_on": auth_on(),
        "user": user,
        "is_admin": services().auth.principal(user or None).admin,
        "hosts": hosts,
        "vms": vms,
        "pools": pools,
        "reserved": [v for v in vms if v["status"] == VmState.IN_USE],
        "volumes": vols,
        "schedules": scheduled,
        "charts": drawn,
        "servers": servers,
        "requests": waiting,
        "types": catalog["types"],
        "images": catalog["images"],
        "attachable": [v for v in vms if v["status"] in VM_ATTACHABLE],
        "max_volume": MAX_SIZE_GB,
        "name_pattern": html_pattern(NAME_PATTERN),
        "section_errors": errors,
        "now": iso(datetime.now(UTC)),
        "summary": presenters.overview_summary(hosts, vms, pools, vols),
    }
    return no_store(current_app.make_response(render_template("dashboard/overview.html", **ctx)))


# -- the sections ----------------------------------------------------------------


def _hosts() -> list[dict[str, Any]]:
    registry = services().registry
    counts = registry.vms.counts_by_host()
    return [
        presenters.host_card(h, counts.get(h.id, 0), registry.moves.latest_drain(h.id))
        for h in registry.hosts.list()
    ]


def _catalog() -> dict[str, Any]:
    inventory = services().registry.inventory
    return {
        "types": [presenters.type_option(t) for t in inventory.types()],
        "images": [presenters.image(i) for i in inventory.images()],
    }


def _vms(hosts: list[dict[str, Any]], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    svc = services()
    host_names = {h["pmid"]: h["name"] for h in hosts}
    type_names = {t["tid"]: t["name"] for t in catalog["types"]}
    image_names = {i["id"]: i["name"] for i in catalog["images"]}
    now = datetime.now(UTC)
    return [
        presenters.vm_row(
            vm,
            svc.config.guest.user,
            host_names=host_names,
            type_names=type_names,
            image_names=image_names,
            now=now,
            domain=svc.config.hostnames.domain,
        )
        for vm in svc.registry.vms.list()
    ]


def _pools() -> dict[str, dict[str, Any]] | None:
    res = reservations()
    if res is None:
        return None
    return {name: presenters.pool_row(st) for name, st in res.pools.status().items()}


def _volumes(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {h["pmid"]: h["name"] for h in hosts}
    return [presenters.volume_row(v, names) for v in services().registry.volumes.list()]


def _schedules() -> dict[str, Any]:
    try:
        listed = schedules().list()
    except FabricError as e:
        return {"rows": [], "error": e.message}
    return {
        "rows": [presenters.schedule_row(presenters.schedule(s)) for s in listed],
        "error": None,
    }


def _requests(user: str) -> list[dict[str, Any]]:
    """On-demand requests: the user's (an admin's: everyone's), newest first."""
    svc = services()
    if not svc.pools.configured:
        return []
    now = datetime.now(UTC)
    rows = []
    for r in svc.ondemand.list(svc.auth.principal(user or None))[:50]:
        progress = svc.ondemand.progress(r)
        rows.append(
            {
                "id": r.request_id,
                "requested_by": r.requested_by or "",
                "pools": ", ".join(f"{n} {p}" for p, n in r.pools.items()),
                "progress": ", ".join(
                    f"{p}: {g['ready']}/{g['wanted']}" for p, g in progress.items()
                ),
                "state": r.state,
                "age": _age(now, r.created_at),
                "message": r.message or "",
                "open": r.state in ("pending", "ready"),
            }
        )
    return rows


def _age(now: datetime, then: datetime) -> str:
    secs = max(0, int((now - as_utc(then)).total_seconds()))
    if secs < 120:
        return f"{secs} s"
    if secs < 7200:
        return f"{secs // 60} min"
    return f"{secs // 3600} h"


def _servers() -> list[dict[str, Any]]:
    return presenters.server_rows(services().cluster.as_dict())
