"""Signing in and out, the session's CSRF token, and who is signed in.

With authentication on, ``/ui/login`` trades a user and password for a token
kept in the ``fabric_token`` cookie (HttpOnly, SameSite=Strict); the API's own
token rule (orchestrator/api/auth.py) then lets the dashboard's requests in.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from ...errors import FabricError
from ..context import TOKEN_COOKIE
from ..session import cookie_secure
from .blueprint import auth, auth_on, bp, no_store

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"


def current_user() -> str | None:
    """The signed-in user, or None (auth off: "" means anyone)."""
    if not auth_on():
        return ""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        return None
    try:
        user = auth().check(token)
    except FabricError:  # refused: not signed in
        return None
    return str(user) if user else None


# -- CSRF --------------------------------------------------------------------


def csrf_token() -> str:
    tok = session.get(CSRF_FIELD)
    if not isinstance(tok, str) or len(tok) < 32:
        tok = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = tok
    return tok


def csrf_ok() -> bool:
    want = session.get(CSRF_FIELD)
    got = request.form.get(CSRF_FIELD, "")
    return isinstance(want, str) and bool(want) and hmac.compare_digest(want, got)


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


@bp.after_app_request
def _to_login(resp: Response) -> Response:
    """The API's token rule answers a dashboard page with JSON 401/403 (no or a bad
    ``fabric_token`` cookie, with ``open_reads`` off or on a form post): a person gets
    the login page instead, with the reason."""
    path = request.path
    on_page = path == "/" or (path.startswith("/ui/") and not path.startswith("/ui/static/"))
    if (
        not on_page
        or path == "/ui/login"
        or resp.status_code not in (401, 403)
        or not resp.is_json
        or not auth_on()
    ):
        return resp
    body = resp.get_json(silent=True) or {}
    reason = body.get("error") if isinstance(body, dict) else None
    flash(f"Sign in first ({reason})." if reason else "Sign in first.", "error")
    return redirect(url_for("dashboard.login"))


def refusal_page(message: str, status: int) -> Response:
    html = render_template("dashboard/message.html", auth_on=auth_on(), user=None, message=message)
    return no_store(current_app.make_response((html, status)))


def guard() -> Response | None:
    """For a form post: the CSRF token must match and, with auth on, a user be signed in."""
    if not csrf_ok():
        return refusal_page(
            "This form has expired or did not come from this dashboard "
            "(missing or wrong CSRF token). Reload the page and try again.",
            400,
        )
    if current_user() is None:
        flash("Sign in first.", "error")
        return redirect(url_for("dashboard.login"))
    return None


# -- login and logout --------------------------------------------------------------


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if not auth_on():
        return redirect(url_for("dashboard.overview"))
    status = 200
    if request.method == "POST":
        if not csrf_ok():
            flash("The login form expired; try again.", "error")
            return redirect(url_for("dashboard.login"))
        user = request.form.get("user", "").strip()
        password = request.form.get("password", "")
        if not user or not password:
            flash("Enter a user name and a password.", "error")
            status = 400
        else:
            try:
                token = auth().login(user, password, request.remote_addr)
            except FabricError as e:
                flash(e.message, "error")
                status = e.status
            except Exception:  # noqa: BLE001 - a page never shows a traceback
                log.exception("dashboard login failed")
                flash("Internal error; the operator's log has details.", "error")
                status = 500
            else:
                resp = redirect(url_for("dashboard.overview"))
                resp.set_cookie(
                    TOKEN_COOKIE,
                    token,
                    httponly=True,
                    samesite="Strict",
                    secure=cookie_secure(),
                    path="/",
                )
                session[CSRF_FIELD] = secrets.token_urlsafe(32)  # a new session, a new token
                flash(f"Signed in as {user}.", "ok")
                return resp
    resp = current_app.make_response(
        (render_template("dashboard/login.html", auth_on=True, user=None), status)
    )
    return no_store(resp)


@bp.route("/ui/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    if not csrf_ok():
        return refusal_page("This form has expired; reload the page and try again.", 400)
    token = request.cookies.get(TOKEN_COOKIE)
    if token and auth_on():
        try:
            auth().revoke(token)
        except Exception:  # noqa: BLE001 - signing out works even if the token is already gone
            log.info("revoking the dashboard token failed", exc_info=True)
    resp = redirect(url_for("dashboard.login") if auth_on() else url_for("dashboard.overview"))
    resp.delete_cookie(
        TOKEN_COOKIE, path="/", httponly=True, samesite="Strict", secure=cookie_secure()
    )
    session.pop(CSRF_FIELD, None)
    flash("Signed out.", "ok")
    return resp
