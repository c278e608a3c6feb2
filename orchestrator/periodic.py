"""The one shape of the fabric's background loops: a thread that runs a pass every
``interval`` seconds (sooner when woken), survives any one failed pass, and
stops promptly. With a lease, the pass runs only while this server holds it.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from .model import Lease

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger(__name__)


class PeriodicWorker(ABC):
    """Subclasses give ``run_once`` (one pass) and may give ``follow`` (what to do
    instead while another server holds the lease) and ``lease_gained``."""

    name = "periodic"

    def __init__(
        self,
        interval: float,
        *,
        lease: Lease | None = None,
        cluster: Cluster | None = None,
        first_pass_now: bool = True,
        min_gap: float = 0.0,
    ) -> None:
        self.interval = interval
        self.lease = lease
        self.cluster = cluster  # None: this process is the only server
        self.first_pass_now = first_pass_now
        self.min_gap = min_gap  # however often woken, passes at least this far apart
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cluster is not None and lease is not None:
            cluster.subscribe(lease, self.lease_gained)

    # -- what subclasses give ---------------------------------------------------------

    @abstractmethod
    def run_once(self) -> None:
        """One pass."""

    def follow(self) -> None:  # noqa: B027 - doing nothing is the usual case
        """One pass while another server holds the lease (default: nothing)."""

    def lease_gained(self) -> None:
        """This server newly holds the lease (taken over from a dead one, say)."""
        self.wake()

    # -- running ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stopped(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the loop is stopped first; whether it is."""
        return self._stop.wait(seconds)

    def holds_lease(self) -> bool:
        return self.lease is None or self.cluster is None or self.cluster.holds(self.lease)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass soon."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        if not self.first_pass_now:
            self._pause()
        while not self._stop.is_set():
            try:
                if self.holds_lease():
                    self.run_once()
                else:
                    self.follow()
            except Exception:  # noqa: BLE001 - a background loop must survive anything
                if self._stop.is_set():
                    return  # cut short by the server stopping
                log.exception("%s pass failed", self.name)
            self._pause()

    def _pause(self) -> None:
        self._wake.wait(self.interval)
        self._wake.clear()
        if self.min_gap:
            self._stop.wait(self.min_gap)
