"""Requests that wait for capacity (orchestrator/ondemand.py): POST /requests,
GET /requests, GET/DELETE /requests/<id>."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ..clock import as_utc, iso, utcnow
from ..errors import BadRequest
from ..hostnames import fqdn
from ..model import RequestState
from ..ondemand import REQUEST_ID_RULE, OnDemand
from ..registry import RequestRow
from . import presenters
from .context import principal, services
from .params import QUERY, Hours, Param, Text, takes

bp = Blueprint("requests", __name__)

MAX_HOURS = 24 * 365


@dataclass(frozen=True, kw_only=True)
class Pools(Param):
    """``{"pool": count, ...}``: the VMs a request asks for (the service checks it:
    its messages are the API's)."""

    def type_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1},
            "example": {"small": 2},
        }


POOLS = Pools(name="pools", description="VMs wanted per pool")
HOURS = Hours(
    name="hours",
    required=False,
    maximum=MAX_HOURS,
    description="the VMs' lifetime once the request is ready (the pool's when absent)",
)
NEW_ID = Text(
    name="request_id",
    required=False,
    max_length=64,
    description=f"the request's id ({REQUEST_ID_RULE}); made up when absent",
)
REQUEST_ID = Text(name="id", where="path", description="the request's id", max_length=64)
STATE = Text(
    name="state",
    required=False,
    where=QUERY,
    description="only requests in this state: pending, ready, failed or cancelled",
)


def service() -> OnDemand:
    svc = services()
    if not svc.pools.configured:
        raise BadRequest("on-demand requests are not enabled: no pools are configured")
    return svc.ondemand


def describe(row: RequestRow, svc: OnDemand | None = None) -> dict[str, Any]:
    """A request as the API shows it; a ready one with its VMs."""
    svc = svc or service()
    out: dict[str, Any] = {
        "request_id": row.request_id,
        "number": row.id,
        "state": row.state,
        "requested_by": row.requested_by,
        "pools": row.pools,
        "progress": svc.progress(row),
        "hours": row.hours,
        "created_at": iso(row.created_at),
        "deadline": iso(row.deadline),
        "finished_at": iso(row.finished_at) if row.finished_at else None,
        "age": int((utcnow() - as_utc(row.created_at)).total_seconds()),
        "message": row.message,
    }
    if row.state == RequestState.READY:
        cfg = services().config
        vms = []
        for vm in svc.vms(row):
            d: dict[str, Any] = {
                "vmid": vm.id,
                "pool": vm.pool,
                "hostname": vm.hostname,
                "fqdn": fqdn(vm.hostname, cfg.hostnames.domain),
                "ip": vm.ip,
                "expires_at": iso(vm.expires_at) if vm.expires_at else None,
            }
            reach = presenters.ssh(vm, cfg.guest.user)
            if reach:
                d["ssh"] = reach
            vms.append(d)
        out["vms"] = vms
    return out


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise BadRequest('a JSON object is required, e.g. {"pools": {"small": 2}}')
    unknown = sorted(set(body) - {"pools", "hours", "request_id"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:40]!r} (valid: pools, hours, request_id)")
    return body


@bp.route("/requests", methods=["POST"])
@takes(POOLS, HOURS, NEW_ID)
def create_request() -> ResponseReturnValue:
    body = _body()
    svc = service()
    row = svc.create(
        body.get("pools"), hours=HOURS.value(), request_id=NEW_ID.value(), by=principal()
    )
    return jsonify(describe(row, svc)), 201


@bp.route("/requests", methods=["GET"])
@takes(STATE)
def list_requests() -> ResponseReturnValue:
    state = STATE.value()
    if state is not None and state not in set(RequestState):
        raise BadRequest("state must be pending, ready, failed or cancelled")
    svc = service()
    rows = svc.list(principal(), None if state is None else [state])
    return jsonify({"requests": [describe(r, svc) for r in rows]})


@bp.route("/requests/<id>", methods=["GET"])
@takes(REQUEST_ID)
def get_request() -> ResponseReturnValue:
    svc = service()
    row = svc.get(REQUEST_ID.value())
    return jsonify(describe(row, svc)), 202 if row.state == RequestState.PENDING else 200


@bp.route("/requests/<id>", methods=["DELETE"])
@takes(REQUEST_ID)
def cancel_request() -> ResponseReturnValue:
    svc = service()
    row = svc.cancel(REQUEST_ID.value(), principal())
    return jsonify(describe(row, svc))
