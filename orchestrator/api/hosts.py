"""Resource API (original): physical machines; day-two operations on them (admins):
maintenance, drain, and moving one VM to another host."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..errors import NotFound
from . import presenters
from .context import principal, services
from .errors import legacy
from .params import PMID, Int, PathId, Text, takes

bp = Blueprint("hosts", __name__)


@bp.route("/pm/list", methods=["GET"])
def pm_list():
    return jsonify({"pmids": [h.id for h in services().registry.hosts.list()]})


@bp.route("/pm/listvms", methods=["GET"])
@legacy({"vmids": 0})
@takes(PMID)
def pm_listvms():
    pmid = PMID.value()
    registry = services().registry
    registry.hosts.get(pmid)  # 404 for an unknown pmid
    return jsonify({"vmids": [vm.id for vm in registry.vms.list(host_id=pmid)]})


@bp.route("/pm/query", methods=["GET"])
@legacy({"pmid": 0})
@takes(PMID)
def pm_query():
    pmid = PMID.value()
    registry = services().registry
    host = registry.hosts.get(pmid)
    return jsonify(_host(host.id))


def _host(pmid: int) -> dict:
    registry = services().registry
    host = registry.hosts.get(pmid)
    drain = registry.moves.latest_drain(pmid)
    return presenters.host(host, registry.vms.counts_by_host().get(host.id, 0), drain)


HOST = PathId(name="pmid", label="pmid")
VM = PathId(name="vmid", label="vmid")
REASON = Text(
    name="reason",
    required=False,
    max_length=200,
    description="why the host leaves service (shown in refusals, /pm/query, /status)",
    example="kernel update",
)
TARGET = Int(name="pmid", required=False, description="the target host (absent: the scheduler's)")


@bp.route("/pm/<pmid>/maintenance", methods=["POST"])
@takes(HOST, REASON)
def maintenance_on() -> ResponseReturnValue:
    pmid = HOST.value()
    services().registry.hosts.get(pmid)  # 404 for an unknown pmid first
    services().mover.set_maintenance(pmid, REASON.given() or "", by=principal())
    return jsonify(_host(pmid))


@bp.route("/pm/<pmid>/maintenance", methods=["DELETE"])
@takes(HOST)
def maintenance_off() -> ResponseReturnValue:
    pmid = HOST.value()
    services().mover.clear_maintenance(pmid, by=principal())
    return jsonify(_host(pmid))


@bp.route("/pm/<pmid>/drain", methods=["POST"])
@takes(HOST)
def drain_start() -> ResponseReturnValue:
    pmid = HOST.value()
    services().registry.hosts.get(pmid)
    row = services().mover.drain(pmid, by=principal())
    return jsonify(presenters.drain(row)), 202


@bp.route("/pm/<pmid>/drain", methods=["GET"])
@takes(HOST)
def drain_get() -> ResponseReturnValue:
    pmid = HOST.value()
    services().registry.hosts.get(pmid)
    row = services().registry.moves.latest_drain(pmid)
    if row is None:
        raise NotFound(f"pmid {pmid} was never drained")
    return jsonify(presenters.drain(row))


@bp.route("/pm/<pmid>/drain", methods=["DELETE"])
@takes(HOST)
def drain_cancel() -> ResponseReturnValue:
    pmid = HOST.value()
    row = services().mover.cancel_drain(pmid, by=principal())
    return jsonify(presenters.drain(row))


@bp.route("/vm/<vmid>/migrate", methods=["POST"])
@takes(VM, TARGET)
def migrate() -> ResponseReturnValue:
    vmid = VM.value()
    target = TARGET.value()
    mig = services().mover.migrate_vm(vmid, target, by=principal())
    return jsonify(presenters.migration(mig))


EVACUATE_PMID = PathId(name="pmid", label="pmid")


@bp.route("/pm/reload", methods=["POST"])
def pm_reload():
    """Read the physical machines file again (admins): hosts added, changed, removed."""
    return jsonify(services().reloader.reload(by=principal(required=True)))


@bp.route("/pm/<pmid>/evacuate", methods=["POST"])
@takes(EVACUATE_PMID)
def pm_evacuate():
    """Rebuild a dead host's VMs on other hosts (admins)."""
    by = principal(required=True)
    return jsonify(services().evacuator.evacuate(EVACUATE_PMID.value(), by=by))


@bp.route("/healthz", methods=["GET"])
def healthz():
    """Liveness for load balancers: answers without touching hosts or the registry."""
    return jsonify({"ok": True})
