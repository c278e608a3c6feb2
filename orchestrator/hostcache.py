"""The scheduler's view of the hosts, kept in memory between requests.

Placement must not read every host from the registry per request: with
thousands of hosts that read would cost more than the decision. This cache is
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

from sqlalchemy import func, select

from .registry import HostRow, Registry, VmRow
from .scheduler import HostState

_COLUMNS = (
    HostRow.id,
    HostRow.label,
    HostRow.status,
    HostRow.enabled,
    HostRow.in_inventory,
    HostRow.arch,
    HostRow.network,
    HostRow.reason,
    HostRow.cpu_total,
    HostRow.ram_total,
    HostRow.disk_total,
    HostRow.cpu_used,
    HostRow.ram_used,
    HostRow.disk_used,
)


def _state(row: tuple, vms: int) -> HostState:
    (hid, label, status, enabled, _listed, arch, _net, reason, ct, rt, dt, cu, ru, du) = row
    return HostState(
        id=hid,
        name=label,
        up=status == "up",
        enabled=enabled,
        arch=arch,
        cpu_total=ct,
        ram_total=rt,
        disk_total=dt,
        cpu_used=cu,
        ram_used=ru,
        disk_used=du,
        vms=vms,
        down_reason=reason,
    )


class HostCache:
    def __init__(self, registry: Registry, max_age: float = 2.0) -> None:
        self.registry = registry
        self.max_age = max_age
        self._lock = threading.Lock()
        self._states: dict[int, HostState] = {}
        self._network: dict[int, str] = {}
        self._loaded_at = -1e9
        self.refreshes = 0  # whole reloads, for tests and benchmarks

    def states(self) -> list[HostState]:
        """Every host in the inventory, at most ``max_age`` seconds old."""
        everything, changed = self.registry.host_changes.take()
        with self._lock:
            if everything or time.monotonic() - self._loaded_at > self.max_age:
                self._load()
                changed = set()
        for host_id in changed:
            self.refresh_host(host_id)
        with self._lock:
            return list(self._states.values())

    def network(self, host_id: int) -> str | None:
        with self._lock:
            return self._network.get(host_id)

    def invalidate(self) -> None:
        self.registry.host_changes.mark_all()

    def _load(self) -> None:
        with self.registry.read() as s:
            counts = dict(
                s.execute(
                    select(VmRow.host_id, func.count())
                    .where(VmRow.host_id.is_not(None))
                    .group_by(VmRow.host_id)
                ).all()
            )
            rows = s.execute(
                select(*_COLUMNS).where(HostRow.in_inventory.is_(True)).order_by(HostRow.id)
            ).all()
        self._states = {r[0]: _state(tuple(r), counts.get(r[0], 0)) for r in rows}
        self._network = {r[0]: r[6] for r in rows}
        self._loaded_at = time.monotonic()
        self.refreshes += 1

    def refresh_host(self, host_id: int) -> None:
        """Read one host again (e.g. a claim on it was just lost to another server)."""
        with self.registry.read() as s:
            row = s.execute(select(*_COLUMNS).where(HostRow.id == host_id)).first()
            vms = s.scalar(select(func.count()).where(VmRow.host_id == host_id)) or 0
        with self._lock:
            if row is None or not row[4]:
                self._states.pop(host_id, None)
            else:
                self._states[host_id] = _state(tuple(row), int(vms))
                self._network[host_id] = row[6]

    def claimed(self, host_id: int, cpu: int, ram: int, disk: int) -> None:
        """This server just claimed that much on the host: count it at once."""
        with self._lock:
            st = self._states.get(host_id)
            if st is not None:
                self._states[host_id] = replace(
                    st,
                    cpu_used=st.cpu_used + cpu,
                    ram_used=st.ram_used + ram,
                    disk_used=st.disk_used + disk,
                    vms=st.vms + 1,
                )
