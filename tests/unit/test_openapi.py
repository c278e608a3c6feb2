"""GET /openapi.json describes every route the app serves, as ../shared/API.md says."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from orchestrator.api import create_app
from orchestrator.api.params import declared
from orchestrator.openapi import build_spec, is_html_path

METHODS = {"get", "post", "put", "patch", "delete"}
# vmpooler's API v3 (orchestrator/api/v3.py and v3_*.py) is vmpooler's, described by
# vmpooler's docs/API-v3.md: it is left out of the fabric's own description on purpose.
V3 = "/api/v3/"


def foreign(path: str) -> bool:
    return path.startswith(V3)


PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def routes(app: Flask) -> dict[str, set[str]]:
    """Every JSON route as an OpenAPI path template, with its methods (HEAD, OPTIONS aside)."""
    out: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = PARAM.sub(r"{\1}", rule.rule)
        if rule.endpoint == "static" or rule.endpoint.endswith(".static") or is_html_path(path):
            continue
        if foreign(path):
            continue
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        out.setdefault(path, set()).update(methods)
    return out


def shape(path: str) -> str:
    """A path template with its parameter names left out: /schedules/<sid> is /schedules/{id}."""
    return re.sub(r"\{[^}]+\}", "{}", path)


@pytest.fixture
def app(rig) -> Flask:
    return create_app(rig.services)


@pytest.fixture
def spec() -> dict:
    return build_spec()


def undescribed(app: Flask, spec: dict) -> list[str]:
    """Routes the description leaves out, or describes with other methods."""
    described = {shape(p): {m for m in item if m in METHODS} for p, item in spec["paths"].items()}
    problems = []
    for path, methods in sorted(routes(app).items()):
        if shape(path) not in described:
            problems.append(f"{path} is not in the OpenAPI description")
        elif described[shape(path)] != methods:
            problems.append(
                f"{path}: the app serves {sorted(methods)}, "
                f"the description says {sorted(described[shape(path)])}"
            )
    return problems


def test_every_registered_route_is_described_with_its_methods(app, spec):
    problems = undescribed(app, spec)
    assert not problems, "\n".join(problems)


def test_a_route_added_without_a_description_is_caught(app, spec):
    app.add_url_rule("/vm/teleport", "teleport", lambda: "", methods=["POST"])
    app.add_url_rule("/vm/query", "query_post", lambda: "", methods=["POST"])
    app.add_url_rule("/ui/new-page", "page", lambda: "")  # HTML: not the API's
    assert undescribed(app, spec) == [
        "/vm/query: the app serves ['get', 'post'], the description says ['get']",
        "/vm/teleport is not in the OpenAPI description",
    ]


def test_every_described_operation_is_served(app, spec):
    served = {shape(p): m for p, m in routes(app).items()}
    stale = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS and method not in served.get(shape(path), set())
    ]
    assert not stale, "described but not served: " + ", ".join(stale)


def test_each_operation_takes_what_its_view_declares(app, spec):
    """The description's parameters and bodies come from the views' @takes, not a hand list."""
    described = {shape(p): item for p, item in spec["paths"].items()}
    checked = 0
    for rule in app.url_map.iter_rules():
        path = PARAM.sub(r"{\1}", rule.rule)
        if rule.endpoint.endswith("static") or is_html_path(path) or foreign(path):
            continue
        wanted = {p.name for p in declared(app.view_functions[rule.endpoint]) if p.documented}
        for method in {m.lower() for m in rule.methods or ()} - {"head", "options"}:
            op = described[shape(path)][method]
            got = {p["name"] for p in op.get("parameters", [])}
            for media in op.get("requestBody", {}).get("content", {}).values():
                fields = set(_schema(spec, media["schema"])["properties"])
                assert not got & fields, (method, path)  # in the query or the body, not both
                assert got | fields == wanted, (method, path)
            if "requestBody" not in op:
                assert got == wanted, (method, path)
            checked += bool(wanted)
    assert checked >= 20


def test_html_pages_and_static_files_are_left_out(spec):
    assert not [p for p in spec["paths"] if is_html_path(p)]
    assert is_html_path("/") and is_html_path("/docs") and is_html_path("/ui/vm/create")
    assert is_html_path("/ui/static/app.js") and not is_html_path("/vm/create")


def _refs(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                found.add(v)
            else:
                _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)
    return found


def test_the_description_is_well_formed(spec):
    assert spec["openapi"].startswith("3.0.")
    assert spec["info"]["title"] and spec["info"]["version"]
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec, set()):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in spec["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            assert method in METHODS, (path, method)
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["tags"] and op["responses"], where
            params = op.get("parameters", [])
            keys = [(p["name"], p["in"]) for p in params]
            assert len(keys) == len(set(keys)), where
            assert {p["name"] for p in params if p["in"] == "path"} == templated, where
            assert all(p["required"] for p in params if p["in"] == "path"), where
            for code, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", code), (where, code)
                assert resp["description"], (where, code)
            if method == "get":
                assert "requestBody" not in op, where
            if "security" in op:
                for req in op["security"]:
                    assert set(req) <= set(spec["components"]["securitySchemes"]), where


def _response(spec, path, method, code):
    resp = spec["paths"][path][method]["responses"][str(code)]
    return resp, resp["content"]["application/json"]["schema"]


def _schema(spec, ref_or_schema):
    ref = ref_or_schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else ref_or_schema


def test_legacy_calls_take_query_parameters_and_posts_take_bodies(spec):
    create = spec["paths"]["/vm/create"]
    params = {p["name"]: p for p in create["get"]["parameters"]}
    assert set(params) == {"name", "instance_type", "image_id"}
    assert all(p["in"] == "query" and p["required"] for p in params.values())
    body = create["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-www-form-urlencoded"}
    assert body["application/json"]["schema"]["required"] == ["name", "instance_type", "image_id"]
    destroy = {p["name"]: p for p in spec["paths"]["/vm/destroy"]["get"]["parameters"]}
    assert destroy["vmid"]["required"] and not destroy["force"]["required"]
    for path in ("/vm/query", "/pm/query", "/pm/listvms", "/volume/query", "/pool/query"):
        assert set(spec["paths"][path]) == {"get"}, path
    for path in ("/vm/checkout", "/vm/checkin", "/vm/extend", "/vms/api/v1.0/checkin"):
        assert set(spec["paths"][path]) == {"post"}, path
    summary = {p["name"] for p in spec["paths"]["/summary"]["get"]["parameters"]}
    assert summary == {"from", "to"}
    force = spec["paths"]["/schedules/{id}"]["delete"]["parameters"]
    assert [(p["name"], p["in"]) for p in force] == [("id", "path"), ("force", "query")]


def test_success_and_failure_shapes_follow_the_contract(spec):
    _, ok = _response(spec, "/vm/create", "get", 200)
    assert ok == {"type": "object", "properties": ok["properties"], "required": ["vmid"]}
    for code in (400, 404, 503):
        resp, schema = _response(spec, "/vm/create", "get", code)
        failure = _schema(spec, schema)
        assert failure["required"] == ["vmid", "error"]
        assert failure["properties"]["vmid"]["enum"] == [0]
    resp, _ = _response(spec, "/vm/create", "get", 503)
    assert "Retry-After" in resp["headers"]
    resp, _ = _response(spec, "/vm/checkout", "post", 503)
    assert "Retry-After" in resp["headers"]
    _, failure = _response(spec, "/vm/destroy", "get", 409)
    assert _schema(spec, failure)["required"] == ["status", "error"]
    _, failure = _response(spec, "/pm/listvms", "get", 404)
    assert _schema(spec, failure)["required"] == ["vmids", "error"]
    # /volume/query's 404 is a bare {"error": ...}, as the original's was.
    _, failure = _response(spec, "/volume/query", "get", 404)
    assert _schema(spec, failure) == spec["components"]["schemas"]["Error"]
    _, seed = _response(spec, "/vms/api/v1.0/checkout", "get", 404)
    assert _schema(spec, seed)["required"] == ["error"]
    _, q = _response(spec, "/vm/query", "get", 200)
    assert _schema(spec, q)["required"] == ["vmid", "name", "instance_type", "pmid"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
    assert "201" in spec["paths"]["/schedules"]["post"]["responses"]


def test_security_schemes(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": schemes["tokenAuth"]["description"],
    }
    assert schemes["basicAuth"] == {"type": "http", "scheme": "basic"}
    assert spec["security"] == [{"tokenAuth": []}, {}]  # off by default
    assert spec["paths"]["/token"]["post"]["security"] == [{"basicAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in spec["paths"]["/vm/create"]["post"]["responses"]
    assert "WWW-Authenticate" in spec["paths"]["/token"]["post"]["responses"]["401"]["headers"]


def test_openapi_json_is_served(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert resp.get_json() == build_spec()


def test_docs_page_renders_the_description_without_a_cdn(client):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    for path in build_spec()["paths"]:
        assert f"<code>{path}</code>" in html, path
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "<script" not in html
