"""Capacity on hosts (table ``claims``, and ``hosts.*_used``): taken by VMs and
volumes, given back when they go.

A claim is one conditional ``UPDATE ... WHERE used + need <= total`` checked by
its row count, so two claims can never overcommit a host, whichever process
makes them. ``hosts.*_used`` is always the sum of the host's claims. These
functions run inside the caller's transaction (the VM or volume store's), so a
claim and the row it is for are written together.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..model import HostStatus
from .database import Database
from .hosts import HostChanges
from .tables import ClaimRow, HostRow


class Claims:
    def __init__(self, db: Database, changes: HostChanges) -> None:
        self.db = db
        self.changes = changes

    def take(
        self,
        s: Session,
        host_id: int,
        *,
        cpu: int = 0,
        ram: int = 0,
        disk: int = 0,
        listed_only: bool = True,
    ) -> bool:
        """Take capacity on an up, enabled host in service (not in maintenance) if it
        fits; False if it does not.
        ``listed_only``: and only on a host the pm file still lists. (This server's
        own view of the host counts the claim itself: see hostcache.py.)"""
        q = update(HostRow).where(
            HostRow.id == host_id,
            HostRow.status == HostStatus.UP,
            HostRow.enabled.is_(True),
            HostRow.maintenance.is_(None),
            HostRow.cpu_used + cpu <= HostRow.cpu_total,
            HostRow.ram_used + ram <= HostRow.ram_total,
            HostRow.disk_used + disk <= HostRow.disk_total,
        )
        if listed_only:
            q = q.where(HostRow.in_inventory.is_(True))
        res = s.execute(
            q.values(
                cpu_used=HostRow.cpu_used + cpu,
                ram_used=HostRow.ram_used + ram,
                disk_used=HostRow.disk_used + disk,
            ).execution_options(synchronize_session=False)
        )
        return res.rowcount == 1

    def record(
        self,
        s: Session,
        host_id: int,
        *,
        vm_id: int | None = None,
        volume_id: int | None = None,
        cpu: int = 0,
        ram: int = 0,
        disk: int = 0,
    ) -> None:
        """The claim row for capacity just taken (with ``take``) for a VM or volume."""
        s.add(
            ClaimRow(host_id=host_id, vm_id=vm_id, volume_id=volume_id, cpu=cpu, ram=ram, disk=disk)
        )

    def resize(self, s: Session, vm_id: int, *, cpu: int, ram: int, disk: int) -> list[str]:
        """Make the VM's claim ``cpu``/``ram``/``disk`` (a resize), taking only what it
        grows by, on its host as it is (up or not: the VM is there already). Returns
        what does not fit (nothing written then), or [] when done."""
        claim = s.scalar(select(ClaimRow).where(ClaimRow.vm_id == vm_id))
        if claim is None:
            return [f"vmid {vm_id} holds no claim"]
        d_cpu, d_ram, d_disk = cpu - claim.cpu, ram - claim.ram, disk - claim.disk
        q = update(HostRow).where(HostRow.id == claim.host_id)
        for col, total, delta in (
            (HostRow.cpu_used, HostRow.cpu_total, d_cpu),
            (HostRow.ram_used, HostRow.ram_total, d_ram),
            (HostRow.disk_used, HostRow.disk_total, d_disk),
        ):
            if delta > 0:
                q = q.where(col + delta <= total)
        res = s.execute(
            q.values(
                cpu_used=HostRow.cpu_used + d_cpu,
                ram_used=HostRow.ram_used + d_ram,
                disk_used=HostRow.disk_used + d_disk,
            ).execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            host = s.get(HostRow, claim.host_id)
            if host is None:
                return [f"pmid {claim.host_id} is gone"]
            short = []
            for what, unit, used, total, delta in (
                ("vCPUs", "", host.cpu_used, host.cpu_total, d_cpu),
                ("RAM", " MB", host.ram_used, host.ram_total, d_ram),
                ("disk", " GB", host.disk_used, host.disk_total, d_disk),
            ):
                if delta > 0 and used + delta > total:
                    short.append(
                        f"{what}: needs {delta}{unit} more, {max(0, total - used)}{unit} free"
                    )
            return short or [f"pmid {claim.host_id} changed meanwhile; try again"]
        self.changes.mark(claim.host_id)
        claim.cpu, claim.ram, claim.disk = cpu, ram, disk
        return []

    def release(
        self,
        s: Session,
        *,
        vm_id: int | None = None,
        volume_id: int | None = None,
        migration_id: int | None = None,
    ) -> None:
        """Give back what a VM, a volume or a move (on its target) holds (nothing if
        it holds nothing)."""
        if vm_id is not None:
            where = ClaimRow.vm_id == vm_id
        elif volume_id is not None:
            where = ClaimRow.volume_id == volume_id
        else:
            where = ClaimRow.migration_id == migration_id
        claim = s.scalar(select(ClaimRow).where(where))
        if claim is None:
            return
        self.changes.mark(claim.host_id)
        s.execute(
            update(HostRow)
            .where(HostRow.id == claim.host_id)
            .values(
                cpu_used=HostRow.cpu_used - claim.cpu,
                ram_used=HostRow.ram_used - claim.ram,
                disk_used=HostRow.disk_used - claim.disk,
            )
            .execution_options(synchronize_session=False)
        )
        s.execute(delete(ClaimRow).where(ClaimRow.id == claim.id))

    def consistent(self) -> list[str]:
        """Hosts whose ``*_used`` disagree with the sum of their claims (should be none)."""
        problems = []
        with self.db.read() as s:
            sums = {
                host_id: (c, r, d)
                for host_id, c, r, d in s.execute(
                    select(
                        ClaimRow.host_id,
                        func.sum(ClaimRow.cpu),
                        func.sum(ClaimRow.ram),
                        func.sum(ClaimRow.disk),
                    ).group_by(ClaimRow.host_id)
                )
            }
            for h in s.scalars(select(HostRow)):
                want = sums.get(h.id, (0, 0, 0))
                have = (h.cpu_used, h.ram_used, h.disk_used)
                if tuple(int(x or 0) for x in want) != have:
                    problems.append(f"pmid {h.id}: used {have} but claims sum to {want}")
        return problems
