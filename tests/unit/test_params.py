"""Request parameters as declarations: one object parses a parameter and describes it."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify

from orchestrator.api.errors import install
from orchestrator.api.params import (
    FORCE,
    VMID,
    Date,
    Hours,
    Int,
    Ipv4,
    Name,
    PathId,
    Text,
    declared,
    takes,
)

OPTIONAL_COUNT = Int(name="count", required=False, maximum=5)
POOL = Name(name="pool", invalid="pool must be a pool name")
HOURS = Hours(name="hours", maximum=10)
IP = Ipv4(name="ip", missing="ip must be an IPv4 address")
DAY = Date(name="day")
ID = PathId(name="id", label="thing id")


@pytest.fixture
def app() -> Flask:
    app = Flask("params")
    install(app)

    @app.route("/read", methods=["GET", "POST"])
    @takes(VMID, OPTIONAL_COUNT, POOL.optional(), HOURS.optional(), IP.optional(), FORCE, DAY)
    def read():  # noqa: ANN202
        return jsonify(
            vmid=VMID.value(),
            count=OPTIONAL_COUNT.value(),
            pool=POOL.optional().value(),
            hours=HOURS.optional().value(),
            ip=IP.optional().value(),
            force=FORCE.value(),
            day=str(DAY.value()),
        )

    @app.route("/things/<id>", methods=["GET"])
    @takes(ID)
    def thing():  # noqa: ANN202
        return jsonify(id=ID.value())

    @app.route("/undeclared", methods=["GET"])
    @takes(VMID)
    def undeclared():  # noqa: ANN202
        return jsonify(pool=POOL.value())

    app.testing = True
    return app


def test_values_come_from_the_json_body_the_form_or_the_query(app):
    c = app.test_client()
    got = c.get("/read?vmid=7&count=2&pool=p1&hours=1.5&ip=10.0.0.1&force=yes&day=2026-01-02")
    assert got.get_json() == {
        "vmid": 7,
        "count": 2,
        "pool": "p1",
        "hours": 1.5,
        "ip": "10.0.0.1",
        "force": True,
        "day": "2026-01-02",
    }
    got = c.post("/read?vmid=1", json={"vmid": 8, "force": False})
    assert got.get_json()["vmid"] == 8 and got.get_json()["force"] is False
    got = c.post("/read", data={"vmid": "9"})
    assert got.get_json()["vmid"] == 9 and got.get_json()["count"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "vmid is required"),
        ("vmid=0", "vmid must be a positive integer, got 0"),
        ("vmid=x", "vmid must be a positive integer, got 'x'"),
        ("vmid=1&count=6", "count is too large (at most 5)"),
        ("vmid=1&pool=-x", "pool must be a pool name"),
        ("vmid=1&hours=11", "hours must be between 0 and 10 hours"),
        ("vmid=1&hours=soon", "hours must be a number of hours, got 'soon'"),
        ("vmid=1&ip=1.2.3", "ip must be an IPv4 address"),
        ("vmid=1&force=maybe", "force must be 1 or 0, got 'maybe'"),
        ("vmid=1&day=2026-02-30", "day is not a valid date: '2026-02-30'"),
        ("vmid=1&day=tomorrow", "day must be a date as YYYY-MM-DD, got 'tomorrow'"),
    ],
)
def test_a_bad_value_is_a_400_that_says_what_is_wrong(app, query, message):
    r = app.test_client().get(f"/read?{query}")
    assert r.status_code == 400
    assert r.get_json() == {"error": message}


def test_path_parameters_are_read_through_their_declarations(app):
    c = app.test_client()
    assert c.get("/things/12").get_json() == {"id": 12}
    r = c.get("/things/0")
    assert r.status_code == 400
    assert r.get_json() == {"error": "thing id must be a positive integer, got '0'"}


def test_reading_a_parameter_the_view_did_not_declare_is_a_bug(app):
    r = app.test_client().get("/undeclared?vmid=1&pool=p")
    assert r.status_code == 500


def test_a_view_lists_what_it_declared(app):
    assert [p.name for p in declared(app.view_functions["read"])] == [
        "vmid",
        "count",
        "pool",
        "hours",
        "ip",
        "force",
        "day",
    ]
    assert declared(lambda: None) == ()


def test_each_declaration_gives_its_schema():
    assert VMID.schema() == {"type": "integer", "minimum": 1, "maximum": 2**53}
    assert OPTIONAL_COUNT.schema() == {"type": "integer", "minimum": 1, "maximum": 5}
    assert POOL.schema() == {
        "type": "string",
        "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        "minLength": 1,
        "maxLength": 64,
    }
    assert Hours(name="h", maximum=8, description="hours to add").schema() == {
        "type": "number",
        "exclusiveMinimum": True,
        "minimum": 0,
        "maximum": 8,
        "description": "hours to add",
    }
    assert FORCE.schema()["anyOf"][0] == {"type": "boolean"}
    assert Text(name="cron", max_length=100, example="0 8 * * *").schema() == {
        "type": "string",
        "maxLength": 100,
        "example": "0 8 * * *",
    }
    assert DAY.schema() == {"type": "string", "format": "date"}
