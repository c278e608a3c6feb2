"""One place that turns errors into the contract's JSON (never HTML, never a traceback)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import FabricError

log = logging.getLogger(__name__)


def error_response(status: int, body: dict[str, Any], retry_after: int | None = None) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def legacy(zero: dict[str, Any]) -> Callable:
    """Answer a FabricError with the endpoint's zero value plus an ``error`` message.

    e.g. ``{"vmid": 0, "error": "..."}`` for /vm/create, as the original API did.
    """

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return view(*args, **kwargs)
            except FabricError as e:
                body = {**zero, "error": e.message}
                report = getattr(e, "report", None)
                if report:
                    body["filters"] = report
                return error_response(e.status, body, getattr(e, "retry_after", None))

        return inner

    return wrap


# Another API served under a path prefix (vmpooler's, /api/v3) answers errors in its
# own shape: prefix -> fn(status, message) -> Response.
ErrorShape = Callable[[int, str], Response]


def shape_errors(app: Flask, prefix: str, shape: ErrorShape) -> None:
    """Errors of requests under ``prefix`` (unknown routes, 405, 413, FabricErrors
    a view did not catch, the unexpected) are answered by ``shape``."""
    app.config.setdefault("ERROR_SHAPES", {})[prefix] = shape


def _shape() -> ErrorShape | None:
    shapes: dict[str, ErrorShape] = current_app.config.get("ERROR_SHAPES") or {}
    path = request.path
    for prefix, shape in shapes.items():
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return None


def shaped(status: int, message: str, retry_after: int | None = None) -> Response | None:
    """The error answer of the API the current request is for, if it has its own."""
    shape = _shape()
    if shape is None:
        return None
    resp = shape(status, message)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def install(app: Flask) -> None:
    @app.errorhandler(FabricError)
    def _fabric(e: FabricError) -> Response:
        retry = getattr(e, "retry_after", None)
        own = shaped(e.status, e.message, retry)
        if own is not None:
            return own
        return error_response(e.status, {"error": e.message}, retry)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> Response:
        code = e.code or 500
        if code == 404:
            msg = "no such endpoint; see /vm/types, /pm/list, /image/list"
        elif code == 405:
            msg = "method not allowed for this endpoint"
        elif code == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            msg = "the request body is too large" + (f" (at most {limit} bytes)" if limit else "")
        else:
            msg = e.description or e.name
        own = shaped(code, "no such endpoint" if code == 404 else msg)
        if own is not None:
            return own
        return error_response(code, {"error": msg})

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.exception("unexpected error")
        msg = "internal error; the operator's log has details"
        return shaped(500, msg) or error_response(500, {"error": msg})
