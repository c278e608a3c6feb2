"""The events page (``GET /ui/events``): the audit trail and the fabric's history,
newest first, with the filters of ``GET /events`` and a link to the next older page.
An admin (or anyone with authentication off) sees every event, other users what
``GET /events`` shows them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ...audit import OUTCOMES
from ...errors import FabricError
from ..events import PARAMS, parse_query, run
from .blueprint import auth, auth_on, bp, no_store
from .login import current_user

FILTERS = ("object", "vmid", "pmid", "user", "kind", "op", "outcome", "since", "until", "limit")


def _object(e: dict[str, Any]) -> str:
    obj = e.get("object")
    if not obj:
        return ""
    return f"{obj['type']}:{obj['id']}" if obj.get("id") else obj["type"]


@bp.route("/ui/events", methods=["GET"])
def events_page() -> ResponseReturnValue:
    user = current_user()
    if user is None:
        return redirect(url_for("dashboard.login"))
    by = auth().principal(user or None)
    status = 200
    error = None
    page: dict[str, Any] = {"events": [], "before": None, "after": None}
    given = {p.name: request.args.get(p.name, "") for p in PARAMS}
    try:
        query = parse_query(lambda p: request.args.get(p.name), by)
        page = run(query)
    except FabricError as e:
        error, status = e.message, e.status
    rows = [{**e, "object_label": _object(e)} for e in page["events"]]
    kept = {k: v for k, v in given.items() if k in FILTERS and v}
    older = None
    if page["before"] is not None:
        older = (
            url_for("dashboard.events_page") + "?" + urlencode({**kept, "before": page["before"]})
        )
    ctx = {
        "auth_on": auth_on(),
        "user": user,
        "admin": by.admin,
        "rows": rows,
        "given": given,
        "outcomes": OUTCOMES,
        "error": error,
        "older": older,
        "newest": url_for("dashboard.events_page") + ("?" + urlencode(kept) if kept else ""),
        "paged": bool(given.get("before") or given.get("after")),
    }
    html = render_template("dashboard/events.html", **ctx)
    return no_store(current_app.make_response((html, status)))
