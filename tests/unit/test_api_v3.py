"""vmpooler's HTTP API v3 under /api/v3, through real HTTP on waitress over test://
hosts and a real registry: every endpoint's shape (../shared/VMPOOLER-API.md), its
error codes, all-or-nothing check-outs over several pools, auth off and on, and one
reservation whichever API made or ends it."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from orchestrator.auth import hash_password
from orchestrator.fabric import host_target
from orchestrator.model import VmState
from tests.conftest import make_pool_rig, pool_spec, wait_for

DOMAIN = "vm.fabric.test"
PW = "alice's password"
PW_BOB = "bob's password"
PW_ROOT = "root's password"
HOSTS = [
    {"cpus": 8, "ram": 8192, "target": "root@127.0.0.5", "extra": {"network": "forward"}},
    {"cpus": 8, "ram": 8192, "target": "root@127.0.0.6", "extra": {"network": "forward"}},
]
POOLS = [
    pool_spec("small", size=2, max=4, lifetime=1, lifetime_max=3),
    pool_spec("big", instance_type=2, image="alpine", size=1, max=2, lifetime=2, lifetime_max=4),
]


def ready(pr, pool: str) -> int:
    return pr.pools.status()[pool]["ready"]


def filled(pr) -> bool:
    return ready(pr, "small") == 2 and ready(pr, "big") == 1


@pytest.fixture(scope="module")
def hashes() -> dict:
    return {
        "alice": hash_password(PW),
        "bob": hash_password(PW_BOB),
        "root": {"password": hash_password(PW_ROOT), "role": "admin"},
    }


@pytest.fixture
def pr(tmp_path):
    p = make_pool_rig(tmp_path, HOSTS, POOLS, config={"hostnames": {"domain": DOMAIN}})
    wait_for(lambda: filled(p))
    yield p
    p.stop()


@pytest.fixture
def apr(tmp_path, hashes):
    """Authentication on: alice and bob are users, root an admin."""
    cfg = {"hostnames": {"domain": DOMAIN}, "auth": {"enabled": True, "users": hashes}}
    p = make_pool_rig(tmp_path, HOSTS, POOLS, config=cfg)
    wait_for(lambda: filled(p))
    yield p
    p.stop()


def v3(pr, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["X-AUTH-TOKEN"] = token  # vmpooler's spelling of the header
    return requests.request(method, f"{pr.served.url}/api/v3{path}", headers=headers, **kw)


def token_of(pr, user: str, pw: str) -> str:
    r = v3(pr, "POST", "/token", auth=(user, pw))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and set(body) == {"ok", "token"}
    return body["token"]


def refused(r: requests.Response, status: int) -> dict:
    """A vmpooler-shaped refusal: the status, JSON, ``ok`` false."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.text
    body = r.json()
    assert body["ok"] is False, body
    return body


def short(fqdn: str) -> str:
    assert fqdn.endswith("." + DOMAIN), fqdn
    return fqdn[: -len(DOMAIN) - 1]


def checkout(pr, path: str = "/vm/small", token: str | None = None, **kw) -> dict:
    r = v3(pr, "POST", path, token, **kw)
    assert r.status_code == 200, r.text
    return r.json()


# -- with authentication off ------------------------------------------------------


def test_token_calls_are_404_without_auth(pr):
    for method, path in (
        ("POST", "/token"),
        ("GET", "/token"),
        ("GET", "/token/abc"),
        ("DELETE", "/token/abc"),
    ):
        refused(v3(pr, method, path, auth=("alice", PW)), 404)


def test_get_vm_lists_the_pools(pr):
    r = v3(pr, "GET", "/vm")
    assert r.status_code == 200 and r.json() == ["small", "big"]


def test_checkout_of_one_vm_answers_a_string_hostname(pr):
    body = checkout(pr)
    assert list(body) == ["ok", "small", "domain"]
    assert body["ok"] is True and body["domain"] == DOMAIN
    host = body["small"]["hostname"]
    assert isinstance(host, str) and host.startswith("small-")
    vm = pr.rig.registry.vms.by_hostname(short(host))
    assert vm.state == VmState.IN_USE and vm.pool == "small" and vm.held_by is None
    assert vm.reservation_hash is not None  # a fresh secret nobody is shown
    assert vm.expires_at is not None


def test_checkout_of_a_pool_twice_and_several_pools(pr):
    body = checkout(pr, "/vm/small+big+small")
    assert set(body) == {"ok", "small", "big", "domain"}
    smalls, big = body["small"]["hostname"], body["big"]["hostname"]
    assert isinstance(smalls, list) and len(smalls) == 2 and len(set(smalls)) == 2
    assert isinstance(big, str)
    for h in [*smalls, big]:
        assert pr.rig.registry.vms.by_hostname(short(h)).state == VmState.IN_USE
    wait_for(lambda: filled(pr))
    body = checkout(pr, "/vm", json={"small": "2", "big": 1})
    assert len(body["small"]["hostname"]) == 2 and isinstance(body["big"]["hostname"], str)
    held = {vm.hostname for vm in pr.rig.registry.vms.list(states=[VmState.IN_USE])}
    assert len(held) == 6  # six VMs, none handed out twice


def test_checkout_across_pools_is_all_or_nothing(pr):
    checkout(pr, "/vm/big")  # big's only ready VM
    pr.worker.stop()  # no refill meanwhile
    before = {vm.id: vm.state for vm in pr.rig.registry.vms.list()}
    r = v3(pr, "POST", "/vm", json={"small": "2", "big": "1"})
    body = refused(r, 503)
    assert "big" in body["message"] and "0 ready" in body["message"], body
    assert r.headers.get("Retry-After")
    # small's two VMs, taken first, are ready again: nothing was handed out
    assert {vm.id: vm.state for vm in pr.rig.registry.vms.list()} == before
    assert ready(pr, "small") == 2
    r = v3(pr, "POST", "/vm/small+small+small")
    assert "small" in refused(r, 503)["message"]
    assert ready(pr, "small") == 2


def test_parallel_multi_pool_checkouts_hand_out_each_vm_once(pr):
    """Six callers race for small+big while big has one ready VM: exactly one gets
    both; the others get 503 and give back the small VMs they took."""
    pr.worker.stop()  # no refill meanwhile
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: v3(pr, "POST", "/vm/small+big"), range(6)))
    won = [r.json() for r in answers if r.status_code == 200]
    assert len(won) == 1, [r.text for r in answers]
    assert sorted(r.status_code for r in answers) == [200] + [503] * 5
    held = pr.rig.registry.vms.list(states=[VmState.IN_USE])
    assert sorted(f"{v.hostname}.{DOMAIN}" for v in held) == sorted(
        [won[0]["small"]["hostname"], won[0]["big"]["hostname"]]
    )
    assert ready(pr, "small") == 1 and ready(pr, "big") == 0


def test_checkout_errors(pr):
    body = refused(v3(pr, "POST", "/vm/nope"), 404)
    assert "nope" in body["message"]
    refused(v3(pr, "POST", "/vm/small+nope"), 404)
    refused(v3(pr, "POST", "/vm", json={"nope": 1}), 404)
    assert ready(pr, "small") == 2  # nothing taken
    for data in ("[1]", "not json", "", '{"small": "x"}', '{"small": 0}', '{"small": true}', "{}"):
        r = v3(pr, "POST", "/vm", data=data, headers={"Content-Type": "application/json"})
        assert "message" in refused(r, 400), data
    deep = '{"small": ' + "[" * 6 + "]" * 6 + "}"
    body = refused(v3(pr, "POST", "/vm", data=deep), 400)
    assert "nested deeper than 5" in body["message"]
    big = json.dumps({"small": 1, "pad": "x" * 11000})
    refused(v3(pr, "POST", "/vm", data=big), 413)
    refused(v3(pr, "POST", "/vm/big+big+big"), 400)  # more than the pool can ever hold


def test_get_vm_by_short_name_and_fqdn(pr):
    host = checkout(pr)["small"]["hostname"]
    name = short(host)
    for asked in (name, host):
        r = v3(pr, "GET", f"/vm/{asked}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["ok", name] and body["ok"] is True
        info = body[name]
        assert info["template"] == "small" and info["state"] == "running"
        assert info["lifetime"] == 1 and isinstance(info["running"], int | float)
        assert 0.9 <= info["remaining"] <= 1
        start = datetime.fromisoformat(info["start_time"])
        end = datetime.fromisoformat(info["end_time"])
        assert end - start == timedelta(hours=1)
        assert info["tags"] == {} and info["fqdn"] == host
        assert info["host"] in ("root@127.0.0.5", "127.0.0.5", "root@127.0.0.6", "127.0.0.6")
        assert "ip" in info
    refused(v3(pr, "GET", "/vm/nosuch-host"), 404)
    refused(v3(pr, "GET", f"/vm/nosuch.{DOMAIN}"), 404)
    ready_vm = next(vm for vm in pr.rig.registry.vms.list(states=[VmState.READY]))
    info = v3(pr, "GET", f"/vm/{ready_vm.hostname}").json()[ready_vm.hostname]
    assert info["state"] == "ready" and "start_time" not in info


def test_put_lifetime_and_tags(pr):
    host = checkout(pr)["small"]["hostname"]
    name = short(host)
    r = v3(pr, "PUT", f"/vm/{host}", json={"lifetime": 2, "tags": {"build": "42", "ci.job": "x"}})
    assert r.status_code == 200 and r.json() == {"ok": True}
    info = v3(pr, "GET", f"/vm/{name}").json()[name]
    assert info["lifetime"] == 2 and info["tags"] == {"build": "42", "ci.job": "x"}
    end = datetime.fromisoformat(info["end_time"])
    start = datetime.fromisoformat(info["start_time"])
    assert end - start == timedelta(hours=2)
    vm = pr.rig.registry.vms.by_hostname(name)
    q = requests.get(f"{pr.served.url}/vm/query", params={"vmid": vm.id}).json()
    assert q["tags"] == {"build": "42", "ci.job": "x"}
    assert datetime.fromisoformat(q["expires_at"].replace("Z", "+00:00")) == end
    # past the pool's lifetime_max (3 h), bad values, bad tags, unknown keys: 400
    for body in (
        {"lifetime": 4},
        {"lifetime": 0},
        {"lifetime": "soon"},
        {"tags": ["a"]},
        {"tags": {"bad key": "v"}},
        {"tags": {"k" * 51: "v"}},
        {"tags": {"n": 1}},
        {"colour": "red"},
    ):
        failure = refused(v3(pr, "PUT", f"/vm/{name}", json=body), 400)["failure"]
        assert failure and all(isinstance(f, str) for f in failure), body
    assert v3(pr, "GET", f"/vm/{name}").json()[name]["lifetime"] == 2  # unchanged
    refused(v3(pr, "PUT", f"/vm/{name}", data="nope"), 400)
    refused(v3(pr, "PUT", "/vm/nosuch-host", json={"lifetime": 2}), 404)
    # a tag set to "" goes; a ready VM has no lifetime to set
    v3(pr, "PUT", f"/vm/{name}", json={"tags": {"build": ""}})
    assert v3(pr, "GET", f"/vm/{name}").json()[name]["tags"] == {"ci.job": "x"}
    other = next(vm for vm in pr.rig.registry.vms.list(states=[VmState.READY]))
    refused(v3(pr, "PUT", f"/vm/{other.hostname}", json={"lifetime": 2}), 400)


def test_delete_destroys_the_vm_and_its_hostname_never_comes_back(pr):
    host = checkout(pr)["small"]["hostname"]
    name = short(host)
    vm = pr.rig.registry.vms.by_hostname(name)
    r = v3(pr, "DELETE", f"/vm/{host}")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert not pr.rig.registry.vms.exists(vm.id)
    refused(v3(pr, "GET", f"/vm/{name}"), 404)
    refused(v3(pr, "DELETE", f"/vm/{name}"), 404)
    # the pool refills with new VMs under new names
    wait_for(lambda: filled(pr))
    assert name not in {v.hostname for v in pr.rig.registry.vms.list()}
    # a VM nobody holds is not deleted through this API
    other = next(vm for vm in pr.rig.registry.vms.list(states=[VmState.READY]))
    refused(v3(pr, "DELETE", f"/vm/{other.hostname}"), 409)
    assert pr.rig.registry.vms.get(other.id).state == VmState.READY


def test_disk_adds_a_volume_attached_to_the_vm(pr):
    name = short(checkout(pr)["small"]["hostname"])
    r = v3(pr, "POST", f"/vm/{name}/disk/2")
    assert r.status_code == 202, r.text
    assert r.json() == {"ok": True, name: {"disk": "+2gb"}}
    vm = pr.rig.registry.vms.by_hostname(name)
    vols = pr.rig.registry.volumes.list(vm_id=vm.id)
    assert [(v.size, v.status) for v in vols] == [(2, "attached")]
    assert v3(pr, "GET", f"/vm/{name}").json()[name]["disk"] == ["+2gb"]
    for size in ("0", "abc", "99999999"):
        refused(v3(pr, "POST", f"/vm/{name}/disk/{size}"), 400)
    refused(v3(pr, "POST", "/vm/nosuch-host/disk/2"), 404)


def test_snapshot_and_revert(pr):
    name = short(checkout(pr)["small"]["hostname"])
    r = v3(pr, "POST", f"/vm/{name}/snapshot")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["ok"] is True and set(body) == {"ok", name}
    snap = body[name]["snapshot"]
    assert len(snap) == 32 and snap.isalnum()
    vm = pr.rig.registry.vms.by_hostname(name)
    host = pr.rig.registry.hosts.get(vm.host_id)
    assert pr.rig.driver.snapshots(host_target(host), vm.uuid) == [snap]
    assert v3(pr, "GET", f"/vm/{name}").json()[name]["snapshots"] == [snap]
    r = v3(pr, "POST", f"/vm/{name}/snapshot/{snap}")
    assert r.status_code == 202 and r.json() == {"ok": True}
    refused(v3(pr, "POST", f"/vm/{name}/snapshot/nosuchsnapshot"), 404)
    refused(v3(pr, "POST", f"/vm/{name}/snapshot/NOT-ONE"), 404)
    refused(v3(pr, "POST", "/vm/nosuch-host/snapshot"), 404)


def test_status_poolstat_totalrunning_healthcheck(pr):
    checkout(pr, "/vm/small")
    pr.worker.stop()
    r = v3(pr, "GET", "/status")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"capacity", "queue", "pools", "status", "clone", "boot"}
    assert body["pools"]["small"] == {"ready": 1, "running": 1, "pending": 0, "max": 2}
    assert body["pools"]["big"] == {"ready": 1, "running": 0, "pending": 0, "max": 1}
    assert body["capacity"] == {"current": 2, "total": 3, "percent": 66.7}
    q = body["queue"]
    assert q["ready"] == 2 and q["running"] == 1 and q["pending"] == 0
    assert set(q) == {"pending", "cloning", "booting", "ready", "running", "completed", "total"}
    assert body["status"]["ok"] is True and isinstance(body["status"]["message"], str)
    assert isinstance(body["status"]["uptime"], int | float)
    assert body["clone"]["count"]["total"] >= 3  # today's clones
    assert r.json()["boot"]["count"]["total"] >= 3
    checkout(pr, "/vm/big")
    body = v3(pr, "GET", "/status").json()
    assert body["status"]["ok"] is False and body["status"]["empty"] == ["big"]
    assert "1 empty" in body["status"]["message"]
    assert v3(pr, "GET", "/poolstat", params={"pool": "small,nope"}).json() == {
        "pools": {"small": {"max": 2, "ready": 1}}
    }
    assert v3(pr, "GET", "/poolstat").json() == {"pools": {}}
    assert v3(pr, "GET", "/totalrunning").json() == {"running": 2}
    assert v3(pr, "GET", "/healthcheck").json() == {"ok": True}


def test_summary_counts_per_day_with_tags(pr):
    name = short(checkout(pr)["small"]["hostname"])
    v3(pr, "PUT", f"/vm/{name}", json={"tags": {"project": "web"}})
    today = datetime.now(UTC).date().isoformat()
    r = v3(pr, "GET", "/summary", params={"from": today, "to": today})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"boot", "clone", "tag", "daily"}
    assert body["tag"] == {"project": {"web": 1, "total": 1}}
    assert body["clone"]["count"]["total"] >= 3
    [day] = body["daily"]
    assert day["date"] == today and day["tag"] == {"project": {"web": 1, "total": 1}}
    assert day["clone"]["count"]["total"] == body["clone"]["count"]["total"]
    assert v3(pr, "GET", "/summary").json()["tag"] == body["tag"]  # today by default
    refused(v3(pr, "GET", "/summary", params={"from": "yesterday"}), 400)
    refused(v3(pr, "GET", "/summary", params={"from": today, "to": "2000-01-01"}), 400)
    refused(v3(pr, "GET", "/summary", params={"from": "2999-01-01", "to": "2999-01-02"}), 400)


def test_unknown_routes_and_methods_are_ok_false(pr):
    for method, path in (
        ("GET", "/nope"),
        ("GET", ""),
        ("GET", "/"),
        ("POST", "/vm/small/nope/deeper/still"),
        ("GET", "/token/a/b"),
    ):
        refused(v3(pr, method, path), 404)
    refused(v3(pr, "PATCH", "/vm"), 405)
    refused(v3(pr, "DELETE", "/status"), 405)


# -- one reservation, whichever API --------------------------------------------------


def test_v3_checkout_then_fabric_checkin(pr):
    name = short(checkout(pr)["small"]["hostname"])
    vm = pr.rig.registry.vms.by_hostname(name)
    q = requests.get(f"{pr.served.url}/vm/query", params={"vmid": vm.id}).json()
    info = v3(pr, "GET", f"/vm/{name}").json()[name]
    assert q["status"] == "in-use" and q["hostname"] == name and q["fqdn"] == f"{name}.{DOMAIN}"
    assert q["expires_at"].replace("Z", "+00:00") == info["end_time"].replace("Z", "+00:00")
    # the fabric's check-out never hands out the same VM
    other = requests.post(f"{pr.served.url}/vm/checkout", json={"pool": "small"}).json()
    assert other["vmid"] != vm.id
    # auth off: every caller is the anonymous admin, who may leave the secret out
    r = requests.post(f"{pr.served.url}/vm/checkin", json={"vmid": vm.id})
    assert r.status_code == 200 and r.json() == {"status": 1}
    assert pr.rig.registry.vms.get(vm.id).state in (VmState.CLEANING, VmState.READY)
    assert v3(pr, "GET", f"/vm/{name}").json()[name]["state"] in ("completed", "ready")
    # v3 does not end it again
    refused(v3(pr, "DELETE", f"/vm/{name}"), 409)
    r = requests.post(f"{pr.served.url}/vm/checkin", json={"vmid": vm.id})
    assert r.status_code == 409


def test_fabric_checkout_then_v3_delete(pr):
    got = requests.post(f"{pr.served.url}/vm/checkout", json={"pool": "small"}).json()
    vm = pr.rig.registry.vms.get(got["vmid"])
    info = v3(pr, "GET", f"/vm/{vm.hostname}.{DOMAIN}").json()[vm.hostname]
    assert info["state"] == "running" and info["template"] == "small"
    assert info["end_time"].replace("Z", "+00:00") == got["expires_at"].replace("Z", "+00:00")
    assert v3(pr, "DELETE", f"/vm/{vm.hostname}").json() == {"ok": True}
    r = requests.post(
        f"{pr.served.url}/vm/checkin",
        json={"vmid": vm.id, "reservation_id": got["reservation_id"]},
    )
    assert r.status_code == 404
    assert requests.get(f"{pr.served.url}/vm/query", params={"vmid": vm.id}).status_code == 404
    # v3 hands out no VM twice either: all of its VMs are others
    wait_for(lambda: filled(pr))
    body = checkout(pr, "/vm/small+small")
    assert vm.hostname not in {short(h) for h in body["small"]["hostname"]}


# -- with authentication on ---------------------------------------------------------


def test_tokens_with_basic_auth(apr):
    refused(v3(apr, "POST", "/token"), 401)
    refused(v3(apr, "POST", "/token", auth=("alice", "wrong")), 401)
    tok = token_of(apr, "alice", PW)
    token_of(apr, "alice", PW)
    r = v3(apr, "GET", "/token", auth=("alice", PW))
    listed = r.json()
    assert r.status_code == 200 and listed["ok"] is True and len(listed) == 3
    digest = hashlib.sha256(tok.encode()).hexdigest()
    assert set(listed[digest]) == {"created", "last", "expires"}
    refused(v3(apr, "GET", "/token"), 401)
    name = short(checkout(apr, "/vm/small", token=tok)["small"]["hostname"])
    r = v3(apr, "GET", f"/token/{tok}")
    assert r.status_code == 200
    info = r.json()[tok]
    assert info["user"] == "alice" and info["vms"] == {"running": [name]}
    assert set(info) >= {"user", "created", "last", "vms"}
    refused(v3(apr, "GET", "/token/not-a-token"), 404)
    # bob may not revoke alice's token
    refused(v3(apr, "DELETE", f"/token/{tok}", auth=("bob", PW_BOB)), 404)
    assert v3(apr, "DELETE", f"/token/{tok}", auth=("alice", PW)).json() == {"ok": True}
    refused(v3(apr, "GET", f"/token/{tok}"), 404)
    body = refused(v3(apr, "POST", "/vm/small", token=tok), 401)
    assert "revoked" in body["message"]


def test_what_needs_a_token(apr):
    alice = token_of(apr, "alice", PW)
    # changes need one: none or a bad one is a 401 {"ok": false}
    for token in (None, "not-a-token"):
        refused(v3(apr, "POST", "/vm/small", token=token), 401)
        refused(v3(apr, "POST", "/vm", token=token, json={"small": 1}), 401)
    assert ready(apr, "small") == 2
    name = short(checkout(apr, "/vm/small", token=alice)["small"]["hostname"])
    assert apr.rig.registry.vms.by_hostname(name).held_by == "alice"
    for method, path in (
        ("PUT", f"/vm/{name}"),
        ("DELETE", f"/vm/{name}"),
        ("POST", f"/vm/{name}/disk/1"),
        ("POST", f"/vm/{name}/snapshot"),
        ("POST", f"/vm/{name}/snapshot/abc"),
    ):
        for token in (None, "not-a-token"):
            refused(v3(apr, method, path, token=token, json={"lifetime": 2}), 401)
    # reads do not
    for path in (f"/vm/{name}", "/vm", "/status", "/summary", "/poolstat", "/totalrunning"):
        assert v3(apr, "GET", path).status_code == 200, path
    assert v3(apr, "GET", "/healthcheck").json() == {"ok": True}


def test_only_the_holder_or_an_admin_acts_on_a_vm(apr):
    alice = token_of(apr, "alice", PW)
    bob = token_of(apr, "bob", PW_BOB)
    root = token_of(apr, "root", PW_ROOT)
    name = short(checkout(apr, "/vm/small", token=alice)["small"]["hostname"])
    for method, path, body in (
        ("PUT", f"/vm/{name}", {"lifetime": 2}),
        ("PUT", f"/vm/{name}", {"tags": {"a": "b"}}),
        ("DELETE", f"/vm/{name}", None),
        ("POST", f"/vm/{name}/disk/1", None),
        ("POST", f"/vm/{name}/snapshot", None),
    ):
        refused(v3(apr, method, path, token=bob, json=body), 403)
    assert v3(apr, "PUT", f"/vm/{name}", token=alice, json={"lifetime": 2}).json()["ok"]
    assert v3(apr, "PUT", f"/vm/{name}", token=root, json={"tags": {"by": "root"}}).json()["ok"]
    info = v3(apr, "GET", f"/vm/{name}").json()[name]
    assert info["lifetime"] == 2 and info["tags"] == {"by": "root"}
    assert v3(apr, "DELETE", f"/vm/{name}", token=alice).json() == {"ok": True}
    other = short(checkout(apr, "/vm/small", token=bob)["small"]["hostname"])
    assert v3(apr, "DELETE", f"/vm/{other}", token=root).json() == {"ok": True}


def test_fabric_checkin_without_the_secret(apr):
    """The shared rule: the authenticated holder and admins may leave reservation_id
    out; anyone else gets 400 as before."""
    url = apr.served.url
    alice = token_of(apr, "alice", PW)
    bob = token_of(apr, "bob", PW_BOB)
    root = token_of(apr, "root", PW_ROOT)

    def checkin(token, **data):
        headers = {"X-Auth-Token": token} if token else {}
        return requests.post(f"{url}/vm/checkin", json=data, headers=headers)

    name = short(checkout(apr, "/vm/small", token=alice)["small"]["hostname"])
    vm = apr.rig.registry.vms.by_hostname(name)
    assert checkin(None, vmid=vm.id).status_code == 401
    r = checkin(bob, vmid=vm.id)
    assert r.status_code == 400 and "reservation_id" in r.json()["error"]
    r = checkin(alice, ip=vm.ip)
    assert r.status_code == 400
    assert apr.rig.registry.vms.get(vm.id).state == VmState.IN_USE
    assert checkin(alice, vmid=vm.id).json() == {"status": 1}
    assert checkin(alice, vmid=vm.id).status_code == 400  # she holds it no more
    refused(v3(apr, "DELETE", f"/vm/{name}", token=alice), 409)
    # an admin, without the secret
    wait_for(lambda: ready(apr, "small") >= 1)
    name = short(checkout(apr, "/vm/small", token=bob)["small"]["hostname"])
    vm = apr.rig.registry.vms.by_hostname(name)
    assert checkin(root, vmid=vm.id).json() == {"status": 1}
    # the secret still works for its holder (a fabric check-out shows it)
    wait_for(lambda: ready(apr, "small") >= 1)
    got = requests.post(
        f"{url}/vm/checkout", json={"pool": "small"}, headers={"X-Auth-Token": alice}
    ).json()
    info = v3(apr, "GET", f"/vm/{apr.rig.registry.vms.get(got['vmid']).hostname}").json()
    assert next(v for k, v in info.items() if k != "ok")["user"] == "alice"
    r = checkin(alice, vmid=got["vmid"], reservation_id=got["reservation_id"])
    assert r.json() == {"status": 1}


@pytest.mark.parametrize("change", ["disk", "snapshot"])
def test_a_vm_given_a_disk_or_snapshots_is_replaced_not_reused(pr, change):
    """What a cleanup cannot take away (a volume, snapshots) never reaches the next
    borrower: the returned VM is retired and replaced; a volume is left available."""
    name = short(checkout(pr)["small"]["hostname"])
    path = f"/vm/{name}/disk/1" if change == "disk" else f"/vm/{name}/snapshot"
    assert v3(pr, "POST", path).status_code == 202
    vm = pr.rig.registry.vms.by_hostname(name)
    r = requests.post(f"{pr.served.url}/vm/checkin", json={"vmid": vm.id})
    assert r.json() == {"status": 1}
    wait_for(lambda: not pr.rig.registry.vms.exists(vm.id))
    failed = [e for e in pr.rig.registry.events.list("vm.failed") if e.vm_id == vm.id]
    assert failed and "not reused" in failed[0].detail["reason"]
    if change == "disk":
        [vol] = pr.rig.registry.volumes.list()
        assert vol.status == "available" and vol.vm_id is None
    wait_for(lambda: filled(pr))


def test_no_snapshot_while_a_volume_is_attached(pr):
    """qemu keeps internal snapshots inside qcow2 disks only, and refuses one (and a
    revert) while a raw disk is attached: 409 saying so, before libvirt is asked."""
    name = short(checkout(pr)["small"]["hostname"])
    r = v3(pr, "POST", f"/vm/{name}/snapshot")
    assert r.status_code == 202
    snap = r.json()[name]["snapshot"]
    assert v3(pr, "POST", f"/vm/{name}/disk/1").status_code == 202
    body = refused(v3(pr, "POST", f"/vm/{name}/snapshot"), 409)
    assert "vdb (raw)" in body["message"] and "qcow2" in body["message"]
    body = refused(v3(pr, "POST", f"/vm/{name}/snapshot/{snap}"), 409)
    assert "vdb (raw)" in body["message"]
    vm = pr.rig.registry.vms.by_hostname(name)
    host = host_target(pr.rig.registry.hosts.get(vm.host_id))
    assert pr.rig.driver.snapshots(host, vm.uuid) == [snap]
