"""Networks: ``GET /networks``, each host's networks and the addresses in use on them."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from . import presenters
from .context import services
from .params import PMID, takes

bp = Blueprint("networks", __name__)

HOST = PMID.optional()


@bp.route("/networks", methods=["GET"])
@takes(HOST)
def networks() -> ResponseReturnValue:
    """One entry per host and network: the mode the host gives its VMs
    (``vms_use_it``), each libvirt network discovered on it, and any other network its
    VMs are still on; each with its kind, bridge or libvirt network, subnet (the
    configuration's, else libvirt's), gateway, plan and the addresses of its VMs.
    ``pmid``: that host only (404 if unknown)."""
    svc = services()
    registry = svc.registry
    pmid = HOST.value()
    hosts = [registry.hosts.get(pmid)] if pmid is not None else registry.hosts.list()
    planned = {
        vm_id: address
        for given in registry.addresses.in_use().values()
        for address, vm_id in given.items()
    }
    vms = registry.vms.list(host_id=pmid)
    out = []
    for h in hosts:
        on_host = [vm for vm in vms if vm.host_id == h.id]
        out += presenters.host_networks(h, on_host, svc.config.networks, planned)
    return jsonify({"networks": out})
