"""Scheduled capacity API (seed 004): GET/POST /schedules, GET/DELETE /schedules/<id>."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ..errors import BadRequest
from ..schedules import ScheduleService
from . import params
from .context import services
from .errors import legacy

bp = Blueprint("schedules", __name__)

FIELDS = (
    "name",
    "instance_type",
    "image_id",
    "pool",
    "count",
    "start",
    "end",
    "cron",
    "duration_minutes",
    "repeat",
)


def service() -> ScheduleService:
    return services().schedules


def _schedule_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 16 or int(text) < 1:
        raise BadRequest(f"schedule id must be a positive integer, got {text[:40]!r}")
    return int(text)


def _fields() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            unknown = sorted(set(body) - set(FIELDS))
            if unknown:
                raise BadRequest(f"unknown field {unknown[0][:40]!r} (valid: {', '.join(FIELDS)})")
    return {key: params.raw(key) for key in FIELDS}


@bp.route("/schedules", methods=["GET"])
def list_schedules() -> ResponseReturnValue:
    return jsonify({"schedules": service().list()})


@bp.route("/schedules", methods=["POST"])
@legacy({"id": 0})
def create_schedule() -> ResponseReturnValue:
    out = service().create(_fields())
    return jsonify(out), 201


@bp.route("/schedules/<sid>", methods=["GET"])
@legacy({"id": 0})
def get_schedule(sid: str) -> ResponseReturnValue:
    return jsonify(service().get(_schedule_id(sid)))


@bp.route("/schedules/<sid>", methods=["DELETE"])
@legacy({"status": 0})
def delete_schedule(sid: str) -> ResponseReturnValue:
    number = _schedule_id(sid)
    service().delete(number, force=params.flag("force"))
    return jsonify({"status": 1})
