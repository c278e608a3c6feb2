"""VMs on a LAN, on test:// hosts: a host whose pm-file line says ``network=bridge:br0``,
the configuration's ``networks:`` entry for it, and a stand-in for the address watcher
(not started in the unit tests' rigs) that records the address a DHCP server would give."""

from __future__ import annotations

from pathlib import Path

from orchestrator.model import AddressSource, VmState
from orchestrator.registry import Registry
from tests.conftest import PoolRig, make_pool_rig, wait_for

BRIDGE = "bridge:br0"
LAN_HOST = {"cpus": 8, "ram": 8192, "extra": {"network": BRIDGE}}
FORWARD_HOST = {"cpus": 2, "ram": 2048, "target": "root@127.0.0.5", "extra": {"network": "forward"}}
USER_HOST = {"cpus": 2, "ram": 2048, "extra": {"network": "user"}}
LAN = {
    BRIDGE: {
        "subnet": "10.251.1.0/24",
        "gateway": "10.251.1.1",
        "plan": "10.251.1.20-10.251.1.29",
    }
}
POOL = {
    "name": "lan",
    "instance_type": 1,
    "image": "debian-12",
    "ready_check": "none",
    "size": 1,
    "max": 2,
    "cleanup": "reset",
    "lifetime": 1,
    "lifetime_max": 2,
}


def give_addresses(registry: Registry, source: str = AddressSource.LEASE) -> int:
    """Record an address for each building VM on a LAN that has none yet: the one its
    network's plan gave it (a VM whose create has not reached the plan yet gets its
    address at a later call, as from a DHCP server). Returns how many it gave."""
    given = 0
    for vm in registry.vms.list(states=[VmState.BUILDING]):
        if vm.ip or vm.network != BRIDGE:
            continue
        ip = registry.addresses.of(vm.id)
        if ip is None:
            continue
        registry.vms.record_address(vm.id, ip, source)
        given += 1
    return given


def make_lan_pool_rig(tmp_path: Path, size: int = 1) -> PoolRig:
    """A pool of ``size`` ready VMs on one bridged host; their addresses are given."""
    pr = make_pool_rig(tmp_path, [LAN_HOST], [{**POOL, "size": size}], config={"networks": LAN})

    def ready() -> bool:
        give_addresses(pr.rig.registry)
        return pr.pools.status()["lan"]["ready"] == size

    wait_for(ready)
    return pr
