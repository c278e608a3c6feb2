"""The HTTP API: a Flask app factory with one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from ..fabric import Fabric
from ..reservations import Reservations
from ..volumes import Volumes
from . import errors, hosts, images, reservations, vms, volumes


def create_app(
    fabric: Fabric,
    reservations_: Reservations | None = None,
    volumes_: Volumes | None = None,
) -> Flask:
    app = Flask("orchestrator")
    app.config["FABRIC"] = fabric
    app.config["RESERVATIONS"] = reservations_
    app.config["VOLUMES"] = volumes_ or Volumes(fabric)
    app.json.sort_keys = False  # keep the contract's key order
    errors.install(app)
    for bp in (vms.bp, hosts.bp, images.bp, reservations.bp, volumes.bp):
        app.register_blueprint(bp)
    return app
