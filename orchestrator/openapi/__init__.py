"""The OpenAPI 3.0 description of the HTTP API, as Python data (served at /openapi.json).

It follows ../shared/API.md: legacy GETs take query parameters, calls that change
state also take a form or JSON body, and failures keep the original's zero value
next to an ``error`` message (``{"vmid": 0, "error": "..."}``). A test checks that
every route the app registers (HTML pages and static files aside) is described here.

What each call takes is not written here: it is what its view declares
(``@takes`` in orchestrator/api/params.py), turned into the operation's
``parameters`` and ``requestBody``. Summaries, descriptions and responses are.
"""

from __future__ import annotations

import copy
from typing import Any

from .operations import WHY, WWW_AUTH, json_body, ref
from .paths import paths
from .schemas import SCHEMAS

# Paths the app serves that are not part of the JSON API (HTML pages, static files).
HTML_PATHS = ("/", "/docs")
HTML_PREFIXES = ("/ui/", "/static/")


def is_html_path(path: str) -> bool:
    return path in HTML_PATHS or path.startswith(HTML_PREFIXES)


def build_spec(server_url: str | None = None) -> dict[str, Any]:
    """A fresh copy of the OpenAPI document (callers may change it)."""
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "libvirt fabric",
            "version": "1.0",
            "description": "The fabric's HTTP contract (../shared/API.md): the original "
            "API's URLs and JSON keys kept to the letter, plus reservations, volumes, "
            "tokens, status and schedules. Every answer is JSON, errors too. A call "
            "that changes state is refused (403) when a browser sends it from another "
            "site, or to a Host that is not one of the server's names (server.names); "
            "clients that send no Origin or Sec-Fetch-Site (curl, scripts) are not "
            "affected. Answers that carry a secret are Cache-Control: no-store.",
        },
        "tags": [
            {"name": t}
            for t in (
                "vms",
                "hosts",
                "networks",
                "images",
                "volumes",
                "reservations",
                "auth",
                "status",
                "schedules",
                "meta",
            )
        ],
        "paths": paths(),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "tokenAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "a token from POST /token (when authentication is on)",
                },
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
        },
        # Authentication is off by default; when on, calls carry X-Auth-Token.
        "security": [{"tokenAuth": []}, {}],
    }
    for item in spec["paths"].values():
        for op in item.values():
            if "security" in op:
                continue
            # Under the token scheme: 401 without a valid token, 403 with a wrong one.
            for code in (401, 403):
                headers = WWW_AUTH if code == 401 else None
                op["responses"].setdefault(str(code), json_body(ref("Error"), WHY[code], headers))
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return copy.deepcopy(spec)
