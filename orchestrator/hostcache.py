"""The scheduler's view of the hosts, kept in memory between requests.

Placement must not read every host from the registry per request: with
thousands of hosts that read would cost more than the decision. Nor build
anything per host: the view is kept as columns (scheduler/columns.py), and a
claim updates its host's row in place. This cache is
refreshed whole when it is older than ``cluster.host_cache`` seconds, one host
at a time when a claim on it is lost, and moved forward by this server's own
claims. It may be wrong for a moment (another server claimed or released
capacity); that is safe, because the registry's conditional UPDATE decides
every claim: a stale view costs at most a lost claim and a retry on the next
candidate, never an overcommitted host.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from .model import HostStatus
from .registry.hosts import HostStore
from .scheduler import HostColumns, HostState
from .scheduler.columns import same_labels


def _state(row: Any, vms: int) -> HostState:
    return HostState(
        id=row.id,
        name=row.label,
        up=row.status == HostStatus.UP,
        enabled=row.enabled,
        arch=row.arch,
        cpu_total=row.cpu_total,
        ram_total=row.ram_total,
        disk_total=row.disk_total,
        cpu_used=row.cpu_used,
        ram_used=row.ram_used,
        disk_used=row.disk_used,
        vms=vms,
        down_reason=row.reason,
        maintenance=row.maintenance,
    )


class HostCache:
    """The hosts as placement sees them: a HostColumns (rows by pmid) that this
    server's claims update in place, so a decision reads columns and builds
    nothing. A host whose labels change (down, maintenance, arch), or that comes
    or goes, makes new columns; the old ones stay whole for whoever holds them."""

    def __init__(self, hosts: HostStore, max_age: float = 2.0) -> None:
        self.hosts = hosts
        self.max_age = max_age
        self._lock = threading.Lock()
        self._states: dict[int, HostState] = {}
        self._columns = HostColumns([])
        self._row: dict[int, int] = {}  # pmid -> its row in the columns
        self._network: dict[int, str] = {}
        self._loaded_at = -1e9
        self.refreshes = 0  # whole reloads, for tests and benchmarks

    def states(self) -> HostColumns:
        """Every host in the inventory (by pmid), at most ``max_age`` seconds old."""
        everything, changed = self.hosts.changes.take()
        with self._lock:
            if everything or time.monotonic() - self._loaded_at > self.max_age:
                self._load()
                changed = set()
        for host_id in changed:
            self.refresh_host(host_id)
        with self._lock:
            return self._columns

    def network(self, host_id: int) -> str | None:
        with self._lock:
            return self._network.get(host_id)

    def invalidate(self) -> None:
        self.hosts.changes.mark_all()

    def _load(self) -> None:
        rows, counts = self.hosts.placement_rows()
        self._states = {r.id: _state(r, counts.get(r.id, 0)) for r in rows}
        self._network = {r.id: r.network for r in rows}
        self._build()
        self._loaded_at = time.monotonic()
        self.refreshes += 1

    def _build(self) -> None:
        ordered = sorted(self._states.values(), key=lambda h: h.id)
        self._columns = HostColumns(ordered)
        self._row = {h.id: i for i, h in enumerate(ordered)}

    def _put(self, st: HostState) -> None:
        """Host ``st`` as it is now: its row in place when only numbers changed."""
        old = self._states.get(st.id)
        self._states[st.id] = st
        if old is not None and same_labels(old, st):
            self._columns[self._row[st.id]] = st
        else:
            self._build()

    def refresh_host(self, host_id: int) -> None:
        """Read one host again (e.g. a claim on it was just lost to another server)."""
        row, vms = self.hosts.placement_row(host_id)
        with self._lock:
            if row is None or not row.in_inventory:
                if self._states.pop(host_id, None) is not None:
                    self._build()
            else:
                self._put(_state(row, vms))
                self._network[host_id] = row.network

    def claimed(self, host_id: int, cpu: int, ram: int, disk: int) -> None:
        """This server just claimed that much on the host: count it at once."""
        with self._lock:
            st = self._states.get(host_id)
            if st is not None:
                self._put(
                    replace(
                        st,
                        cpu_used=st.cpu_used + cpu,
                        ram_used=st.ram_used + ram,
                        disk_used=st.disk_used + disk,
                        vms=st.vms + 1,
                    )
                )
