"""Block storage API (original, phase 2)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from ..errors import BadRequest, FabricError, NotFound
from ..volumes import MAX_SIZE_GB, Volumes
from . import params, presenters
from .errors import error_response, legacy

bp = Blueprint("volumes", __name__)


def volumes() -> Volumes:
    return current_app.config["VOLUMES"]


@bp.route("/volume/create", methods=["GET", "POST"])
@legacy({"volumeid": 0})
def create() -> ResponseReturnValue:
    name = params.raw("name")
    if name is None or name == "":
        raise BadRequest("name is required")
    Volumes.check_name(name)
    size = params.positive_int("size", maximum=MAX_SIZE_GB)
    vol = volumes().create(name, size)
    return jsonify({"volumeid": vol.id})


@bp.route("/volume/query", methods=["GET"])
def query() -> ResponseReturnValue:
    try:
        vol_id = params.positive_int("volumeid")
        return jsonify(presenters.volume(volumes().registry.volume(vol_id)))
    except NotFound as e:
        return error_response(404, {"error": e.message})
    except FabricError as e:
        return error_response(e.status, {"error": e.message})


@bp.route("/volume/destroy", methods=["GET", "POST"])
@legacy({"status": 0})
def destroy() -> ResponseReturnValue:
    volumes().destroy(params.positive_int("volumeid"))
    return jsonify({"status": 1})


@bp.route("/volume/attach", methods=["GET", "POST"])
@legacy({"status": 0})
def attach() -> ResponseReturnValue:
    vm_id = params.positive_int("vmid")
    vol_id = params.positive_int("volumeid")
    volumes().attach(vm_id, vol_id)
    return jsonify({"status": 1})


@bp.route("/volume/detach", methods=["GET", "POST"])
@legacy({"status": 0})
def detach() -> ResponseReturnValue:
    volumes().detach(params.positive_int("volumeid"))
    return jsonify({"status": 1})


@bp.route("/volume/list", methods=["GET"])
def volume_list() -> ResponseReturnValue:
    return jsonify({"volumeids": [v.id for v in volumes().registry.volumes()]})
