"""Background work of pools: refill, cleanup of returned VMs, retirement of failed
ones, and the lifetime reaper. One loop thread decides; small thread pools do
the work."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .config import WorkerConfig
from .model import Lease, VmState
from .periodic import PeriodicWorker
from .pools import PoolService
from .registry import Registry

if TYPE_CHECKING:
    from .cluster import Cluster
    from .ondemand import OnDemand

log = logging.getLogger(__name__)


class Worker(PeriodicWorker):
    name = Lease.POOL_WORKER  # the thread, named after its lease

    def __init__(
        self,
        registry: Registry,
        pools: PoolService,
        config: WorkerConfig,
        cluster: Cluster | None = None,
    ) -> None:
        # However often woken (a pool ran dry), at most ~20 passes a second.
        super().__init__(config.interval, lease=Lease.POOL_WORKER, cluster=cluster, min_gap=0.05)
        self.registry = registry
        self.pools = pools
        self._builders = ThreadPoolExecutor(config.build_workers, thread_name_prefix="pool-build")
        self._cleaners = ThreadPoolExecutor(config.cleanup_workers, thread_name_prefix="pool-clean")
        self.ondemand: OnDemand | None = None  # requests that wait for capacity (wired later)

    def clean_now(self, vm_id: int) -> None:
        """A VM came back: start its cleanup without waiting for the next pass."""
        if not self.stopping and self.pools.take(vm_id, [VmState.CLEANING]):
            try:
                self._cleaners.submit(self.pools.clean, vm_id)
            except RuntimeError:  # shutting down: the next start redoes it
                self.pools.release(vm_id)

    def clean_taken(self, vm_id: int) -> None:
        """A VM came back and its check-in already made this server the one that
        cleans it (in the same UPDATE): queue its cleanup; no transaction here."""
        if not self.pools.adopt(vm_id):
            # The cleanup that made it ready before this check-out has not let go of
            # it yet in this process: the registry lets go of it, the next pass takes it.
            self.registry.vms.let_go(vm_id)
            self.wake()
            return
        try:
            self._cleaners.submit(self.pools.clean, vm_id)
        except RuntimeError:  # shutting down: the next start redoes it
            self.pools.release(vm_id)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._builders.shutdown(wait=False, cancel_futures=True)
        self._cleaners.shutdown(wait=False, cancel_futures=True)

    def run_once(self) -> None:
        """One pass: reap expired reservations, start cleanups, retire failures, serve
        on-demand requests, refill (on-demand requests' VMs too)."""
        for vm_id in self.registry.reservations.expire():
            log.info("vm %d: reservation expired; cleaning it", vm_id)
        vms = self.registry.vms.list(states=[VmState.CLEANING, VmState.FAILED, VmState.VANISHED])
        for vm in vms:
            if vm.pool is None or not self.pools.take(vm.id, [vm.state]):
                continue  # not a pool VM, or another server is working on it
            if vm.state == VmState.CLEANING:
                self._cleaners.submit(self.pools.clean, vm.id)
            else:
                self._cleaners.submit(self.pools.retire, vm.id)
        if self.ondemand is not None:
            self.pools.demand = self.ondemand.fulfil()
        for name, n in self.pools.builds_wanted().items():
            for _ in range(n):
                self.pools.claim_build(name)
                self._builders.submit(self.pools.build, name)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until submitted work is done (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.pools.idle():
            time.sleep(0.05)
