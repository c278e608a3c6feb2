"""Check-out / check-in over HTTP against the served app, on test:// hosts and a real
SQLite registry: ownership, cleanup, lifetimes, failures, restarts."""

from __future__ import annotations

import hashlib
import time

import libvirt
import pytest
import requests

from orchestrator.fabric import host_target
from orchestrator.model import VmState
from tests.conftest import make_pool_rig, wait_for

WAIT = 60  # seconds: only ends a request that would never be answered (a hang)
HOSTS = [
    {"cpus": 4, "ram": 4096, "target": "root@127.0.0.5", "extra": {"network": "forward"}},
    {"cpus": 4, "ram": 4096, "target": "root@127.0.0.6", "extra": {"network": "forward"}},
]


def ready(pr, pool: str = "small") -> int:
    return requests.get(f"{pr.served.url}/pool/query", params={"pool": pool}).json()["ready"]


@pytest.fixture
def pr(tmp_path):
    p = make_pool_rig(
        tmp_path,
        HOSTS,
        [
            {
                "name": "small",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 3,
                "max": 3,
                "cleanup": "reset",
                "lifetime": 1,
                "lifetime_max": 3,
            },
        ],
    )
    wait_for(lambda: ready(p) == 3)
    yield p
    p.stop()


def post(pr, path: str, **data) -> requests.Response:
    return requests.post(pr.served.url + path, json=data)


def test_pool_fills_to_its_size_and_lists(pr):
    pools = requests.get(f"{pr.served.url}/pool/list").json()["pools"]
    assert [(p["name"], p["ready"], p["in_use"], p["size"], p["max"]) for p in pools] == [
        ("small", 3, 0, 3, 3)
    ]
    q = requests.get(f"{pr.served.url}/pool/query", params={"pool": "small"}).json()
    assert {k: q[k] for k in ("ready", "in_use", "cleaning", "building")} == {
        "ready": 3,
        "in_use": 0,
        "cleaning": 0,
        "building": 0,
    }
    assert requests.get(f"{pr.served.url}/pool/query", params={"pool": "nope"}).status_code == 404


def test_checkout_shape_and_the_secret_is_stored_hashed(pr, tmp_path):
    r = post(pr, "/vm/checkout", pool="small")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"vmid", "ip", "ssh", "reservation_id", "expires_at"}
    assert body["ssh"]["port"] >= 22000 and body["ip"] in ("127.0.0.5", "127.0.0.6")
    token = body["reservation_id"]
    assert len(token) == 43
    vm = pr.rig.registry.vms.get(body["vmid"])
    assert vm.state == VmState.IN_USE
    assert vm.reservation_hash == hashlib.sha256(token.encode()).hexdigest()
    pr.rig.registry.db.engine.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("registry.db*"))
    assert token.encode() not in raw
    q = requests.get(f"{pr.served.url}/vm/query", params={"vmid": body["vmid"]}).json()
    assert q["status"] == "in-use" and q["expires_at"] == body["expires_at"]
    assert ready(pr) == 2


def test_checkin_rules_wrong_holder_not_checked_out_malformed_unknown(pr):
    a = post(pr, "/vm/checkout").json()
    b = post(pr, "/vm/checkout").json()
    # b's reservation cannot return a's VM
    r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=b["reservation_id"])
    assert r.status_code == 403 and r.json()["status"] == 0
    assert pr.rig.registry.vms.get(a["vmid"]).state == VmState.IN_USE
    # malformed ids
    for bad in ("x", "' OR 1=1 --", "a" * 44, 12345):
        r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=bad)
        assert r.status_code == 400, bad
    r = post(pr, "/vm/checkin", ip=a["ip"])  # without the secret: by vmid only
    assert r.status_code == 400 and "reservation_id" in r.json()["error"]
    # unknown VM
    r = post(pr, "/vm/checkin", vmid=999, reservation_id=a["reservation_id"])
    assert r.status_code == 404
    # a VM that is not checked out
    free = [v for v in pr.rig.registry.vms.list() if v.state == VmState.READY][0]
    r = post(pr, "/vm/checkin", vmid=free.id, reservation_id=a["reservation_id"])
    assert r.status_code == 409
    assert pr.rig.registry.vms.get(free.id).state == VmState.READY
    # the holder can
    r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=a["reservation_id"])
    assert r.json() == {"status": 1}
    # and only once
    r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=a["reservation_id"])
    assert r.status_code == 409
    assert pr.rig.registry.vms.get(b["vmid"]).state == VmState.IN_USE


def test_checkin_without_the_secret_with_auth_off(pr):
    """With authentication off every caller is the anonymous admin, who may leave the
    reservation id out (tests/unit/test_api_v3.py has the rule with auth on)."""
    a = post(pr, "/vm/checkout").json()
    r = post(pr, "/vm/checkin", vmid=a["vmid"])
    assert r.json() == {"status": 1}
    assert pr.rig.registry.vms.get(a["vmid"]).state in (VmState.CLEANING, VmState.READY)
    r = post(pr, "/vm/checkin", vmid=a["vmid"])
    assert r.status_code == 409


def test_checkin_by_ip_and_reservation(pr):
    a = post(pr, "/vm/checkout").json()
    r = post(pr, "/vm/checkin", ip=a["ip"], reservation_id=a["reservation_id"])
    assert r.json() == {"status": 1}
    r = post(pr, "/vm/checkin", ip="300.1.1.1", reservation_id=a["reservation_id"])
    assert r.status_code == 400


def test_reset_cleanup_gives_a_fresh_disk_and_returns_the_vm(pr):
    a = post(pr, "/vm/checkout").json()
    vm = pr.rig.registry.vms.get(a["vmid"])
    conn = pr.rig.driver.connection(host_target(pr.rig.registry.hosts.get(vm.host_id))).call(
        lambda c: c
    )
    dom = conn.lookupByUUIDString(vm.uuid)
    before = dom.ID()
    post(pr, "/vm/checkin", vmid=vm.id, reservation_id=a["reservation_id"])
    wait_for(lambda: pr.rig.registry.vms.get(vm.id).state == VmState.READY)
    dom = conn.lookupByUUIDString(vm.uuid)
    assert dom.isActive() and dom.ID() != before  # it was stopped and booted again
    assert any(e.vm_id == vm.id for e in pr.rig.registry.events.list(kind="vm.cleaned"))


def test_count_is_all_or_nothing(pr):
    r = post(pr, "/vm/checkout", count=4)
    assert r.status_code == 400 and "more than the pool can ever hold" in r.json()["error"]
    two = post(pr, "/vm/checkout", count=2).json()
    assert len(two["vms"]) == 2 and len({v["vmid"] for v in two["vms"]}) == 2
    r = post(pr, "/vm/checkout", count=2)  # only one left: nothing is handed out
    assert r.status_code == 503
    assert ready(pr) == 1
    for v in two["vms"]:
        assert post(pr, "/vm/checkin", vmid=v["vmid"], reservation_id=v["reservation_id"]).ok


def test_empty_pool_is_503_with_retry_after_at_once(pr):
    held = [post(pr, "/vm/checkout").json() for _ in range(3)]
    assert all(h["vmid"] for h in held)
    # The pool's max is 3 and all 3 are held until after this answer: no VM can come,
    # so a check-out that waited for one would never answer (the timeout only ends
    # that hang). "At once" is that it answers without waiting, and counts it so.
    r = requests.post(f"{pr.served.url}/vm/checkout", json={"pool": "small"}, timeout=WAIT)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json()["vmid"] == 0 and "retry later" in r.json()["error"]
    assert r.json()["pools"]["small"]["ready"] == 0
    seed = requests.get(f"{pr.served.url}/vms/api/v1.0/checkout")
    assert seed.status_code == 404
    assert seed.json() == {
        "error": "No VM is currently available for checkout Please retry after some time"
    }
    for h in held:
        post(pr, "/vm/checkin", vmid=h["vmid"], reservation_id=h["reservation_id"])


def test_unknown_pool_type_or_image(pr):
    assert post(pr, "/vm/checkout", pool="nope").status_code == 404
    assert post(pr, "/vm/checkout", instance_type=3).status_code == 404
    assert post(pr, "/vm/checkout", pool="<script>").status_code == 400
    assert post(pr, "/vm/checkout", count=0).status_code == 400
    assert post(pr, "/vm/checkout", lifetime="forever").status_code == 400
    ok = post(pr, "/vm/checkout", instance_type=1, image_id=1)
    assert ok.status_code == 200


def test_extend_within_the_cap_and_not_past_it(pr):
    a = post(pr, "/vm/checkout").json()
    r = post(pr, "/vm/extend", vmid=a["vmid"], reservation_id=a["reservation_id"], hours=1)
    assert r.status_code == 200 and r.json()["status"] == 1
    assert r.json()["expires_at"] > a["expires_at"]
    r = post(pr, "/vm/extend", vmid=a["vmid"], reservation_id=a["reservation_id"], hours=5)
    assert r.status_code == 409 and "cap" in r.json()["error"]
    other = post(pr, "/vm/checkout").json()
    r = post(pr, "/vm/extend", vmid=a["vmid"], reservation_id=other["reservation_id"], hours=1)
    assert r.status_code == 403
    r = post(pr, "/vm/extend", vmid=a["vmid"], reservation_id=a["reservation_id"], hours=-1)
    assert r.status_code == 400


def test_an_expired_reservation_is_reclaimed(pr):
    a = post(pr, "/vm/checkout", lifetime=0.0003).json()  # about one second
    wait_for(lambda: pr.rig.registry.vms.get(a["vmid"]).state == VmState.READY)
    assert any(e.vm_id == a["vmid"] for e in pr.rig.registry.events.list(kind="vm.expired"))
    r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=a["reservation_id"])
    assert r.status_code == 409  # the old holder holds nothing any more


def test_seed_endpoints(pr):
    got = requests.get(f"{pr.served.url}/vms/api/v1.0/checkout")
    assert got.status_code == 200
    body = got.json()
    assert set(body) >= {"IP", "LoginID", "LoginPassword", "ReservationID"}
    r = requests.post(
        f"{pr.served.url}/vms/api/v1.0/checkin",
        json={"IP": body["IP"], "ReservationID": body["ReservationID"]},
    )
    assert r.json() == {"status": "VM successfully released back to free pool"}
    r = requests.post(
        f"{pr.served.url}/vms/api/v1.0/checkin",
        json={"IP": body["IP"], "ReservationID": body["ReservationID"]},
    )
    assert r.status_code == 409


def test_a_checked_out_vm_cannot_be_destroyed(pr):
    a = post(pr, "/vm/checkout").json()
    r = requests.get(f"{pr.served.url}/vm/destroy", params={"vmid": a["vmid"]})
    assert r.status_code == 409 and "checked out" in r.json()["error"]
    r = requests.get(f"{pr.served.url}/vm/destroy", params={"vmid": a["vmid"], "force": "maybe"})
    assert r.status_code == 400
    r = requests.get(f"{pr.served.url}/vm/destroy", params={"vmid": a["vmid"], "force": 1})
    assert r.json() == {"status": 1}
    r = post(pr, "/vm/checkin", vmid=a["vmid"], reservation_id=a["reservation_id"])
    assert r.status_code == 404


def test_a_failed_cleanup_is_never_handed_out_and_is_replaced(tmp_path):
    # cleanup "tmp" needs SSH into the guest; test:// guests have none, so it fails.
    p = make_pool_rig(
        tmp_path,
        HOSTS,
        [
            {
                "name": "tmp",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 1,
                "max": 1,
                "cleanup": "tmp",
            }
        ],
        config={"ssh": {"connect_timeout": 1}},
    )
    try:
        wait_for(lambda: ready(p, "tmp") == 1)
        a = post(p, "/vm/checkout").json()
        assert post(p, "/vm/checkin", vmid=a["vmid"], reservation_id=a["reservation_id"]).ok
        failures = wait_for(lambda: p.pools.recent_failures("tmp"))
        assert failures[0]["vmid"] == a["vmid"] and "cleanup (tmp) failed" in failures[0]["reason"]
        # the failed VM is retired and a new one takes its place
        wait_for(lambda: ready(p, "tmp") == 1)
        b = post(p, "/vm/checkout").json()
        assert b["vmid"] != a["vmid"]
        assert (
            requests.get(f"{p.served.url}/vm/query", params={"vmid": a["vmid"]}).status_code == 404
        )
    finally:
        p.stop()


def test_host_down_takes_its_vms_out_and_the_pool_refills_elsewhere(tmp_path):
    p = make_pool_rig(
        tmp_path,
        HOSTS,
        [
            {
                "name": "small",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 2,
                "max": 4,
                "cleanup": "reset",
            }
        ],
        config={"scheduler": {"policy": "first-fit"}},
    )
    try:
        wait_for(lambda: ready(p) == 2)
        on1 = [v.id for v in p.rig.registry.vms.list() if v.host_id == 1]
        assert len(on1) == 2
        p.rig.registry.hosts.record_discovery(1, up=False, reason="test: host 1 down")
        p.worker.wake()
        wait_for(lambda: ready(p) == 2)  # replacements on host 2
        st = requests.get(f"{p.served.url}/pool/query", params={"pool": "small"}).json()
        assert st["unreachable"] == 2
        got = [post(p, "/vm/checkout").json()["vmid"] for _ in range(2)]
        assert not set(got) & set(on1)
        assert post(p, "/vm/checkout").status_code == 503  # max 4 reached
        p.rig.services.discovery.discover_host(p.rig.registry.hosts.get(1))  # host 1 is back
        assert ready(p) == 2  # its VMs are in the ready set again
    finally:
        p.stop()


def test_restart_resumes_cleaning_and_keeps_reservations(tmp_path):
    pools = [
        {
            "name": "small",
            "instance_type": 1,
            "image": "debian-12",
            "ready_check": "none",
            "size": 2,
            "max": 2,
            "cleanup": "reset",
        }
    ]
    p = make_pool_rig(tmp_path, HOSTS, pools)
    wait_for(lambda: ready(p) == 2)
    held = post(p, "/vm/checkout").json()
    returned = post(p, "/vm/checkout").json()
    # the process dies with one VM half-cleaned (the worker never saw it)
    p.worker.stop()
    post(p, "/vm/checkin", vmid=returned["vmid"], reservation_id=returned["reservation_id"])
    assert p.rig.registry.vms.get(returned["vmid"]).state == VmState.CLEANING
    p.served.stop()
    # restart on the same registry and hosts
    services = p.rig.restart(
        {"state_dir": str(tmp_path / "state"), "pools": pools, "workers": {"interval": 0.2}}
    )
    services.worker.start()
    try:
        wait_for(lambda: p.rig.registry.vms.get(returned["vmid"]).state == VmState.READY)
        assert p.rig.registry.vms.get(held["vmid"]).state == VmState.IN_USE
        services.reservations.checkin(vm_id=held["vmid"], ip=None, token=held["reservation_id"])
        wait_for(lambda: p.rig.registry.vms.get(held["vmid"]).state == VmState.READY)
        assert len(p.rig.registry.vms.list()) == 2  # nothing lost, nothing extra
    finally:
        p.rig.stop()


def test_reconcile_removes_half_built_pool_vms(tmp_path):
    pools = [
        {
            "name": "small",
            "instance_type": 1,
            "image": "debian-12",
            "ready_check": "none",
            "size": 1,
            "max": 1,
            "cleanup": "reset",
        }
    ]
    p = make_pool_rig(tmp_path, HOSTS, pools, start_worker=False)
    try:
        vm = p.rig.fabric.create_vm("small-vm", 1, 1, pool="small")  # killed before "ready"
        assert vm.state == VmState.BUILDING
        p.rig.registry.cluster.server_id = "restarted"  # as after a restart
        report = p.rig.services.reconciler.reconcile()
        assert vm.id in report.removed
        host = host_target(p.rig.registry.hosts.get(vm.host_id))
        conn = p.rig.driver.connection(host).call(lambda c: c)
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(vm.uuid)
    finally:
        p.stop()


def test_the_global_vm_limit_caps_every_pool(tmp_path):
    p = make_pool_rig(
        tmp_path,
        HOSTS,
        [
            {
                "name": "a",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 3,
                "max": 3,
                "cleanup": "reset",
            },
            {
                "name": "b",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 3,
                "max": 3,
                "cleanup": "reset",
            },
        ],
        config={"limits": {"max_vms": 4}},
    )
    try:
        wait_for(lambda: ready(p, "a") + ready(p, "b") == 4)
        time.sleep(1)  # several more passes of the worker
        assert len(p.rig.registry.vms.list()) == 4
        # pools fill in the order the configuration lists them
        assert ready(p, "a") == 3 and ready(p, "b") == 1
    finally:
        p.stop()


def test_builds_under_way_count_against_the_global_limit(tmp_path):
    """Builds submitted but not yet recorded in the registry count against
    limits.max_vms: a second pass while they run starts no more (it once
    started more, and a slow machine passed the limit)."""
    pools = [
        {"name": n, "instance_type": 1, "image": "debian-12", "ready_check": "none", "size": 3}
        for n in ("a", "b")
    ]
    p = make_pool_rig(tmp_path, HOSTS, pools, {"limits": {"max_vms": 4}}, start_worker=False)
    try:
        svc = p.rig.services.pools
        first = svc.builds_wanted()
        assert first == {"a": 3, "b": 1}
        for name, n in first.items():
            for _ in range(n):
                svc.claim_build(name)  # submitted; no row yet
        assert svc.builds_wanted() == {}
        assert p.rig.registry.vms.count() == 0
    finally:
        p.stop()


def test_the_worker_is_busy_until_a_new_vm_is_ready(tmp_path):
    """drain() (and stop) wait for a build to finish, not just for its domain: a VM
    recorded as building but not yet ready still counts as work in flight."""
    import threading

    p = make_pool_rig(
        tmp_path,
        HOSTS,
        [
            {
                "name": "small",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 1,
                "cleanup": "reset",
            }
        ],  # fmt: skip
        start_worker=False,
    )
    try:
        pools = p.pools
        entered, go_on = threading.Event(), threading.Event()
        real = pools.make_ready

        def held_make_ready(vm):
            entered.set()
            assert go_on.wait(30)
            return real(vm)

        pools.make_ready = held_make_ready
        p.worker.run_once()
        assert entered.wait(30)
        # its domain exists and its row says building; it is not ready yet
        assert [vm.state for vm in p.rig.registry.vms.list()] == [VmState.BUILDING]
        assert not pools.idle()
        go_on.set()
        p.worker.drain()
        assert pools.idle()
        assert [vm.state for vm in p.rig.registry.vms.list()] == [VmState.READY]
    finally:
        p.stop()


def test_a_check_in_this_process_cannot_clean_yet_is_left_to_the_next_pass(pr):
    """The check-in makes this server the VM's cleaner in its own UPDATE; if this
    process is still letting go of the VM (the cleanup that made it ready has not
    finished), the VM is not kept owned (and never cleaned): the next pass takes it."""
    got = post(pr, "/vm/checkout").json()
    vmid = got["vmid"]
    assert pr.pools.adopt(vmid)  # as if the previous cleanup had not let go of it yet
    r = post(pr, "/vm/checkin", vmid=vmid, reservation_id=got["reservation_id"])
    assert r.json() == {"status": 1}
    vm = pr.rig.registry.vms.get(vmid)
    assert vm.state == VmState.CLEANING
    assert vm.owner is None  # no server works on it: any may take it
    pr.pools.release(vmid)  # that cleanup lets go now
    wait_for(lambda: pr.rig.registry.vms.get(vmid).state == VmState.READY)


def test_a_check_in_hands_the_vm_to_this_servers_cleaners(pr):
    """The check-in's own UPDATE makes this server the VM's cleaner, and the queued
    cleanup makes it ready again; one event each."""
    got = post(pr, "/vm/checkout").json()
    vmid = got["vmid"]
    r = post(pr, "/vm/checkin", vmid=vmid, reservation_id=got["reservation_id"])
    assert r.json() == {"status": 1}
    wait_for(lambda: pr.rig.registry.vms.get(vmid).state == VmState.READY)
    events = pr.rig.registry.events
    for kind in ("vm.checkout", "vm.checkin", "vm.cleaned"):
        assert [e.vm_id for e in events.list(kind=kind) if e.vm_id == vmid] == [vmid], kind
