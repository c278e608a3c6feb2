"""The discovery lease's background work: the orphan sweep every heartbeat, and
every ``discovery.interval`` seconds discovery (which fences the stale domains of
a host that comes back), the evacuation of hosts down for ``evacuate.after``
seconds, reconciliation of VMs and of volumes, and a look at every VM's address."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .addresses import Addresses
from .config import Config
from .hosts import Discovery
from .model import Lease
from .periodic import PeriodicWorker
from .reconcile import Reconciler
from .volumes import Volumes

if TYPE_CHECKING:
    from .cluster import Cluster
    from .evacuate import Evacuator

log = logging.getLogger(__name__)


class Maintenance(PeriodicWorker):
    name = "maintenance"

    def __init__(
        self,
        discovery: Discovery,
        reconciler: Reconciler,
        volumes: Volumes,
        addresses: Addresses,
        config: Config,
        cluster: Cluster | None = None,
        *,
        evacuator: Evacuator | None = None,
    ) -> None:
        every = config.discovery.interval
        super().__init__(
            min(config.cluster.heartbeat, every),
            lease=Lease.DISCOVERY,
            cluster=cluster,
            first_pass_now=False,  # the server has just discovered and reconciled
        )
        self.discovery = discovery
        self.reconciler = reconciler
        self.volumes = volumes
        self.addresses = addresses
        self.evacuator = evacuator
        self.every = every
        self._due = time.monotonic() + every  # when discovery and reconciliation run next

    def start(self) -> None:
        self._due = time.monotonic() + self.every
        super().start()

    def lease_gained(self) -> None:
        """Taken over from a dead server: look at every host now."""
        self._due = 0.0
        self.wake()

    def run_once(self) -> None:
        removed = self.reconciler.sweep_orphans()
        if removed:
            log.info("finished the half-done work of dead servers: vms %s", removed)
        if time.monotonic() >= self._due:
            self._due = time.monotonic() + self.every
            self.discovery.discover_all()
            if self.evacuator is not None:
                self.evacuator.run_auto()  # hosts down for evacuate.after seconds
            self.reconciler.reconcile()
            self.volumes.reconcile()
            self.addresses.refresh()
