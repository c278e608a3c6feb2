"""Several servers on one registry: heartbeats, leases, who works on a VM, and the
scheduler's in-memory host view. Each "server" here is a Registry of its own on
the same database (SQLite file, or PostgreSQL with FABRIC_TEST_DB=postgresql)."""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from orchestrator.clock import utcnow
from orchestrator.cluster import Cluster, machine
from orchestrator.config import ClusterConfig, config_from_dict
from orchestrator.errors import ConfigError, Conflict, NoValidHost
from orchestrator.hypervisor.driver import LibvirtDriver
from orchestrator.model import VmState
from orchestrator.registry import Registry
from orchestrator.registry.tables import ServerRow, VmRow
from orchestrator.scheduler import HostColumns, PlacementRequest
from orchestrator.services import build_services
from tests.conftest import fresh_db_url, make_rig, wait_for


@pytest.fixture
def db(tmp_path):
    url = fresh_db_url(tmp_path)
    Registry(url).create_schema()
    return url


def stop_beating(reg: Registry) -> None:
    """As if ``reg``'s server had died an hour ago: its heartbeat is that old."""
    with reg.db.tx() as s:
        s.execute(
            update(ServerRow)
            .where(ServerRow.id == reg.cluster.server_id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )


def server(url: str, dead_after: float = 10.0) -> Registry:
    reg = Registry(url, dead_after=dead_after)
    reg.cluster.register("here", 1)
    return reg


# -- leases -----------------------------------------------------------------


def test_a_lease_has_one_holder_until_it_expires(db):
    a, b = server(db), server(db)
    assert a.cluster.acquire("pool-worker", ttl=1.5) == "taken"
    assert b.cluster.acquire("pool-worker", ttl=1.5) is None
    assert a.cluster.acquire("pool-worker", ttl=1.5) == "renewed"
    fence = {ls["name"]: ls["fence"] for ls in a.cluster.snapshot()["leases"]}["pool-worker"]
    time.sleep(1.7)  # a stopped renewing: the lease lapses
    assert b.cluster.acquire("pool-worker", ttl=30) == "taken"
    assert a.cluster.acquire("pool-worker", ttl=30) is None
    lease = {ls["name"]: ls for ls in a.cluster.snapshot()["leases"]}["pool-worker"]
    assert lease["holder"] == b.cluster.server_id and lease["fence"] == fence + 1


def test_leaving_frees_leases_at_once(db):
    a, b = server(db), server(db)
    assert a.cluster.acquire("schedules", ttl=60)
    assert not b.cluster.acquire("schedules", ttl=60)
    a.cluster.leave()
    assert b.cluster.acquire("schedules", ttl=60)
    assert [s["id"] for s in b.cluster.snapshot()["servers"]] == [b.cluster.server_id]


def _race(args: tuple[str, object]) -> bool:
    url, barrier = args
    reg = Registry(url)
    reg.cluster.register("here", 1)
    barrier.wait()
    got = reg.cluster.acquire("discovery", ttl=60)
    reg.close()
    return got is not None


def test_many_processes_racing_for_a_free_lease_one_wins(db):
    n = 8
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.map(_race, [(db, barrier)] * n)
    assert sorted(results) == [False] * (n - 1) + [True]


def test_a_cluster_takes_over_when_the_holder_dies(db):
    cfg = ClusterConfig(heartbeat=0.2, dead_after=1.5)
    a = Cluster(Registry(db).cluster, cfg)
    b = Cluster(Registry(db).cluster, cfg)
    a.join()
    b.join()
    assert a.held() == ["pool-worker", "schedules", "discovery"] and b.held() == []
    gained: list[str] = []
    for lease in b.wanted:
        b.subscribe(lease, lambda lease=lease: gained.append(lease))
    b.start()
    # a "dies": it stops beating (no clean leave); the wait only gives up on a hang
    wait_for(lambda: b.held() == list(b.wanted), timeout=120)
    assert b.held() == ["pool-worker", "schedules", "discovery"]
    assert sorted(gained) == sorted(b.wanted)
    assert not a.holds("pool-worker")  # a's own deadline passed too: it would stand down
    alive = {s["id"]: s["alive"] for s in b.store.snapshot()["servers"]}
    assert alive == {a.server_id: False, b.server_id: True}
    b.stop()
    assert b.store.snapshot()["servers"] == [
        s for s in b.store.snapshot()["servers"] if s["id"] == a.server_id
    ]


def test_a_lease_is_not_believed_past_its_time_without_renewal(db):
    c = Cluster(Registry(db).cluster, ClusterConfig(heartbeat=0.5, dead_after=2.5))
    c.join()
    assert c.holds("discovery")
    time.sleep(2.05)  # no beat: by now the database may give it to someone else
    assert not c.holds("discovery")


# -- who works on a VM ------------------------------------------------------


def test_only_one_server_works_on_a_vm_until_its_owner_dies(db, tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])
    a = rig.registry
    a.cluster.register("here", 1)
    vm = rig.fabric.create_vm("v", 1, 1)
    with a.db.tx() as s:  # as a returned pool VM (a plain VM is never cleaned)
        s.execute(update(VmRow).where(VmRow.id == vm.id).values(state=VmState.CLEANING))
    b = Registry(rig.db_url)
    b.cluster.register("here", 2)
    assert a.vms.take(vm.id, [VmState.CLEANING])
    assert not b.vms.take(vm.id, [VmState.CLEANING])
    assert not a.vms.take(vm.id, [VmState.CLEANING])  # already a's
    # b may not destroy it under a's feet either
    fabric_b = build_services(rig.services.config, b, rig.inventory(), driver=rig.driver).fabric
    with pytest.raises(Conflict, match="working on it"):
        fabric_b.destroy_vm(vm.id)
    stop_beating(a)
    assert b.vms.take(vm.id, [VmState.CLEANING])
    assert b.vms.get(vm.id).owner == b.cluster.server_id


def test_reconcile_leaves_live_work_alone_and_sweeps_dead_work(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}, {"cpus": 4, "ram": 4096}])
    reg = rig.registry
    live = Registry(rig.db_url)
    live.cluster.register("here", 1)
    dead = Registry(rig.db_url)
    dead.cluster.register("here", 2)
    # two creates in flight, each held by its server, neither with a domain yet
    busy = live.vms.claim(1, name="busy", tid=1, image_id=1, cpu=1, ram=512, disk=1)
    lost = dead.vms.claim(2, name="lost", tid=1, image_id=1, cpu=1, ram=512, disk=1)
    assert rig.services.reconciler.sweep_orphans() == []  # both servers are alive
    stop_beating(dead)
    report = rig.services.reconciler.reconcile()
    assert report.removed == [lost.id] and report.vanished == []
    assert [v.id for v in reg.vms.list()] == [busy.id]
    assert reg.hosts.get(2).cpu_used == 0 and reg.hosts.get(1).cpu_used == 1
    # the same through the cheap sweep: a destroy left half-done by a dead server
    done = rig.fabric.create_vm("done", 1, 1)
    dead.vms.transition(done.id, VmState.DELETING, expect=[VmState.ACTIVE])
    assert reg.vms.get(done.id).owner == dead.cluster.server_id
    assert rig.services.reconciler.sweep_orphans() == [done.id]
    assert not reg.vms.exists(done.id)


def test_a_server_restarted_on_this_machine_takes_over_its_past_self_at_once(db):
    cfg = ClusterConfig(heartbeat=0.1, dead_after=60)
    old = Registry(db)
    old.cluster.register(machine(), 2**22 + 12345)  # no such pid
    assert old.cluster.acquire("discovery", ttl=60)
    # same hostname, another machine or container: its pids are not ours to judge
    other = Registry(db)
    other.cluster.register(machine().split("/")[0] + "/0ther", 2**22 + 12346)
    assert other.cluster.acquire("schedules", ttl=60)
    new = Cluster(Registry(db).cluster, cfg)
    new.join()
    assert new.holds("discovery") and not new.holds("schedules")
    servers = {s["id"] for s in new.store.snapshot()["servers"]}
    assert servers == {new.server_id, other.cluster.server_id}


def test_cluster_settings_are_checked():
    with pytest.raises(
        ConfigError,
        match=r"^config: cluster\.dead_after: must be at least twice cluster\.heartbeat \(10\)",
    ):
        config_from_dict({"cluster": {"heartbeat": 5, "dead_after": 6}})
    with pytest.raises(ConfigError, match=r"^config: cluster\.heartbeat: must be a number > 0"):
        config_from_dict({"cluster": {"heartbeat": 0}})


# -- the scheduler's host view ----------------------------------------------


def test_a_stale_host_view_never_overcommits(tmp_path):
    """Server a's view is old (another server filled the host meanwhile): its claim
    is refused by the registry, it reads the host again and says why it cannot."""
    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 1024}], config={"capacity": {}})
    a = rig.fabric
    a.hosts.max_age = 3600  # never expires by itself in this test
    assert a.hosts.states()[0].cpu_used == 0
    b = build_services(
        rig.services.config, Registry(rig.db_url), rig.inventory(), driver=LibvirtDriver()
    ).fabric
    b.create_vm("b1", 1, 1)  # 512 MB each: the host's 1024 MB are full
    b.create_vm("b2", 1, 1)
    assert a.hosts.states()[0].ram_used == 0  # stale on purpose
    with pytest.raises(NoValidHost, match="ram filter removed 1 of 1"):
        a.create_vm("a1", 1, 1)
    host = rig.registry.hosts.get(1)
    assert (host.ram_used, host.cpu_used) == (1024, 2)
    assert a.hosts.states()[0].ram_used == 1024  # read again after the lost claim


def test_the_host_view_follows_this_servers_own_changes_at_once(rig):
    cache = rig.services.hosts
    cache.max_age = 3600
    cache.states()
    loads = cache.refreshes
    vm = rig.fabric.create_vm("x", 1, 1)
    by_id = {h.id: h for h in cache.states()}
    assert by_id[vm.host_id].vms == 1 and by_id[vm.host_id].cpu_used == 1
    rig.fabric.destroy_vm(vm.id)  # capacity freed: that host is read again
    rig.registry.hosts.set_enabled(1, False)
    by_id = {h.id: h for h in cache.states()}
    assert by_id[vm.host_id].cpu_used == 0 and not by_id[1].enabled
    assert cache.refreshes == loads  # one row at a time, never the whole table


def test_the_host_view_is_columns_claims_update_in_place(rig):
    """A claim moves its host's row in the same columns (no rebuild per claim); a
    host whose labels change gets new columns, and the old ones stay as they were
    for a placement still reading them."""
    cache = rig.services.hosts
    cache.max_age = 3600
    cols = cache.states()
    assert isinstance(cols, HostColumns) and [h.id for h in cols] == sorted(h.id for h in cols)
    vm = rig.fabric.create_vm("x", 1, 1)
    assert cache.states() is cols
    row = [h.id for h in cols].index(vm.host_id)
    assert cols[row].cpu_used == 1 and int(cols.cpu_free[row]) == cols[row].cpu_total - 1
    rig.registry.hosts.set_enabled(vm.host_id, False)
    new = cache.states()
    assert new is not cols and not new[row].enabled and not new.ok[row]
    assert cols[row].enabled and cols.ok[row]  # the old view is whole
    r = PlacementRequest(cpu=1, ram=1, disk=1)
    assert vm.host_id not in [h.id for h in rig.services.scheduler.select(new, r).hosts]
    assert vm.host_id in [h.id for h in rig.services.scheduler.select(cols, r).hosts]


def test_get_cluster_names_the_servers_and_lease_holders(rig, client):
    c = rig.services.cluster
    c.join()
    body = client.get("/cluster").get_json()
    assert body["server"] == rig.registry.cluster.server_id
    assert [(s["id"], s["alive"], s["me"]) for s in body["servers"]] == [
        (rig.registry.cluster.server_id, True, True)
    ]
    assert {ls["name"]: ls["holder"] for ls in body["leases"]} == dict.fromkeys(
        ("discovery", "pool-worker", "schedules"), rig.registry.cluster.server_id
    )
    c.stop()
    body = client.get("/cluster").get_json()
    assert body["servers"] == [] and all(ls["holder"] is None for ls in body["leases"])


def test_a_lease_renewed_late_but_never_taken_is_not_a_takeover(db):
    """A slow heartbeat (a long start-up, say) that finds its lease lapsed but
    nobody else's renews it: the work it guards must not restart from scratch."""
    a = server(db)
    assert a.cluster.acquire("discovery", ttl=0.2) == "taken"
    time.sleep(0.3)
    assert a.cluster.acquire("discovery", ttl=0.2) == "renewed"
    c = Cluster(a.cluster, ClusterConfig(heartbeat=0.5, dead_after=2))
    gained: list[str] = []
    for lease in c.wanted:
        c.subscribe(lease, lambda lease=lease: gained.append(lease))
    c.beat()
    assert gained == ["pool-worker", "schedules"]  # discovery was already ours


def test_a_server_given_up_for_dead_rejoins_on_its_next_heartbeat(db):
    a, b = server(db), server(db)
    b.cluster.bury([a.cluster.server_id])  # as if a had been silent too long
    assert [s["id"] for s in b.cluster.snapshot()["servers"]] == [b.cluster.server_id]
    a.cluster.heartbeat()
    alive = {s["id"]: s["alive"] for s in b.cluster.snapshot()["servers"]}
    assert alive == {a.cluster.server_id: True, b.cluster.server_id: True}
