"""Requests that wait for capacity (orchestrator/ondemand.py): the fabric's /requests
and vmpooler's /api/v3/ondemandvm over one registry, on test:// hosts."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from datetime import datetime, timedelta

import requests

from orchestrator.auth import hash_password
from orchestrator.clock import as_utc
from orchestrator.model import VmState
from orchestrator.schedules import now_utc
from tests.conftest import make_pool_rig, wait_for

HOSTS = [{"cpus": 64, "ram": 65536}, {"cpus": 64, "ram": 65536}]


class Clock:
    """The rig's clock (its deadlines'): now, plus as long as the test moves it on."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return now_utc() + self.ahead


def pool(size: int, most: int, **extra) -> dict:
    return {
        "name": "small",
        "instance_type": 1,
        "image": "debian-12",
        "ready_check": "none",
        "size": size,
        "max": most,
        "cleanup": "reset",
        **extra,
    }


def one_pass(pr) -> None:
    """One pass of the pool worker, and the builds and cleanups it started."""
    pr.worker.run_once()
    pr.worker.drain()


def counts(pr) -> dict:
    return pr.pools.status()["small"]


def test_a_request_larger_than_the_ready_set_is_met_as_vms_are_built(tmp_path):
    pr = make_pool_rig(
        tmp_path, HOSTS, [pool(1, 4)], config={"hostnames": {"domain": "vms.example"}},
        start_worker=False,
    )  # fmt: skip
    try:
        url = pr.served.url
        one_pass(pr)
        assert counts(pr)["ready"] == 1
        first = {vm.id for vm in pr.rig.registry.vms.list()}
        r = requests.post(f"{url}/requests", json={"pools": {"small": 3}}, timeout=30)
        assert r.status_code == 201, r.text
        body = r.json()
        rid = body["request_id"]
        assert body["state"] == "pending"
        assert body["progress"] == {"small": {"wanted": 3, "ready": 0, "pending": 3}}
        g = requests.get(f"{url}/requests/{rid}", timeout=30)
        assert g.status_code == 202 and g.json()["state"] == "pending"
        # the pass sets the ready VM aside and builds the two missing (within max 4)
        pr.worker.run_once()
        g = requests.get(f"{url}/requests/{rid}", timeout=30).json()
        assert g["progress"] == {"small": {"wanted": 3, "ready": 1, "pending": 2}}
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert v3.status_code == 202
        assert v3.json() == {
            "ok": True,
            "request_id": rid,
            "ready": False,
            "small": {"ready": "1", "pending": "2"},
        }
        pr.worker.drain()
        one_pass(pr)
        g = requests.get(f"{url}/requests/{rid}", timeout=30)
        assert g.status_code == 200, g.text
        done = g.json()
        assert done["state"] == "ready"
        vms = done["vms"]
        assert len(vms) == 3 and len({v["vmid"] for v in vms}) == 3
        assert len({v["vmid"] for v in vms} - first) == 2  # two were built for it
        for v in vms:
            row = pr.rig.registry.vms.get(v["vmid"])
            assert row.state == VmState.IN_USE and row.request_id == rid
            assert row.reservation_hash is not None and row.expires_at is not None
            assert v["hostname"] == row.hostname
            assert v["fqdn"] == f"{row.hostname}.vms.example"
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert v3.status_code == 200
        assert v3.json() == {
            "ok": True,
            "request_id": rid,
            "ready": True,
            "small": {"hostname": [v["fqdn"] for v in vms]},  # FQDNs, as vmpooler's v3
        }
        # the refill keeps the pool's size besides (4 = max)
        one_pass(pr)
        assert counts(pr)["ready"] == 1 and counts(pr)["in_use"] == 3
    finally:
        pr.stop()


def test_cancel_gives_back_what_was_set_aside_at_once(tmp_path):
    pr = make_pool_rig(tmp_path, HOSTS, [pool(2, 3)], start_worker=False)
    try:
        url = pr.served.url
        one_pass(pr)
        assert counts(pr)["ready"] == 2
        rid = requests.post(
            f"{url}/requests", json={"pools": {"small": 3}, "request_id": "mine-1"}, timeout=30
        ).json()["request_id"]
        assert rid == "mine-1"
        pr.worker.run_once()  # sets the 2 ready VMs aside, starts building a third
        aside = [vm.id for vm in pr.rig.registry.requests.vms_of(rid)]
        assert len(aside) == 2
        assert requests.get(f"{url}/requests/{rid}", timeout=30).json()["progress"] == {
            "small": {"wanted": 3, "ready": 2, "pending": 1}
        }
        d = requests.delete(f"{url}/requests/{rid}", timeout=30)
        assert d.status_code == 200 and d.json()["state"] == "cancelled"
        for vm_id in aside:
            vm = pr.rig.registry.vms.get(vm_id)
            assert vm.state == VmState.READY
            assert (vm.held_by, vm.request_id, vm.reservation_hash) == (None, None, None)
        # again: the same answer, nothing changes; never set aside again
        again = requests.delete(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert again.status_code == 200 and again.json() == {"ok": True}
        pr.worker.drain()
        one_pass(pr)
        assert counts(pr)["ready"] == 3 and counts(pr)["in_use"] == 0
        g = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert g.status_code == 200
        assert g.json()["ready"] is False and "deleted" in g.json()["message"]
        # a ready request's cancel checks its VMs in: they are cleaned and served again
        r2 = requests.post(f"{url}/api/v3/ondemandvm/small+small", timeout=30)
        assert r2.status_code == 201 and r2.json()["ok"] is True
        rid2 = r2.json()["request_id"]
        pr.worker.run_once()
        assert requests.get(f"{url}/requests/{rid2}", timeout=30).json()["state"] == "ready"
        held = [vm.id for vm in pr.rig.registry.requests.vms_of(rid2)]
        assert len(held) == 2
        assert requests.delete(f"{url}/requests/{rid2}", timeout=30).json()["state"] == "cancelled"
        states = {pr.rig.registry.vms.get(v).state for v in held}
        assert states <= {VmState.CLEANING, VmState.READY}
        pr.worker.drain()
        one_pass(pr)
        assert counts(pr)["ready"] == 3 and counts(pr)["in_use"] == 0
        assert requests.get(f"{url}/requests/nope", timeout=30).status_code == 404
        assert requests.delete(f"{url}/api/v3/ondemandvm/nope", timeout=30).status_code == 404
    finally:
        pr.stop()


def test_a_request_not_met_in_time_fails_saying_which_pool_and_what_was_short(tmp_path):
    clock = Clock()
    pr = make_pool_rig(tmp_path, HOSTS, [pool(2, 2)], start_worker=False, clock=clock)
    try:
        url = pr.served.url
        one_pass(pr)
        out = requests.post(f"{url}/vm/checkout", json={"pool": "small"}, timeout=30).json()
        assert out["vmid"]
        r = requests.post(f"{url}/api/v3/ondemandvm", json={"small": "2"}, timeout=30)
        assert r.status_code == 201
        rid = r.json()["request_id"]
        pr.worker.run_once()  # one VM set aside; the pool is at its max
        aside = [vm.id for vm in pr.rig.registry.requests.vms_of(rid)]
        assert len(aside) == 1
        pr.worker.run_once()  # not yet
        assert requests.get(f"{url}/requests/{rid}", timeout=30).status_code == 202
        deadline = as_utc(pr.rig.registry.requests.get(rid).deadline)
        clock.ahead = deadline - now_utc() + timedelta(seconds=1)  # 900 s later
        pr.worker.run_once()
        g = requests.get(f"{url}/requests/{rid}", timeout=30)
        assert g.status_code == 200
        body = g.json()
        assert body["state"] == "failed"
        assert body["message"] == (
            "not met within 900 s: pool small: 1 of 2 set aside; the pool is at its max of 2 "
            "VMs (1 in use by others, 0 cleaning, 0 building, 0 ready)"
        )
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert v3.status_code == 200
        assert v3.json() == {
            "ok": True,
            "request_id": rid,
            "ready": False,
            "message": body["message"],
        }
        vm = pr.rig.registry.vms.get(aside[0])  # never used: ready again at once
        assert vm.state == VmState.READY and vm.request_id is None and vm.held_by is None
        # a failed request cannot be cancelled into anything else
        assert requests.delete(f"{url}/requests/{rid}", timeout=30).json()["state"] == "failed"
    finally:
        pr.stop()


def test_requests_that_could_never_be_met_are_refused_at_once(tmp_path):
    pr = make_pool_rig(
        tmp_path, HOSTS, [pool(0, 4)], config={"ondemand": {"max_per_request": 5}},
        start_worker=False,
    )  # fmt: skip
    try:
        url = pr.served.url

        def post(body):
            return requests.post(f"{url}/requests", json=body, timeout=30)

        def v3(body):
            return requests.post(f"{url}/api/v3/ondemandvm", json=body, timeout=30)

        r = post({"pools": {"small": 5}})
        assert r.status_code == 400 and "never holds more than 4" in r.json()["error"]
        r = post({"pools": {"small": 2, "nope": 1, "gone": 1}})
        assert r.status_code == 404 and r.json()["error"] == "no such pool: nope, gone"
        r = v3({"small": "1", "nope": "1"})
        assert r.status_code == 404 and r.json()["bad_templates"] == ["nope"]
        assert r.json()["ok"] is False
        r = requests.post(f"{url}/api/v3/ondemandvm/small+nope", timeout=30)
        assert r.status_code == 404 and r.json()["bad_templates"] == ["nope"]
        r = v3({"small": "6"})
        assert r.status_code == 403 and "at most 5" in r.json()["message"]
        for bad in ({"pools": {}}, {"pools": {"small": 0}}, {"pools": {"small": "x"}},
                    {"pools": ["small"]}, {"pools": {"small": 1}, "extra": 1},
                    {"pools": {"small": 1}, "request_id": "bad id"},
                    {"pools": {"small": 1}, "hours": -1}):  # fmt: skip
            r = post(bad)
            assert r.status_code == 400 and r.json()["error"], (bad, r.text)
        for bad in ("[1]", "{", '{"small": "two"}', "{}"):
            r = requests.post(
                f"{url}/api/v3/ondemandvm", data=bad,
                headers={"Content-Type": "application/json"}, timeout=30,
            )  # fmt: skip
            assert r.status_code == 400 and r.json()["ok"] is False, (bad, r.text)
        assert post({"pools": {"small": 1}, "request_id": "r1"}).status_code == 201
        r = v3({"small": "1", "request_id": "r1"})
        assert r.status_code == 409 and r.json()["ok"] is False
        assert requests.get(f"{url}/requests?state=bogus", timeout=30).status_code == 400
        listed = requests.get(f"{url}/requests?state=pending", timeout=30).json()["requests"]
        assert [x["request_id"] for x in listed] == ["r1"]
    finally:
        pr.stop()


USERS = [f"user{i:02d}" for i in range(16)]


def test_16_users_in_parallel_are_served_in_arrival_order_never_sharing_a_vm(tmp_path):
    secret = hash_password("pw")
    users = {u: secret for u in USERS} | {"root": {"password": secret, "role": "admin"}}
    pr = make_pool_rig(
        tmp_path, HOSTS, [pool(1, 3)],
        config={"auth": {"enabled": True, "users": users, "login_rate": 100}},
    )  # fmt: skip
    try:
        url = pr.served.url
        tokens = {
            u: requests.post(f"{url}/token", auth=(u, "pw"), timeout=30).json()["token"]
            for u in [*USERS, "root"]
        }
        barrier = threading.Barrier(len(USERS))
        made: dict[str, dict] = {}
        errors: list[BaseException] = []

        def client(user: str) -> None:
            h = {"X-Auth-Token": tokens[user]}
            try:
                barrier.wait(timeout=60)
                r = requests.post(f"{url}/requests", json={"pools": {"small": 2}}, headers=h,
                                  timeout=60)  # fmt: skip
                assert r.status_code == 201, r.text
                rid = r.json()["request_id"]
                made[user] = r.json()

                def ready():
                    g = requests.get(f"{url}/requests/{rid}", headers=h, timeout=60)
                    return g.json() if g.status_code == 200 else None

                got = wait_for(ready, timeout=600, interval=0.1)
                assert got["state"] == "ready" and len(got["vms"]) == 2, got
                # done with them: give them back (a ready request's cancel checks them in)
                d = requests.delete(f"{url}/requests/{rid}", headers=h, timeout=60)
                assert d.status_code == 200 and d.json()["state"] == "cancelled"
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(u,)) for u in USERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert all(m["state"] == "pending" for m in made.values())
        # nobody but its requester (or an admin) cancels a request, even an ended one
        other = requests.delete(
            f"{url}/requests/{made[USERS[0]]['request_id']}",
            headers={"X-Auth-Token": tokens[USERS[1]]},
            timeout=60,
        )
        assert other.status_code == 403, other.text
        assert "user01 may not cancel request" in other.json()["error"]
        number = {m["request_id"]: m["number"] for m in made.values()}
        assert len(set(number.values())) == len(USERS)
        events = list(reversed(pr.rig.registry.events.list(limit=100_000)))
        # in arrival order: the order they became ready is the order the server took them
        readied = [e.detail["request"] for e in events if e.kind == "request.ready"]
        assert len(readied) == len(USERS)
        assert [number[r] for r in readied] == sorted(number.values())
        # no VM is ever set aside for a request while another holds it
        holder: dict[int, str] = {}
        owner = {m["request_id"]: u for u, m in made.items()}
        for e in events:
            if e.kind == "vm.set_aside":
                rid = e.detail["request"]
                assert e.vm_id not in holder, (e.vm_id, holder[e.vm_id], rid)
                holder[e.vm_id] = rid
                assert e.owner == owner[rid]  # held by its requester
            elif e.kind in ("vm.checkin", "vm.unset_aside", "vm.expired") and e.vm_id in holder:
                del holder[e.vm_id]
        assert holder == {}
        per_request = Counter(e.detail["request"] for e in events if e.kind == "vm.set_aside")
        assert per_request == {r: 2 for r in number}
        assert len(pr.rig.registry.vms.list()) <= 3  # never past the pool's max
        admin = requests.get(f"{url}/requests", headers={"X-Auth-Token": tokens["root"]},
                             timeout=60).json()["requests"]  # fmt: skip
        assert len(admin) == len(USERS)
        mine = requests.get(f"{url}/requests", headers={"X-Auth-Token": tokens[USERS[3]]},
                            timeout=60).json()["requests"]  # fmt: skip
        assert [x["requested_by"] for x in mine] == [USERS[3]]
        # vmpooler's API on the same requests and rules
        h5, h6 = ({"X-Auth-Token": tokens[u]} for u in (USERS[5], USERS[6]))
        r = requests.post(f"{url}/api/v3/ondemandvm/small", headers=h5, timeout=60)
        assert r.status_code == 201 and r.json()["ok"] is True
        rid = r.json()["request_id"]
        assert (
            requests.get(f"{url}/requests/{rid}", timeout=60).json()["requested_by"] == (USERS[5])
        )
        no = requests.delete(f"{url}/api/v3/ondemandvm/{rid}", headers=h6, timeout=60)
        assert no.status_code == 403 and no.json()["ok"] is False
        assert "may not cancel request" in no.json()["message"]
        yes = requests.delete(f"{url}/api/v3/ondemandvm/{rid}", headers=h5, timeout=60)
        assert yes.status_code == 200 and yes.json() == {"ok": True}
    finally:
        pr.stop()


def test_a_sigkilled_server_loses_no_request(tmp_path):
    from tests.unit.test_served import Server

    srv = Server(
        tmp_path,
        [(16, 8192)],
        "workers: {interval: 0.2}\n"
        "cluster: {heartbeat: 0.5, dead_after: 2}\n"
        "pools: [{name: small, instance_type: 1, image: base, ready_check: none, size: 2,"
        " max: 2, cleanup: reset}]\n",
    )
    srv.start()
    try:
        url = srv.url

        def ready_vms() -> int:
            return requests.get(f"{url}/pool/query", params={"pool": "small"}, timeout=60).json()[
                "ready"
            ]

        wait_for(lambda: ready_vms() == 2)
        assert requests.post(f"{url}/vm/checkout", json={"pool": "small"}, timeout=30).ok
        r = requests.post(f"{url}/requests", json={"pools": {"small": 2}}, timeout=30)
        assert r.status_code == 201
        rid = r.json()["request_id"]

        def progress() -> dict:
            g = requests.get(f"{url}/requests/{rid}", timeout=60)
            assert g.status_code == 202, g.text  # the pool is at its max: it cannot be met
            return g.json()["progress"]["small"]

        wait_for(lambda: progress()["ready"] == 1)  # one VM set aside, the other in use
        assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
        srv.start()
        # test:// hosts live in the server's process: after the restart every VM is
        # gone (vanished, then retired); the request is still there and is met
        url = srv.url
        g = requests.get(f"{url}/requests/{rid}", timeout=60)
        assert g.status_code in (200, 202) and g.json()["request_id"] == rid

        def done() -> dict | None:
            g = requests.get(f"{url}/requests/{rid}", timeout=60)
            return g.json() if g.status_code == 200 else None

        out = wait_for(done, timeout=300, interval=0.2)
        assert out["state"] == "ready" and len(out["vms"]) == 2
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=60).json()
        assert v3["ready"] is True and len(v3["small"]["hostname"]) == 2
    finally:
        srv.stop(signal.SIGTERM)


def test_a_request_over_its_requesters_quota_waits_alone_and_says_why(tmp_path):
    secret = hash_password("pw")
    clock = Clock()
    users = {
        "alice": {"password": secret, "quota": {"checked_out": 2}},
        "bob": secret,
    }
    pr = make_pool_rig(
        tmp_path, HOSTS, [pool(3, 4)],
        config={"auth": {"enabled": True, "users": users}}, start_worker=False, clock=clock,
    )  # fmt: skip
    try:
        url = pr.served.url
        tok = {u: requests.post(f"{url}/token", auth=(u, "pw"), timeout=30).json()["token"]
               for u in users}  # fmt: skip

        def h(u):
            return {"X-Auth-Token": tok[u]}

        one_pass(pr)
        # more than she may ever hold: refused at once
        r = requests.post(f"{url}/requests", json={"pools": {"small": 3}}, headers=h("alice"),
                          timeout=30)  # fmt: skip
        assert r.status_code == 403
        assert r.json()["error"] == (
            "quota exceeded for user alice (checked-out VMs: 3 asked for > 2)"
        )
        # she holds one already: her request for 2 waits, and holds up no one else
        assert requests.post(f"{url}/vm/checkout", json={"pool": "small"}, headers=h("alice"),
                             timeout=30).ok  # fmt: skip
        a = requests.post(f"{url}/requests", json={"pools": {"small": 2}}, headers=h("alice"),
                          timeout=30).json()["request_id"]  # fmt: skip
        b = requests.post(f"{url}/requests", json={"pools": {"small": 2}}, headers=h("bob"),
                          timeout=30).json()["request_id"]  # fmt: skip
        pr.worker.run_once()
        pr.worker.drain()
        assert requests.get(f"{url}/requests/{b}", timeout=30).json()["state"] == "ready"
        pending = requests.get(f"{url}/requests/{a}", timeout=30).json()
        assert pending["state"] == "pending" and pending["progress"]["small"]["ready"] == 0
        assert pending["message"].startswith("quota exceeded for user alice")
        deadline = as_utc(pr.rig.registry.requests.get(a).deadline)
        clock.ahead = deadline - now_utc() + timedelta(seconds=1)
        pr.worker.run_once()
        failed = requests.get(f"{url}/requests/{a}", timeout=30).json()
        assert failed["state"] == "failed"
        assert failed["message"].startswith("not met within 900 s: pool small: 0 of 2 set aside; ")
        assert (
            "quota exceeded for user alice (checked-out VMs: 1 in use + 2 > 2)"
            in (failed["message"])
        )
    finally:
        pr.stop()


def test_fair_order_one_users_many_requests_do_not_starve_others():
    from orchestrator.ondemand import fair_order
    from orchestrator.registry import RequestRow

    def req(n: int, who: str | None) -> RequestRow:
        return RequestRow(id=n, request_id=f"r{n}", requested_by=who, pools={"a": 1})

    pending = [req(1, "alice"), req(2, "alice"), req(3, "alice"), req(4, "bob"),
               req(5, "carol"), req(6, "bob")]  # fmt: skip
    order = [r.request_id for r in fair_order(pending, started=set())]
    assert order == ["r1", "r4", "r5", "r2", "r6", "r3"]
    # a request that already holds VMs keeps its place ahead of newcomers
    order = [r.request_id for r in fair_order(pending, started={"r3"})]
    assert order == ["r3", "r1", "r4", "r5", "r2", "r6"]
    # one requester (or authentication off: nobody in particular): arrival order
    same = [req(n, None) for n in (3, 1, 2)]
    assert [r.id for r in fair_order(same, started=set())] == [1, 2, 3]


def test_the_requesters_keys_go_into_the_guests_or_the_request_says_why_not(tmp_path):
    secret = hash_password("pw")
    pr = make_pool_rig(
        tmp_path, HOSTS, [pool(1, 2)], config={"auth": {"enabled": True, "users": {"bob": secret}}},
        start_worker=False,
    )  # fmt: skip
    try:
        url = pr.served.url
        hb = {"X-Auth-Token": requests.post(f"{url}/token", auth=("bob", "pw"), timeout=30)
              .json()["token"]}  # fmt: skip
        one_pass(pr)
        # bob's registered keys go into his VMs' guests, as at a check-out: these
        # test:// guests cannot take them, and the ready request says so
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7oWJcWv1bKdrTLbwKzwYbKyUBMhuV7rs5TbUTAl6E x@y"
        r = requests.post(f"{url}/keys", json={"name": "k", "key": key}, headers=hb, timeout=30)
        assert r.status_code == 201
        c = requests.post(f"{url}/requests", json={"pools": {"small": 1}}, headers=hb,
                          timeout=30).json()["request_id"]  # fmt: skip
        one_pass(pr)
        got = requests.get(f"{url}/requests/{c}", timeout=30).json()
        assert got["state"] == "ready"
        vmid = got["vms"][0]["vmid"]
        assert got["message"] == (
            f"your SSH keys could not be put into vmid {vmid} (vmid {vmid} has no SSH "
            "endpoint the fabric can reach)"
        )
    finally:
        pr.stop()


def test_a_failed_request_names_failing_builds_and_the_fabrics_vm_limit(tmp_path):
    clock = Clock()
    big = {**pool(0, 2), "name": "big", "instance_type": 3}  # 2048 MB: fits on no host
    pr = make_pool_rig(
        tmp_path, [{"cpus": 4, "ram": 1024}], [pool(0, 2), big],
        config={"limits": {"max_vms": 1}}, start_worker=False, clock=clock,
    )  # fmt: skip
    try:
        url = pr.served.url
        b = requests.post(f"{url}/requests", json={"pools": {"big": 1}}, timeout=30).json()
        one_pass(pr)  # its build fails: no host fits
        made = requests.post(f"{url}/vm/create", json={"name": "plain", "instance_type": 1,
                                                     "image_id": 1}, timeout=30)  # fmt: skip
        assert made.status_code == 200  # the fabric's one VM
        s = requests.post(f"{url}/requests", json={"pools": {"small": 1}}, timeout=30).json()
        one_pass(pr)  # nothing may be built: the fabric is at limits.max_vms
        assert pr.rig.registry.vms.count() == 1
        clock.ahead = timedelta(seconds=901)
        pr.worker.run_once()
        why_b = requests.get(f"{url}/requests/{b['request_id']}", timeout=30).json()["message"]
        why_s = requests.get(f"{url}/requests/{s['request_id']}", timeout=30).json()["message"]
        assert why_b.startswith("not met within 900 s: pool big: 0 of 1 set aside; ")
        assert "builds failing, last error: " in why_b and "ram" in why_b
        assert why_s == (
            "not met within 900 s: pool small: 0 of 1 set aside; the fabric runs its limit "
            "of 1 VMs (limits.max_vms)"
        )
    finally:
        pr.stop()
