"""Reservation API: check-out, check-in, extend; pools; the first seed's endpoints."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from ..errors import BadRequest, FabricError, Unavailable
from ..reservations import Reservations
from . import params, presenters
from .errors import error_response, legacy

bp = Blueprint("reservations", __name__)

MAX_COUNT = 100


def reservations() -> Reservations:
    res = current_app.config.get("RESERVATIONS")
    if res is None:
        raise BadRequest("check-out is not enabled: no pools are configured")
    return res


def _hours(name: str) -> float | None:
    value = params.raw(name)
    if value is None or value == "":
        return None
    try:
        hours = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number of hours, got {str(value)[:40]!r}") from None
    if not (0 < hours <= 24 * 365):
        raise BadRequest(f"{name} must be between 0 and 8760 hours")
    return hours


def _guest_user() -> str:
    return current_app.config["FABRIC"].config.guest.user


def _pool_name() -> str | None:
    value = params.raw("pool")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not params.NAME.fullmatch(value):
        raise BadRequest("pool must be a pool name")
    return value


def _unavailable(e: Unavailable, zero: dict) -> ResponseReturnValue:
    body = {**zero, "error": e.message}
    seen = getattr(e, "ready_seen", None)
    if seen:
        body["pools"] = {name: {"ready": n} for name, n in seen.items()}
    return error_response(503, body, e.retry_after)


@bp.route("/vm/checkout", methods=["POST"])
@legacy({"vmid": 0})
def checkout() -> ResponseReturnValue:
    count = params.positive_int("count", required=False, maximum=MAX_COUNT) or 1
    try:
        got = reservations().checkout(
            pool=_pool_name(),
            tid=params.positive_int("instance_type", required=False),
            image_id=params.positive_int("image_id", required=False),
            count=count,
            hours=_hours("lifetime"),
        )
    except Unavailable as e:
        return _unavailable(e, {"vmid": 0})
    described = [presenters.checkout(c, _guest_user()) for c in got]
    if count == 1:
        return jsonify(described[0])
    return jsonify({"vms": described})


@bp.route("/vm/checkin", methods=["POST"])
@legacy({"status": 0})
def checkin() -> ResponseReturnValue:
    vm_id = params.positive_int("vmid", required=False)
    ip = params.raw("ip")
    if vm_id is None and not ip:
        raise BadRequest("vmid (or ip) is required")
    if vm_id is None and (not isinstance(ip, str) or not params.IP.fullmatch(ip)):
        raise BadRequest("ip must be an IPv4 address")
    token = params.raw("reservation_id")
    if token is None or token == "":
        raise BadRequest("reservation_id is required")
    reservations().checkin(vm_id=vm_id, ip=ip if vm_id is None else None, token=token)
    return jsonify({"status": 1})


@bp.route("/vm/extend", methods=["POST"])
@legacy({"status": 0})
def extend() -> ResponseReturnValue:
    vm_id = params.positive_int("vmid")
    token = params.raw("reservation_id")
    if token is None or token == "":
        raise BadRequest("reservation_id is required")
    hours = _hours("hours")
    if hours is None:
        raise BadRequest("hours is required")
    expires = reservations().extend(vm_id, token, hours)
    from ..fabric import iso

    return jsonify({"status": 1, "expires_at": iso(expires)})


@bp.route("/pool/list", methods=["GET"])
def pool_list() -> ResponseReturnValue:
    res = current_app.config.get("RESERVATIONS")
    if res is None:
        return jsonify({"pools": []})
    return jsonify({"pools": list(res.pools.status().values())})


@bp.route("/pool/query", methods=["GET"])
@legacy({"pool": 0})
def pool_query() -> ResponseReturnValue:
    name = _pool_name()
    if name is None:
        raise BadRequest("pool is required")
    pools = reservations().pools
    pools.pool(name)  # 404 for an unknown pool
    out = pools.status()[name]
    out["recent_failures"] = pools.recent_failures(name)
    return jsonify(out)


# -- the first reservation seed's endpoints (seeds/000) ---------------------

SEED_EMPTY = "No VM is currently available for checkout Please retry after some time"


@bp.route("/vms/api/v1.0/checkout", methods=["GET"])
def seed_checkout() -> ResponseReturnValue:
    try:
        got = reservations().checkout()
    except Unavailable as e:
        return error_response(404, {"error": SEED_EMPTY}, e.retry_after)
    except FabricError as e:
        return error_response(e.status, {"error": e.message})
    return jsonify(presenters.seed_checkout(got[0], _guest_user()))


@bp.route("/vms/api/v1.0/checkin", methods=["POST"])
def seed_checkin() -> ResponseReturnValue:
    try:
        ip = params.raw("IP")
        token = params.raw("ReservationID")
        if not isinstance(ip, str) or not params.IP.fullmatch(ip):
            raise BadRequest("IP must be an IPv4 address")
        if token is None or token == "":
            raise BadRequest("ReservationID is required")
        reservations().checkin(vm_id=None, ip=ip, token=token)
    except FabricError as e:
        return error_response(e.status, {"error": e.message})
    return jsonify({"status": "VM successfully released back to free pool"})
