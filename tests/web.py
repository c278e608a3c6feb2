"""Helpers for the web-safety tests (issue 13): users with passwords, and apps with
``server:`` and ``auth:`` settings of a test's choosing."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask

from orchestrator.api import create_app
from orchestrator.auth import AuthService, hash_password
from orchestrator.config import AuthSettings, ServerSettings
from orchestrator.services import Services

PW = "correct horse battery staple"
PW_BOB = "bob's own password"


def user_hashes() -> dict[str, str]:
    return {"alice": hash_password(PW), "bob": hash_password(PW_BOB)}


def with_server(services: Services, **server: object) -> Services:
    """``services`` with ``server:`` settings."""
    cfg = services.config.model_copy(update={"server": ServerSettings.model_validate(server)})
    return replace(services, config=cfg)


def auth_app(rig, hashes: dict[str, str], server: dict | None = None, **auth: object) -> Flask:  # noqa: ANN001
    """An app with authentication on (``auth`` settings) and ``server`` settings."""
    settings = AuthSettings(**{"enabled": True, "users": dict(hashes), **auth})
    services = replace(rig.services, auth=AuthService(rig.registry.auth, settings))
    app = create_app(with_server(services, **(server or {})))
    app.testing = True
    return app
