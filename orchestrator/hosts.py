"""Hosts as the use cases see them: discovery (read each host's capacity through
libvirt, or mark it down with the reason; the pm file's figures override
libvirt's, then the overcommit ratios apply) and the driver's target for a host."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from .config import CapacityConfig, effective_capacity
from .errors import FabricError, HostUnreachable
from .hypervisor.driver import HostTarget, LibvirtDriver, NetworkInfo
from .model import DEFAULT_NETWORK, HostStatus, NetworkKind
from .registry import HostRow
from .registry.hosts import HostStore

log = logging.getLogger(__name__)


def host_target(row: HostRow) -> HostTarget:
    """What the driver needs to reach a host."""
    return HostTarget(
        id=row.id,
        label=row.label,
        uri=row.uri,
        domain_type=row.domain_type,
        network=row.network,
        address=row.address,
        pool_path=row.pool_path,
        migrate_address=row.migrate_address,
    )


def default_network(networks: list[NetworkInfo]) -> str:
    """What a host whose pm-file line sets no ``network=`` gives its VMs: libvirt's
    ``default`` network where the host has it active (an address the fabric can learn
    from its DHCP leases), else user networking (as virt-install decides)."""
    if any(n.name == "default" and n.active for n in networks):
        return DEFAULT_NETWORK
    return NetworkKind.USER


class Discovery:
    def __init__(
        self,
        hosts: HostStore,
        driver: LibvirtDriver,
        capacity: CapacityConfig,
        stopping: threading.Event,
    ) -> None:
        self.hosts = hosts
        self.driver = driver
        self.capacity = capacity
        self.stopping = stopping
        # Called with a host that answers while not marked up (it comes back, or is
        # new), before it is: removes its stale domains (evacuate.py). FabricError
        # keeps the host down.
        self.fence: Callable[[HostRow], object] | None = None

    def discover_all(self) -> None:
        """Every listed host, several at a time."""
        rows = self.hosts.list()
        if not rows:
            return

        def one(h: HostRow) -> bool:
            return False if self.stopping.is_set() else self.discover_host(h)

        with ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
            for f in as_completed([pool.submit(one, h) for h in rows]):
                f.result()

    def discover_host(self, row: HostRow) -> bool:
        """Read one host's capacity; mark it down with the reason if that fails."""
        target = host_target(row)
        try:
            facts = self.driver.discover(target)
            networks = self.driver.networks(target)
            if self.fence is not None and row.status != HostStatus.UP:
                self.fence(row)  # before anything can start them
        except FabricError as e:
            reason = e.reason if isinstance(e, HostUnreachable) else e.message
            log.warning("host %s is down: %s", row.label, reason)
            self.hosts.record_discovery(row.id, up=False, reason=reason)
            return False
        phys = (
            row.cpu_override or facts.cpu,
            row.ram_override or facts.ram_mb,
            row.disk_override or facts.disk_gb,
        )
        totals = effective_capacity(phys, self.capacity)
        self.hosts.record_discovery(
            row.id,
            up=True,
            reason=None,
            phys=phys,
            totals=totals,
            arch=facts.arch,
            network=row.network_setting or default_network(networks),
            networks=[n.as_dict() for n in networks],
        )
        return True
