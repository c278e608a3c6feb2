"""Request parameters, each declared once: how it is read and what it looks like.

A declaration (``Int("vmid")``, ``Name("pool", invalid=...)``, ``Flag("force")``)
holds a parameter's name, whether it is required, its bounds or pattern and its
description. It reads its value from the request with the 400 message a client
sees, and it gives its JSON schema. A view lists the parameters it takes with
``@takes(...)``; orchestrator/openapi.py builds each operation's ``parameters``
and ``requestBody`` from that list, so the code and the description cannot drift.

Where a parameter comes from (``where``):

- ``"request"``: the JSON body, the form, or the query string, in that order (the
  original API's calls take any of them); documented as query parameters of a
  GET or DELETE and as the request body of a POST;
- ``"query"``: the query string only;
- ``"path"``: the URL (``/schedules/<id>``).

A view reads a parameter when (and if) it needs it, so the order of the checks
and of their messages is the view's: ``VMID.value()`` parses it (None when an
optional one is absent), ``VMID.given()`` is the value as sent. Reading a
parameter the view did not declare is a bug and raises RuntimeError.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, TypeVar

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from ..bounded import TooDeep, json_loads
from ..errors import BadRequest
from ..model import NAME_PATTERN, NAME_RULE, is_name

MAX_ID = 2**53  # ids beyond this are not ours (and JSON clients lose precision)
MAX_BODY = 2**20  # bytes in a request body: every call of the API takes a few hundred
IPV4_PATTERN = (
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_IPV4 = re.compile(IPV4_PATTERN)
_INT = re.compile(r"[0-9]{1,20}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

REQUEST, QUERY, PATH = "request", "query", "path"


# -- reading the request ---------------------------------------------------------


class BoundedJSON(DefaultJSONProvider):
    """The app's JSON: every body read as JSON (``request.get_json``, by this module or
    a view) goes through one bounded parse. Nested past ``bounded.MAX_DEPTH`` it is a
    400 that says so, whatever ``silent`` says (Python's recursion limit used to
    make it a 500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json_loads(s)
        except TooDeep as e:
            raise BadRequest(f"the JSON body is {e}") from None


def bound(app: Flask) -> None:
    """Bounded input on ``app``: bodies up to ``MAX_BODY`` bytes (413 past it, before
    the view runs, whether it reads the body or not) and JSON through BoundedJSON."""
    app.json = BoundedJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.before_request
    def _body_size() -> None:
        if (request.content_length or 0) > MAX_BODY:
            raise RequestEntityTooLarge()


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


def _raw(name: str) -> Any:
    """A parameter from the JSON body, the form, or the query string (in that order)."""
    body = _body()
    if name in body:
        return body[name]
    if name in request.form:
        return request.form[name]
    return request.args.get(name)


# -- declarations ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Param:
    """One parameter. Subclasses say how a present value is parsed and its schema."""

    name: str
    required: bool = True
    description: str | None = None
    where: str = REQUEST
    label: str | None = None  # what messages call it (a form's field); its name by default
    missing: str | None = None  # the message when it is required and absent
    documented: bool = True  # False: accepted, but left out of the OpenAPI description

    @property
    def shown(self) -> str:
        return self.label or self.name

    def given(self) -> Any:
        """The value as sent (None when absent)."""
        _check_declared(self)
        if self.where == PATH:
            return (request.view_args or {}).get(self.name)
        if self.where == QUERY:
            return request.args.get(self.name)
        return _raw(self.name)

    def is_absent(self, value: Any) -> bool:
        return value is None or value == ""

    def value(self) -> Any:
        """The parsed value; BadRequest says what is wrong."""
        value = self.given()
        if self.is_absent(value):
            if self.required:
                raise BadRequest(self.missing or f"{self.shown} is required")
            return self.default()
        return self.parse(value)

    def default(self) -> Any:
        return None

    def parse(self, value: Any) -> Any:
        """A present value, checked (the base takes it as sent)."""
        return value

    def type_schema(self) -> dict[str, Any]:
        return {}

    def schema(self) -> dict[str, Any]:
        """Its JSON schema (OpenAPI 3.0 flavour)."""
        out = self.type_schema()
        if self.description:
            out["description"] = self.description
        return out

    def optional(self) -> Param:
        return replace(self, required=False)

    def labelled(self, label: str) -> Param:
        return replace(self, label=label)


@dataclass(frozen=True, kw_only=True)
class Int(Param):
    """A positive integer (an id, a count, a size) up to ``maximum``."""

    maximum: int = MAX_ID

    def is_absent(self, value: Any) -> bool:
        return value is None or (isinstance(value, str) and value.strip() == "")

    def parse(self, value: Any) -> int:
        if isinstance(value, bool):
            raise BadRequest(f"{self.shown} must be a positive integer, got {value!r}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INT.fullmatch(value.strip()):
            number = int(value.strip())
        else:
            shown = value if not isinstance(value, str) else value[:40]
            raise BadRequest(f"{self.shown} must be a positive integer, got {shown!r}")
        if number < 1:
            raise BadRequest(f"{self.shown} must be a positive integer, got {number}")
        if number > self.maximum:
            raise BadRequest(f"{self.shown} is too large (at most {self.maximum})")
        return number

    def type_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.maximum}


@dataclass(frozen=True, kw_only=True)
class PathId(Int):
    """A positive id in the URL (``/schedules/<id>``): ASCII digits, at most 16."""

    where: str = PATH

    def is_absent(self, value: Any) -> bool:
        return value is None

    def parse(self, value: Any) -> int:
        text = str(value)
        if not text.isascii() or not text.isdigit() or len(text) > 16 or int(text) < 1:
            raise BadRequest(f"{self.shown} must be a positive integer, got {text[:40]!r}")
        return int(text)


@dataclass(frozen=True, kw_only=True)
class Name(Param):
    """A name by the one rule (orchestrator.model.NAME): a VM, a volume, a pool."""

    invalid: str | None = None  # the message when malformed; "<name> must be <rule>" by default

    def parse(self, value: Any) -> str:
        if not is_name(value):
            raise BadRequest(self.invalid or f"{self.shown} must be {NAME_RULE}")
        return value

    def type_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{NAME_PATTERN}$", "minLength": 1, "maxLength": 64}


FLAG_DESCRIPTION = "yes/no: 1, true or yes; 0, false or no (absent: no)"


@dataclass(frozen=True, kw_only=True)
class Flag(Param):
    """A yes/no parameter: 1/true/yes or 0/false/no (absent: no)."""

    required: bool = False
    description: str | None = FLAG_DESCRIPTION

    def is_absent(self, value: Any) -> bool:
        return value is None or value == "" or value is False

    def default(self) -> bool:
        return False

    def parse(self, value: Any) -> bool:
        if value is True:
            return True
        text = str(value).strip().lower()
        if text in ("1", "true", "yes"):
            return True
        if text in ("0", "false", "no"):
            return False
        raise BadRequest(f"{self.shown} must be 1 or 0, got {text[:20]!r}")

    def type_schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "enum": [0, 1]},
                {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]},
            ]
        }


@dataclass(frozen=True, kw_only=True)
class Hours(Param):
    """A number of hours, more than 0 and at most ``maximum``."""

    maximum: int

    def parse(self, value: Any) -> float:
        try:
            hours = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            raise BadRequest(
                f"{self.shown} must be a number of hours, got {str(value)[:40]!r}"
            ) from None
        if not (0 < hours <= self.maximum):
            raise BadRequest(f"{self.shown} must be between 0 and {self.maximum} hours")
        return hours

    def type_schema(self) -> dict[str, Any]:
        return {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": self.maximum}


@dataclass(frozen=True, kw_only=True)
class Ipv4(Param):
    """A dotted IPv4 address (anything false, such as "", is absent)."""

    def is_absent(self, value: Any) -> bool:
        return not value

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not _IPV4.fullmatch(value):
            raise BadRequest(f"{self.shown} must be an IPv4 address")
        return value

    def type_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{IPV4_PATTERN}$"}


@dataclass(frozen=True, kw_only=True)
class Text(Param):
    """A string taken as sent: whoever uses it checks it (a token, a time, a cron line)."""

    min_length: int | None = None
    max_length: int | None = None
    format: str | None = None
    example: str | None = None

    def type_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.format:
            out["format"] = self.format
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.example is not None:
            out["example"] = self.example
        return out


@dataclass(frozen=True, kw_only=True)
class Date(Param):
    """A calendar day as YYYY-MM-DD, from the query string."""

    required: bool = False
    where: str = QUERY

    def parse(self, value: Any) -> date:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise BadRequest(f"{self.shown} must be a date as YYYY-MM-DD, got {str(value)[:20]!r}")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"{self.shown} is not a valid date: {value!r}") from None

    def type_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


@dataclass(frozen=True, kw_only=True)
class JsonObject(Param):
    """An object from the JSON body (``{"tags": {"k": "v"}}``); the view checks it."""

    properties: dict[str, Any] | None = None  # the schema of its values

    def type_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.properties is not None:
            out["additionalProperties"] = self.properties
        return out


@dataclass(frozen=True, kw_only=True)
class Repeated(Param):
    """A query parameter that may be given several times (``?tag=a:1&tag=b:2``): its
    values, as a list (empty when absent)."""

    where: str = QUERY
    required: bool = False
    item: dict[str, Any] | None = None

    def given(self) -> Any:
        _check_declared(self)
        return request.args.getlist(self.name)

    def is_absent(self, value: Any) -> bool:
        return not value

    def default(self) -> list[str]:
        return []

    def type_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item or {"type": "string"}}


# -- the parameters several calls share ----------------------------------------------

VMID = Int(name="vmid")
PMID = Int(name="pmid")
VOLUMEID = Int(name="volumeid")
INSTANCE_TYPE = Int(name="instance_type")
IMAGE_ID = Int(name="image_id")
VM_NAME = Name(name="name")
FORCE = Flag(name="force")
SSH_KEY = Text(
    name="ssh_key",
    required=False,
    max_length=16384,
    description="an OpenSSH public key (TYPE BASE64 [COMMENT]) to put into the guest for "
    "this reservation, besides the keys the caller registered (POST /keys)",
)
RESERVATION_ID = Text(
    name="reservation_id",
    min_length=1,
    description="the secret shown once by the check-out (43 URL-safe base64 characters)",
)


# -- views declare what they take ----------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "declared_params"


def takes(*params: Param) -> Callable[[F], F]:
    """Declare the parameters a view takes, in the order they are documented.

    Path parameters are read through their declarations too: the view is not
    passed them as arguments.
    """
    path = {p.name for p in params if p.where == PATH}

    def mark(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            for name in path:
                kwargs.pop(name, None)
            return view(*args, **kwargs)

        setattr(inner, _ATTR, params)
        return inner  # type: ignore[return-value]

    return mark


def declared(view: Callable[..., Any]) -> tuple[Param, ...]:
    """The parameters a view declared with ``@takes`` (none if it did not)."""
    return getattr(view, _ATTR, ())


def _check_declared(param: Param) -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or param not in declared(view):
        raise RuntimeError(
            f"{request.endpoint} reads the parameter {param.name!r} without declaring it "
            "(orchestrator.api.params.takes)"
        )
