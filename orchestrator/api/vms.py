"""VM API (original): create, query, destroy, types."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import tags as vm_tags
from . import presenters
from .context import principal, services
from .errors import legacy
from .params import FORCE, IMAGE_ID, INSTANCE_TYPE, VM_NAME, VMID, JsonObject, Repeated, takes

bp = Blueprint("vms", __name__)


@bp.route("/vm/create", methods=["GET", "POST"])
@legacy({"vmid": 0})
@takes(VM_NAME, INSTANCE_TYPE, IMAGE_ID)
def create():
    name = VM_NAME.value()
    tid = INSTANCE_TYPE.value()
    image_id = IMAGE_ID.value()
    fabric = services().fabric
    with fabric.admitted():
        vm = fabric.create_vm(name, tid, image_id, by=principal())
    return jsonify({"vmid": vm.id})


@bp.route("/vm/query", methods=["GET"])
@legacy({"vmid": 0})
@takes(VMID)
def query():
    vm_id = VMID.value()
    svc = services()
    return jsonify(
        presenters.vm(
            svc.registry.vms.get(vm_id), svc.config.guest.user, svc.config.hostnames.domain
        )
    )


@bp.route("/vm/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
@takes(VMID, FORCE)
def destroy():
    vm_id = VMID.value()
    services().fabric.destroy_vm(vm_id, force=FORCE.value(), by=principal())
    return jsonify({"status": 1})


@bp.route("/vm/types", methods=["GET"])
def types():
    return jsonify(
        {"types": [presenters.vm_type(t) for t in services().registry.inventory.types()]}
    )


TAGS = JsonObject(
    name="tags",
    properties={"type": "string", "maxLength": vm_tags.MAX_VALUE},
    description=f"key: value strings to merge into the VM's tags (keys {vm_tags.KEY_RULE}; "
    f'values at most {vm_tags.MAX_VALUE} characters; "" removes the key)',
)
TAG_FILTER = Repeated(
    name="tag",
    item={"type": "string", "pattern": f"^{vm_tags.KEY_PATTERN}:"},
    description="KEY:VALUE, repeatable: only the VMs that have all of these tags",
)


@bp.route("/vm/tags", methods=["POST"])
@legacy({"status": 0})
@takes(VMID, TAGS)
def set_tags():
    vm_id = VMID.value()
    svc = services()
    tags = vm_tags.set_tags(svc.registry, vm_id, TAGS.value(), by=principal())
    return jsonify({"status": 1, "vmid": vm_id, "tags": tags})


@bp.route("/vm/list", methods=["GET"])
@takes(TAG_FILTER)
def list_vms():
    wanted = vm_tags.parse_filter(TAG_FILTER.value())
    vms = services().registry.vms.list()
    return jsonify({"vmids": [vm.id for vm in vms if vm_tags.matches(vm, wanted)]})
