"""Block storage API (original, phase 2)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..errors import FabricError, NotFound
from ..volumes import MAX_SIZE_GB, Volumes
from . import presenters
from .context import principal, services
from .errors import error_response, legacy
from .params import VMID, VOLUMEID, Int, Name, takes

bp = Blueprint("volumes", __name__)

NAME = Name(name="name")
SIZE = Int(name="size", maximum=MAX_SIZE_GB, description="GB")


def volumes() -> Volumes:
    return services().volumes


@bp.route("/volume/create", methods=["GET", "POST"])
@legacy({"volumeid": 0})
@takes(NAME, SIZE)
def create() -> ResponseReturnValue:
    name = NAME.value()
    size = SIZE.value()
    vol = volumes().create(name, size, by=principal())
    return jsonify({"volumeid": vol.id})


@bp.route("/volume/query", methods=["GET"])
@takes(VOLUMEID)
def query() -> ResponseReturnValue:
    try:
        vol_id = VOLUMEID.value()
        return jsonify(presenters.volume(services().registry.volumes.get(vol_id)))
    except NotFound as e:
        return error_response(404, {"error": e.message})
    except FabricError as e:
        return error_response(e.status, {"error": e.message})


@bp.route("/volume/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
@takes(VOLUMEID)
def destroy() -> ResponseReturnValue:
    volumes().destroy(VOLUMEID.value(), by=principal())
    return jsonify({"status": 1})


@bp.route("/volume/attach", methods=["GET", "POST"])
@legacy({"status": 0})
@takes(VMID, VOLUMEID)
def attach() -> ResponseReturnValue:
    vm_id = VMID.value()
    vol_id = VOLUMEID.value()
    volumes().attach(vm_id, vol_id, by=principal())
    return jsonify({"status": 1})


@bp.route("/volume/detach", methods=["GET", "POST"])
@legacy({"status": 0})
@takes(VOLUMEID)
def detach() -> ResponseReturnValue:
    volumes().detach(VOLUMEID.value(), by=principal())
    return jsonify({"status": 1})


@bp.route("/volume/list", methods=["GET"])
def volume_list() -> ResponseReturnValue:
    return jsonify({"volumeids": [v.id for v in services().registry.volumes.list()]})
