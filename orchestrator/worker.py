"""Background work: pool refill, cleanup of returned VMs, retirement of failed ones,
and the lifetime reaper. One loop thread decides; small thread pools do the work.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .model import VmState
from .pools import PoolService

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger(__name__)


class Worker:
    LEASE = "pool-worker"

    def __init__(self, pools: PoolService, cluster: Cluster | None = None) -> None:
        self.pools = pools
        self.cluster = cluster  # None: this process is the only server
        self.registry = pools.registry
        cfg = pools.config.workers
        self.interval = cfg.interval
        self._builders = ThreadPoolExecutor(cfg.build_workers, thread_name_prefix="pool-build")
        self._cleaners = ThreadPoolExecutor(cfg.cleanup_workers, thread_name_prefix="pool-clean")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Run a pass soon (a pool ran dry)."""
        self._wake.set()

    def clean_now(self, vm_id: int) -> None:
        """A VM came back: start its cleanup without waiting for the next pass."""
        if not self._stop.is_set() and self.pools.take(vm_id, [VmState.CLEANING]):
            try:
                self._cleaners.submit(self.pools.clean, vm_id)
            except RuntimeError:  # shutting down: the next start redoes it
                self.pools.release(vm_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pool-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._builders.shutdown(wait=False, cancel_futures=True)
        self._cleaners.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.cluster is None or self.cluster.holds(self.LEASE):
                    self.run_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("pool pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()
            self._stop.wait(0.05)  # however often woken, at most ~20 passes a second

    def run_once(self) -> None:
        """One pass: reap expired reservations, start cleanups, retire failures, refill."""
        for vm_id in self.registry.expire_reservations():
            log.info("vm %d: reservation expired; cleaning it", vm_id)
        vms = self.registry.vms(states=[VmState.CLEANING, VmState.FAILED, VmState.VANISHED])
        for vm in vms:
            if vm.pool is None or not self.pools.take(vm.id, [vm.state]):
                continue  # not a pool VM, or another server is working on it
            if vm.state == VmState.CLEANING:
                self._cleaners.submit(self.pools.clean, vm.id)
            else:
                self._cleaners.submit(self.pools.retire, vm.id)
        for name, n in self.pools.builds_wanted().items():
            for _ in range(n):
                self.pools.claim_build(name)
                self._builders.submit(self.pools.build, name)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until submitted work is done (for tests and shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.pools._lock:
                busy = bool(self.pools._busy) or any(self.pools._building.values())
            if not busy:
                return
            time.sleep(0.05)
