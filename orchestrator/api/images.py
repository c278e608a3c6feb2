"""Image API (original)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import presenters
from .context import services

bp = Blueprint("images", __name__)


@bp.route("/image/list", methods=["GET"])
def image_list():
    rows = services().registry.inventory.images()
    return jsonify({"images": [presenters.image(r) for r in rows]})
