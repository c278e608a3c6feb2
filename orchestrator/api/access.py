"""Who the caller is and what is theirs: ``GET /quota``, and SSH keys (``GET`` and
``POST /keys``, ``DELETE /keys/<id>``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..clock import iso
from ..errors import Forbidden
from ..registry.quotas import Usage
from ..registry.tables_access import SshKeyRow
from .context import principal, services
from .params import Name, PathId, Text, takes

bp = Blueprint("access", __name__)

QUOTA_USER = Text(
    name="user",
    required=False,
    max_length=128,
    description="whose quota (admins only; default: the caller's own)",
)
KEY_NAME = Name(name="name", required=False, description="a label for the key (default: key)")
KEY_TEXT = Text(
    name="key",
    max_length=16384,
    description="an OpenSSH public key: TYPE BASE64 [COMMENT], no options",
)
KEY_ID = PathId(name="id", label="key id")


@bp.route("/quota", methods=["GET"])
@takes(QUOTA_USER)
def quota() -> ResponseReturnValue:
    """The caller's limits and use (an admin may ask for any user's)."""
    svc = services()
    if not svc.auth.enabled:
        return jsonify(
            {
                "user": None,
                "role": "admin",
                "limits": dict.fromkeys(Usage().as_dict()),
                "usage": None,
                "units": {"ram": "MB", "disk": "GB"},
            }
        )
    by = principal(required=True)
    user = QUOTA_USER.value() or by.name
    if user != by.name and not by.admin:
        raise Forbidden(f"{by.label} may see only their own quota")
    return jsonify(svc.quotas.show(user))


def _key(row: SshKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "fingerprint": row.fingerprint,
        "key": row.key,
        "created": iso(row.created_at),
    }


@bp.route("/keys", methods=["GET"])
def list_keys() -> ResponseReturnValue:
    """The caller's registered SSH public keys."""
    keys = services().keys.list(principal(required=True))
    return jsonify({"keys": [_key(k) for k in keys]})


@bp.route("/keys", methods=["POST"])
@takes(KEY_NAME, KEY_TEXT)
def add_key() -> ResponseReturnValue:
    """Register a public key: it is put into every guest the caller checks out."""
    row = services().keys.add(principal(required=True), KEY_NAME.value(), KEY_TEXT.value())
    return jsonify(_key(row)), 201


@bp.route("/keys/<id>", methods=["DELETE"])
@takes(KEY_ID)
def remove_key() -> ResponseReturnValue:
    services().keys.remove(principal(required=True), KEY_ID.value())
    return jsonify({"status": 1})
