"""VM power, console and resize on libvirt's test:// driver: real libvirt calls, a
real registry, the API served in-process."""

from __future__ import annotations

import libvirt
import pytest

from orchestrator.access import Principal, Role
from orchestrator.errors import BadRequest, Conflict, FabricError, Forbidden
from orchestrator.hosts import host_target
from orchestrator.hypervisor.xml import safe_fromstring
from orchestrator.model import VM_TRANSITIONS, VmState
from orchestrator.registry.quotas import QuotaExceeded
from tests.conftest import make_rig

ALICE = Principal("alice", Role.USER)
BOB = Principal("bob", Role.USER)


def dom(rig, vm) -> libvirt.virDomain:
    host = rig.registry.hosts.get(vm.host_id)
    conn = rig.driver.connection(host_target(host)).call(lambda c: c)
    return conn.lookupByUUIDString(vm.uuid)


def size_of(rig, vm) -> tuple[int, int]:
    """(vCPUs, MiB) of the domain's persistent definition."""
    root = safe_fromstring(dom(rig, vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return int(root.find("vcpu").text), int(root.find("memory").text) // 1024


def used(rig, host_id: int) -> tuple[int, int, int]:
    h = rig.registry.hosts.get(host_id)
    return (h.cpu_used, h.ram_used, h.disk_used)


def kinds(rig, vm_id: int) -> list[str]:
    return [e.kind for e in reversed(rig.registry.events.list(limit=500)) if e.vm_id == vm_id]


# -- the state machine ----------------------------------------------------------------


def test_stopped_is_a_state_with_its_transitions():
    assert VmState.STOPPED in VM_TRANSITIONS[VmState.ACTIVE]
    assert VM_TRANSITIONS[VmState.STOPPED] >= {VmState.ACTIVE, VmState.DELETING}
    # pool VMs are never stopped
    for pool_state in (VmState.READY, VmState.IN_USE, VmState.CLEANING, VmState.BUILDING):
        assert VmState.STOPPED not in VM_TRANSITIONS[pool_state]


# -- stop and start --------------------------------------------------------------------


def test_stop_keeps_the_claim_and_start_runs_it_again(rig):
    vm = rig.fabric.create_vm("web", 2, 1)
    before = used(rig, vm.host_id)
    assert rig.services.power.stop(vm.id, grace=5) == "graceful"
    stopped = rig.registry.vms.get(vm.id)
    assert stopped.state == VmState.STOPPED and stopped.owner is None
    assert not dom(rig, vm).isActive()
    assert used(rig, vm.host_id) == before  # a stopped VM keeps its claim
    assert rig.registry.claims.consistent() == []
    with pytest.raises(Conflict, match="already stopped"):
        rig.services.power.stop(vm.id)
    rig.services.power.start(vm.id)
    assert rig.registry.vms.get(vm.id).state == VmState.ACTIVE
    assert dom(rig, vm).isActive()
    assert used(rig, vm.host_id) == before
    with pytest.raises(Conflict, match="already running"):
        rig.services.power.start(vm.id)
    assert kinds(rig, vm.id)[-2:] == ["vm.stopped", "vm.started"]
    stop_event = rig.registry.events.list(kind="vm.stopped")[0]
    assert stop_event.detail == {"how": "graceful", "grace": 5.0}


def test_a_forced_stop_pulls_the_power_at_once(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert rig.services.power.stop(vm.id, grace=0) == "forced"
    assert not dom(rig, vm).isActive()
    assert rig.registry.vms.get(vm.id).state == VmState.STOPPED


def test_a_stopped_vm_is_destroyed_and_its_claim_released(rig):
    vm = rig.fabric.create_vm("web", 2, 1)
    rig.services.power.stop(vm.id, grace=0)
    rig.fabric.destroy_vm(vm.id)
    assert used(rig, vm.host_id) == (0, 0, 0)
    assert rig.registry.claims.consistent() == []


def test_reconcile_leaves_a_stopped_vm_stopped_and_restarts_an_active_one(rig):
    stopped = rig.fabric.create_vm("off", 1, 1)
    crashed = rig.fabric.create_vm("on", 1, 1)
    rig.services.power.stop(stopped.id, grace=0)
    dom(rig, crashed).destroy()  # stopped behind the fabric's back
    report = rig.services.reconciler.reconcile()
    assert report.restarted == [crashed.id]
    assert dom(rig, crashed).isActive()
    assert not dom(rig, stopped).isActive()
    assert rig.registry.vms.get(stopped.id).state == VmState.STOPPED
    # a stopped VM whose domain is gone is seen as vanished, like any other
    dom(rig, stopped).undefine()
    assert rig.services.reconciler.reconcile().vanished == [stopped.id]


def test_reboot_power_cycles_and_keeps_the_state(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert rig.services.power.reboot(vm.id, grace=5) == "graceful"
    after = rig.registry.vms.get(vm.id)
    assert after.state == VmState.ACTIVE and after.owner is None
    assert dom(rig, vm).isActive()
    assert kinds(rig, vm.id)[-1] == "vm.rebooted"
    rig.services.power.stop(vm.id, grace=0)
    with pytest.raises(Conflict, match="stopped; only VMs active, ready, in-use can be rebooted"):
        rig.services.power.reboot(vm.id)


def test_a_vm_someone_works_on_is_refused(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert rig.registry.vms.take(vm.id, [VmState.ACTIVE])  # e.g. a resize in flight
    with pytest.raises(Conflict, match="the fabric is working on it"):
        rig.services.power.stop(vm.id)
    rig.registry.vms.let_go(vm.id)


def test_only_its_creator_or_an_admin_powers_a_vm(rig):
    vm = rig.fabric.create_vm("mine", 1, 1, by=ALICE)
    power = rig.services.power
    for act in (power.stop, power.reboot):
        with pytest.raises(Forbidden, match="bob may not"):
            act(vm.id, by=BOB)
    with pytest.raises(Forbidden, match="reader role"):
        power.stop(vm.id, by=Principal("eve", Role.READER))
    power.stop(vm.id, grace=0, by=ALICE)
    with pytest.raises(Forbidden):
        power.start(vm.id, by=BOB)
    power.start(vm.id, by=Principal("root", Role.ADMIN))
    with pytest.raises(Forbidden):
        power.console(vm.id, by=BOB)
    assert power.console(vm.id, by=ALICE).text == ""


def test_pool_vms_are_rebooted_but_never_stopped(tmp_path):
    from tests.conftest import make_pool_rig, wait_for

    pool = {"name": "p", "instance_type": 1, "image": "debian-12", "size": 1, "max": 2}
    pool |= {"ready_check": "none", "cleanup": "reset", "lifetime": 1}
    pr = make_pool_rig(tmp_path, [{"cpus": 8, "ram": 8192}], [pool])
    try:
        wait_for(lambda: pr.pools.status()["p"]["ready"] >= 1)
        vm = pr.rig.registry.vms.list(states=[VmState.READY])[0]
        power = pr.rig.services.power
        with pytest.raises(Conflict, match="pool VMs are not stopped"):
            power.stop(vm.id)
        with pytest.raises(Conflict, match="its size is its pool's"):
            power.resize(vm.id, 2)
        with pytest.raises(Forbidden, match="pool VM"):
            power.reboot(vm.id, by=ALICE)  # not checked out by alice
        assert power.reboot(vm.id, grace=0) == "forced"
        assert pr.rig.registry.vms.get(vm.id).state == VmState.READY
        assert dom(pr.rig, vm).isActive()
    finally:
        pr.stop()


# -- console --------------------------------------------------------------------------


def test_console_on_a_test_host_is_empty_with_a_note(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    c = rig.services.power.console(vm.id)
    assert c.as_dict() == {
        "vmid": vm.id,
        "kb": 16,
        "size": 0,
        "console": "",
        "truncated": False,
        "note": "a test:// host keeps no console log",
    }
    with pytest.raises(BadRequest, match="kb must be 1-256"):
        rig.services.power.console(vm.id, 257)


def test_domains_log_their_console_in_append_mode(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    xml = dom(rig, vm).XMLDesc(0)
    assert f"/{vm.domain_name}.console.log' append='on'" in xml


# -- resize ---------------------------------------------------------------------------


def test_resize_grows_the_claim_and_the_domain(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    host = vm.host_id
    before = used(rig, host)
    resized = rig.services.power.resize(vm.id, 2, grace=0)
    assert (resized.tid, resized.cpu, resized.ram, resized.disk) == (2, 2, 1024, 2)
    row = rig.registry.vms.get(vm.id)
    assert (row.tid, row.cpu, row.ram, row.disk, row.state) == (2, 2, 1024, 2, VmState.ACTIVE)
    assert row.owner is None
    assert used(rig, host) == (before[0] + 1, before[1] + 512, before[2] + 1)
    assert rig.registry.claims.consistent() == []
    assert size_of(rig, vm) == (2, 1024)
    assert dom(rig, vm).isActive()  # it ran, so it runs again
    event = rig.registry.events.list(kind="vm.resized")[0]
    assert event.detail == {
        "from": {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
        "to": {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
    }


def test_resize_of_a_stopped_vm_leaves_it_stopped(rig):
    vm = rig.fabric.create_vm("web", 2, 1)
    rig.services.power.stop(vm.id, grace=0)
    rig.services.power.resize(vm.id, 1)
    row = rig.registry.vms.get(vm.id)
    assert row.state == VmState.STOPPED and (row.cpu, row.ram) == (1, 512)
    assert row.disk == 2  # the disk never shrinks: the smaller type keeps it
    assert used(rig, vm.host_id) == (1, 512, 2)
    assert not dom(rig, vm).isActive()
    assert size_of(rig, vm) == (1, 512)
    with pytest.raises(Conflict, match="already of instance_type 1"):
        rig.services.power.resize(vm.id, 1)


def test_a_resize_that_does_not_fit_is_refused_and_changes_nothing(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 1536}])
    try:
        vm = rig.fabric.create_vm("web", 2, 1)  # 2 vCPUs, 1024 MB of 1536
        before = used(rig, vm.host_id)
        with pytest.raises(Conflict) as e:
            rig.services.power.resize(vm.id, 3)  # 2048 MB
        assert "does not fit on pmid 1 as type 3" in e.value.message
        assert "RAM: needs 1024 MB more, 512 MB free" in e.value.message
        row = rig.registry.vms.get(vm.id)
        assert (row.tid, row.cpu, row.ram, row.disk, row.state) == (2, 2, 1024, 2, "active")
        assert row.owner is None  # let go: it can be stopped, resized again
        assert used(rig, vm.host_id) == before
        assert size_of(rig, vm) == (2, 1024)
        assert dom(rig, vm).isActive()  # never stopped for a resize that cannot be
        assert rig.registry.events.list(kind="vm.resized") == []
    finally:
        rig.stop()


def test_a_resize_past_the_creators_quota_is_refused(tmp_path):
    from orchestrator.auth import hash_password

    auth = {
        "enabled": True,
        "users": {"alice": {"password": hash_password("pw"), "quota": {"ram": 1024}}},
    }
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192}], config={"auth": auth})
    try:
        vm = rig.fabric.create_vm("web", 1, 1, by=ALICE)
        # an admin resizes it: it still counts against alice's quota
        with pytest.raises(QuotaExceeded, match="quota exceeded for user alice"):
            rig.services.power.resize(vm.id, 3, by=Principal("root", Role.ADMIN))
        row = rig.registry.vms.get(vm.id)
        assert (row.tid, row.ram, row.owner) == (1, 512, None)
        assert used(rig, vm.host_id) == (1, 512, 1)
        rig.services.power.resize(vm.id, 2, by=ALICE)  # 1024: within it
        assert rig.registry.vms.get(vm.id).ram == 1024
    finally:
        rig.stop()


# -- through the API ------------------------------------------------------------------


def test_the_api_stops_starts_reboots_resizes_and_shows_the_console(rig, client):
    vmid = client.post("/vm/create", json={"name": "a", "instance_type": 1, "image_id": 1})
    vmid = vmid.get_json()["vmid"]
    r = client.post("/vm/stop", json={"vmid": vmid, "timeout": 5})
    assert r.status_code == 200, r.text
    assert r.get_json() == {"status": 1, "vmid": vmid, "state": "stopped", "how": "graceful"}
    assert client.get(f"/vm/query?vmid={vmid}").get_json()["status"] == "stopped"
    r = client.post("/vm/stop", json={"vmid": vmid})
    assert r.status_code == 409 and r.get_json() == {
        "status": 0,
        "error": f"vmid {vmid} is already stopped",
    }
    assert client.post("/vm/start", data={"vmid": vmid}).get_json()["state"] == "active"
    r = client.post("/vm/reboot", json={"vmid": vmid, "force": 1})
    assert r.get_json() == {"status": 1, "vmid": vmid, "how": "forced"}
    r = client.post("/vm/resize", json={"vmid": vmid, "instance_type": 2, "force": True})
    assert r.status_code == 200 and r.get_json()["ram"] == 1024
    r = client.get(f"/vm/console?vmid={vmid}&kb=4")
    assert r.status_code == 200 and r.get_json()["note"].startswith("a test:// host")


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/vm/stop", {}, 400, "vmid is required"),
        ("/vm/stop", {"vmid": 1, "timeout": 601}, 400, "timeout is too large"),
        ("/vm/stop", {"vmid": 1, "timeout": "<b>"}, 400, "timeout"),
        ("/vm/stop", {"vmid": 999}, 404, "vmid 999 does not exist"),
        ("/vm/start", {"vmid": -1}, 400, "vmid"),
        ("/vm/reboot", {"vmid": "x"}, 400, "vmid"),
        ("/vm/resize", {"vmid": 1}, 400, "instance_type is required"),
        ("/vm/resize", {"vmid": 1, "instance_type": 99}, 404, "instance_type 99"),
    ],
)
def test_bad_power_requests_are_json_4xx(rig, client, path, body, status, message):
    rig.fabric.create_vm("web", 1, 1)
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.get_json()["error"]


def test_bad_console_requests_are_json_4xx(rig, client):
    rig.fabric.create_vm("web", 1, 1)
    for query, status in (("vmid=1&kb=0", 400), ("vmid=1&kb=9999", 400), ("vmid=7", 404)):
        r = client.get(f"/vm/console?{query}")
        assert r.status_code == status, (query, r.text)
        assert r.get_json()["error"]


def test_a_refused_resize_is_a_json_409_naming_what_does_not_fit(tmp_path):
    from orchestrator.api import create_app

    rig = make_rig(tmp_path, [{"cpus": 1, "ram": 1024}])
    try:
        c = create_app(rig.services).test_client()
        vmid = c.post("/vm/create", json={"name": "a", "instance_type": 1, "image_id": 1})
        vmid = vmid.get_json()["vmid"]
        r = c.post("/vm/resize", json={"vmid": vmid, "instance_type": 3})
        assert r.status_code == 409
        body = r.get_json()
        assert body["status"] == 0
        assert "vCPUs" not in body["error"]  # 1 CPU x ratio 4: 3 more fit
        assert "RAM: needs 1536 MB more, 512 MB free" in body["error"]
        assert c.get(f"/vm/query?vmid={vmid}").get_json()["instance_type"] == 1
    finally:
        rig.stop()


def test_a_stopped_vm_keeps_its_volumes_and_takes_no_new_one(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    kept = rig.services.volumes.create("kept", 1)
    rig.services.volumes.attach(vm.id, kept.id)
    rig.services.power.stop(vm.id, grace=0)
    other = rig.services.volumes.create("other", 1)
    with pytest.raises(Conflict, match="is stopped; volumes attach to running VMs"):
        rig.services.volumes.attach(vm.id, other.id)
    rig.services.power.start(vm.id)
    assert rig.registry.volumes.get(kept.id).status == "attached"
    assert "vdb" in rig.driver.domain_disks(
        host_target(rig.registry.hosts.get(vm.host_id)), vm.uuid
    )


def test_a_resize_the_host_fails_is_undone(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    before = used(rig, vm.host_id)
    d = dom(rig, vm)
    d.destroy()
    d.undefine()  # gone behind the fabric's back: the host cannot resize it
    with pytest.raises(FabricError):
        rig.services.power.resize(vm.id, 2)
    row = rig.registry.vms.get(vm.id)
    assert (row.tid, row.cpu, row.ram, row.disk, row.owner) == (1, 1, 512, 1, None)
    assert used(rig, vm.host_id) == before
    assert rig.registry.claims.consistent() == []
    assert kinds(rig, vm.id)[-3:] == ["vm.resized", "vm.resized", "vm.resize_failed"]


def test_concurrent_resizes_never_overcommit_the_host(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 3072}])
    try:
        vms = [rig.fabric.create_vm(f"web{i}", 1, 1) for i in range(2)]  # 1024 of 3072 MB
        # each resize to type 3 needs 1536 MB more: one fits, never both
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(rig.services.power.resize, vm.id, 3, grace=0) for vm in vms]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result().ram)
            except Conflict as e:
                assert "RAM: needs 1536 MB more, 512 MB free" in e.message
                outcomes.append("refused")
        assert sorted(outcomes, key=str) == [2048, "refused"]
        assert used(rig, 1)[1] == 2048 + 512 == 3072 - 512
        assert rig.registry.claims.consistent() == []
    finally:
        rig.stop()
