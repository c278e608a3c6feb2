"""Resource API (original): physical machines."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import presenters
from .errors import legacy
from .params import PMID, takes

bp = Blueprint("hosts", __name__)


def fabric():  # noqa: ANN201
    return current_app.config["FABRIC"]


@bp.route("/pm/list", methods=["GET"])
def pm_list():
    return jsonify({"pmids": [h.id for h in fabric().registry.hosts()]})


@bp.route("/pm/listvms", methods=["GET"])
@legacy({"vmids": 0})
@takes(PMID)
def pm_listvms():
    pmid = PMID.value()
    fabric().registry.host(pmid)  # 404 for an unknown pmid
    return jsonify({"vmids": [vm.id for vm in fabric().registry.vms(host_id=pmid)]})


@bp.route("/pm/query", methods=["GET"])
@legacy({"pmid": 0})
@takes(PMID)
def pm_query():
    pmid = PMID.value()
    registry = fabric().registry
    host = registry.host(pmid)
    return jsonify(presenters.host(host, registry.vm_counts().get(host.id, 0)))


@bp.route("/healthz", methods=["GET"])
def healthz():
    """Liveness for load balancers: answers without touching hosts or the registry."""
    return jsonify({"ok": True})
