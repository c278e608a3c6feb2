"""The audit trail: every state-changing request is an event with who, what, on which
object, when and the outcome; services' events get the request's actor; nothing
secret is ever recorded; ``GET /events`` filters, pages and keeps each user to
what is theirs.

The state-changing operations are taken from the OpenAPI description the server
serves and from the app's routes (the dashboard's forms), so an endpoint added
later is audited here without anyone listing it."""

from __future__ import annotations

import json
import re
import secrets as secrets_module
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from orchestrator.api import create_app
from orchestrator.api.audit import operation_path
from orchestrator.api.auth import changes_state, is_exempt
from orchestrator.audit import acting_as, carry, current_actor, outcome_of
from orchestrator.registry.events import EventFilter
from orchestrator.registry.tables import EventRow
from tests.conftest import make_rig
from tests.unit import test_ownership
from tests.unit.test_ownership import KEY, KEY2, PW, Fleet, state_changing_operations

_fleet = test_ownership.fleet  # four users (alice, bob, root the admin, eve a reader), a pool


@pytest.fixture
def fleet(_fleet: Fleet) -> Fleet:
    return _fleet


FAKE_TOKEN = "fake-token-value-that-must-never-be-stored-9c1f"  # noqa: S105


def rows(f: Fleet) -> list[EventRow]:
    with f.pr.rig.registry.db.read() as s:
        return list(s.scalars(select(EventRow).order_by(EventRow.id)))


def last_request(f: Fleet, operation: str, after: int) -> EventRow:
    found = [
        e for e in rows(f) if e.id > after and e.kind == "api.request" and e.operation == operation
    ]
    assert len(found) == 1, (operation, [(e.operation, e.status) for e in found])
    return found[0]


def newest_id(f: Fleet) -> int:
    return f.pr.rig.registry.events.last_id()


def ui_operations(f: Fleet) -> set[tuple[str, str]]:
    """The app's state-changing routes that the OpenAPI description leaves out (the
    dashboard's forms)."""
    app = create_app(f.pr.rig.services)
    out = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS") or not changes_state(method, rule.rule):
                continue
            if rule.rule.startswith("/ui/static/"):
                continue
            out.add((operation_path(rule.rule), method))
    return out


def concrete(path: str) -> str:
    return re.sub(r"\{token\}", FAKE_TOKEN, re.sub(r"\{(?!token\})[^}]+\}", "1", path))


def test_every_state_changing_request_is_audited(fleet):
    """Every state-changing operation, as no one, a user and an admin: one api.request
    event with the operation, the caller, the status and its outcome."""
    ops = state_changing_operations(fleet.url) | ui_operations(fleet)
    assert ("/vm/create", "POST") in ops
    assert ("/ui/vm/create", "POST") in ops
    for path, method in sorted(ops):
        for who in (None, "alice", "root"):
            mark = newest_id(fleet)
            headers = {"X-Auth-Token": fleet.tokens[who]} if who else {}
            basic = (who, PW[who]) if who and is_exempt(path) else None
            kwargs = {} if method in ("GET", "DELETE") else {"json": {}}
            r = requests.request(
                method,
                fleet.url + concrete(path),
                headers=headers,
                auth=basic,
                allow_redirects=False,
                timeout=60,
                **kwargs,
            )
            where = (method, path, who, r.status_code)
            e = last_request(fleet, f"{method} {path}", mark)
            expected = who or "anonymous"
            if path in ("/ui/login", "/ui/logout"):
                expected = "anonymous"  # no form: no user named, none signed out
            assert e.actor == expected, (where, e.actor)
            assert e.status == r.status_code, where
            outcome = outcome_of(r.status_code)
            if path.startswith("/ui/") and r.status_code == 302:
                outcome = "refused"  # an empty form: flashed an error and went back
            assert e.outcome == outcome, (where, e.outcome, e.detail)
            if outcome != "ok":
                assert e.detail and e.detail["error"], where
            if r.status_code >= 400 and r.headers.get("content-type", "").startswith(
                "application/json"
            ):
                said = r.json()
                # vmpooler's API (/api/v3) says why in "message"
                assert e.detail["error"] == said.get("error", said.get("message")), where
            if "{token}" in path:
                assert (e.object_type, e.object_id) == ("token", None), where
            elif "{" in path:
                assert e.object_id == "1", where


def test_unauthenticated_and_refused_requests_are_recorded_as_refused(fleet):
    mark = newest_id(fleet)
    r = fleet.call(None, "POST", "/vm/create", name="x", instance_type=1, image_id=1)
    assert r.status_code == 401
    e = last_request(fleet, "POST /vm/create", mark)
    assert (e.actor, e.outcome, e.status) == ("anonymous", "refused", 401)
    assert "token" in e.detail["error"]
    mark = newest_id(fleet)
    r = requests.post(
        fleet.url + "/vm/create", headers={"X-Auth-Token": FAKE_TOKEN}, json={}, timeout=30
    )
    assert r.status_code == 403
    e = last_request(fleet, "POST /vm/create", mark)
    assert (e.actor, e.outcome, e.status) == ("anonymous", "refused", 403)
    # a user refused by the ownership rules
    vmid = fleet.vm("alice")
    mark = newest_id(fleet)
    assert fleet.call("bob", "POST", "/vm/destroy", vmid=vmid).status_code == 403
    e = last_request(fleet, "POST /vm/destroy", mark)
    assert (e.actor, e.outcome, e.object_type, e.object_id, e.vm_id) == (
        "bob",
        "refused",
        "vm",
        str(vmid),
        vmid,
    )
    assert "alice" in e.detail["error"] or "not yours" in e.detail["error"], e.detail
    # a conflict: a schedule in the past
    mark = newest_id(fleet)
    body = {"name": "w", "pool": "small", "count": 1,
            "start": "2000-01-01T00:00:00Z", "end": "2000-01-01T01:00:00Z"}  # fmt: skip
    r = fleet.call("root", "POST", "/schedules", **body)
    assert r.status_code >= 400
    e = last_request(fleet, "POST /schedules", mark)
    assert (e.actor, e.outcome, e.status) == ("root", "refused", r.status_code)


def test_actions_carry_their_actor_into_the_services_events(fleet):
    """The events services record while serving a request are the caller's; the pool
    worker's are the system's."""
    # pool VMs were built by the worker before anyone asked
    built = [e for e in rows(fleet) if e.kind == "vm.create"]
    assert built and {e.actor for e in built} == {"system"}
    mark = newest_id(fleet)
    vmid = fleet.vm("alice")
    new = [e for e in rows(fleet) if e.id > mark]
    claim = [e for e in new if e.kind == "vm.claim"]
    assert [(e.actor, e.vm_id) for e in claim] == [("alice", vmid)]
    req = last_request(fleet, "POST /vm/create", mark)
    assert (req.actor, req.outcome, req.status, req.object_type, req.object_id) == (
        "alice",
        "ok",
        200,
        "vm",
        str(vmid),
    )
    # a check-out: the VM is only known from the answer
    mark = newest_id(fleet)
    c = fleet.checkout("bob")
    req = last_request(fleet, "POST /vm/checkout", mark)
    assert (req.actor, req.object_type, req.object_id) == ("bob", "vm", str(c["vmid"]))
    co = [e for e in rows(fleet) if e.id > mark and e.kind == "vm.checkout"]
    assert [(e.actor, e.vm_id) for e in co] == [("bob", c["vmid"])]
    # the first seed's check-in is by address: the VM from the events it recorded
    mark = newest_id(fleet)
    r = requests.post(f"{fleet.url}/vms/api/v1.0/checkin", headers={"X-Auth-Token":
                      fleet.tokens["bob"]}, json={"IP": c["ip"],
                      "ReservationID": c["reservation_id"]}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    req = last_request(fleet, "POST /vms/api/v1.0/checkin", mark)
    assert (req.actor, req.outcome, req.object_type, req.object_id, req.owner) == (
        "bob",
        "ok",
        "vm",
        str(c["vmid"]),
        "bob",
    )
    # a new schedule and a key: their ids from the answer
    mark = newest_id(fleet)
    sid = fleet.ok("root", "POST", "/schedules", name="s", pool="small", count=1,
                   start="2099-01-01T00:00:00Z", end="2099-01-01T01:00:00Z")["id"]  # fmt: skip
    req = last_request(fleet, "POST /schedules", mark)
    assert (req.actor, req.object_type, req.object_id) == ("root", "schedule", str(sid))
    mark = newest_id(fleet)
    kid = fleet.ok("alice", "POST", "/keys", key=KEY)["id"]
    req = last_request(fleet, "POST /keys", mark)
    assert (req.actor, req.object_type, req.object_id) == ("alice", "key", str(kid))
    # a token issued with basic credentials is its user's
    mark = newest_id(fleet)
    assert requests.post(f"{fleet.url}/token", auth=("bob", PW["bob"]), timeout=30).ok
    req = last_request(fleet, "POST /token", mark)
    assert (req.actor, req.outcome, req.object_type, req.object_id) == ("bob", "ok", "token", None)
    # outside any request: the system
    assert current_actor() == "system"
    with acting_as("someone"):
        fleet.pr.rig.registry.events.record("test.mark")
    fleet.pr.rig.registry.events.record("test.mark")
    # a thread started for someone's work: system, unless it carries the actor
    with acting_as("carol"):
        plain = threading.Thread(target=fleet.pr.rig.registry.events.record, args=("test.mark",))
        carried = threading.Thread(target=carry(fleet.pr.rig.registry.events.record),
                                   args=("test.mark",))  # fmt: skip
    for t in (plain, carried):
        t.start()
        t.join()
    marks = [e.actor for e in rows(fleet) if e.kind == "test.mark"]
    assert marks == ["someone", "system", "system", "carol"]


def test_no_secret_is_ever_recorded(fleet):
    """Passwords, tokens, reservation ids and SSH key bodies, sent right and wrong,
    through the API and the dashboard: none of them in any stored event."""
    secrets = [*PW.values(), *fleet.tokens.values(), FAKE_TOKEN]
    secrets += [KEY.split()[1], KEY2.split()[1]]
    url = fleet.url
    # logins, right and wrong
    wrong_pw = "wrong-password-5b2e7c"  # noqa: S105
    secrets.append(wrong_pw)
    assert requests.post(f"{url}/token", auth=("alice", wrong_pw), timeout=30).status_code == 401
    tok = requests.post(f"{url}/token", auth=("alice", PW["alice"]), timeout=30).json()["token"]
    secrets.append(tok)
    assert requests.get(f"{url}/token/{tok}", auth=("alice", PW["alice"]), timeout=30).ok
    assert fleet.call("bob", "DELETE", f"/token/{tok}").status_code == 404
    assert fleet.call("alice", "DELETE", f"/token/{tok}").ok
    # a user name that is a password typed in the wrong field, then the password
    assert requests.post(f"{url}/token", auth=(wrong_pw, "x"), timeout=30).status_code == 401
    # check-outs with a key, check-ins with a wrong and the right secret
    # (no SSH server on these test:// hosts: a check-out with a key fails, 502)
    r = fleet.call("alice", "POST", "/vm/checkout", pool="small", ssh_key=KEY2)
    assert r.status_code == 502, r.text
    c = fleet.ok("alice", "POST", "/vm/checkout", pool="small")
    secrets.append(c["reservation_id"])
    bad = secrets_module.token_urlsafe(32)  # well-formed, not the one
    secrets.append(bad)
    r = fleet.call("alice", "POST", "/vm/checkin", vmid=c["vmid"], reservation_id=bad)
    assert r.status_code in (403, 404), r.text
    r = fleet.call("bob", "POST", "/vm/extend", vmid=c["vmid"],
                   reservation_id=c["reservation_id"], hours=1)  # fmt: skip
    assert r.status_code == 403
    broken = "ssh-ed25519 " + KEY2.split()[1][:-4]
    secrets.append(broken.split()[1])
    r = fleet.call("alice", "POST", "/vm/checkout", pool="small", ssh_key=broken)
    assert r.status_code == 400, r.text
    fleet.ok("alice", "POST", "/vm/checkin", vmid=c["vmid"], reservation_id=c["reservation_id"])
    assert fleet.call("alice", "POST", "/keys", key=KEY).status_code == 201
    assert fleet.call("alice", "POST", "/keys", key=broken).status_code == 400
    # the dashboard's login, right and wrong
    s = requests.Session()
    page = s.get(f"{url}/ui/login", timeout=30).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for pw in (wrong_pw, PW["bob"]):
        s.post(f"{url}/ui/login", data={"csrf_token": csrf, "user": "bob", "password": pw},
               timeout=30, allow_redirects=False)  # fmt: skip
    dashboard_token = s.cookies.get("fabric_token")
    assert dashboard_token
    secrets.append(dashboard_token)
    stored = rows(fleet)
    dump = "\n".join(
        repr((e.kind, e.actor, e.operation, e.object_type, e.object_id, e.detail)) for e in stored
    )
    assert "POST /ui/login" in dump and "POST /vm/checkin" in dump
    for secret in secrets:
        assert secret not in dump, f"a secret in the events: {secret[:6]}..."
    # the refusals are still there, with what happened
    logins = [e for e in stored if e.operation == "POST /ui/login"]
    assert [(e.actor, e.outcome) for e in logins][-2:] == [("anonymous", "refused"), ("bob", "ok")]
    assert logins[-2].detail["user"] == "bob"
    unknown = [e for e in stored if e.operation == "POST /token" and e.outcome == "refused"]
    assert unknown[-1].detail["user"] == "(unknown user)"
    failed = [e for e in stored if e.operation == "POST /vm/checkout" and e.outcome == "failed"]
    assert failed and failed[-1].status == 502 and "SSH" in failed[-1].detail["error"]
    checkin = [e for e in stored if e.operation == "POST /vm/checkin" and e.outcome == "refused"]
    assert checkin and checkin[-1].object_id == str(c["vmid"])
    # whose the VM was: the holder's, for the refused check-in and for the one that ended it
    assert checkin[-1].owner == "alice"
    [back] = [e for e in stored if e.operation == "POST /vm/checkin" and e.outcome == "ok"]
    assert (back.object_id, back.owner) == (str(c["vmid"]), "alice")


# -- GET /events ---------------------------------------------------------------------


def events(f: Fleet, who: str | None, **params) -> requests.Response:
    return f.call(who, "GET", "/events", **params)


def test_who_reads_which_events(fleet):
    vm = fleet.vm("alice")
    vol = fleet.volume("alice")
    fleet.ok("root", "POST", "/volume/attach", vmid=vm, volumeid=vol)  # root, on alice's things
    fleet.vm("bob")
    assert events(fleet, None).status_code == 401  # even with open reads: it is about you
    everything = events(fleet, "root", limit=1000).json()["events"]
    assert {"alice", "bob", "root", "system"} <= {e["actor"] for e in everything}
    mine = events(fleet, "alice", limit=1000).json()["events"]
    assert mine
    for e in mine:
        ours = (
            e["actor"] == "alice"
            or e["vmid"] == vm
            or e["object"]
            == {
                "type": "volume",
                "id": str(vol),
            }
        )
        assert ours, e
    assert any(e["actor"] == "root" and e["operation"] == "POST /volume/attach" for e in mine)
    assert not any(e["actor"] == "bob" for e in mine)
    # a reader sees only what they did
    eve = events(fleet, "eve", limit=1000).json()["events"]
    assert all(e["actor"] == "eve" for e in eve)
    # asking for someone else's: nothing that is not ours
    assert events(fleet, "alice", user="bob").json()["events"] == []
    # a borrower sees their VM's events since the check-out, not before
    c = fleet.checkout("bob")
    fleet.ok("root", "POST", "/vm/extend", vmid=c["vmid"], reservation_id=c["reservation_id"],
             hours=1)  # fmt: skip
    held = events(fleet, "bob", vmid=c["vmid"], limit=1000).json()["events"]
    assert any(e["actor"] == "root" and e["operation"] == "POST /vm/extend" for e in held)
    assert not any(e["kind"] == "vm.create" for e in held)  # its build, before bob
    # its reservation runs out: the expiry, the fabric's, is still bob's to read
    expired = fleet.pr.rig.registry.reservations.expire(datetime.now(UTC) + timedelta(days=9))
    assert c["vmid"] in expired
    held = events(fleet, "bob", vmid=c["vmid"], user="system").json()["events"]
    assert [e["kind"] for e in held if e["kind"] == "vm.expired"] == ["vm.expired"]
    assert events(fleet, "alice", vmid=c["vmid"]).json()["events"] == []
    admin_view = events(fleet, "root", vmid=c["vmid"], limit=1000).json()["events"]
    assert any(e["kind"] == "vm.create" for e in admin_view)
    # what an admin did to alice's things stays hers to read once they are gone
    kid = fleet.ok("alice", "POST", "/keys", key=KEY)["id"]
    fleet.ok("root", "DELETE", f"/keys/{kid}")
    fleet.ok("root", "POST", "/vm/destroy", vmid=vm)
    mine = events(fleet, "alice", user="root").json()["events"]
    assert {(e["operation"], e["object"]["id"]) for e in mine} >= {
        ("DELETE /keys/{id}", str(kid)),
        ("POST /vm/destroy", str(vm)),
        ("POST /volume/attach", str(vol)),
    }
    assert "vm.destroy" in {e["kind"] for e in events(fleet, "alice", vmid=vm).json()["events"]}
    assert events(fleet, "bob", object=f"key:{kid}").json()["events"] == []


@pytest.fixture
def open_rig(tmp_path):
    r = make_rig(tmp_path, [{"cpus": 16, "ram": 16384}, {"cpus": 16, "ram": 16384}])
    app = create_app(r.services)
    app.testing = True
    yield r, app.test_client()
    r.stop()


def test_with_auth_off_requests_are_anonymous_and_everyone_reads_all(open_rig):
    r, client = open_rig
    vmid = client.post("/vm/create", json={"name": "a", "instance_type": 1, "image_id": 1}).json[
        "vmid"
    ]
    got = client.get("/events", query_string={"vmid": vmid}).json["events"]
    assert {(e["kind"], e["actor"]) for e in got} >= {
        ("api.request", "anonymous"),
        ("vm.claim", "anonymous"),
        ("vm.create", "anonymous"),
    }
    req = next(e for e in got if e["kind"] == "api.request")
    assert req["operation"] == "POST /vm/create" and req["object"] == {
        "type": "vm",
        "id": str(vmid),
    }
    assert req["outcome"] == "ok" and req["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", req["at"])


def test_requests_for_no_route_are_not_recorded(open_rig):
    r, client = open_rig
    before = r.registry.events.last_id()
    assert client.post("/no/such/thing", json={}).status_code == 404
    assert client.delete("/vm/list").status_code == 405
    assert client.get("/vm/list").status_code == 200  # a read: not an action
    assert r.registry.events.last_id() == before


def test_filters(open_rig):
    r, client = open_rig
    ev = r.registry.events
    ev.record("vm.a", vm_id=1, host_id=1, actor="alice")
    ev.record("vm.b", vm_id=2, host_id=1, actor="bob")
    ev.record("host.maintenance", host_id=2, actor="root")
    ev.record("api.request", actor="bob", operation="DELETE /schedules/{id}",
              object_type="schedule", object_id="7", outcome="refused", status=409)  # fmt: skip
    ev.record("pool.build_failed", detail={"pool": "p"})

    def ids(**q) -> list[str]:
        resp = client.get("/events", query_string=q)
        assert resp.status_code == 200, resp.json
        return [e["kind"] for e in resp.json["events"]]

    assert ids(vmid=1) == ["vm.a"]
    assert ids(object="vm:2") == ["vm.b"]
    assert ids(pmid=1) == ["vm.b", "vm.a"]
    assert ids(object="host:2") == ["host.maintenance"]
    assert ids(object="schedule:7") == ["api.request"]
    assert ids(object="schedule") == ["api.request"]
    assert ids(user="bob") == ["api.request", "vm.b"]
    assert ids(user="system") == ["pool.build_failed"]
    assert ids(kind="vm.") == ["vm.b", "vm.a"]
    assert ids(kind="vm.a") == ["vm.a"]
    assert ids(kind="vm%") == []  # a prefix, not a pattern
    assert ids(op="DELETE /sched") == ["api.request"]
    assert ids(outcome="refused") == ["api.request"]
    assert ids(outcome="failed") == ["pool.build_failed"]
    assert ids(user="bob", kind="vm.") == ["vm.b"]
    now = datetime.now(UTC)
    assert len(ids(since=(now - timedelta(minutes=5)).isoformat())) == 5
    assert ids(since=(now + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")) == []
    assert ids(until=(now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")) == []
    assert len(ids(until=(now + timedelta(minutes=5)).isoformat())) == 5
    got = client.get("/events", query_string={"kind": "vm.a"}).json["events"][0]
    assert (got["actor"], got["vmid"], got["pmid"], got["object"]) == (
        "alice",
        1,
        1,
        {"type": "vm", "id": "1"},
    )


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"vmid": "x"}, "vmid"),
        ({"pmid": "-1"}, "pmid"),
        ({"volumeid": "0"}, "volumeid"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"before": "abc"}, "before"),
        ({"after": "1.5"}, "after"),
        ({"before": "5", "after": "2"}, "before"),
        ({"outcome": "maybe"}, "outcome"),
        ({"object": "VM:3"}, "object"),
        ({"object": "vm:x"}, "object"),
        ({"object": "vm:1", "vmid": "2"}, "vmid"),
        ({"user": "u" * 200}, "user"),
    ],
)
def test_bad_filter_values_are_400_naming_the_parameter(open_rig, query, named):
    _, client = open_rig
    resp = client.get("/events", query_string=query)
    assert resp.status_code == 400, resp.json
    assert named in resp.json["error"], resp.json


def test_paging_has_no_duplicates_or_gaps_while_events_are_added(open_rig):
    r, client = open_rig
    ev = r.registry.events
    for i in range(120):
        ev.record("page.test", detail={"i": i}, actor="alice" if i % 2 else "bob")

    def add() -> None:
        for n in range(400):
            ev.record("page.test", detail={"late": n}, actor="alice")

    writer = threading.Thread(target=add)
    first = client.get("/events", query_string={"kind": "page.", "limit": 7}).json
    top = first["events"][0]["id"]
    writer.start()
    try:
        seen = [e["id"] for e in first["events"]]
        before = first["before"]
        while before is not None:
            page = client.get(
                "/events", query_string={"kind": "page.", "limit": 7, "before": before}
            ).json
            seen += [e["id"] for e in page["events"]]
            assert len(page["events"]) <= 7
            before = page["before"]
    finally:
        writer.join()
    assert len(seen) == len(set(seen)), "a duplicate across pages"
    assert seen == sorted(seen, reverse=True)
    with r.registry.db.read() as s:
        expected = list(
            s.scalars(
                select(EventRow.id)
                .where(EventRow.kind == "page.test", EventRow.id <= top)
                .order_by(EventRow.id.desc())
            )
        )
    assert seen == expected  # no gap
    # forward: after the top, every newer one once, oldest pages first
    forward, after = [], top
    while True:
        page = client.get(
            "/events", query_string={"kind": "page.", "limit": 50, "after": after}
        ).json
        if not page["events"]:
            assert page["after"] == after
            break
        forward += [e["id"] for e in reversed(page["events"])]
        after = page["after"]
    with r.registry.db.read() as s:
        newer = list(
            s.scalars(
                select(EventRow.id)
                .where(EventRow.kind == "page.test", EventRow.id > top)
                .order_by(EventRow.id)
            )
        )
    assert forward == newer and len(newer) == 400
    # user filter with paging
    alice = client.get("/events", query_string={"user": "alice", "kind": "page.", "limit": 5}).json
    assert len(alice["events"]) == 5 and {e["actor"] for e in alice["events"]} == {"alice"}


def test_limit_is_capped(open_rig):
    r, client = open_rig
    with r.registry.db.tx() as s:
        s.add_all([EventRow(kind="cap.test") for _ in range(1005)])
    got = client.get("/events", query_string={"kind": "cap.", "limit": 2}).json
    assert len(got["events"]) == 2 and got["before"] is not None
    assert len(r.registry.events.page(EventFilter(kind="cap."), limit=10**6)) == 1000
    big = client.get("/events", query_string={"kind": "cap.", "limit": 5000})
    assert big.status_code == 200 and len(big.json["events"]) == 1000
    assert big.json["before"] is not None


# -- the dashboard and the client --------------------------------------------------


def test_the_dashboard_events_page(open_rig):
    r, client = open_rig
    r.registry.events.record("vm.a", vm_id=1, actor="alice")
    r.registry.events.record("api.request", actor="bob", operation="POST /vm/destroy",
                             object_type="vm", object_id="2", vm_id=2, outcome="refused",
                             status=403, detail={"error": "vmid 2 is not yours"})  # fmt: skip
    page = client.get("/ui/events")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="event-table"' in html and "POST /vm/destroy" in html
    assert "vmid 2 is not yours" in html and "vm:2" in html
    assert "/ui/events" in client.get("/").get_data(as_text=True)  # linked from the overview
    only = client.get("/ui/events", query_string={"vmid": "1", "since": ""}).get_data(as_text=True)
    assert 'data-event="1"' in only and "POST /vm/destroy" not in only
    bad = client.get("/ui/events", query_string={"since": "soon"})
    assert bad.status_code == 400 and "since must be an ISO 8601 time" in bad.get_data(as_text=True)
    # paging: an "Older" link that keeps the filters
    for _ in range(3):
        r.registry.events.record("page.x", actor="alice")
    first = client.get("/ui/events", query_string={"kind": "page.", "limit": "2"})
    link = re.search(r'href="([^"]+)" id="older"', first.get_data(as_text=True)).group(1)
    assert "kind=page." in link and "before=" in link
    second = client.get(link.replace("&amp;", "&")).get_data(as_text=True)
    assert second.count('data-event="') == 1


def test_the_dashboard_shows_a_user_their_events_only(fleet):
    vm = fleet.vm("alice")
    fleet.vm("bob")
    s = requests.Session()
    page = s.get(f"{fleet.url}/ui/events", timeout=30)
    assert page.url.endswith("/ui/login")  # signed out: the login page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    s.post(f"{fleet.url}/ui/login", data={"csrf_token": csrf, "user": "alice",
           "password": PW["alice"]}, timeout=30)  # fmt: skip
    html = s.get(f"{fleet.url}/ui/events", params={"limit": 1000}, timeout=30).text
    actors = re.findall(r"<td>(\w+)</td>\s*<td class=\"mono\">(?:POST|GET|DELETE|vm\.)", html)
    assert "alice" in actors and "bob" not in actors and f"vm:{vm}" in html
    assert "Your actions" in html


def test_the_client_pages_and_filters_events(fleet, capsys):
    from orchestrator import client

    vm = fleet.vm("alice")
    assert fleet.call("bob", "POST", "/vm/destroy", vmid=vm).status_code == 403

    def run(*argv: str) -> tuple[int, str, str]:
        code = client.main(["--url", fleet.url, "--token", fleet.tokens["root"], *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("events", "--vm", str(vm))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["ID", "AT", "WHO", "WHAT", "OBJECT", "OUTCOME", "DETAIL"]
    refused = next(line for line in lines if "bob" in line)
    assert "POST /vm/destroy" in refused and f"vm:{vm}" in refused and "refused 403" in refused
    code, out, _ = run("events", "--user", "alice", "--kind", "api.", "--limit", "1")
    assert code == 0 and len(out.strip().splitlines()) == 3 and "(older: --before" in out
    older = re.search(r"--before (\d+)", out).group(1)
    code, out, _ = run("--json", "events", "--user", "alice", "--before", older, "--limit", "5")
    got = json.loads(out)
    assert got["events"] and all(
        e["id"] < int(older) and e["actor"] == "alice" for e in got["events"]
    )
    code, out, err = run("events", "--since", "yesterday")
    assert code == 1 and "since must be an ISO 8601 time" in err
    # as alice: only hers (and what happened to her VM)
    code = client.main(["--url", fleet.url, "--token", fleet.tokens["alice"], "--json", "events",
                        "--limit", "1000"])  # fmt: skip
    seen = json.loads(capsys.readouterr().out)["events"]
    assert code == 0 and all(e["actor"] == "alice" or e["vmid"] == vm for e in seen)


def test_dashboard_forms_are_audited_with_their_user_and_object(fleet):
    s = requests.Session()
    page = s.get(f"{fleet.url}/ui/login", timeout=30).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    s.post(f"{fleet.url}/ui/login", data={"csrf_token": csrf, "user": "alice",
           "password": PW["alice"]}, timeout=30)  # fmt: skip
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{fleet.url}/", timeout=30).text)
    token = csrf.group(1)

    def form(path: str, **data) -> EventRow:
        mark = newest_id(fleet)
        r = s.post(f"{fleet.url}{path}", data={"csrf_token": token, **data}, timeout=30,
                   allow_redirects=False)  # fmt: skip
        assert r.status_code == 302, r.text
        return last_request(fleet, f"POST {path}", mark)

    made = form("/ui/vm/create", name="formvm", instance_type="1", image_id="1")
    assert (made.actor, made.outcome, made.object_type) == ("alice", "ok", "vm")
    vmid = int(made.object_id)  # from the events the create recorded
    assert made.vm_id == vmid and made.owner == "alice"
    assert fleet.ok("root", "GET", "/vm/query", vmid=vmid)["created_by"] == "alice"
    bobs = fleet.vm("bob")
    refused = form("/ui/vm/destroy", vmid=str(bobs))
    assert (refused.actor, refused.outcome, refused.object_id) == ("alice", "refused", str(bobs))
    assert refused.owner == "bob" and refused.detail["error"]
    gone = form("/ui/vm/destroy", vmid=str(vmid))
    assert (gone.outcome, gone.object_id, gone.owner) == ("ok", str(vmid), "alice")
