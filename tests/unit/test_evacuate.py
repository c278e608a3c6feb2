"""Evacuation of a dead host and fencing of its stale domains when it comes back,
on test:// hosts and a real registry.

A host dies for real here: its node file goes away and its connection is dropped,
so discovery cannot reach it. It comes back with the domains it had (written into
its node file, as a rebooted host defines its persistent domains again: running)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests

from orchestrator.access import Principal, Role
from orchestrator.clock import utcnow
from orchestrator.errors import Conflict, Forbidden
from orchestrator.hosts import host_target
from orchestrator.model import HostStatus, VmState, VolumeState
from tests.conftest import Rig, make_pool_rig, make_rig, wait_for

HOSTS = [{"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 8192}]
FIRST_FIT = {"scheduler": {"policy": "first-fit"}}


class DeadHost:
    """A test:// host taken down (its node file gone) and brought back."""

    def __init__(self, rig: Rig, host_id: int) -> None:
        self.rig = rig
        self.host = rig.registry.hosts.get(host_id)
        self.target = host_target(self.host)
        self.node = Path(self.host.uri.removeprefix("test://"))
        self.saved = self.node.read_text()
        conn = rig.driver.connection(self.target)
        self.domains = conn.call(lambda c: [d.XMLDesc(0) for d in c.listAllDomains()])
        self.node.rename(self.node.with_suffix(".gone"))
        conn.drop()
        assert not rig.services.discovery.discover_host(self.host)
        assert rig.registry.hosts.get(host_id).status == HostStatus.DOWN

    def revive(self) -> None:
        """Back, with the domains it had, running."""
        self.node.write_text(self.saved.replace("</node>", "".join(self.domains) + "</node>"))


def domains_on(rig: Rig, host_id: int) -> list:
    return rig.driver.domains(host_target(rig.registry.hosts.get(host_id)))


def fenced_events(rig: Rig) -> list:
    return rig.registry.events.list(kind="vm.fenced")


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path, HOSTS, config=FIRST_FIT)
    yield r
    r.stop()


def test_admin_evacuation_rebuilds_a_plain_vm_elsewhere_and_the_return_is_fenced(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert vm.host_id == 1
    dead = DeadHost(rig, 1)
    report = rig.services.evacuator.evacuate(1)
    assert report["rebuilt"] == [vm.id] and report["failed"] == []
    after = rig.registry.vms.get(vm.id)
    assert after.host_id != 1 and after.state == VmState.ACTIVE
    assert (after.name, after.uuid, after.domain_name) == (vm.name, vm.uuid, vm.domain_name)
    assert after.rebuilt_from == 1 and after.rebuilt_at is not None
    # the claim moved: nothing left on the dead host, the VM's share on the new one
    assert rig.registry.hosts.get(1).cpu_used == 0
    assert rig.registry.hosts.get(after.host_id).cpu_used == vm.cpu
    assert rig.registry.claims.consistent() == []
    assert [d.vm_id for d in domains_on(rig, after.host_id) if d.active] == [vm.id]
    rebuilt = rig.registry.events.list(kind="vm.rebuilt")
    assert [(e.vm_id, e.detail["from_pmid"], e.detail["to_pmid"]) for e in rebuilt] == [
        (vm.id, 1, after.host_id)
    ]

    # Host 1 comes back with the old domain running: it is destroyed and undefined
    # before the host is marked up, never started, with an event.
    dead.revive()
    assert rig.services.discovery.discover_host(rig.registry.hosts.get_any(1))
    assert domains_on(rig, 1) == []
    [ev] = fenced_events(rig)
    assert ev.vm_id == vm.id and ev.host_id == 1 and ev.detail["was_running"] is True
    # a reconciliation afterwards neither restarts nor marks anything vanished
    report = rig.services.reconciler.reconcile()
    assert report.restarted == [] and report.vanished == []
    assert rig.registry.vms.get(vm.id).host_id == after.host_id


def test_evacuation_refuses_a_host_that_answers_and_non_admins(rig):
    rig.fabric.create_vm("web", 1, 1)
    with pytest.raises(Conflict, match="is up, not down"):
        rig.services.evacuator.evacuate(1)
    assert rig.registry.vms.list(host_id=1)  # nothing moved
    with pytest.raises(Forbidden):
        rig.services.evacuator.evacuate(1, by=Principal("alice", Role.USER))


def test_automatic_evacuation_waits_for_the_threshold(tmp_path):
    rig = make_rig(tmp_path, HOSTS, config={**FIRST_FIT, "evacuate": {"after": 600}})
    try:
        vm = rig.fabric.create_vm("web", 1, 1)
        DeadHost(rig, 1)
        m = rig.services.maintenance
        m._due = 0.0
        m.run_once()  # down, but not for 600 s yet
        assert rig.registry.vms.get(vm.id).host_id == 1
        assert rig.services.evacuator.due() == []
        rig.services.evacuator.clock = lambda: utcnow() + timedelta(seconds=601)
        m._due = 0.0
        m.run_once()
        moved = rig.registry.vms.get(vm.id)
        assert moved.host_id != 1 and moved.rebuilt_from == 1
        [ev] = rig.registry.events.list(kind="host.evacuated")
        assert ev.detail["reason"] == "down too long" and ev.detail["rebuilt"] == [vm.id]
    finally:
        rig.stop()


def test_automatic_evacuation_is_off_by_default(rig):
    rig.fabric.create_vm("web", 1, 1)
    DeadHost(rig, 1)
    rig.services.evacuator.clock = lambda: utcnow() + timedelta(days=30)
    assert rig.services.evacuator.due() == []


def test_local_volume_is_lost_and_the_vm_rebuilt_without_it(rig):
    vm = rig.fabric.create_vm("db", 1, 1)
    vol = rig.services.volumes.create("data", 1)
    assert vol.host_id == 1
    rig.services.volumes.attach(vm.id, vol.id)
    DeadHost(rig, 1)
    report = rig.services.evacuator.evacuate(1)
    assert report["volumes_lost"] == [vol.id] and report["rebuilt"] == [vm.id]
    lost = rig.registry.volumes.get(vol.id)
    assert lost.status == VolumeState.LOST and lost.vm_id is None
    assert "died" in lost.error
    assert rig.registry.claims.consistent() == []
    # a lost volume can only be removed; it goes although its host is down
    rig.services.volumes.destroy(vol.id)
    assert rig.registry.volumes.list() == []


POOL = {
    "name": "small",
    "instance_type": 1,
    "image": "debian-12",
    "ready_check": "none",
    "size": 2,
    "max": 4,
    "cleanup": "reset",
    "lifetime": 1,
    "lifetime_max": 3,
}


def test_pool_vms_replaced_checked_out_vm_rebuilt_keeping_its_reservation(tmp_path):
    hosts = [
        {"cpus": 8, "ram": 8192, "target": f"root@127.0.0.{5 + i}", "extra": {"network": "forward"}}
        for i in range(3)
    ]
    p = make_pool_rig(tmp_path, hosts, [POOL], config=FIRST_FIT)
    try:
        url = p.served.url
        wait_for(lambda: requests.get(f"{url}/pool/query", params={"pool": "small"}).json()
                 ["ready"] == 2)  # fmt: skip
        got = requests.post(f"{url}/vm/checkout", json={"pool": "small"}, timeout=30).json()
        vmid = got["vmid"]
        held = p.rig.registry.vms.get(vmid)
        assert held.state == VmState.IN_USE and held.host_id == 1
        ready_on_1 = [v.id for v in p.rig.registry.vms.list(host_id=1) if v.state == VmState.READY]
        dead = DeadHost(p.rig, 1)
        report = p.rig.services.evacuator.evacuate(1)
        assert report["rebuilt"] == [vmid]
        assert sorted(report["replaced"]) == sorted(ready_on_1)
        for gone in ready_on_1:
            assert not p.rig.registry.vms.exists(gone)
        after = p.rig.registry.vms.get(vmid)
        assert after.state == VmState.IN_USE and after.host_id != 1
        assert after.reservation_hash == held.reservation_hash
        assert (after.held_by, after.expires_at) == (held.held_by, held.expires_at)
        # the holder sees it in /vm/query: rebuilt, from where, and its new address
        q = requests.get(f"{url}/vm/query", params={"vmid": vmid}).json()
        assert q["status"] == "in-use" and q["rebuilt_from"] == 1 and q["rebuilt_at"]
        assert q["pmid"] == after.host_id and q["ip"] == f"127.0.0.{4 + after.host_id}"
        # the pool refills elsewhere
        p.worker.wake()
        wait_for(lambda: requests.get(f"{url}/pool/query", params={"pool": "small"}).json()
                 ["ready"] == 2)  # fmt: skip
        assert p.rig.registry.vms.list(host_id=1) == []
        # the holder's reservation id still checks it in
        r = requests.post(
            f"{url}/vm/checkin",
            json={"vmid": vmid, "reservation_id": got["reservation_id"]},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        # host 1 returns with the pool VMs' and the held VM's old domains: all fenced
        dead.revive()
        assert p.rig.services.discovery.discover_host(p.rig.registry.hosts.get_any(1))
        assert domains_on(p.rig, 1) == []
        fenced = sorted(e.vm_id for e in fenced_events(p.rig))
        assert fenced == sorted([vmid, *ready_on_1])
    finally:
        p.stop()


def test_reconcile_never_restarts_a_domain_of_a_vm_placed_elsewhere(rig):
    """The registry places the VM on host 2; a stopped copy on host 1 (say, left by a
    rebuild while host 1 was away, seen before discovery fenced it) is fenced by
    reconciliation, not started."""
    vm = rig.fabric.create_vm("web", 1, 1)
    dead = DeadHost(rig, 1)
    rig.services.evacuator.evacuate(1)
    dead.revive()
    # marked up without discovery's fence (as another server's old reading might)
    rig.services.discovery.fence = None
    assert rig.services.discovery.discover_host(rig.registry.hosts.get_any(1))
    assert [d.vm_id for d in domains_on(rig, 1)] == [vm.id]
    report = rig.services.reconciler.reconcile()
    assert report.restarted == []
    assert [f["vmid"] for f in report.fenced] == [vm.id]
    assert domains_on(rig, 1) == []
    assert rig.registry.vms.get(vm.id).state == VmState.ACTIVE


def test_evacuate_endpoint_answers_json(client, rig):
    rig.fabric.create_vm("web", 1, 1)
    r = client.post("/pm/1/evacuate")
    assert r.status_code == 409 and "not down" in r.get_json()["error"]
    r = client.post("/pm/99/evacuate")
    assert r.status_code == 404
    r = client.post("/pm/x/evacuate")
    assert r.status_code in (400, 404)
    DeadHost(rig, 1)
    r = client.post("/pm/1/evacuate")
    assert r.status_code == 200 and len(r.get_json()["rebuilt"]) == 1


def test_client_evacuate(rig, capsys):
    from orchestrator import client
    from tests.conftest import serve

    vm = rig.fabric.create_vm("web", 1, 1)
    served = serve(rig.services)
    try:
        assert client.main(["--url", served.url, "evacuate", "1"]) == 1  # 409: it is up
        assert "not down" in capsys.readouterr().err
        DeadHost(rig, 1)
        assert client.main(["--url", served.url, "evacuate", "1"]) == 0
        assert f"rebuilt vmids {vm.id}" in capsys.readouterr().out
    finally:
        served.stop()


def test_dashboard_buttons_are_for_admins(tmp_path):
    from orchestrator.api import create_app
    from orchestrator.auth import hash_password
    from tests.unit.test_dashboard import Page

    users = {"alice": hash_password("a"), "root": {"password": hash_password("r"), "role": "admin"}}
    rig = make_rig(tmp_path, HOSTS, config={**FIRST_FIT, "auth": {"enabled": True, "users": users}})
    try:
        app = create_app(rig.services)
        alice, root = Page(app), Page(app)
        for p, (user, pw) in ((alice, ("alice", "a")), (root, ("root", "r"))):
            p.get("/ui/login")
            assert p.post("/ui/login", follow=False, user=user, password=pw).status_code == 302
            p.get("/")
        vm = rig.fabric.create_vm("web", 1, 1)
        DeadHost(rig, 1)
        root.get("/")
        assert 'action="/ui/host/evacuate"' in root.html and 'value="1"' in root.html
        alice.post("/ui/host/evacuate", pmid=1, back="hosts")
        assert "admin" in alice.error()
        assert rig.registry.vms.get(vm.id).host_id == 1
        root.post("/ui/host/evacuate", pmid=1, back="hosts")
        assert root.ok().startswith("Evacuated pmid 1: 1 VM(s) rebuilt elsewhere")
        assert rig.registry.vms.get(vm.id).host_id != 1
        # the reload button
        node = tmp_path / "node9.xml"
        node.write_text((tmp_path / "node2.xml").read_text())
        rig.pm_file.write_text(rig.pm_file.read_text() + f"uri=test://{node}\n")
        alice.post("/ui/hosts/reload", back="hosts")
        assert "admin" in alice.error()
        root.post("/ui/hosts/reload", back="hosts")
        assert root.ok().startswith("Reloaded the physical machines file: added pmids 4")
    finally:
        rig.stop()


def test_a_failed_vm_on_a_dead_host_is_left_for_an_admin(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert rig.registry.vms.transition(vm.id, VmState.FAILED, expect=[VmState.ACTIVE])
    DeadHost(rig, 1)
    report = rig.services.evacuator.evacuate(1)
    assert report["left"] == [vm.id] and report["rebuilt"] == []
    left = rig.registry.vms.get(vm.id)
    assert left.host_id == 1 and left.state == VmState.FAILED and left.owner is None


def test_the_fabric_never_sets_autostart_on_its_domains(rig):
    vm = rig.fabric.create_vm("web", 1, 1)
    target = host_target(rig.registry.hosts.get(vm.host_id))
    assert (
        rig.driver.connection(target).call(lambda c: c.lookupByUUIDString(vm.uuid).autostart()) == 0
    )
    DeadHost(rig, 1)
    rig.services.evacuator.evacuate(1)
    moved = rig.registry.vms.get(vm.id)
    target = host_target(rig.registry.hosts.get(moved.host_id))
    assert (
        rig.driver.connection(target).call(lambda c: c.lookupByUUIDString(vm.uuid).autostart()) == 0
    )


def test_no_room_elsewhere_fails_the_vm_with_the_reason(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192}, {"cpus": 1, "ram": 256}], config=FIRST_FIT)
    try:
        vm = rig.fabric.create_vm("web", 2, 1)  # 2 CPUs, 1 GB: only host 1 fits
        DeadHost(rig, 1)
        report = rig.services.evacuator.evacuate(1)
        assert [f["vmid"] for f in report["failed"]] == [vm.id]
        failed = rig.registry.vms.get(vm.id)
        assert failed.state == VmState.FAILED and failed.owner is None
        assert "could not rebuild it off" in failed.error
        assert rig.registry.events.list(kind="vm.rebuild_failed")[0].vm_id == vm.id
        assert rig.registry.claims.consistent() == []
    finally:
        rig.stop()


def test_evacuate_after_is_checked():
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    assert config_from_dict({}).evacuate.after is None
    assert config_from_dict({"evacuate": {"after": 90}}).evacuate.after == 90
    for bad in (0, -1, "soon", 10**9):
        with pytest.raises(ConfigError, match="evacuate.after"):
            config_from_dict({"evacuate": {"after": bad}})
