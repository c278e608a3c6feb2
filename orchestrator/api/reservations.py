"""Reservation API: check-out, check-in, extend; pools; the first seed's endpoints."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from ..clock import iso
from ..errors import BadRequest, FabricError, Unavailable
from ..reservations import Reservations
from . import presenters
from .context import principal, services
from .errors import error_response, legacy
from .params import (
    IMAGE_ID,
    INSTANCE_TYPE,
    RESERVATION_ID,
    SSH_KEY,
    VMID,
    Hours,
    Int,
    Ipv4,
    Name,
    takes,
)

bp = Blueprint("reservations", __name__)

MAX_COUNT = 100  # VMs one check-out may take (all or nothing)
MAX_HOURS = 24 * 365  # the longest lifetime, or extension, asked for at once

POOL = Name(name="pool", invalid="pool must be a pool name")
COUNT = Int(name="count", required=False, maximum=MAX_COUNT)
LIFETIME = Hours(
    name="lifetime",
    required=False,
    maximum=MAX_HOURS,
    description="hours (the pool's lifetime when absent)",
)
HOURS = Hours(name="hours", maximum=MAX_HOURS, description="hours to add")
IP = Ipv4(name="ip", required=False)
# a check-out names a pool, or a type and an image, or nothing (any pool)
WANTED_POOL = POOL.optional()
WANTED_TYPE = INSTANCE_TYPE.optional()
WANTED_IMAGE = IMAGE_ID.optional()
# a check-in names the VM by its id, or else by its address
CHECKIN_VMID = VMID.optional()
# the holder (with their own token) and admins may leave the secret out
CHECKIN_RESERVATION_ID = replace(
    RESERVATION_ID,
    required=False,
    description="the secret shown once by the check-out; may be left out by the VM's "
    "holder (authenticated with their own token) and by an admin",
)
# the first seed's spelling
SEED_IP = Ipv4(name="IP", missing="IP must be an IPv4 address")
SEED_RESERVATION_ID = replace(RESERVATION_ID, name="ReservationID")


def reservations() -> Reservations:
    svc = services()
    if not svc.pools.configured:
        raise BadRequest("check-out is not enabled: no pools are configured")
    return svc.reservations


def _guest_user() -> str:
    return services().config.guest.user


def _secret(resp: Response) -> Response:
    """An answer that carries a reservation id: no cache (nor proxy) may keep it."""
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _unavailable(e: Unavailable, zero: dict) -> ResponseReturnValue:
    body = {**zero, "error": e.message}
    seen = getattr(e, "ready_seen", None)
    if seen:
        body["pools"] = {name: {"ready": n} for name, n in seen.items()}
    return error_response(503, body, e.retry_after)


@bp.route("/vm/checkout", methods=["POST"])
@legacy({"vmid": 0})
@takes(WANTED_POOL, WANTED_TYPE, WANTED_IMAGE, COUNT, LIFETIME, SSH_KEY)
def checkout() -> ResponseReturnValue:
    count = COUNT.value() or 1
    try:
        got = reservations().checkout(
            pool=WANTED_POOL.value(),
            tid=WANTED_TYPE.value(),
            image_id=WANTED_IMAGE.value(),
            count=count,
            hours=LIFETIME.value(),
            by=principal(),
            ssh_key=SSH_KEY.value(),
        )
    except Unavailable as e:
        return _unavailable(e, {"vmid": 0})
    domain = services().config.hostnames.domain
    described = [presenters.checkout(c, _guest_user(), domain) for c in got]
    if count == 1:
        return _secret(jsonify(described[0]))
    return _secret(jsonify({"vms": described}))


@bp.route("/vm/checkin", methods=["POST"])
@legacy({"status": 0})
@takes(CHECKIN_VMID, IP, CHECKIN_RESERVATION_ID)
def checkin() -> ResponseReturnValue:
    vm_id = CHECKIN_VMID.value()
    ip = None
    if vm_id is None:
        ip = IP.value()
        if ip is None:
            raise BadRequest("vmid (or ip) is required")
    token = CHECKIN_RESERVATION_ID.value()
    reservations().checkin(vm_id=vm_id, ip=ip, token=token, by=principal())
    return jsonify({"status": 1})


@bp.route("/vm/extend", methods=["POST"])
@legacy({"status": 0})
@takes(VMID, RESERVATION_ID, HOURS)
def extend() -> ResponseReturnValue:
    vm_id = VMID.value()
    token = RESERVATION_ID.value()
    hours = HOURS.value()
    expires = reservations().extend(vm_id, token, hours, by=principal())
    return jsonify({"status": 1, "expires_at": iso(expires)})


@bp.route("/pool/list", methods=["GET"])
def pool_list() -> ResponseReturnValue:
    return jsonify({"pools": list(services().pools.status().values())})


@bp.route("/pool/query", methods=["GET"])
@legacy({"pool": 0})
@takes(POOL)
def pool_query() -> ResponseReturnValue:
    name = POOL.value()
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
        got = reservations().checkout(by=principal())
    except Unavailable as e:
        return error_response(404, {"error": SEED_EMPTY}, e.retry_after)
    except FabricError as e:
        return error_response(e.status, {"error": e.message})
    return _secret(jsonify(presenters.seed_checkout(got[0], _guest_user())))


@bp.route("/vms/api/v1.0/checkin", methods=["POST"])
@takes(SEED_IP, SEED_RESERVATION_ID)
def seed_checkin() -> ResponseReturnValue:
    try:
        ip = SEED_IP.value()
        token = SEED_RESERVATION_ID.value()
        reservations().checkin(vm_id=None, ip=ip, token=token, by=principal())
    except FabricError as e:
        return error_response(e.status, {"error": e.message})
    return jsonify({"status": "VM successfully released back to free pool"})
