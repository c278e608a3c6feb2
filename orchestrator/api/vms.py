"""VM API (original): create, query, destroy, types."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import params
from .errors import legacy

bp = Blueprint("vms", __name__)


def fabric():  # noqa: ANN201 - the app's Fabric
    return current_app.config["FABRIC"]


@bp.route("/vm/create", methods=["GET", "POST"])
@legacy({"vmid": 0})
def create():
    name = params.vm_name()
    tid = params.positive_int("instance_type")
    image_id = params.positive_int("image_id")
    vm = fabric().create_vm(name, tid, image_id)
    return jsonify({"vmid": vm.id})


@bp.route("/vm/query", methods=["GET"])
@legacy({"vmid": 0})
def query():
    vm_id = params.positive_int("vmid")
    return jsonify(fabric().vm_info(vm_id))


@bp.route("/vm/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
def destroy():
    vm_id = params.positive_int("vmid")
    fabric().destroy_vm(vm_id, force=params.flag("force"))
    return jsonify({"status": 1})


@bp.route("/vm/types", methods=["GET"])
def types():
    rows = fabric().registry.types()
    out = []
    for t in rows:
        d = {"tid": t.tid, "cpu": t.cpu, "ram": t.ram, "disk": t.disk}
        if t.name:
            d["name"] = t.name
        out.append(d)
    return jsonify({"types": out})


@bp.route("/vm/list", methods=["GET"])
def list_vms():
    return jsonify({"vmids": [vm.id for vm in fabric().registry.vms()]})
