"""Hosts in maintenance, VMs moved between hosts (table ``migrations``) and drains of
hosts (table ``drains``).

A move is recorded, with capacity claimed on its target (a claim row carrying the
``migration_id``), in one transaction before its domain is touched. When it is done,
one transaction points the VM (and its host-local volumes) at the target, gives back
the source's claims and turns the target's claim into the VM's own; when it fails,
one transaction gives the target's claim back. So ``hosts.*_used`` always is the sum
of the claims, and a server killed mid-move leaves a ``migrating`` row that
reconciliation finishes one way or the other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from ..clock import utcnow
from ..errors import Conflict, NotFound
from ..model import (
    DRAIN_ACTIVE,
    DRAIN_TRANSITIONS,
    MIGRATION_TRANSITIONS,
    DrainState,
    MigrationPhase,
    check_transition,
)
from .claims import Claims
from .cluster import ClusterStore
from .database import Database
from .hosts import HostChanges
from .tables import ClaimRow, DrainRow, EventRow, HostRow, MigrationRow, VmRow, VolumeRow


class MoveStore:
    def __init__(
        self, db: Database, cluster: ClusterStore, claims: Claims, changes: HostChanges
    ) -> None:
        self.db = db
        self.cluster = cluster
        self.claims = claims
        self.changes = changes

    # -- maintenance ---------------------------------------------------------------

    def set_maintenance(self, host_id: int, reason: str | None) -> bool:
        """Put a host into maintenance with ``reason`` (None: take it out). False when
        it already was in that state (the reason is updated all the same)."""
        self.changes.mark(host_id)
        with self.db.tx() as s:
            row = s.get(HostRow, host_id)
            if row is None or not row.in_inventory:
                raise NotFound(f"pmid {host_id} does not exist")
            changed = (row.maintenance is None) != (reason is None)
            row.maintenance = reason
            row.maintenance_at = utcnow() if reason is not None else None
            kind = "host.maintenance" if reason is not None else "host.in_service"
            s.add(EventRow(kind=kind, host_id=host_id, detail={"reason": reason}))
            return changed

    # -- migrations ----------------------------------------------------------------

    def begin(
        self,
        vm_id: int,
        source_id: int,
        target_id: int,
        *,
        cpu: int,
        ram: int,
        disk: int,
        drain_id: int | None = None,
        requested_by: str | None = None,
    ) -> MigrationRow | None:
        """Record a move and claim its capacity on the target (an up host in service);
        None, with nothing written, when it no longer fits there."""
        self.changes.mark(target_id)
        with self.db.tx() as s:
            if not self.claims.take(s, target_id, cpu=cpu, ram=ram, disk=disk):
                return None
            mig = MigrationRow(
                vm_id=vm_id,
                source_id=source_id,
                target_id=target_id,
                phase=MigrationPhase.MIGRATING,
                drain_id=drain_id,
                server=self.cluster.server_id,
                requested_by=requested_by,
            )
            s.add(mig)
            s.flush()
            s.add(ClaimRow(host_id=target_id, migration_id=mig.id, cpu=cpu, ram=ram, disk=disk))
            s.add(
                EventRow(
                    kind="vm.migrating",
                    vm_id=vm_id,
                    host_id=source_id,
                    detail={"target": target_id, "migration": mig.id},
                )
            )
            return mig

    def finish(self, migration_id: int, *, detail: dict[str, Any] | None = None) -> bool:
        """The VM runs on the target now: it (and its host-local volumes) point there,
        the source's claims are given back and the target's claim becomes the VM's
        (and its volumes'). False if the move was already finished either way."""
        with self.db.tx() as s:
            mig = s.get(MigrationRow, migration_id)
            if mig is None or not self._close(s, mig, MigrationPhase.DONE, None):
                return False
            held = s.scalar(select(ClaimRow).where(ClaimRow.migration_id == mig.id))
            vm = s.get(VmRow, mig.vm_id)
            if vm is None:  # destroyed meanwhile: nothing to point anywhere
                if held is not None:
                    self.claims.release(s, migration_id=mig.id)
                return True
            vm_claim = s.scalar(select(ClaimRow).where(ClaimRow.vm_id == vm.id))
            local = list(
                s.scalars(
                    select(VolumeRow).where(
                        VolumeRow.vm_id == vm.id,
                        VolumeRow.backend == "dir",
                        VolumeRow.host_id == mig.source_id,
                    )
                )
            )
            self.claims.release(s, vm_id=vm.id)
            for vol in local:
                self.claims.release(s, volume_id=vol.id)
                vol.host_id = mig.target_id
            if held is not None:
                # The target's capacity was taken at ``begin``: the held row becomes
                # the VM's claim and its volumes' (same sums, so *_used is unchanged).
                s.delete(held)
                s.flush()
                want_cpu = vm_claim.cpu if vm_claim else vm.cpu
                want_ram = vm_claim.ram if vm_claim else vm.ram
                vm_disk = vm_claim.disk if vm_claim else vm.disk
                spare = held.disk - vm_disk
                s.add(
                    ClaimRow(
                        host_id=mig.target_id,
                        vm_id=vm.id,
                        cpu=want_cpu,
                        ram=want_ram,
                        disk=vm_disk,
                    )
                )
                for vol in local:
                    size = min(vol.size, max(spare, 0))
                    spare -= size
                    s.add(ClaimRow(host_id=mig.target_id, volume_id=vol.id, disk=size))
                if spare > 0 or held.cpu != want_cpu or held.ram != want_ram:
                    # Whatever the held claim had beyond the VM's own goes back.
                    s.execute(
                        update(HostRow)
                        .where(HostRow.id == mig.target_id)
                        .values(
                            cpu_used=HostRow.cpu_used - (held.cpu - want_cpu),
                            ram_used=HostRow.ram_used - (held.ram - want_ram),
                            disk_used=HostRow.disk_used - max(spare, 0),
                        )
                        .execution_options(synchronize_session=False)
                    )
            vm.host_id = mig.target_id
            vm.owner = None
            vm.updated_at = utcnow()
            self.changes.mark(mig.source_id)
            self.changes.mark(mig.target_id)
            s.add(
                EventRow(
                    kind="vm.migrated",
                    vm_id=vm.id,
                    host_id=mig.target_id,
                    detail={"source": mig.source_id, "migration": mig.id, **(detail or {})},
                )
            )
            return True

    def fail(self, migration_id: int, error: str) -> bool:
        """The VM stayed on the source: the target's claim goes back, the VM is let go.
        False if the move was already finished either way."""
        with self.db.tx() as s:
            mig = s.get(MigrationRow, migration_id)
            if mig is None or not self._close(s, mig, MigrationPhase.FAILED, error):
                return False
            self.claims.release(s, migration_id=mig.id)
            s.execute(
                update(VmRow)
                .where(VmRow.id == mig.vm_id, VmRow.host_id == mig.source_id)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
            s.add(
                EventRow(
                    kind="vm.migrate_failed",
                    vm_id=mig.vm_id,
                    host_id=mig.source_id,
                    detail={"target": mig.target_id, "migration": mig.id, "error": error},
                )
            )
            return True

    def _close(self, s: Any, mig: MigrationRow, to: MigrationPhase, error: str | None) -> bool:
        if mig.phase != MigrationPhase.MIGRATING:
            return False
        check_transition(MIGRATION_TRANSITIONS, [MigrationPhase(mig.phase)], to, "migration")
        res = s.execute(
            update(MigrationRow)
            .where(MigrationRow.id == mig.id, MigrationRow.phase == MigrationPhase.MIGRATING)
            .values(phase=to, error=error, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return res.rowcount == 1

    def get(self, migration_id: int) -> MigrationRow:
        with self.db.read() as s:
            row = s.get(MigrationRow, migration_id)
        if row is None:
            raise NotFound(f"migration {migration_id} does not exist")
        return row

    def in_flight(self, vm_id: int | None = None) -> list[MigrationRow]:
        """Moves not finished yet (of one VM)."""
        with self.db.read() as s:
            q = select(MigrationRow).where(MigrationRow.phase == MigrationPhase.MIGRATING)
            if vm_id is not None:
                q = q.where(MigrationRow.vm_id == vm_id)
            return list(s.scalars(q.order_by(MigrationRow.id)))

    def orphaned(self) -> list[MigrationRow]:
        """Moves left ``migrating`` by a server that is no longer alive (killed
        mid-move, or this one before a restart)."""
        with self.db.read() as s:
            q = (
                select(MigrationRow)
                .where(
                    MigrationRow.phase == MigrationPhase.MIGRATING,
                    self.cluster.free(MigrationRow.server),
                )
                .order_by(MigrationRow.id)
            )
            return list(s.scalars(q))

    def of_drain(self, drain_id: int) -> list[MigrationRow]:
        with self.db.read() as s:
            q = select(MigrationRow).where(MigrationRow.drain_id == drain_id)
            return list(s.scalars(q.order_by(MigrationRow.id)))

    # -- drains --------------------------------------------------------------------

    def start_drain(self, host_id: int, total: int, requested_by: str | None) -> DrainRow:
        """A new drain of the host, or Conflict if one is under way there."""
        with self.db.tx() as s:
            busy = s.scalar(
                select(DrainRow).where(
                    DrainRow.host_id == host_id,
                    DrainRow.state.in_(list(DRAIN_ACTIVE)),
                    DrainRow.server.in_(self.cluster.live_servers()),
                )
            )
            if busy is not None:
                raise Conflict(f"pmid {host_id} is being drained already (drain {busy.id})")
            # A drain whose server died is over: this one goes on from where it stopped.
            s.execute(
                update(DrainRow)
                .where(DrainRow.host_id == host_id, DrainRow.state.in_(list(DRAIN_ACTIVE)))
                .values(state=DrainState.INTERRUPTED, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            row = DrainRow(
                host_id=host_id,
                state=DrainState.RUNNING,
                total=total,
                moved=0,
                failed=[],
                server=self.cluster.server_id,
                requested_by=requested_by,
            )
            s.add(row)
            s.flush()
            s.add(
                EventRow(kind="host.drain", host_id=host_id, detail={"drain": row.id, "vms": total})
            )
            return row

    def drain(self, drain_id: int) -> DrainRow:
        with self.db.read() as s:
            row = s.get(DrainRow, drain_id)
        if row is None:
            raise NotFound(f"drain {drain_id} does not exist")
        return row

    def latest_drain(self, host_id: int) -> DrainRow | None:
        with self.db.read() as s:
            return s.scalar(
                select(DrainRow)
                .where(DrainRow.host_id == host_id)
                .order_by(DrainRow.id.desc())
                .limit(1)
            )

    def drain_progress(
        self, drain_id: int, *, moved: bool = False, failure: dict | None = None
    ) -> None:
        with self.db.tx() as s:
            row = s.get(DrainRow, drain_id)
            if row is None:
                return
            if moved:
                row.moved = row.moved + 1
            if failure is not None:
                row.failed = [*(row.failed or []), failure]

    def cancel_drain(self, host_id: int) -> DrainRow:
        """Ask the host's running drain to stop (Conflict if none runs)."""
        with self.db.tx() as s:
            row = s.scalar(
                select(DrainRow)
                .where(DrainRow.host_id == host_id, DrainRow.state == DrainState.RUNNING)
                .order_by(DrainRow.id.desc())
                .limit(1)
            )
            if row is None:
                raise Conflict(f"pmid {host_id} is not being drained")
            check_transition(
                DRAIN_TRANSITIONS, [DrainState(row.state)], DrainState.CANCELLING, "drain"
            )
            row.state = DrainState.CANCELLING
            s.add(EventRow(kind="host.drain_cancel", host_id=host_id, detail={"drain": row.id}))
            return row

    def end_drain(self, drain_id: int) -> DrainRow:
        """Running: done; cancelling: cancelled."""
        with self.db.tx() as s:
            row = s.get(DrainRow, drain_id)
            if row is None:
                raise NotFound(f"drain {drain_id} does not exist")
            state = DrainState(row.state)
            if state in DRAIN_ACTIVE:
                to = DrainState.DONE if state == DrainState.RUNNING else DrainState.CANCELLED
                check_transition(DRAIN_TRANSITIONS, [state], to, "drain")
                row.state = to
                row.finished_at = utcnow()
                s.add(
                    EventRow(
                        kind=f"host.drain_{to}",
                        host_id=row.host_id,
                        detail={"drain": row.id, "moved": row.moved, "failed": row.failed},
                    )
                )
            return row

    def interrupt_dead_drains(self) -> list[DrainRow]:
        """Drains whose server died, now ``interrupted``: those this call marked (so
        of two servers looking at once, one takes each)."""
        with self.db.read() as r:  # one cheap read every heartbeat; a write only if any
            rows = list(
                r.scalars(
                    select(DrainRow).where(
                        DrainRow.state.in_(list(DRAIN_ACTIVE)),
                        self.cluster.free(DrainRow.server),
                    )
                )
            )
        taken = []
        for row in rows:
            with self.db.tx() as s:
                res = s.execute(
                    update(DrainRow)
                    .where(DrainRow.id == row.id, DrainRow.state.in_(list(DRAIN_ACTIVE)))
                    .values(state=DrainState.INTERRUPTED, finished_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    was = row.state
                    s.add(
                        EventRow(
                            kind="host.drain_interrupted",
                            host_id=row.host_id,
                            detail={"drain": row.id, "moved": row.moved, "state": was},
                        )
                    )
                    taken.append(row)
        return taken
