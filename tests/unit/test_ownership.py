"""Who owns what, through the served HTTP API: every state-changing operation of the
OpenAPI description, tried by its owner, another user, a reader and an admin.

The list of operations comes from the description the server serves, so an
endpoint added without a rule here fails ``test_every_state_changing_operation
_has_an_ownership_rule``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests

from orchestrator.auth import hash_password
from tests.conftest import make_pool_rig, wait_for
from tests.unit.test_auth import LEGACY_WRITES

PW = {"alice": "alice pw", "bob": "bob pw", "root": "root pw", "eve": "eve pw"}
# Forwarded ports: each VM has the host's address (the seed's check-in is by address).
HOSTS = [
    {"cpus": 16, "ram": 16384, "target": "root@127.0.0.5", "extra": {"network": "forward"}},
    {"cpus": 16, "ram": 16384, "target": "root@127.0.0.6", "extra": {"network": "forward"}},
]
POOL = {
    "name": "small",
    "instance_type": 1,
    "image": "debian-12",
    "ready_check": "none",
    "size": 4,
    "max": 8,
    "cleanup": "reset",
    "lifetime": 1,
    "lifetime_max": 3,
}
# An ed25519 public key (its private half is not needed: nothing logs in with it here).
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7oWJcWv1bKdrTLbwKzwYbKyUBMhuV7rs5TbUTAl6E x@y"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0U9bHnVx2Y8b9cJq4zXqGmUWoGmXxSxj5x2Xw8gUfN z@y"


def users_config() -> dict:
    return {
        "alice": hash_password(PW["alice"]),
        "bob": {"password": hash_password(PW["bob"])},
        "root": {"password": hash_password(PW["root"]), "role": "admin"},
        "eve": {"password": hash_password(PW["eve"]), "role": "reader"},
    }


@dataclass
class Fleet:
    url: str
    tokens: dict[str, str]
    pr: object

    def call(self, who: str | None, method: str, path: str, **data) -> requests.Response:
        headers = {"X-Auth-Token": self.tokens[who]} if who else {}
        if method == "GET" or method == "DELETE":
            return requests.request(
                method, self.url + path, params=data, headers=headers, timeout=60
            )
        return requests.request(method, self.url + path, json=data, headers=headers, timeout=60)

    def ok(self, who: str, method: str, path: str, **data) -> dict:
        r = self.call(who, method, path, **data)
        assert r.status_code in (200, 201), (who, method, path, r.status_code, r.text)
        return r.json()

    def vm(self, who: str) -> int:
        return self.ok(who, "POST", "/vm/create", name=f"{who}-vm", instance_type=1, image_id=1)[
            "vmid"
        ]

    def volume(self, who: str) -> int:
        return self.ok(who, "POST", "/volume/create", name=f"{who}-vol", size=1)["volumeid"]

    def checkout(self, who: str) -> dict:
        return self.ok(who, "POST", "/vm/checkout", pool="small")


@pytest.fixture
def fleet(tmp_path):
    pr = make_pool_rig(
        tmp_path,
        HOSTS,
        [POOL],
        config={"auth": {"enabled": True, "users": users_config()}},
    )
    url = pr.served.url
    tokens = {}
    for user, pw in PW.items():
        r = requests.post(f"{url}/token", auth=(user, pw), timeout=30)
        assert r.status_code == 200, r.text
        tokens[user] = r.json()["token"]
    wait_for(lambda: pr.pools.status()["small"]["ready"] >= 4)
    yield Fleet(url, tokens, pr)
    pr.stop()


def refused(r: requests.Response, where: str) -> None:
    assert r.status_code == 403, (where, r.status_code, r.text)
    assert r.json()["error"], where


# -- the rules, one per state-changing operation --------------------------------------


def create_vm(f: Fleet, method: str) -> None:
    refused(f.call("eve", method, "/vm/create", name="e", instance_type=1, image_id=1), "reader")
    for who in ("alice", "bob", "root"):
        r = f.call(who, method, "/vm/create", name=f"{who}-x", instance_type=1, image_id=1)
        assert r.status_code == 200, (who, r.text)
        vmid = r.json()["vmid"]
        q = f.ok("eve", "GET", "/vm/query", vmid=vmid)  # readers read
        assert q["created_by"] == who
        claims = f.pr.rig.registry.events.list(kind="vm.claim", limit=500)
        assert [e.detail for e in claims if e.vm_id == vmid] == [{"user": who}]


def destroy_vm(f: Fleet, method: str) -> None:
    mine = f.vm("alice")
    for who in ("bob", "eve"):
        refused(f.call(who, method, "/vm/destroy", vmid=mine), who)
    assert f.ok("alice", method, "/vm/destroy", vmid=mine)["status"] == 1
    assert f.ok("root", method, "/vm/destroy", vmid=f.vm("alice"))["status"] == 1
    # a checked-out pool VM: not even its holder destroys it; an admin may (force)
    held = f.checkout("alice")["vmid"]
    for who in ("alice", "bob"):
        refused(f.call(who, method, "/vm/destroy", vmid=held, force=1), who)
    assert f.ok("root", method, "/vm/destroy", vmid=held, force=1)["status"] == 1


def tag_vm(f: Fleet, method: str) -> None:
    """Tags: the VM's creator, the holder of a checked-out VM, or an admin."""
    mine = f.vm("alice")
    for who in ("bob", "eve"):
        refused(f.call(who, method, "/vm/tags", vmid=mine, tags={"team": who}), who)
    assert f.ok("alice", method, "/vm/tags", vmid=mine, tags={"team": "a"})["tags"] == {"team": "a"}
    assert f.ok("root", method, "/vm/tags", vmid=mine, tags={"ci": "1"})["tags"] == {
        "team": "a",
        "ci": "1",
    }
    held = f.checkout("alice")["vmid"]
    refused(f.call("bob", method, "/vm/tags", vmid=held, tags={"x": "y"}), "bob on alice's")
    assert f.ok("alice", method, "/vm/tags", vmid=held, tags={"job": "7"})["status"] == 1
    assert f.ok("eve", "GET", "/vm/list", tag="job:7")["vmids"] == [held]  # readers read
    ready = next(
        v for v in f.ok("root", "GET", "/vm/list")["vmids"]
        if f.ok("root", "GET", "/vm/query", vmid=v).get("status") == "ready"
    )  # fmt: skip
    refused(f.call("alice", method, "/vm/tags", vmid=ready, tags={"x": "y"}), "an idle pool VM")
    assert f.ok("root", method, "/vm/tags", vmid=ready, tags={"x": "y"})["status"] == 1


def create_volume(f: Fleet, method: str) -> None:
    refused(f.call("eve", method, "/volume/create", name="e", size=1), "reader")
    for who in ("alice", "bob", "root"):
        r = f.call(who, method, "/volume/create", name=f"{who}-v", size=1)
        assert r.status_code == 200, (who, r.text)
        q = f.ok("eve", "GET", "/volume/query", volumeid=r.json()["volumeid"])
        assert q["created_by"] == who


def destroy_volume(f: Fleet, method: str) -> None:
    vol = f.volume("alice")
    for who in ("bob", "eve"):
        refused(f.call(who, method, "/volume/destroy", volumeid=vol), who)
    assert f.ok("alice", method, "/volume/destroy", volumeid=vol)["status"] == 1
    assert f.ok("root", method, "/volume/destroy", volumeid=f.volume("alice"))["status"] == 1


def attach_volume(f: Fleet, method: str) -> None:
    vm, vol = f.vm("alice"), f.volume("alice")
    bobs_vm, bobs_vol = f.vm("bob"), f.volume("bob")
    refused(f.call("bob", method, "/volume/attach", vmid=vm, volumeid=vol), "bob: neither")
    refused(f.call("bob", method, "/volume/attach", vmid=bobs_vm, volumeid=vol), "not his volume")
    refused(f.call("bob", method, "/volume/attach", vmid=vm, volumeid=bobs_vol), "not his VM")
    refused(f.call("eve", method, "/volume/attach", vmid=vm, volumeid=vol), "reader")
    assert f.ok("alice", method, "/volume/attach", vmid=vm, volumeid=vol)["status"] == 1
    assert f.ok("root", method, "/volume/attach", vmid=bobs_vm, volumeid=f.volume("alice"))
    # a borrower attaches their own volume to the VM they hold
    held = f.checkout("bob")["vmid"]
    assert f.ok("bob", method, "/volume/attach", vmid=held, volumeid=bobs_vol)["status"] == 1


def detach_volume(f: Fleet, method: str) -> None:
    vm, vol = f.vm("alice"), f.volume("alice")
    f.ok("alice", "POST", "/volume/attach", vmid=vm, volumeid=vol)
    for who in ("bob", "eve"):
        refused(f.call(who, method, "/volume/detach", volumeid=vol), who)
    assert f.ok("alice", method, "/volume/detach", volumeid=vol)["status"] == 1
    f.ok("alice", "POST", "/volume/attach", vmid=vm, volumeid=vol)
    assert f.ok("root", method, "/volume/detach", volumeid=vol)["status"] == 1
    # the VM's user may free their VM of someone else's volume (an admin attached it)
    bobs_vm = f.vm("bob")
    f.ok("root", "POST", "/volume/attach", vmid=bobs_vm, volumeid=vol)
    assert f.ok("bob", method, "/volume/detach", volumeid=vol)["status"] == 1


def checkout(f: Fleet, method: str) -> None:
    path = "/vm/checkout" if method == "POST" else "/vms/api/v1.0/checkout"
    refused(f.call("eve", method, path), "reader")
    for who in ("alice", "bob", "root"):
        r = f.call(who, method, path)
        assert r.status_code == 200, (who, r.text)
        vmid = r.json().get("vmid") or r.json().get("VMID")
        assert f.ok("eve", "GET", "/vm/query", vmid=vmid)["held_by"] == who


def checkin(f: Fleet, method: str, path: str) -> None:
    def args(c: dict) -> dict:
        if path == "/vms/api/v1.0/checkin":  # the first seed's: by address
            return {"IP": c["ip"], "ReservationID": c["reservation_id"]}
        return {"vmid": c["vmid"], "reservation_id": c["reservation_id"]}

    c = f.checkout("alice")
    # another user, even with the secret: refused; so is a reader
    refused(f.call("bob", method, path, **args(c)), "bob with alice's secret")
    refused(f.call("eve", method, path, **args(c)), "reader")
    assert f.call("alice", method, path, **args(c)).status_code == 200
    # an admin, with the secret, checks in anyone's
    c = f.checkout("alice")
    assert f.call("root", method, path, **args(c)).status_code == 200
    if path == "/vm/checkin":
        # without the secret: only the holder herself, or an admin; others get 400
        c = f.checkout("alice")
        for who in ("bob", "eve"):
            assert f.call(who, method, path, vmid=c["vmid"]).status_code == 400, who
        assert f.call("alice", method, path, vmid=c["vmid"]).status_code == 200
        c = f.checkout("alice")
        assert f.call("root", method, path, vmid=c["vmid"]).status_code == 200


def extend(f: Fleet, method: str) -> None:
    c = f.checkout("alice")
    args = {"vmid": c["vmid"], "reservation_id": c["reservation_id"], "hours": 1}
    refused(f.call("bob", method, "/vm/extend", **args), "bob with alice's secret")
    refused(f.call("eve", method, "/vm/extend", **args), "reader")
    assert f.ok("alice", method, "/vm/extend", **args)["status"] == 1
    assert f.ok("root", method, "/vm/extend", **args)["status"] == 1


def create_schedule(f: Fleet, method: str) -> None:
    body = {"name": "w", "instance_type": 1, "image_id": 1, "count": 1,
            "start": "2099-01-01T00:00:00Z", "end": "2099-01-01T01:00:00Z"}  # fmt: skip
    for who in ("alice", "eve"):
        refused(f.call(who, method, "/schedules", **body), who)
    r = f.call("root", method, "/schedules", **body)
    assert r.status_code == 201 and r.json()["created_by"] == "root", r.text


def delete_schedule(f: Fleet, method: str) -> None:
    body = {"name": "w", "pool": "small", "count": 1,
            "start": "2099-01-01T00:00:00Z", "end": "2099-01-01T01:00:00Z"}  # fmt: skip
    sid = f.ok("root", "POST", "/schedules", **body)["id"]
    for who in ("alice", "eve"):
        refused(f.call(who, method, f"/schedules/{sid}"), who)
    assert f.ok("root", method, f"/schedules/{sid}")["status"] == 1


def create_request(f: Fleet, method: str) -> None:
    # a user's request is theirs (held by them when met); a reader's is refused
    refused(f.call("eve", method, "/requests", pools={"small": 1}), "reader")
    for who in ("alice", "root"):
        r = f.call(who, method, "/requests", pools={"small": 1})
        assert r.status_code == 201 and r.json()["requested_by"] == who, r.text


def cancel_request(f: Fleet, method: str) -> None:
    # its requester or an admin cancels it; nobody else, not even an ended one
    for owner, canceller in (("alice", "alice"), ("alice", "root")):
        rid = f.ok(owner, "POST", "/requests", pools={"small": 1})["request_id"]
        for who in ("bob", "eve"):
            refused(f.call(who, method, f"/requests/{rid}"), who)
        assert f.ok(canceller, method, f"/requests/{rid}")["state"] == "cancelled"
        refused(f.call("bob", method, f"/requests/{rid}"), "bob, after the cancel")


def reload_pm(f: Fleet, method: str) -> None:
    # operators' tool: admins only (the file is unchanged: nothing is added or removed)
    for who in ("alice", "bob", "eve"):
        refused(f.call(who, method, "/pm/reload"), who)
    body = f.ok("root", method, "/pm/reload")
    assert body["added"] == [] and body["removed"] == []


def evacuate_pm(f: Fleet, method: str) -> None:
    # operators' tool: admins only; an admin is let through to the state check (the
    # host answers, so there is nothing to evacuate: 409)
    for who in ("alice", "bob", "eve"):
        refused(f.call(who, method, "/pm/1/evacuate"), who)
    r = f.call("root", method, "/pm/1/evacuate")
    assert r.status_code == 409 and "not down" in r.json()["error"], r.text


def issue_token(f: Fleet, method: str) -> None:
    # a token is always its own user's: basic credentials choose the user
    for who in PW:
        r = requests.request(method, f"{f.url}/token", auth=(who, PW[who]), timeout=30)
        assert r.status_code == 200, r.text
        tok = r.json()["token"]
        info = requests.get(f"{f.url}/token/{tok}", auth=(who, PW[who]), timeout=30).json()
        assert info[tok]["user"] == who


def revoke_token(f: Fleet, method: str) -> None:
    tok = requests.post(f"{f.url}/token", auth=("alice", PW["alice"]), timeout=30).json()["token"]
    for who in ("bob", "root"):  # not even an admin revokes another's token by name
        r = f.call(who, method, f"/token/{tok}")
        assert r.status_code == 404, (who, r.text)
    assert f.ok("alice", method, f"/token/{tok}")["ok"] is True


def add_key(f: Fleet, method: str) -> None:
    refused(f.call("eve", method, "/keys", key=KEY), "reader")
    for who in ("alice", "bob"):
        r = f.call(who, method, "/keys", key=KEY, name="laptop")
        assert r.status_code == 201, r.text
        assert [k["fingerprint"] for k in f.ok(who, "GET", "/keys")["keys"]] == [
            r.json()["fingerprint"]
        ]


def remove_key(f: Fleet, method: str) -> None:
    kid = f.ok("alice", "POST", "/keys", key=KEY2)["id"]
    for who in ("bob", "eve"):
        refused(f.call(who, method, f"/keys/{kid}"), who)
    assert f.ok("alice", method, f"/keys/{kid}")["status"] == 1
    kid = f.ok("alice", "POST", "/keys", key=KEY2)["id"]
    assert f.ok("root", method, f"/keys/{kid}")["status"] == 1


def power_vm(f: Fleet, method: str, path: str) -> None:
    """Stop, start, reboot: the VM's creator or an admin; a checked-out VM's holder may
    reboot it; the console is read by the same people (a GET, checked here too)."""
    args = {"force": 1}
    for who in ("alice", "root"):
        vmid = f.vm("alice")
        if path == "/vm/start":
            f.ok("alice", "POST", "/vm/stop", vmid=vmid, **args)
        for other in ("bob", "eve"):
            refused(f.call(other, method, path, vmid=vmid, **args), other)
        assert f.ok(who, method, path, vmid=vmid, **args)["status"] == 1, who
        refused(f.call("bob", "GET", "/vm/console", vmid=vmid), "bob reads alice's console")
        assert f.ok(who, "GET", "/vm/console", vmid=vmid)["console"] == ""
    held = f.checkout("alice")["vmid"]
    refused(f.call("bob", method, path, vmid=held, **args), "bob on alice's check-out")
    if path == "/vm/reboot":
        assert f.ok("alice", method, path, vmid=held, **args)["status"] == 1
        assert f.ok("alice", "GET", "/vm/console", vmid=held)["vmid"] == held
    else:  # pool VMs are not stopped (nor started): a conflict, for the holder too
        r = f.call("alice", method, path, vmid=held, **args)
        assert r.status_code in (403, 409), r.text


def resize_vm(f: Fleet, method: str) -> None:
    vmid = f.vm("alice")
    for who in ("bob", "eve"):
        refused(f.call(who, method, "/vm/resize", vmid=vmid, instance_type=2, force=1), who)
    assert f.ok("alice", method, "/vm/resize", vmid=vmid, instance_type=2, force=1)["ram"] > 0
    assert f.ok("root", method, "/vm/resize", vmid=vmid, instance_type=3, force=1)["status"] == 1
    assert f.ok("eve", "GET", "/vm/query", vmid=vmid)["instance_type"] == 3


def maintenance_on(f: Fleet, method: str) -> None:
    for who in ("alice", "eve"):
        refused(f.call(who, method, "/pm/1/maintenance", reason="mine"), who)
    assert f.ok("root", method, "/pm/1/maintenance", reason="kernel update")["maintenance"] == (
        "kernel update"
    )


def maintenance_off(f: Fleet, method: str) -> None:
    f.ok("root", "POST", "/pm/1/maintenance", reason="kernel update")
    for who in ("alice", "eve"):
        refused(f.call(who, method, "/pm/1/maintenance"), who)
    assert f.ok("root", method, "/pm/1/maintenance")["maintenance"] is None


def drain_host(f: Fleet, method: str) -> None:
    for who in ("alice", "eve"):
        refused(f.call(who, method, "/pm/1/drain"), who)
    r = f.call("root", method, "/pm/1/drain")
    assert r.status_code == 202 and r.json()["requested_by"] == "root", r.text


def cancel_drain(f: Fleet, method: str) -> None:
    f.call("root", "POST", "/pm/1/drain")
    for who in ("alice", "eve"):
        refused(f.call(who, method, "/pm/1/drain"), who)
    r = f.call("root", method, "/pm/1/drain")  # cancelled, or it had finished already
    assert r.status_code == 200 or "not being drained" in r.json()["error"], r.text


def migrate_vm(f: Fleet, method: str) -> None:
    mine = f.vm("alice")  # not even its creator moves it
    for who in ("alice", "bob", "eve"):
        refused(f.call(who, method, f"/vm/{mine}/migrate", pmid=2), who)
    # An admin may; this fleet's VMs are reached by ports forwarded on their host,
    # so the move itself is refused, with the reason (not for want of a right).
    r = f.call("root", method, f"/vm/{mine}/migrate", pmid=2)
    assert r.status_code == 409 and "forwarded" in r.json()["error"], r.text


RULES: dict[tuple[str, str], Callable[[Fleet, str], None]] = {
    ("/vm/create", "GET"): create_vm,
    ("/vm/create", "POST"): create_vm,
    ("/vm/destroy", "GET"): destroy_vm,
    ("/vm/destroy", "POST"): destroy_vm,
    ("/vm/stop", "POST"): lambda f, m: power_vm(f, m, "/vm/stop"),
    ("/vm/start", "POST"): lambda f, m: power_vm(f, m, "/vm/start"),
    ("/vm/reboot", "POST"): lambda f, m: power_vm(f, m, "/vm/reboot"),
    ("/vm/resize", "POST"): resize_vm,
    ("/vm/tags", "POST"): tag_vm,
    ("/volume/create", "GET"): create_volume,
    ("/volume/create", "POST"): create_volume,
    ("/volume/destroy", "GET"): destroy_volume,
    ("/volume/destroy", "POST"): destroy_volume,
    ("/volume/attach", "GET"): attach_volume,
    ("/volume/attach", "POST"): attach_volume,
    ("/volume/detach", "GET"): detach_volume,
    ("/volume/detach", "POST"): detach_volume,
    ("/vm/checkout", "POST"): checkout,
    ("/vms/api/v1.0/checkout", "GET"): checkout,
    ("/vm/checkin", "POST"): lambda f, m: checkin(f, m, "/vm/checkin"),
    ("/vms/api/v1.0/checkin", "POST"): lambda f, m: checkin(f, m, "/vms/api/v1.0/checkin"),
    ("/vm/extend", "POST"): extend,
    ("/schedules", "POST"): create_schedule,
    ("/pm/reload", "POST"): reload_pm,
    ("/pm/{pmid}/evacuate", "POST"): evacuate_pm,
    ("/schedules/{id}", "DELETE"): delete_schedule,
    ("/requests", "POST"): create_request,
    ("/requests/{id}", "DELETE"): cancel_request,
    ("/token", "POST"): issue_token,
    ("/token/{token}", "DELETE"): revoke_token,
    ("/keys", "POST"): add_key,
    ("/keys/{id}", "DELETE"): remove_key,
    ("/pm/{pmid}/maintenance", "POST"): maintenance_on,
    ("/pm/{pmid}/maintenance", "DELETE"): maintenance_off,
    ("/pm/{pmid}/drain", "POST"): drain_host,
    ("/pm/{pmid}/drain", "DELETE"): cancel_drain,
    ("/vm/{vmid}/migrate", "POST"): migrate_vm,
}


def state_changing_operations(url: str) -> set[tuple[str, str]]:
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    ops = set()
    for path, item in spec["paths"].items():
        for method in item:
            m = method.upper()
            if m in ("POST", "PUT", "PATCH", "DELETE") or (m == "GET" and path in LEGACY_WRITES):
                ops.add((path, m))
    return ops


def test_every_state_changing_operation_has_an_ownership_rule(fleet):
    assert state_changing_operations(fleet.url) == set(RULES)


@pytest.mark.parametrize("op", sorted(RULES), ids=lambda op: f"{op[1]} {op[0]}")
def test_ownership_across_users(fleet, op):
    path, method = op
    RULES[op](fleet, method)


def test_what_was_made_with_auth_off_belongs_to_admins_only(tmp_path):
    """A VM made while authentication was off has no creator: once auth is on, only an
    admin may destroy it."""
    from tests.conftest import make_rig

    rig = make_rig(tmp_path, HOSTS)
    try:
        vm = rig.fabric.create_vm("old", 1, 1)
        assert vm.created_by is None
        cfg = {
            "state_dir": str(tmp_path / "state"),
            "auth": {"enabled": True, "users": users_config()},
        }
        services = rig.restart(cfg)
        from orchestrator.access import Principal, Role
        from orchestrator.errors import Forbidden

        with pytest.raises(Forbidden, match="belongs to no user"):
            services.fabric.destroy_vm(vm.id, by=Principal("alice", Role.USER))
        services.fabric.destroy_vm(vm.id, by=Principal("root", Role.ADMIN))
    finally:
        rig.stop()


def test_a_pool_open_to_some_users_only(tmp_path):
    pools = [
        {**POOL, "name": "team", "size": 2, "max": 2, "users": ["alice"]},
        {**POOL, "name": "open", "size": 1, "max": 1},
    ]
    pr = make_pool_rig(
        tmp_path, HOSTS, pools, config={"auth": {"enabled": True, "users": users_config()}}
    )
    try:
        url = pr.served.url
        tok = {
            u: requests.post(f"{url}/token", auth=(u, PW[u]), timeout=30).json()["token"]
            for u in ("alice", "bob", "root")
        }
        wait_for(lambda: pr.pools.status()["team"]["ready"] == 2)
        wait_for(lambda: pr.pools.status()["open"]["ready"] == 1)

        def co(who: str, **data) -> requests.Response:
            h = {"X-Auth-Token": tok[who]}
            return requests.post(f"{url}/vm/checkout", json=data, headers=h, timeout=30)

        r = co("bob", pool="team")
        assert r.status_code == 403 and "not open to bob" in r.json()["error"]
        assert co("alice", pool="team").json()["pool"] == "team"
        assert co("root", pool="team").json()["pool"] == "team"  # admins may
        # asked for any pool, bob gets one open to him
        assert co("bob").json()["pool"] == "open"
        listed = requests.get(f"{url}/pool/list", timeout=30).json()["pools"]
        assert {p["name"]: p["users"] for p in listed} == {"team": ["alice"], "open": None}
    finally:
        pr.stop()


def test_pool_users_must_be_configured_users():
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pools\[0\]\.users\[0\]: 'zed' is not a user"):
        config_from_dict(
            {
                "auth": {"enabled": True, "users": users_config()},
                "pools": [{**POOL, "users": ["zed"]}],
            }
        )


def test_validate_warns_of_pools_shared_with_tmp_cleanup(rig, tmp_path, capsys):
    from orchestrator import cli

    files = [str(rig.pm_file), str(rig.image_file), str(rig.types_file)]
    h = hash_password("x")
    conf = tmp_path / "fabric.yaml"
    conf.write_text(
        "auth:\n"
        f"  enabled: true\n  users: {{alice: '{h}', bob: '{h}'}}\n"
        "pools:\n"
        "  - {name: shared, instance_type: 1, image: alpine, cleanup: tmp}\n"
        "  - {name: solo, instance_type: 1, image: alpine, cleanup: tmp, users: [alice]}\n"
        "  - {name: fresh, instance_type: 1, image: alpine, cleanup: reset}\n"
    )
    assert cli.main(["validate", *files, "--config", str(conf)]) == 0
    err = capsys.readouterr()
    assert err.err.splitlines() == [
        f"{conf}:5: pools[0].cleanup: warning: pool shared serves every user with cleanup tmp: "
        "a borrower is root on its guests, and emptying /tmp (and removing their keys) does "
        "not undo what else they changed; set cleanup: reset to give each borrower the "
        "image afresh"
    ]
    assert "(1 warning(s))" in err.out
    conf.write_text("pools:\n  - {name: p, instance_type: 1, image: alpine, users: [alice]}\n")
    assert cli.main(["validate", *files, "--config", str(conf)]) == 0
    assert "users have no effect while authentication is off" in capsys.readouterr().err


def test_the_server_warns_at_start_of_a_pool_shared_with_tmp_cleanup(tmp_path, caplog):
    import logging

    from tests.conftest import make_rig

    caplog.set_level(logging.WARNING)
    pool = {**POOL, "cleanup": "tmp", "size": 0}
    rig = make_rig(
        tmp_path,
        HOSTS,
        config={"auth": {"enabled": True, "users": users_config()}, "pools": [pool]},
    )
    rig.stop()
    assert "pool small serves every user with cleanup tmp" in caplog.text
