"""The HTTP API: a Flask app factory with one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from ..services import Services
from . import (
    access,
    auth,
    dashboard,
    errors,
    hosts,
    images,
    meta,
    networks,
    params,
    reservations,
    schedules,
    status,
    vms,
    volumes,
)


def create_app(services: Services) -> Flask:
    app = Flask("orchestrator")
    app.config["SERVICES"] = services
    params.bound(app)  # bodies of at most 1 MB; JSON nested at most 32 deep
    app.json.sort_keys = False  # keep the contract's key order
    errors.install(app)
    for bp in (
        vms.bp,
        hosts.bp,
        networks.bp,
        images.bp,
        reservations.bp,
        volumes.bp,
        auth.bp,
        access.bp,
        status.bp,
        schedules.bp,
        meta.bp,
        dashboard.bp,
    ):
        app.register_blueprint(bp)
    return app
