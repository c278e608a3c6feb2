"""VM API (original): create, query, destroy, types."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import params
from .context import services
from .errors import legacy
from .presenters import vm_json

bp = Blueprint("vms", __name__)


@bp.route("/vm/create", methods=["GET", "POST"])
@legacy({"vmid": 0})
def create():
    name = params.vm_name()
    tid = params.positive_int("instance_type")
    image_id = params.positive_int("image_id")
    vm = services().fabric.create_vm(name, tid, image_id)
    return jsonify({"vmid": vm.id})


@bp.route("/vm/query", methods=["GET"])
@legacy({"vmid": 0})
def query():
    vm_id = params.positive_int("vmid")
    svc = services()
    return jsonify(vm_json(svc.registry.vms.get(vm_id), svc.config.guest.user))


@bp.route("/vm/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
def destroy():
    vm_id = params.positive_int("vmid")
    services().fabric.destroy_vm(vm_id, force=params.flag("force"))
    return jsonify({"status": 1})


@bp.route("/vm/types", methods=["GET"])
def types():
    rows = services().registry.inventory.types()
    out = []
    for t in rows:
        d = {"tid": t.tid, "cpu": t.cpu, "ram": t.ram, "disk": t.disk}
        if t.name:
            d["name"] = t.name
        out.append(d)
    return jsonify({"types": out})


@bp.route("/vm/list", methods=["GET"])
def list_vms():
    return jsonify({"vmids": [vm.id for vm in services().registry.vms.list()]})
