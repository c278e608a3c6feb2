"""Physical machines (table ``hosts``): reads, what discovery found, and the
rows the scheduler's in-memory view is built from.

A host's status (``HostStatus``) is changed here and nowhere else.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Row, func, select, update

from ..clock import utcnow
from ..errors import NotFound
from ..model import HOST_TRANSITIONS, HostStatus, check_transition
from .database import Database
from .tables import HostRow, VmRow

# What placement reads of a host (hostcache.py), by name.
PLACEMENT_COLUMNS = (
    HostRow.id,
    HostRow.label,
    HostRow.status,
    HostRow.enabled,
    HostRow.in_inventory,
    HostRow.arch,
    HostRow.network,
    HostRow.reason,
    HostRow.maintenance,
    HostRow.cpu_total,
    HostRow.ram_total,
    HostRow.disk_total,
    HostRow.cpu_used,
    HostRow.ram_used,
    HostRow.disk_used,
)


class HostChanges:
    """Hosts whose row this process changed (capacity freed, status, enabled), so an
    in-memory view of them (hostcache.py) reads them again. Other servers' changes
    reach that view when it expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._all = True

    def mark(self, host_id: int) -> None:
        with self._lock:
            self._ids.add(host_id)

    def mark_all(self) -> None:
        with self._lock:
            self._all = True

    def take(self) -> tuple[bool, set[int]]:
        with self._lock:
            out = (self._all, self._ids)
            self._all, self._ids = False, set()
            return out


class HostStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.changes = HostChanges()

    def list(self, include_retired: bool = False) -> list[HostRow]:
        """The hosts the pm file lists (``include_retired``: and those it no longer does)."""
        with self.db.read() as s:
            q = select(HostRow).order_by(HostRow.id)
            if not include_retired:
                q = q.where(HostRow.in_inventory.is_(True))
            return list(s.scalars(q))

    def get(self, host_id: int) -> HostRow:
        """A host the pm file lists, or NotFound."""
        row = self._get(host_id)
        if not row.in_inventory:
            raise NotFound(f"pmid {host_id} does not exist")
        return row

    def get_any(self, host_id: int) -> HostRow:
        """A host even if it left the pm file (its VMs still need it)."""
        return self._get(host_id)

    def _get(self, host_id: int) -> HostRow:
        with self.db.read() as s:
            row = s.get(HostRow, host_id)
        if row is None:
            raise NotFound(f"pmid {host_id} does not exist")
        return row

    def record_discovery(
        self,
        host_id: int,
        *,
        up: bool,
        reason: str | None,
        phys: tuple[int, int, int] | None = None,
        totals: tuple[int, int, int] | None = None,
        arch: str | None = None,
        network: str | None = None,
        networks: list[dict] | None = None,
    ) -> None:
        """What discovery found: up with its capacity (the network its VMs get, the
        libvirt networks it has), or down with the reason."""
        self.changes.mark(host_id)
        status = HostStatus.UP if up else HostStatus.DOWN
        with self.db.tx() as s:
            row = s.get(HostRow, host_id)
            if row is None:
                return
            check_transition(HOST_TRANSITIONS, [HostStatus(row.status)], status, "host")
            row.status = status
            row.reason = reason
            if up:
                row.last_seen = utcnow()
            if phys is not None:
                row.phys_cpu, row.phys_ram, row.phys_disk = phys
            if totals is not None:
                row.cpu_total, row.ram_total, row.disk_total = totals
            if arch and not row.arch:
                row.arch = arch
            if network is not None:
                row.network = network
            if networks is not None:
                row.networks = networks

    def set_enabled(self, host_id: int, enabled: bool) -> None:
        self.changes.mark(host_id)
        with self.db.tx() as s:
            s.execute(update(HostRow).where(HostRow.id == host_id).values(enabled=enabled))

    # -- for the scheduler's view ------------------------------------------------

    def placement_rows(self) -> tuple[list[Row[Any]], dict[int, int]]:
        """Every listed host's placement columns (named), and VMs per host id."""
        with self.db.read() as s:
            counts = {
                host_id: n
                for host_id, n in s.execute(
                    select(VmRow.host_id, func.count())
                    .where(VmRow.host_id.is_not(None))
                    .group_by(VmRow.host_id)
                )
            }
            rows = s.execute(
                select(*PLACEMENT_COLUMNS)
                .where(HostRow.in_inventory.is_(True))
                .order_by(HostRow.id)
            ).all()
        return list(rows), counts

    def placement_row(self, host_id: int) -> tuple[Row[Any] | None, int]:
        """One host's placement columns (None if unknown) and its number of VMs."""
        with self.db.read() as s:
            row = s.execute(select(*PLACEMENT_COLUMNS).where(HostRow.id == host_id)).first()
            vms = s.scalar(select(func.count()).where(VmRow.host_id == host_id)) or 0
        return row, int(vms)
