"""STUB: filled in by its own piece of work."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("status", __name__)
