"""Several fabric servers on one registry: heartbeats and leases.

Every server records itself in ``servers`` and renews its heartbeat every
``cluster.heartbeat`` seconds. Each piece of background work (the pool worker,
schedules, discovery and the orphan sweep) runs only on the server holding its
lease; a lease lasts ``cluster.dead_after`` seconds and its holder renews it with
every heartbeat, so when a server dies its leases expire and a survivor takes them
on its next heartbeat.

A lease is how work is shared out, not what keeps it correct: every change the
work makes is still a conditional UPDATE in the registry, and a VM being worked
on carries its server's id (``vms.owner``), so two servers never work on one VM
even in the moment a lease changes hands.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from .clock import iso
from .config import ClusterConfig
from .model import Lease
from .periodic import PeriodicWorker
from .registry.cluster import ClusterStore

log = logging.getLogger(__name__)


class Cluster(PeriodicWorker):
    """This server's membership: its heartbeat, and the leases it holds."""

    name = "cluster"

    def __init__(
        self, store: ClusterStore, config: ClusterConfig, leases: tuple[Lease, ...] = tuple(Lease)
    ) -> None:
        super().__init__(config.heartbeat, first_pass_now=False)
        self.store = store
        self.config = config
        store.dead_after = config.dead_after
        self.wanted = leases
        self._held: dict[str, float] = {}  # lease -> monotonic time it surely lasts until
        self._joined = False  # until it joins, this process is alone and runs everything
        self._lock = threading.Lock()
        # Called when this server newly takes a lease (see PeriodicWorker).
        self._on_gain: dict[str, list[Callable[[], None]]] = {}

    @property
    def server_id(self) -> str:
        return self.store.server_id

    def subscribe(self, lease: Lease, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever this server newly takes ``lease``."""
        self._on_gain.setdefault(lease, []).append(callback)

    def join(self) -> None:
        """Record this server and take whatever leases are free (before start-up work).

        A server on this machine (same boot, same pid namespace) whose process is
        gone (killed, then restarted as us) is dead for certain: its leases and
        work are freed now rather than when its heartbeat goes stale.
        """
        me = machine()
        gone = [
            srv["id"]
            for srv in self.store.snapshot()["servers"]
            if srv["host"] == me and srv["id"] != self.server_id and not _pid_alive(srv["pid"])
        ]
        if gone:
            log.info("servers %s on this machine are gone; taking over their work", gone)
            self.store.bury(gone)
        self.store.register(me, os.getpid())
        self._joined = True
        self.beat()

    def stop(self, timeout: float = 5.0) -> None:
        """Leave cleanly: the leases are released now, not when they expire."""
        super().stop(timeout)
        with self._lock:
            self._held.clear()
        try:
            self.store.leave()
        except Exception:  # noqa: BLE001 - stopping must not fail; the leases expire anyway
            log.exception("could not leave the cluster cleanly")

    def holds(self, name: str) -> bool:
        """Whether this server may run the work ``name`` guards now: it holds the
        lease, or it never joined a cluster (a process alone on its registry, as the
        tests' in-process fabric)."""
        if not self._joined:
            return True
        with self._lock:
            return time.monotonic() < self._held.get(name, 0.0)

    def held(self) -> list[str]:
        return [n for n in self.wanted if self.holds(n)]

    def run_once(self) -> None:
        self.beat()

    def beat(self) -> None:
        """One heartbeat: say we are alive, renew what we hold, take what is free."""
        started = time.monotonic()
        self.store.heartbeat()
        # Counted from before the renewal and less one heartbeat: by the time our
        # lease could expire in the database, we have stopped believing we hold it.
        good_until = started + self.config.dead_after - self.config.heartbeat
        for name in self.wanted:
            had = self.holds(name)
            got = self.store.acquire(name, self.config.dead_after)
            with self._lock:
                if got:
                    self._held[name] = good_until
                else:
                    self._held.pop(name, None)
            if got == "taken":  # newly ours (a renewal after a slow beat is not)
                log.info("server %s now runs %s", self.server_id, name)
                for callback in self._on_gain.get(name, []):
                    callback()
            elif had and not got:
                log.warning("server %s lost the %s lease", self.server_id, name)

    def as_dict(self) -> dict:
        """Servers and leases as JSON-ready data, from this server's point of view."""
        info = self.store.snapshot()
        return {
            "server": self.server_id,
            "servers": [
                {
                    **srv,
                    "started_at": iso(srv["started_at"]),
                    "heartbeat_at": iso(srv["heartbeat_at"]),
                }
                for srv in info["servers"]
            ],
            "leases": [{**ls, "expires_at": iso(ls["expires_at"])} for ls in info["leases"]],
            "heartbeat": self.config.heartbeat,
            "dead_after": self.config.dead_after,
        }


def machine() -> str:
    """This process's machine as ``hostname/key``: the key tells apart machines (or
    containers) that share a hostname, since a pid means something only within one
    boot and one pid namespace."""
    import hashlib

    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            if "boot" in path:
                with open(path) as fh:
                    parts.append(fh.read().strip())
            else:
                parts.append(os.readlink(path))
        except OSError:
            parts.append(str(os.getpid()))  # unknown: never taken for the same machine
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]
    return f"{parts[0]}/{key}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
