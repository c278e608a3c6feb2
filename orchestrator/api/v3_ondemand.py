"""vmpooler's on-demand requests (API v3, docs/API-v3.md "Ondemand VM operations"),
served by the fabric's own requests (orchestrator/ondemand.py): one request, one
registry row, whichever API made it.

    POST   /api/v3/ondemandvm/<pool>+<pool>   201 {"ok": true, "request_id": ...}
    POST   /api/v3/ondemandvm                 {"<pool>": "4", "request_id": opt}
    GET    /api/v3/ondemandvm/<id>            202 pending / 200 ready, failed, deleted
    DELETE /api/v3/ondemandvm/<id>            {"ok": true}

Failures answer ``{"ok": false, "message": ...}`` with vmpooler's codes (403 over
the per-request maximum, 404 an unknown pool with ``bad_templates``, 409 a
request id already used, 400 a bad body). vmpooler's own ``message`` for a failed
request is a bare "failed to provision within the TTL"; here it says which pool
was short and why.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from ..errors import BadRequest, FabricError, NotFound
from ..model import RequestState
from ..ondemand import OnDemand, UnknownPools
from ..registry import RequestRow
from .context import principal, services
from .v3 import hostname_of, v3_body, v3_error

bp = Blueprint("v3_ondemand", __name__, url_prefix="/api/v3")


def _answer(status: int, body: dict[str, Any]) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _failure(e: FabricError) -> Response:
    if isinstance(e, UnknownPools):
        return v3_error(e.status, e.message, bad_templates=e.names)
    return v3_error(e.status, e.message)


def _unknown(request_id: str) -> Response:
    return v3_error(404, f"no request found for request_id {request_id[:64]!r}")


def _service() -> OnDemand:
    svc = services()
    if not svc.pools.configured:
        raise NotFound("no pools are configured")
    return svc.ondemand


def _create(pools: Any, request_id: Any) -> Response:
    try:
        row = _service().create(pools, request_id=request_id, by=principal())
    except FabricError as e:
        return _failure(e)
    return _answer(201, {"ok": True, "request_id": row.request_id})


@bp.route("/ondemandvm/<template>", methods=["POST"])
def ondemand_by_path(template: str) -> ResponseReturnValue:
    """``a+a+b``: two VMs of pool a and one of pool b."""
    names = template.split("+")
    if not all(names) or len(names) > 1000:
        return _failure(BadRequest(f"{template[:80]!r} is not pool+pool+..."))
    return _create(dict(Counter(names)), None)


@bp.route("/ondemandvm", methods=["POST"])
def ondemand_by_body() -> ResponseReturnValue:
    """``{"<pool>": "<count>", ..., "request_id": "<optional>"}``."""
    try:
        body = v3_body()  # at most 10 KB, 5 levels deep
    except FabricError as e:
        return _failure(e)
    if not body:
        return _failure(BadRequest('the body must be a JSON object such as {"pool": "2"}'))
    request_id = body.pop("request_id", None)
    return _create(body, request_id)


def _ready(row: RequestRow, svc: OnDemand) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vm in svc.vms(row):
        out.setdefault(vm.pool or "", {"hostname": []})["hostname"].append(hostname_of(vm))
    return out


@bp.route("/ondemandvm/<request_id>", methods=["GET"])
def ondemand_status(request_id: str) -> ResponseReturnValue:
    try:
        svc = _service()
        row = svc.get(request_id)
    except NotFound:
        return _unknown(request_id)
    except FabricError as e:
        return _failure(e)
    body: dict[str, Any] = {"ok": True, "request_id": row.request_id}
    if row.state == RequestState.PENDING:
        body["ready"] = False
        for pool, p in svc.progress(row).items():
            body[pool] = {"ready": str(p["ready"]), "pending": str(p["pending"])}
        if row.message:
            body["message"] = row.message
        return _answer(202, body)
    if row.state == RequestState.READY:
        body["ready"] = True
        body.update(_ready(row, svc))
        return _answer(200, body)
    body["ready"] = False
    if row.state == RequestState.CANCELLED:
        body["message"] = f"The request has been deleted ({row.message})"
    else:
        body["message"] = row.message or "the request failed"
    return _answer(200, body)


@bp.route("/ondemandvm/<request_id>", methods=["DELETE"])
def ondemand_delete(request_id: str) -> ResponseReturnValue:
    try:
        _service().cancel(request_id, principal())
    except NotFound:
        return _unknown(request_id)
    except FabricError as e:
        return _failure(e)
    return _answer(200, {"ok": True})
