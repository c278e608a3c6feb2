"""Resource API (original): physical machines."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import presenters
from .context import principal, services
from .errors import legacy
from .params import PMID, PathId, takes

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
    return jsonify(presenters.host(host, registry.vms.counts_by_host().get(host.id, 0)))


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
