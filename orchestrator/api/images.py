"""Image API (original)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import presenters

bp = Blueprint("images", __name__)


@bp.route("/image/list", methods=["GET"])
def image_list():
    rows = current_app.config["FABRIC"].registry.images()
    return jsonify({"images": [presenters.image(r) for r in rows]})
