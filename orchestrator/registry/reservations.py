"""Reservations of pool VMs (columns ``vms.reservation_hash``, ``reserved_at``,
``expires_at``): check-out, check-in, extension, expiry, and pool levels.

These are the VM transitions ready -> in-use -> cleaning (see ``VM_TRANSITIONS``);
each is one transaction, and check-out is all or nothing.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..clock import as_utc, utcnow
from ..errors import Conflict, Forbidden, NotFound
from ..model import VM_TRANSITIONS, HostStatus, VmState, check_transition
from .database import Database
from .quotas import Quota, QuotaStore, Usage
from .tables import EventRow, HostRow, VmRow

# A VM whose reservation ended (checked in or expired): to be cleaned, held by no one.
# Its ``owner`` stays: a checked-out VM is worked on only while it moves to another
# host (moves.py), and its cleaning waits until the move is over.
_RETURNED = {
    "state": VmState.CLEANING,
    "held_by": None,
    "borrower_keys": 0,
    "reservation_hash": None,
    "reserved_at": None,
    "expires_at": None,
    "request_id": None,  # an on-demand request's VM is no longer its own
}


class _LostRace(Exception):
    """A row changed between reading and updating it: the transaction is undone."""


# -- handing ready VMs out (a check-out, and an on-demand request's set-aside) ---------


def ready_ids(s: Session, pool: str, count: int) -> list[int]:
    """Up to ``count`` ready VMs of ``pool`` on hosts that are up, the longest ready
    first, locked for this transaction (``FOR UPDATE SKIP LOCKED`` lets concurrent
    transactions on PostgreSQL take different rows; SQLite's holds the write lock)."""
    up_hosts = select(HostRow.id).where(HostRow.status == HostStatus.UP, HostRow.enabled.is_(True))
    return list(
        s.scalars(
            select(VmRow.id)
            .where(VmRow.pool == pool, VmRow.state == VmState.READY, VmRow.host_id.in_(up_hosts))
            .order_by(VmRow.updated_at, VmRow.id)
            .limit(count)
            .with_for_update(skip_locked=True)
        )
    )


def check_quota(s: Session, quotas: QuotaStore, quota: Quota | None, ids: list[int]) -> None:
    """QuotaExceeded unless holding the VMs ``ids`` too fits within ``quota``."""
    if quota is None or not quota.limited:
        return
    cpu, ram, disk = s.execute(
        select(func.sum(VmRow.cpu), func.sum(VmRow.ram), func.sum(VmRow.disk)).where(
            VmRow.id.in_(ids)
        )
    ).one()
    quotas.check(s, quota, Usage(checked_out=len(ids), vcpu=cpu or 0, ram=ram or 0, disk=disk or 0))


def hand_out(
    s: Session,
    ids: list[int],
    hashes: list[str],
    *,
    holder: str | None,
    now: datetime,
    expires_at: datetime,
    request_id: str | None = None,
) -> list[int]:
    """ready -> in-use for each of ``ids`` still ready, each under its own reservation
    hash, held by ``holder`` (for on-demand request ``request_id``, if any). Returns
    the ids it took."""
    check_transition(VM_TRANSITIONS, [VmState.READY], VmState.IN_USE, "vm")
    taken = []
    for vm_id, digest in zip(ids, hashes, strict=False):
        res = s.execute(
            update(VmRow)
            .where(VmRow.id == vm_id, VmRow.state == VmState.READY)
            .values(
                state=VmState.IN_USE,
                reservation_hash=digest,
                held_by=holder,
                reserved_at=now,
                expires_at=expires_at,
                request_id=request_id,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:
            taken.append(vm_id)
    return taken


class ReservationStore:
    def __init__(self, db: Database, quotas: QuotaStore) -> None:
        self.db = db
        self.quotas = quotas

    def checkout(
        self,
        pools: list[str],
        hashes: list[str],
        expires_at: datetime,
        seen: dict[str, int] | None = None,
        *,
        holder: str | None = None,
        quota: Quota | None = None,
    ) -> tuple[str, list[VmRow]] | None:
        """Atomically hand out ``len(hashes)`` ready VMs of one pool (the first that has
        enough, in the given order), each under its own reservation hash.

        All or nothing: returns (pool, VMs) or None. A VM on a host that is down is
        not ready. ``FOR UPDATE SKIP LOCKED`` lets concurrent checkouts on PostgreSQL
        take different rows; on SQLite the transaction holds the write lock.
        ``seen`` gets the ready VMs found per pool, in that very transaction. The VMs
        are held by ``holder``, within ``quota`` (QuotaExceeded if they do not fit).
        """
        try:
            return self._checkout(
                pools, hashes, expires_at, {} if seen is None else seen, holder, quota
            )
        except _LostRace:
            return None

    def _checkout(
        self,
        pools: list[str],
        hashes: list[str],
        expires_at: datetime,
        seen: dict[str, int],
        holder: str | None,
        quota: Quota | None,
    ) -> tuple[str, list[VmRow]] | None:
        count = len(hashes)
        now = utcnow()
        with self.db.tx() as s:
            for pool in pools:
                ids = ready_ids(s, pool, count)
                seen[pool] = len(ids)
                if len(ids) < count:
                    continue
                check_quota(s, self.quotas, quota, ids)
                taken = hand_out(s, ids, hashes, holder=holder, now=now, expires_at=expires_at)
                if len(taken) != count:  # taken under us: undo the whole batch
                    raise _LostRace
                rows = list(s.scalars(select(VmRow).where(VmRow.id.in_(ids))))
                detail = {"user": holder} if holder else None
                for vm in rows:
                    s.add(
                        EventRow(kind="vm.checkout", vm_id=vm.id, host_id=vm.host_id, detail=detail)
                    )
                return pool, sorted(rows, key=lambda v: ids.index(v.id))
        return None

    def by_ip(self, ip: str, digest: str) -> VmRow:
        """The VM with address ``ip`` that the reservation ``digest`` holds."""
        with self.db.read() as s:
            rows = list(s.scalars(select(VmRow).where(VmRow.ip == ip)))
        if not rows:
            raise NotFound(f"no VM has ip {ip}")
        for vm in rows:
            if vm.reservation_hash == digest:
                return vm
        if not any(vm.state == VmState.IN_USE for vm in rows):
            raise Conflict(f"no VM with ip {ip} is checked out")
        raise Forbidden(f"the reservation does not hold a VM with ip {ip}")

    def end(
        self,
        vm_id: int,
        digest: str | None,
        *,
        event_kind: str,
        held_by: str | None = None,
        state: str = VmState.CLEANING,
        error: str | None = None,
    ) -> VmRow:
        """in-use -> cleaning, only for the holder of the reservation: its secret
        ``digest``, or (None) a caller the service checked is the holder or an admin;
        then the reservation must still be the one held by ``held_by`` (as the caller
        read it). ``state``: where the VM goes instead of cleaning: ``ready`` for VMs a
        check-out takes back before anyone saw them (nothing was put into their
        guests), ``failed`` (with ``error``) for a VM that is to be destroyed and never
        served again."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id, populate_existing=True)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            if digest is not None:
                _check_holder(vm, digest)
                same = VmRow.reservation_hash == digest
            else:
                if vm.state != VmState.IN_USE or vm.reservation_hash is None:
                    raise Conflict(f"vmid {vm.id} is not checked out (it is {vm.state})")
                if vm.held_by != held_by:
                    raise Conflict(f"vmid {vm.id} changed hands while being checked in")
                same = VmRow.reservation_hash == vm.reservation_hash
            values = {**_RETURNED, "state": state}
            if error is not None:
                values["error"] = error
            res = s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.state == VmState.IN_USE, same)
                .values(**values, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                raise Conflict(f"vmid {vm_id} changed while being checked in")
            # vm still holds what was read before the update: its holder
            s.add(EventRow(kind=event_kind, vm_id=vm_id, host_id=vm.host_id, owner=vm.held_by))
            s.flush()
            s.refresh(vm)
            return vm

    def extend(self, vm_id: int, digest: str, hours: float, cap_hours: float) -> datetime:
        """Push the reservation's end ``hours`` later, up to ``cap_hours`` after check-out."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            _check_holder(vm, digest)
            reserved = as_utc(vm.reserved_at) or utcnow()
            current = as_utc(vm.expires_at) or utcnow()
            wanted = current + timedelta(hours=hours)
            cap = reserved + timedelta(hours=cap_hours)
            if wanted > cap:
                raise Conflict(
                    f"vmid {vm_id} cannot be held past {cap.isoformat(timespec='seconds')} "
                    f"({cap_hours:g} h after checkout, the pool's cap)"
                )
            vm.expires_at = wanted
            vm.updated_at = utcnow()
            s.add(EventRow(kind="vm.extend", vm_id=vm_id, detail={"hours": hours}))
            return wanted

    def set_lifetime(
        self, vm_id: int, hours: float, cap_hours: float, *, held_by: str | None
    ) -> datetime:
        """The reservation ends ``hours`` after its check-out (vmpooler's lifetime), at
        most ``cap_hours`` after it; the VM must still be held by ``held_by`` (as the
        service checked it)."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id, with_for_update=True, populate_existing=True)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            if vm.state != VmState.IN_USE or vm.reservation_hash is None:
                raise Conflict(f"vmid {vm_id} is not checked out (it is {vm.state})")
            if vm.held_by != held_by:
                raise Conflict(f"vmid {vm_id} changed hands meanwhile")
            if hours > cap_hours:
                raise Conflict(
                    f"a lifetime of {hours:g} h is past the pool's cap of {cap_hours:g} h"
                )
            reserved = as_utc(vm.reserved_at) or utcnow()
            wanted = reserved + timedelta(hours=hours)
            vm.expires_at = wanted
            vm.updated_at = utcnow()
            s.add(EventRow(kind="vm.lifetime", vm_id=vm_id, detail={"hours": hours}))
            return wanted

    def keys_given(self, vm_ids: list[int], n: int) -> None:
        """Record that ``n`` borrower keys are in these checked-out VMs' guests."""
        with self.db.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id.in_(vm_ids), VmRow.state == VmState.IN_USE)
                .values(borrower_keys=n)
                .execution_options(synchronize_session=False)
            )

    def expire(self, now: datetime | None = None) -> list[int]:
        """Reservations past ``expires_at`` end: their VMs go to cleaning."""
        now = now or utcnow()
        with self.db.tx() as s:
            held = dict(
                s.execute(
                    select(VmRow.id, VmRow.held_by).where(
                        VmRow.state == VmState.IN_USE, VmRow.expires_at < now
                    )
                ).all()
            )
            ids = list(held)
            if not ids:
                return []
            s.execute(
                update(VmRow)
                .where(VmRow.id.in_(ids), VmRow.state == VmState.IN_USE)
                .values(**_RETURNED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            for vm_id in ids:
                s.add(EventRow(kind="vm.expired", vm_id=vm_id, owner=held[vm_id]))
            return ids

    def pool_counts(self) -> dict[str, dict[str, int]]:
        """Per pool: VMs per state, plus ``unreachable``: ready VMs on hosts that are
        not up (they are not counted as ready)."""
        out: dict[str, dict[str, int]] = {}
        with self.db.read() as s:
            q = (
                select(VmRow.pool, VmRow.state, HostRow.status, func.count())
                .join(HostRow, HostRow.id == VmRow.host_id, isouter=True)
                .where(VmRow.pool.is_not(None))
                .group_by(VmRow.pool, VmRow.state, HostRow.status)
            )
            for pool, state, host_status, n in s.execute(q):
                c = out.setdefault(pool, {})
                key = state
                if state == VmState.READY and host_status != HostStatus.UP:
                    key = "unreachable"
                c[key] = c.get(key, 0) + n
        return out


def _check_holder(vm: VmRow, digest: str) -> None:
    if vm.state != VmState.IN_USE or vm.reservation_hash is None:
        raise Conflict(f"vmid {vm.id} is not checked out (it is {vm.state})")
    if not hmac.compare_digest(vm.reservation_hash, digest):
        raise Forbidden(f"this reservation does not hold vmid {vm.id}")
