"""The HTTP API: a Flask app factory with one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from ..fabric import Fabric
from . import errors, hosts, images, vms


def create_app(fabric: Fabric) -> Flask:
    app = Flask("orchestrator")
    app.config["FABRIC"] = fabric
    app.json.sort_keys = False  # keep the contract's key order
    errors.install(app)
    for bp in (vms.bp, hosts.bp, images.bp):
        app.register_blueprint(bp)
    return app
