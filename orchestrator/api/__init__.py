"""The HTTP API: a Flask app factory with one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from ..services import Services
from . import (
    access,
    audit,
    auth,
    dashboard,
    errors,
    events,
    hosts,
    images,
    meta,
    networks,
    origin,
    params,
    power,
    proxies,
    requests,
    reservations,
    schedules,
    session,
    status,
    v3,
    v3_ondemand,
    vms,
    volumes,
)


def create_app(services: Services, listen: tuple[str, int | None] | None = None) -> Flask:
    """The fabric's WSGI app over ``services``. ``listen``: the address and port the
    server listens on (the names it answers to; ``origin.listening`` can tell it
    later), None when the app does not know (then any port of its default names)."""
    app = Flask("orchestrator")
    app.config["SERVICES"] = services
    params.bound(app)  # bodies of at most 1 MB; JSON nested at most 32 deep
    app.json.sort_keys = False  # keep the contract's key order
    errors.install(app)
    v3.install(app)  # vmpooler's error shapes under /api/v3
    audit.install(app)  # first: its after-request hook runs last, on the final answer
    server = services.config.server
    origin.install(app, server.names, listen)  # before every other check
    session.install(app, services)
    if server.trusted_proxies:
        app.wsgi_app = proxies.TrustedProxies(app.wsgi_app, server.proxy_networks)
    for bp in (
        vms.bp,
        power.bp,
        hosts.bp,
        networks.bp,
        images.bp,
        reservations.bp,
        requests.bp,
        volumes.bp,
        auth.bp,
        access.bp,
        status.bp,
        schedules.bp,
        meta.bp,
        events.bp,
        dashboard.bp,
        v3_ondemand.bp,
        v3.bp,  # vmpooler's API v3 under /api/v3
    ):
        app.register_blueprint(bp)
    audit.install_actor(app)  # after the token rule: its actor is the checked user
    return app
