"""How the OpenAPI document describes one operation: its parameters and body
from the view's declared parameters (``@takes`` in orchestrator/api/params.py),
and its responses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..api.params import PATH, QUERY, REQUEST, Param, declared

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


# -- parameters and bodies (from the views' declarations) --------------------------


def documented(view: Callable[..., Any]) -> list[Param]:
    return [p for p in declared(view) if p.documented]


def parameter(p: Param, where: str) -> dict[str, Any]:
    return {"name": p.name, "in": where, "required": p.required, "schema": p.schema()}


def parameters(view: Callable[..., Any], *, body: bool = False) -> list[dict[str, Any]]:
    """A view's path and query parameters; with ``body``, its request parameters are
    the body's (a POST), not the query string's."""
    out = []
    for p in documented(view):
        if p.where == PATH:
            out.append(parameter(p, "path"))
        elif p.where == QUERY or (p.where == REQUEST and not body):
            out.append(parameter(p, "query"))
    return out


def fields(view: Callable[..., Any]) -> dict[str, Any]:
    """The object a view's request parameters make, as a form or JSON body."""
    fields = [p for p in documented(view) if p.where == REQUEST]
    return obj({p.name: p.schema() for p in fields}, [p.name for p in fields if p.required])


def request_body(view: Callable[..., Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A form or JSON body of a view's request parameters (``schema``: a $ref to them)."""
    made = fields(view)
    return {
        "required": bool(made.get("required")),
        "content": {t: {"schema": schema or made} for t in (JSON, FORM)},
    }


# -- responses -----------------------------------------------------------------

RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}

WWW_AUTH = {
    "WWW-Authenticate": {
        "description": "the scheme to use: Token or Basic",
        "schema": {"type": "string"},
    }
}

WHY = {
    400: "bad or missing parameter",
    401: "no credentials, or they are not valid (when authentication is on)",
    403: "the caller does not hold what the call needs (or a browser sent a state change "
    "from another site, or to a Host that is not one of the server's names)",
    404: "unknown id",
    409: "conflict with the current state",
    429: "too many failed logins of the account, or login attempts on this server; "
    "wait Retry-After seconds",
    502: "a physical machine failed",
    503: "no capacity right now; retry after Retry-After seconds",
    504: "a physical machine timed out",
}


def json_body(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def responses(
    ok: dict[str, Any] | str,
    failure: str = "Error",
    codes: tuple[int, ...] = (400,),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """200 with ``ok``, and each failure code with the ``failure`` body."""
    out: dict[str, Any] = {"200": json_body(ref(ok) if isinstance(ok, str) else ok, "success")}
    for code in codes:
        headers = RETRY_AFTER if code in (429, 503) else WWW_AUTH if code == 401 else None
        out[str(code)] = json_body(ref(failure), WHY[code], headers)
    out.update(extra or {})
    return out


def op(
    summary: str,
    tag: str,
    responses: dict,
    *,
    takes: Callable[..., Any] | None = None,
    body: bool = False,
    body_schema: dict[str, Any] | None = None,
    security: list | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation; ``takes`` is its view, whose declared parameters it documents
    (with ``body``, a POST: its request parameters as a form or JSON body)."""
    out: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        out["description"] = description
    if takes is not None:
        params = parameters(takes, body=body)
        if params:
            out["parameters"] = params
        if body and fields(takes)["properties"]:
            out["requestBody"] = request_body(takes, body_schema)
    if security is not None:
        out["security"] = security
    return out


def legacy(
    summary: str,
    tag: str,
    takes: Callable[..., Any],
    ok: Any,
    failure: str,
    codes: tuple[int, ...],
    *,
    post: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """A legacy call: GET with query parameters; POST with a form or JSON body too."""
    answers = responses(ok, failure, codes)
    item = {"get": op(summary, tag, answers, takes=takes, description=description)}
    if post:
        item["post"] = op(
            summary,
            tag,
            copy.deepcopy(answers),
            takes=takes,
            body=True,
            description=description,
        )
    return item


HOST_FAILURES = (502, 504)
NO_AUTH: list = []  # an operation open to all
BASIC = [{"basicAuth": []}]
BASIC_OR_TOKEN = [{"basicAuth": []}, {"tokenAuth": []}]
