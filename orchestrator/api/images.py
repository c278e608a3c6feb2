"""Image API (original)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("images", __name__)


@bp.route("/image/list", methods=["GET"])
def image_list():
    rows = current_app.config["FABRIC"].registry.images()
    return jsonify({"images": [{"id": r.id, "name": r.name} for r in rows]})
