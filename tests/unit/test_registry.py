"""The registry on a real SQLite file: stable ids, atomic claims across threads."""

from __future__ import annotations

import threading

from orchestrator.inventory import load_inventory
from orchestrator.registry import Registry


def test_ids_stay_stable_when_the_files_change(rig, tmp_path):
    hosts = {h.key: h.id for h in rig.registry.hosts.list()}
    # drop the first host, add a new one: old ids keep, the new one gets a fresh id
    lines = rig.pm_file.read_text().splitlines()
    from tests.conftest import write_node

    extra = write_node(tmp_path / "node9.xml", 2, 2048)
    rig.pm_file.write_text("\n".join([*lines[1:], f"uri=test://{extra}"]) + "\n")
    rig.registry.inventory.sync(load_inventory(rig.pm_file, rig.image_file, rig.types_file))
    now = {h.key: h.id for h in rig.registry.hosts.list()}
    for key, hid in now.items():
        if key in hosts:
            assert hosts[key] == hid
    assert now[f"test://{extra}"] == 4
    assert len(now) == 3  # the dropped host is retired, not listed
    assert len(rig.registry.hosts.list(include_retired=True)) == 4


def test_concurrent_claims_never_overcommit(rig):
    # host 1: 8 cpu, 2048 MB. 40 threads on separate connections try 512 MB each.
    reg2 = Registry(rig.db_url)
    barrier = threading.Barrier(40)
    won: list[int] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        reg = rig.registry if i % 2 else reg2
        barrier.wait()
        vm = reg.vms.claim(1, name=f"c{i}", tid=1, image_id=1, cpu=1, ram=512, disk=1)
        if vm is not None:
            with lock:
                won.append(vm.id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 4 and len(set(won)) == 4
    h = rig.registry.hosts.get(1)
    assert (h.cpu_used, h.ram_used) == (4, 2048)
    assert rig.registry.claims.consistent() == []
    reg2.close()


def test_forward_ports_are_unique_per_host(rig):
    ports = range(22000, 22003)
    got = [
        rig.registry.vms.claim(
            3, name="p", tid=1, image_id=1, cpu=1, ram=1, disk=0, ssh_ports=ports
        )
        for _ in range(3)
    ]
    assert sorted(v.ssh_port for v in got) == [22000, 22001, 22002]
    import pytest

    from orchestrator.errors import Conflict

    with pytest.raises(Conflict, match="no free forwarded port"):
        rig.registry.vms.claim(
            3, name="p", tid=1, image_id=1, cpu=1, ram=1, disk=0, ssh_ports=ports
        )
