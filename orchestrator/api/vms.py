"""VM API (original): create, query, destroy, types."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import params, presenters
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
    fab = fabric()
    return jsonify(presenters.vm(fab.registry.vm(vm_id), fab.config.guest.user))


@bp.route("/vm/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
def destroy():
    vm_id = params.positive_int("vmid")
    fabric().destroy_vm(vm_id, force=params.flag("force"))
    return jsonify({"status": 1})


@bp.route("/vm/types", methods=["GET"])
def types():
    return jsonify({"types": [presenters.vm_type(t) for t in fabric().registry.types()]})


@bp.route("/vm/list", methods=["GET"])
def list_vms():
    return jsonify({"vmids": [vm.id for vm in fabric().registry.vms()]})
