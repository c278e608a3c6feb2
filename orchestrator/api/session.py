"""The signed session cookie (the dashboard's CSRF token and flash messages) and the
Secure flag of every cookie the fabric sets.

- The session's secret key is ``server.secret_key``, or else one made once and
  kept in the registry's ``meta`` table (``session_secret``): every server on the
  same registry, and a restarted one, signs and checks sessions alike, so a CSRF
  token stays good across them. The session holds no secret of its own: it is
  signed, not encrypted, and anyone holding the cookie can read it.
- ``server.secure_cookies``: ``auto`` (the default) marks cookies Secure when the
  request came over HTTPS (behind a trusted proxy, as its X-Forwarded-Proto says);
  ``true`` always (a server behind a TLS proxy it does not trust for that), and
  ``false`` never. It applies to the session cookie and the ``fabric_token`` cookie.
"""

from __future__ import annotations

from flask import Flask, current_app, request
from flask.sessions import SecureCookieSessionInterface

from ..config.server import SecureCookies
from ..services import Services

SECRET_META_KEY = "session_secret"  # noqa: S105 - the meta table's key, not a secret
EXTENSION = "fabric.secure_cookies"


def cookie_secure() -> bool:
    """Whether a cookie set in answer to this request is marked Secure."""
    mode: SecureCookies = current_app.extensions.get(EXTENSION, "auto")
    return mode if isinstance(mode, bool) else request.is_secure


class FabricSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure as ``server.secure_cookies`` says."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return cookie_secure()


def install(app: Flask, services: Services) -> None:
    settings = services.config.server
    app.secret_key = settings.secret_key or services.registry.meta.shared_secret(SECRET_META_KEY)
    app.extensions[EXTENSION] = settings.secure_cookies
    app.config["SESSION_COOKIE_SECURE"] = settings.secure_cookies is True
    app.session_interface = FabricSessionInterface()
