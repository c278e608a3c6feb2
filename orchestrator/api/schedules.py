"""Scheduled capacity API (seed 004): GET/POST /schedules, GET/DELETE /schedules/<id>."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ..errors import BadRequest
from ..schedule_input import MAX_COUNT, MAX_CRON, MAX_DURATION
from ..schedules import ScheduleService
from . import presenters
from .context import principal, services
from .errors import legacy
from .params import FORCE, IMAGE_ID, INSTANCE_TYPE, Int, Name, PathId, Text, takes

bp = Blueprint("schedules", __name__)

SCHEDULE_ID = PathId(name="id", label="schedule id")

# A new schedule's fields. The service checks them (its messages are the API's);
# these declarations are their shapes for the API's description.
FIELDS = (
    Name(name="name", required=False),
    INSTANCE_TYPE.optional(),
    IMAGE_ID.optional(),
    Name(name="pool", required=False),
    Int(
        name="count",
        maximum=MAX_COUNT,
        description="extra VMs, or extra ready VMs in the pool",
    ),
    Text(
        name="start",
        required=False,
        format="date-time",
        description="a one-off window's start (ISO 8601, UTC)",
    ),
    Text(name="end", required=False, format="date-time", description="a one-off window's end"),
    Text(
        name="cron",
        required=False,
        max_length=MAX_CRON,
        description="a recurring window's start: 5 cron fields, UTC",
        example="0 8 * * 1-5",
    ),
    Int(name="duration_minutes", required=False, maximum=MAX_DURATION),
    # With start and end as times of day: daily, weekly or a cron expression.
    Text(name="repeat", required=False, documented=False),
)
FIELD_NAMES = tuple(p.name for p in FIELDS)


def service() -> ScheduleService:
    return services().schedules


def _fields() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            unknown = sorted(set(body) - set(FIELD_NAMES))
            if unknown:
                raise BadRequest(
                    f"unknown field {unknown[0][:40]!r} (valid: {', '.join(FIELD_NAMES)})"
                )
    return {p.name: p.given() for p in FIELDS}


@bp.route("/schedules", methods=["GET"])
def list_schedules() -> ResponseReturnValue:
    return jsonify({"schedules": [presenters.schedule(s) for s in service().list()]})


@bp.route("/schedules", methods=["POST"])
@legacy({"id": 0})
@takes(*FIELDS)
def create_schedule() -> ResponseReturnValue:
    out = presenters.schedule(service().create(_fields(), by=principal()))
    return jsonify(out), 201


@bp.route("/schedules/<id>", methods=["GET"])
@legacy({"id": 0})
@takes(SCHEDULE_ID)
def get_schedule() -> ResponseReturnValue:
    return jsonify(presenters.schedule(service().get(SCHEDULE_ID.value())))


@bp.route("/schedules/<id>", methods=["DELETE"])
@legacy({"status": 0})
@takes(SCHEDULE_ID, FORCE)
def delete_schedule() -> ResponseReturnValue:
    number = SCHEDULE_ID.value()
    service().delete(number, force=FORCE.value(), by=principal())
    return jsonify({"status": 1})
