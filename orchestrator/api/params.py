"""Request parameters: query string, form or JSON body, validated with clear 400s."""

from __future__ import annotations

import re
from typing import Any

from flask import request

from ..errors import BadRequest

MAX_ID = 2**53  # ids beyond this are not ours (and JSON clients lose precision)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IP = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_INT = re.compile(r"[0-9]{1,20}")


def _body() -> dict[str, Any]:
    if request.is_json:
        data = request.get_json(silent=True)
        if data is None and request.content_length:
            raise BadRequest("the request body is not valid JSON")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object")
        return data
    return {}


def raw(name: str) -> Any:
    """A parameter from the JSON body, the form, or the query string (in that order)."""
    body = _body()
    if name in body:
        return body[name]
    if name in request.form:
        return request.form[name]
    return request.args.get(name)


def positive_int(name: str, *, required: bool = True, maximum: int = MAX_ID) -> int | None:
    value = raw(name)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be a positive integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        shown = value if not isinstance(value, str) else value[:40]
        raise BadRequest(f"{name} must be a positive integer, got {shown!r}")
    if number < 1:
        raise BadRequest(f"{name} must be a positive integer, got {number}")
    if number > maximum:
        raise BadRequest(f"{name} is too large (at most {maximum})")
    return number


def vm_name(name: str = "name", *, required: bool = True) -> str | None:
    value = raw(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise BadRequest(
            f"{name} must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def flag(name: str) -> bool:
    """A yes/no parameter: 1/true/yes or 0/false/no (absent: no)."""
    value = raw(name)
    if value is None or value == "" or value is False:
        return False
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name} must be 1 or 0, got {text[:20]!r}")
