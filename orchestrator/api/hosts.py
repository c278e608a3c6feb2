"""Resource API (original): physical machines."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import presenters
from .context import services
from .errors import legacy
from .params import PMID, takes

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


@bp.route("/healthz", methods=["GET"])
def healthz():
    """Liveness for load balancers: answers without touching hosts or the registry."""
    return jsonify({"ok": True})
