"""The API's own description: ``GET /openapi.json`` and a plain HTML page at ``/docs``
(templates/meta/docs.html)."""

from __future__ import annotations

import functools
import json
from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from flask.typing import ResponseReturnValue

from .params import MAX_ID

bp = Blueprint("meta", __name__)


@functools.cache
def spec() -> dict[str, Any]:
    """Built once: the description does not change while the app runs."""
    from ..openapi import build_spec  # it reads the views' declared parameters

    return build_spec()


@bp.route("/openapi.json", methods=["GET"])
def openapi_json() -> ResponseReturnValue:
    return jsonify(spec())


METHODS = ("get", "post", "put", "patch", "delete")


def _schema_text(schema: dict[str, Any], depth: int = 0) -> str:
    """A short human form of a schema: ``{vmid*: integer >= 1}``, a $ref by its name."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            sep = " & " if combo == "allOf" else " | "
            return sep.join(_schema_text(s, depth) for s in schema[combo])
    kind = schema.get("type", "any")
    if kind == "object" and "properties" in schema and depth < 2:
        required = set(schema.get("required", []))
        inner = ", ".join(
            f"{k}{'*' if k in required else ''}: {_schema_text(v, depth + 1)}"
            for k, v in schema["properties"].items()
        )
        return "{" + inner + "}"
    if kind == "array":
        return f"[{_schema_text(schema.get('items', {}), depth + 1)}]"
    text = kind
    if "enum" in schema:
        text = " | ".join(json.dumps(v) for v in schema["enum"])
    if "minimum" in schema:
        text += f" >{'' if schema.get('exclusiveMinimum') else '='} {schema['minimum']}"
    if "maximum" in schema and schema["maximum"] < MAX_ID:
        text += f" <= {schema['maximum']}"
    if "pattern" in schema:
        text += f" {schema['pattern']}"
    if "format" in schema:
        text += f" ({schema['format']})"
    if schema.get("nullable"):
        text += " | null"
    return text


def _describe(path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
    params = [
        {
            "name": p["name"],
            "where": p["in"],
            "required": p.get("required", False),
            "schema": _schema_text(p.get("schema", {})),
        }
        for p in op.get("parameters", [])
    ]
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            params.append(
                {
                    "name": "(body)",
                    "where": media,
                    "required": body.get("required", False),
                    "schema": _schema_text(content.get("schema", {})),
                }
            )
    responses = []
    for code, r in sorted(op.get("responses", {}).items()):
        text = r.get("description", "")
        for content in r.get("content", {}).values():
            text += f" ({_schema_text(content.get('schema', {}))})"
        if "headers" in r:
            text += "; headers: " + ", ".join(r["headers"])
        responses.append((code, text))
    return {
        "path": path,
        "method": method,
        "summary": op.get("summary", ""),
        "description": op.get("description", ""),
        "params": params,
        "responses": responses,
    }


@bp.route("/docs", methods=["GET"])
def docs() -> ResponseReturnValue:
    s = spec()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in s["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append(_describe(path, method, op))
    order = [t["name"] for t in s.get("tags", [])]
    ordered = sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    schemas = [(k, json.dumps(v, indent=2)) for k, v in s["components"]["schemas"].items()]
    html = render_template(
        "meta/docs.html", info=s["info"], version=s["openapi"], groups=ordered, schemas=schemas
    )
    return Response(html, mimetype="text/html")
