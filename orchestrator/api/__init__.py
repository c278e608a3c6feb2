"""The HTTP API: a Flask app factory with one blueprint per resource."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..auth import AuthService
from ..fabric import Fabric
from ..reservations import Reservations
from ..volumes import Volumes
from . import (
    auth,
    dashboard,
    errors,
    hosts,
    images,
    meta,
    reservations,
    schedules,
    status,
    vms,
    volumes,
)


def create_app(
    fabric: Fabric,
    reservations_: Reservations | None = None,
    volumes_: Volumes | None = None,
    auth_: AuthService | None = None,
    schedules_: Any = None,
) -> Flask:
    app = Flask("orchestrator")
    app.config["FABRIC"] = fabric
    app.config["RESERVATIONS"] = reservations_
    app.config["VOLUMES"] = volumes_ or Volumes(fabric)
    app.config["AUTH"] = auth_ or AuthService(fabric.registry, fabric.config.auth)
    app.config["SCHEDULES"] = schedules_
    app.json.sort_keys = False  # keep the contract's key order
    errors.install(app)
    for bp in (
        vms.bp,
        hosts.bp,
        images.bp,
        reservations.bp,
        volumes.bp,
        auth.bp,
        status.bp,
        schedules.bp,
        meta.bp,
        dashboard.bp,
    ):
        app.register_blueprint(bp)
    return app
