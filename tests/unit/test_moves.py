"""Day-two operations on test:// hosts: maintenance, moving one VM, draining a host,
and settling a move that a killed server left half-way."""

from __future__ import annotations

import json

import pytest
import requests

from orchestrator.access import Principal, Role
from orchestrator.errors import BadRequest, Conflict, Forbidden, NoValidHost
from orchestrator.hosts import host_target
from orchestrator.model import DrainState, MigrationPhase, VmState
from orchestrator.moves import Mover
from tests.conftest import Rig, make_pool_rig, make_rig, wait_for

BIG = [{"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 8192}]
ALICE = Principal("alice", Role.USER)


def mover(rig: Rig) -> Mover:
    return rig.services.mover


def on_host(rig: Rig, host_id: int) -> set[int]:
    """The fabric VM ids whose domain the host really runs."""
    target = host_target(rig.registry.hosts.get(host_id))
    return {d.vm_id for d in rig.driver.domains(target) if d.vm_id is not None and d.active}


def used(rig: Rig, host_id: int) -> tuple[int, int, int]:
    h = rig.registry.hosts.get(host_id)
    return h.cpu_used, h.ram_used, h.disk_used


def only_on(rig: Rig, host_id: int, count: int, tid: int = 1) -> list[int]:
    """``count`` VMs made on ``host_id`` (the others in maintenance meanwhile)."""
    others = [h.id for h in rig.registry.hosts.list() if h.id != host_id]
    for h in others:
        mover(rig).set_maintenance(h, "setting up")
    ids = [rig.fabric.create_vm(f"vm{i}", tid, 1).id for i in range(count)]
    for h in others:
        mover(rig).clear_maintenance(h)
    assert all(rig.registry.vms.get(i).host_id == host_id for i in ids)
    return ids


@pytest.fixture
def big(tmp_path):
    r = make_rig(tmp_path, BIG)
    yield r
    r.stop()


def test_nothing_is_placed_on_a_host_in_maintenance_and_the_refusal_names_it(big):
    mover(big).set_maintenance(2, "kernel update")
    for i in range(6):
        assert big.fabric.create_vm(f"v{i}", 1, 1).host_id != 2
    mover(big).set_maintenance(1, "disk swap")
    mover(big).set_maintenance(3, "rack move")
    with pytest.raises(NoValidHost) as e:
        big.fabric.create_vm("late", 1, 1)
    assert "pm2 in maintenance: kernel update" in e.value.message
    assert "pm1 in maintenance: disk swap" in e.value.message
    # Its VMs keep running; out of maintenance, it takes VMs again.
    mover(big).clear_maintenance(2)
    assert big.fabric.create_vm("back", 1, 1).host_id == 2
    kinds = [e.kind for e in big.registry.events.list()]
    assert "host.maintenance" in kinds and "host.in_service" in kinds


def test_maintenance_needs_a_reason_and_an_admin(big):
    with pytest.raises(Forbidden):
        mover(big).set_maintenance(1, "mine", by=ALICE)
    with pytest.raises(Forbidden):
        mover(big).drain(1, by=ALICE)
    with pytest.raises(Forbidden):
        mover(big).migrate_vm(1, by=ALICE)
    with pytest.raises(BadRequest):
        mover(big).set_maintenance(1, "   ")


def test_migrate_one_vm_to_a_chosen_host_keeps_it_and_moves_its_claim(big):
    [vm_id] = only_on(big, 1, 1, tid=2)
    before = big.registry.vms.get(vm_id)
    mig = mover(big).migrate_vm(vm_id, 3)
    assert mig.phase == MigrationPhase.DONE
    after = big.registry.vms.get(vm_id)
    assert after.host_id == 3 and after.owner is None
    for col in ("id", "name", "uuid", "mac", "state", "domain_name", "ip", "expires_at"):
        assert getattr(after, col) == getattr(before, col), col
    assert vm_id in on_host(big, 3) and vm_id not in on_host(big, 1)
    assert used(big, 1) == (0, 0, 0)
    assert used(big, 3) == (2, 1024, 2)
    assert big.registry.claims.consistent() == []
    # The scheduler's choice: never the source.
    mig = mover(big).migrate_vm(vm_id)
    assert mig.target_id in (1, 2) and big.registry.vms.get(vm_id).host_id == mig.target_id
    assert big.registry.claims.consistent() == []


def test_migrate_to_a_host_that_cannot_take_it_says_why_and_changes_nothing(big):
    [vm_id] = only_on(big, 1, 1)
    mover(big).set_maintenance(2, "kernel update")
    with pytest.raises(NoValidHost) as e:
        mover(big).migrate_vm(vm_id, 2)
    assert "pm2 in maintenance: kernel update" in e.value.message
    vm = big.registry.vms.get(vm_id)
    assert vm.host_id == 1 and vm.owner is None and vm_id in on_host(big, 1)
    assert used(big, 2) == (0, 0, 0) and big.registry.claims.consistent() == []
    with pytest.raises(BadRequest):
        mover(big).migrate_vm(vm_id, 1)  # where it is already


def test_drain_moves_every_vm_and_the_host_ends_empty(big):
    ids = only_on(big, 1, 3)
    names = {i: big.registry.vms.get(i).name for i in ids}
    row = mover(big).drain(1, wait=True)
    assert row.state == DrainState.DONE and (row.total, row.moved, row.failed) == (3, 3, [])
    assert big.registry.hosts.get(1).maintenance == "drained"
    assert big.registry.vms.list(host_id=1) == [] and on_host(big, 1) == set()
    for i in ids:
        vm = big.registry.vms.get(i)
        assert vm.host_id in (2, 3) and vm.name == names[i] and i in on_host(big, vm.host_id)
    assert used(big, 1) == (0, 0, 0) and big.registry.claims.consistent() == []
    # Nothing placed on it until it leaves maintenance.
    assert all(big.fabric.create_vm(f"n{i}", 1, 1).host_id != 1 for i in range(4))


def test_a_vm_that_fits_nowhere_stays_running_and_the_drain_says_why(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 1024}])
    try:
        small = only_on(rig, 1, 1, tid=1)[0]  # 512 MB: fits on pm2
        large = only_on(rig, 1, 1, tid=3)[0]  # 2048 MB: does not
        row = mover(rig).drain(1, wait=True)
        assert row.state == DrainState.DONE and row.moved == 1
        [failure] = row.failed
        assert failure["vmid"] == large and "ram" in failure["reason"]
        assert rig.registry.vms.get(small).host_id == 2
        assert rig.registry.vms.get(large).host_id == 1 and large in on_host(rig, 1)
        assert rig.registry.vms.get(large).state == VmState.ACTIVE
        assert rig.registry.claims.consistent() == []
    finally:
        rig.stop()


def test_a_drain_can_be_cancelled(big):
    ids = only_on(big, 1, 4)
    m = mover(big)
    # Cancelled before its first move: nothing moves, the VMs run where they were.
    real = m.migrate_vm
    started = []

    def slow(vm_id, target_id=None, **kw):
        started.append(vm_id)
        if len(started) == 1:
            m.cancel_drain(1)
        return real(vm_id, target_id, **kw)

    m.migrate_vm = slow  # type: ignore[method-assign]
    row = m.drain(1)
    m.wait(row.id, 60)
    row = big.registry.moves.drain(row.id)
    assert row.state == DrainState.CANCELLED and row.moved == 1, row
    assert len(big.registry.vms.list(host_id=1)) == 3
    assert all(i in on_host(big, big.registry.vms.get(i).host_id) for i in ids)
    with pytest.raises(Conflict):
        m.cancel_drain(1)
    assert big.registry.claims.consistent() == []


def _interrupted_move(rig: Rig, vm_id: int, target_id: int, *, copy: bool, keep_source: bool):
    """What a server killed mid-move leaves: the move recorded with its claim on the
    target, the VM taken by the (dead) server, and the domain on one side or both."""
    vm = rig.registry.vms.get(vm_id)
    assert rig.registry.vms.take(vm_id, [vm.state])
    mig = rig.registry.moves.begin(
        vm_id, vm.host_id, target_id, cpu=vm.cpu, ram=vm.ram, disk=vm.disk
    )
    assert mig is not None
    src = host_target(rig.registry.hosts.get(vm.host_id))
    dst = host_target(rig.registry.hosts.get(target_id))
    if copy:
        rig.driver.migrate(src, dst, vm.uuid, vm.id)  # the domain got to the target
        if keep_source:  # ... and the source's too, still running (a copy, undone below)
            xml = rig.driver.connection(dst).call(
                lambda c: c.lookupByUUIDString(vm.uuid).XMLDesc(0)
            )
            rig.driver.connection(src).call(lambda c: c.defineXML(xml).create())
            rig.driver.connection(dst).call(lambda c: c.lookupByUUIDString(vm.uuid).suspend())
            # a cut-off migration may leave the source paused: it is resumed
            rig.driver.connection(src).call(lambda c: c.lookupByUUIDString(vm.uuid).suspend())
    return mig


@pytest.mark.parametrize(
    ("copy", "keep_source", "where"),
    [(False, False, 1), (True, False, 2), (True, True, 1)],
    ids=["still-on-source", "got-to-target", "on-both-source-wins"],
)
def test_a_move_interrupted_by_a_killed_server_is_settled_at_restart(big, copy, keep_source, where):
    [vm_id] = only_on(big, 1, 1, tid=2)
    _interrupted_move(big, vm_id, 2, copy=copy, keep_source=keep_source)
    assert used(big, 2) == (2, 1024, 2)  # the target's claim is held
    big.restart()  # a new server: the one that moved it is gone
    assert big.report.vms.migrations == [vm_id]
    vm = big.registry.vms.get(vm_id)
    assert vm.host_id == where and vm.owner is None and vm.state == VmState.ACTIVE
    other = 2 if where == 1 else 1
    assert vm_id in on_host(big, where)
    state = big.driver.connection(host_target(big.registry.hosts.get(where))).call(
        lambda c: c.lookupByUUIDString(vm.uuid).info()[0]
    )
    assert state == 1  # VIR_DOMAIN_RUNNING, not paused
    assert not big.driver.domain_defined(host_target(big.registry.hosts.get(other)), vm.uuid)
    assert used(big, other) == (0, 0, 0) and used(big, where) == (2, 1024, 2)
    assert big.registry.claims.consistent() == []
    assert big.registry.moves.in_flight() == []
    assert vm_id not in big.report.vms.vanished


def test_new_endpoints_through_the_api(tmp_path):
    pr = make_pool_rig(
        tmp_path,
        BIG,
        [
            {
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
        ],
        config={"scheduler": {"policy": "first-fit"}},
    )
    url = pr.served.url
    try:
        wait_for(lambda: len(pr.rig.registry.vms.list(states=["ready"])) >= 2, timeout=60)
        r = requests.post(f"{url}/pm/1/maintenance", json={}, timeout=30)
        assert r.status_code == 400 and "reason" in r.json()["error"]
        r = requests.post(f"{url}/pm/9/maintenance", json={"reason": "x"}, timeout=30)
        assert r.status_code == 404
        c = requests.post(f"{url}/vm/checkout", json={"pool": "small"}, timeout=30).json()
        vmid, secret = c["vmid"], c["reservation_id"]
        source = requests.get(f"{url}/vm/query", params={"vmid": vmid}, timeout=30).json()
        host = source["pmid"]
        r = requests.post(f"{url}/pm/{host}/drain", json={}, timeout=30)
        assert r.status_code == 202, r.text

        def drained() -> dict | None:
            d = requests.get(f"{url}/pm/query", params={"pmid": host}, timeout=30).json()
            return d if d["drain"]["state"] == "done" else None

        q = wait_for(drained, timeout=60)
        assert q["maintenance"] == "drained" and q["vms"] == 0
        assert q["drain"]["moved"] == q["drain"]["total"] >= 1
        # the drain's own thread acts for whoever asked (auth off: anonymous), not "system"
        migrated = pr.rig.registry.events.list(kind="vm.migrated")
        assert migrated and {e.actor for e in migrated} == {"anonymous"}
        moved = requests.get(f"{url}/vm/query", params={"vmid": vmid}, timeout=30).json()
        assert moved["pmid"] != host and moved["status"] == "in-use"
        st = requests.get(f"{url}/status", timeout=30).json()
        assert st["hosts"]["maintenance"][str(host)]["reason"] == "drained"
        # The holder checks it in after the move.
        r = requests.post(
            f"{url}/vm/checkin", json={"vmid": vmid, "reservation_id": secret}, timeout=30
        )
        assert r.status_code == 200, r.text
        # Migrate one to a chosen host (once it is cleaned and ready again), and take
        # the host out of maintenance.
        wait_for(lambda: pr.rig.registry.vms.get(vmid).state == VmState.READY, timeout=60)
        other = next(h for h in (1, 2, 3) if h not in (host, moved["pmid"]))
        r = requests.post(f"{url}/vm/{vmid}/migrate", json={"pmid": other}, timeout=60)
        assert r.status_code == 200 and r.json()["pmid"] == other, r.text
        r = requests.delete(f"{url}/pm/{host}/maintenance", timeout=30)
        assert r.status_code == 200 and r.json()["maintenance"] is None
        r = requests.delete(f"{url}/pm/{host}/drain", timeout=30)
        assert r.status_code == 409 and "not being drained" in r.json()["error"]
    finally:
        pr.stop()


def test_the_client_puts_hosts_into_maintenance_drains_and_migrates(rig, served, capsys):
    from orchestrator import client

    def run(*argv: str) -> tuple[int, str, str]:
        code = client.main(["--url", served.url, *argv])
        out, err = capsys.readouterr()
        return code, out.strip(), err.strip()

    ids = only_on(rig, 3, 2)
    assert run("host", "maintenance", "3", "kernel update") == (
        0,
        "pmid 3 in maintenance: kernel update",
        "",
    )
    code, out, _ = run("hosts")
    assert code == 0 and "maintenance: kernel update" in out
    code, out, err = run("--json", "create", "late", "1", "1")
    assert code == 0 and rig.registry.vms.get(json.loads(out)["vmid"]).host_id != 3
    code, out, _ = run("host", "drain", "3")
    assert code == 0 and out.startswith("pmid 3: drain 1 started (2 VMs)")
    wait_for(lambda: rig.registry.moves.drain(1).state == DrainState.DONE)
    code, out, _ = run("host", "drain-status", "3")
    assert (code, out) == (0, "pmid 3: drain done: 2 of 2 moved")
    assert all(rig.registry.vms.get(i).host_id in (1, 2) for i in ids)
    code, out, _ = run("migrate", str(ids[0]), "--to", "3")  # in maintenance: refused
    assert code == 2
    assert run("host", "resume", "3") == (0, "pmid 3 is in service", "")
    code, out, _ = run("migrate", str(ids[0]), "--to", "3")
    assert code == 0 and out.endswith("to pmid 3"), out
    code, out, err = run("host", "drain", "3", "--cancel")
    assert code == 1 and "not being drained" in err


def test_the_dashboard_buttons_put_a_host_into_maintenance_drain_it_and_migrate(rig):
    from orchestrator.api import create_app
    from tests.unit.test_dashboard import Page

    page = Page(create_app(rig.services))
    ids = only_on(rig, 2, 2)
    page.get()
    assert page.html.count('name="drain"') == 3 and 'name="migrate"' in page.html
    page.post("/ui/host/maintenance", pmid=2, reason="")
    assert "reason" in page.error()
    page.post("/ui/host/maintenance", pmid=2, reason="kernel update", back="hosts")
    assert page.ok().endswith("(pmid 2) is in maintenance: kernel update.")
    assert "in maintenance: kernel update" in page.html
    page.post("/ui/host/drain", pmid=2)
    assert page.ok() == "Draining pmid 2: 2 VMs to move."
    wait_for(lambda: rig.registry.moves.latest_drain(2).state == DrainState.DONE)
    page.get()
    assert "drain done: 2 of 2 moved" in page.html
    page.post("/ui/vm/migrate", vmid=ids[0], target=2)
    assert "pm2 in maintenance: kernel update" in page.error()
    page.post("/ui/host/resume", pmid=2)
    assert page.ok().endswith("(pmid 2) is in service.")
    page.post("/ui/vm/migrate", vmid=ids[0], target=2)
    assert page.ok().endswith("to pmid 2.")
    assert rig.registry.vms.get(ids[0]).host_id == 2
    page.post("/ui/host/drain/cancel", pmid=2)
    assert "not being drained" in page.error()


def test_a_local_volume_moves_with_its_vm_and_its_claim_too(big):
    [vm_id] = only_on(big, 1, 1)
    vols = big.services.volumes
    vol = vols.create("data", 3)
    vols.attach(vm_id, vol.id)
    vol = big.registry.volumes.get(vol.id)
    assert vol.host_id == 1 and vol.status == "attached"
    mover(big).migrate_vm(vm_id, 2)
    vol = big.registry.volumes.get(vol.id)
    assert vol.host_id == 2 and vol.status == "attached" and vol.vm_id == vm_id
    assert used(big, 1) == (0, 0, 0)
    assert used(big, 2) == (1, 512, 1 + 3)
    assert big.registry.claims.consistent() == []
    # (test:// domains cannot hot-plug disks, so the copy itself is the rig's to test)
    vols.detach(vol.id)
    assert big.registry.volumes.get(vol.id).status == "available"


def test_a_vm_some_work_holds_is_not_moved(big):
    [vm_id] = only_on(big, 1, 1)
    assert big.registry.vms.take(vm_id, ["active"])  # e.g. being cleaned
    with pytest.raises(Conflict) as e:
        mover(big).migrate_vm(vm_id, 2)
    assert "working on it" in e.value.message
    assert big.registry.moves.in_flight() == [] and used(big, 2) == (0, 0, 0)


def test_a_vm_moves_only_to_a_host_of_its_network(tmp_path):
    rig = make_rig(
        tmp_path,
        [{"cpus": 8, "ram": 8192}, {"cpus": 8, "ram": 8192, "extra": {"network": "forward"},
                                    "target": "root@127.0.0.9"}],
    )  # fmt: skip
    try:
        [vm_id] = only_on(rig, 1, 1)
        with pytest.raises(Conflict) as e:
            mover(rig).migrate_vm(vm_id, 2)
        assert "does not give its VMs network user" in e.value.message
        row = mover(rig).drain(1, wait=True)
        assert row.failed == [
            {"vmid": vm_id, "reason": f"no host can take vmid {vm_id}: no other host "
             "gives its VMs network user"}
        ]  # fmt: skip
        assert rig.registry.vms.get(vm_id).host_id == 1 and vm_id in on_host(rig, 1)
    finally:
        rig.stop()


def test_a_drain_whose_server_died_goes_on_after_the_restart(big):
    [vm_id] = only_on(big, 1, 1)
    mover(big).set_maintenance(1, "kernel update")
    row = big.registry.moves.start_drain(1, 1, "root")  # its server is killed now
    big.restart()
    assert big.registry.moves.drain(row.id).state == DrainState.INTERRUPTED
    again = big.registry.moves.latest_drain(1)
    assert again.id != row.id and again.requested_by == "root"
    mover(big).wait(again.id, 60)
    again = big.registry.moves.drain(again.id)
    assert again.state == DrainState.DONE and again.moved == 1
    assert big.registry.vms.get(vm_id).host_id != 1
    kinds = [e.kind for e in big.registry.events.list()]
    assert "host.drain_interrupted" in kinds


def test_a_drain_interrupted_while_cancelling_is_not_resumed(big):
    only_on(big, 1, 1)
    mover(big).set_maintenance(1, "kernel update")
    row = big.registry.moves.start_drain(1, 1, "root")
    big.registry.moves.cancel_drain(1)
    big.restart()
    assert big.registry.moves.drain(row.id).state == DrainState.INTERRUPTED
    assert big.registry.moves.latest_drain(1).id == row.id
    assert len(big.registry.vms.list(host_id=1)) == 1


def test_a_host_leaves_maintenance_only_once_its_drain_is_over(big):
    only_on(big, 1, 2)
    m = mover(big)
    real = m.migrate_vm
    seen: list[str] = []

    def during(vm_id, target_id=None, **kw):
        if not seen:  # while the drain runs: taking the host out is refused
            with pytest.raises(Conflict) as e:
                m.clear_maintenance(1)
            seen.append(e.value.message)
        return real(vm_id, target_id, **kw)

    m.migrate_vm = during  # type: ignore[method-assign]
    row = m.drain(1)
    m.wait(row.id, 60)
    assert seen and "cancel the drain first" in seen[0]
    assert big.registry.moves.drain(row.id).state == DrainState.DONE
    assert m.clear_maintenance(1).maintenance is None


def test_a_move_that_fails_leaves_the_vm_running_on_its_source_and_the_drain_says_why(big):
    import uuid as uuidlib

    from orchestrator.hypervisor.xml import DomainSpec, domain_xml

    [vm_id] = only_on(big, 1, 1)
    vm = big.registry.vms.get(vm_id)
    # pm2 and pm3 already run a foreign domain with the VM's name: libvirt refuses it
    # there, as a real host refuses a migration for its own reasons.
    for pmid in (2, 3):
        foreign = DomainSpec(
            name=vm.domain_name,
            uuid=str(uuidlib.uuid4()),
            vm_id=0,
            domain_type="test",
            vcpus=1,
            ram_mb=64,
            disk_path="/fabric-pool/foreign.qcow2",
        )
        dst = host_target(big.registry.hosts.get(pmid))
        big.driver.connection(dst).call(lambda c, x=domain_xml(foreign): c.defineXML(x))
    row = mover(big).drain(1, wait=True)
    [failure] = row.failed
    assert failure["vmid"] == vm_id and "already exists" in failure["reason"], failure
    after = big.registry.vms.get(vm_id)
    assert after.host_id == 1 and after.owner is None and vm_id in on_host(big, 1)
    assert used(big, 2) == used(big, 3) == (0, 0, 0)
    assert big.registry.claims.consistent() == []
    [mig] = [m for m in big.registry.moves.of_drain(row.id)]
    assert mig.phase == MigrationPhase.FAILED and "already exists" in mig.error
    kinds = [e.kind for e in big.registry.events.list()]
    assert "vm.migrate_failed" in kinds


def test_a_vm_checked_in_while_it_moves_is_cleaned_only_after_the_move(tmp_path):
    pool = {
        "name": "small",
        "instance_type": 1,
        "image": "debian-12",
        "ready_check": "none",
        "size": 1,
        "max": 1,
        "cleanup": "reset",
        "lifetime": 1,
        "lifetime_max": 3,
    }
    pr = make_pool_rig(tmp_path, BIG, [pool])
    try:
        reg = pr.rig.registry
        wait_for(lambda: len(reg.vms.list(states=["ready"])) == 1, timeout=60)
        [c] = pr.reservations.checkout(pool="small")
        vm_id = c.vm.id
        assert reg.vms.take(vm_id, ["in-use"])  # a move of it is under way (this server)
        pr.reservations.checkin(vm_id=vm_id, ip=None, token=c.reservation_id)
        vm = reg.vms.get(vm_id)
        assert vm.state == VmState.CLEANING and vm.owner == reg.cluster.server_id
        for _ in range(5):  # five whole worker passes, counted: none may clean it now
            pr.worker.run_once()
        pr.worker.drain()  # and whatever they handed to the cleaners is done
        assert reg.vms.get(vm_id).state == VmState.CLEANING
        reg.vms.let_go(vm_id)  # the move is over
        wait_for(lambda: reg.vms.get(vm_id).state == VmState.READY, timeout=60)
    finally:
        pr.stop()
