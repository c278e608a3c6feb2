"""Reading the configuration file: YAML to the schema, every problem to one line
``file:line: key: problem``."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from ..bounded import LimitExceeded
from ..errors import ConfigError
from .base import show
from .schema import SHAPES, Config
from .yamlmap import KEY, Loc, compose, dotted, line_of

# Values at or under these keys are never quoted back: they may be passwords or keys.
_SECRETS = (("auth", "users"), ("server", "secret_key"))


def load_config(path: str | Path | None) -> Config:
    """Read and check the YAML config at ``path`` (None: all defaults).

    Raises ConfigError with one line per problem found (all of them).
    """
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror})") from None
    try:
        data, node = compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if not isinstance(e, LimitExceeded):
            problem = f"not valid YAML: {problem}"
        raise ConfigError(f"{p}{line}: {problem}") from None
    return _check(data, str(p), node)


def config_from_dict(data: Any, where: str = "config") -> Config:
    """The configuration from data as YAML would give it; messages begin with ``where``."""
    return _check(data, where, None)


def _check(data: Any, where: str, node: yaml.Node | None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    problems: list[tuple[int | None, str]] = []
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        problems.extend(messages(e, where, node))
    if problems:
        problems.sort(key=lambda p: p[0] or 0)  # stable: the schema's order within a line
        raise ConfigError("\n".join(dict.fromkeys(text for _, text in problems)))
    config._where, config._node = where, node
    return config


def messages(
    err: ValidationError, where: str, node: yaml.Node | None
) -> list[tuple[int | None, str]]:
    """``(line, "file:line: key: problem")`` for each of the schema's errors."""
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        line = line_of(node, loc)
        at = f"{where}:{line}" if line else where
        key = dotted(_keys_as_keys(loc))
        text = _problem(e["type"], loc, e.get("input"), e["msg"])
        out.append((line, f"{at}: {key}: {text}" if key else f"{at}: {text}"))
    return out


def _problem(kind: str, loc: Loc, value: Any, msg: str) -> str:
    if kind == "config":  # the schema's own words
        return msg
    if kind == "extra_forbidden":
        what = "section" if len(loc) == 1 else "setting"
        found = _walk(loc[:-1])
        model = SHAPES.get(found[0], found[0]) if found else None
        if isinstance(model, type) and issubclass(model, BaseModel):
            return f"unknown {what} (valid: {', '.join(model.model_fields)})"
        return f"unknown {what}"
    expected = _expected(loc)
    if kind == "missing":
        return f"missing (must be {expected})" if expected else "missing"
    got = _got(loc, value)
    if expected is None:
        return (msg[:1].lower() + msg[1:]).removeprefix("value error, ") + got
    return f"must be {expected}{got}"


def _got(loc: Loc, value: Any) -> str:
    if any(loc[:2] == secret or loc == secret[:1] for secret in _SECRETS):
        return ""
    if value is None or isinstance(value, bool | int | float | str):
        return f", got {show(value)}"
    return ""


# -- what a key expects, from the schema -----------------------------------------


def _unwrap(ann: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X."""
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            arms = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(arms) == 1:
                ann = arms[0]
                continue
        return ann


def _walk(loc: Loc) -> tuple[Any, FieldInfo | None] | None:
    """The type the schema wants at ``loc`` and its field (None below a list or mapping)."""
    ann: Any = Config
    info: FieldInfo | None = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        ann = _unwrap(ann)
        model = SHAPES.get(ann, ann)
        if isinstance(model, type) and issubclass(model, BaseModel):
            info = model.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            ann = info.annotation
            continue
        info = None
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is list and isinstance(part, int) and args:
            ann = args[0]
        elif origin is dict and len(args) == 2:
            if parts and parts[0] == KEY:
                parts.pop(0)
                ann = args[0]
            else:
                ann = args[1]
        else:
            return None
    return _unwrap(ann), info


def _keys_as_keys(loc: Loc) -> Loc:
    """``loc`` with mapping keys that YAML read as numbers made strings, so that
    ``dotted`` shows ``storage.hosts.5`` rather than a list index ``[5]``."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and not isinstance(part, bool):
            found = _walk(loc[:i])
            if found is None or typing.get_origin(found[0]) is not list:
                part = str(part)
        out.append(part)
    return tuple(out)


def _expected(loc: Loc) -> str | None:
    found = _walk(loc)
    if found is None:
        return None
    ann, info = found
    if info is not None and info.description:
        return info.description
    return _describe(ann, info.metadata if info is not None else [])


def _describe(ann: Any, metadata: list[Any]) -> str | None:
    if typing.get_origin(ann) is typing.Literal:
        values = [str(v) for v in typing.get_args(ann)]
        return " or ".join(values) if len(values) == 2 else f"one of {', '.join(values)}"
    if ann in SHAPES or typing.get_origin(ann) is dict:
        return "a mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a mapping"
    if typing.get_origin(ann) is list:
        return "a list"
    base = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(ann)
    if base is None:
        return None
    bounds = []
    for m in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            limit = getattr(m, attr, None)
            if limit is not None:
                shown = limit if isinstance(limit, int) else f"{limit:g}"
                bounds.append(f"{sign} {shown}")
    return f"{base} {' and '.join(bounds)}" if bounds else base
