"""The dashboard's blueprint, its set-up, and the services its pages read."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask
from werkzeug.wrappers import Response

from ...auth import AuthService
from ...fabric import Fabric
from ...reservations import Reservations
from ...schedules import ScheduleService
from ...volumes import Volumes
from ..context import services

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="../../templates",
    static_folder="../../static",
    static_url_path="/ui/static",
)


@bp.record_once
def _setup(state: Any) -> None:
    """The signed session cookie (CSRF token, flash messages) is SameSite=Lax; its
    secret key is set by the app factory (api/session.py), shared by every server."""
    app: Flask = state.app
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


# -- services ----------------------------------------------------------------


def fabric() -> Fabric:
    return services().fabric


def reservations() -> Reservations | None:
    """None when no pools are configured."""
    svc = services()
    return svc.reservations if svc.pools.configured else None


def volumes() -> Volumes:
    return services().volumes


def auth() -> AuthService:
    return services().auth


def schedules() -> ScheduleService:
    return services().schedules


def auth_on() -> bool:
    return bool(auth().enabled)


def no_store(resp: Response) -> Response:
    # Pages can carry a one-time secret (a reservation id just checked out).
    resp.headers["Cache-Control"] = "no-store"
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    return resp
