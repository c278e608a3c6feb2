"""Reservations of pool VMs (columns ``vms.reservation_hash``, ``reserved_at``,
``expires_at``): check-out, check-in, extension, expiry, and pool levels.

These are the VM transitions ready -> in-use -> cleaning (see ``VM_TRANSITIONS``);
each is one transaction, and check-out is all or nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from ..clock import as_utc, utcnow
from ..errors import Conflict, Forbidden, NotFound
from ..model import VM_TRANSITIONS, HostStatus, VmState, check_transition
from .cluster import ClusterStore
from .database import Database
from .events import add_event
from .quotas import Quota, QuotaStore, Usage
from .tables import EventRow, HostRow, ServerRow, VmRow
from .tables_access import SshKeyRow

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


# What a check-in reads of the VM it ends (in its own transaction).
_HELD = (
    VmRow.id,
    VmRow.state,
    VmRow.reservation_hash,
    VmRow.held_by,
    VmRow.host_id,
    VmRow.borrower_keys,
    VmRow.owner,
    VmRow.created_by,
)
_VM_COLUMNS = tuple(VmRow.__table__.c)


@dataclass(frozen=True)
class Returned:
    """A VM a check-in ended: whose it was, whether its guest has the borrower's keys,
    and whether this server took it to clean it (``taken``)."""

    vm_id: int
    held_by: str | None
    borrower_keys: int
    taken: bool


class HasKeys:
    """``checkout_one``'s answer for a user who has SSH keys registered."""


HAS_KEYS = HasKeys()


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
    def __init__(self, db: Database, quotas: QuotaStore, cluster: ClusterStore) -> None:
        self.db = db
        self.quotas = quotas
        self.cluster = cluster
        # The check-out's and check-in's statements, built once (their values bound).
        up_hosts = select(HostRow.id).where(
            HostRow.status == HostStatus.UP, HostRow.enabled.is_(True)
        )
        oldest = (
            select(VmRow.id)
            .where(
                VmRow.pool == bindparam("pool_name"),
                VmRow.state == VmState.READY,
                VmRow.host_id.in_(up_hosts),
            )
            .order_by(VmRow.updated_at, VmRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        self._take_oldest = (
            update(VmRow.__table__)
            .where(VmRow.id == oldest, VmRow.state == VmState.READY)
            .values(
                state=VmState.IN_USE,
                reservation_hash=bindparam("digest"),
                held_by=bindparam("holder"),
                reserved_at=bindparam("now"),
                expires_at=bindparam("expires"),
                request_id=None,
                updated_at=bindparam("now"),
            )
            .returning(*_VM_COLUMNS)
        )
        self._has_keys = select(SshKeyRow.id).where(SshKeyRow.user == bindparam("user")).limit(1)
        self._held_by_id = select(*_HELD).where(VmRow.id == bindparam("vm_id")).with_for_update()
        self._held_at_ip = select(*_HELD).where(VmRow.ip == bindparam("ip"))
        ended = (
            update(VmRow.__table__)
            .where(
                VmRow.id == bindparam("vm_id"),
                VmRow.state == VmState.IN_USE,
                VmRow.reservation_hash == bindparam("digest"),
            )
            .returning(VmRow.owner)
        )
        self._end = ended.values(**_RETURNED, updated_at=bindparam("now"))
        # ... and the server that checks it in takes it to clean it, if no live one
        # works on it (ClusterStore.free, the heartbeat cutoff bound)
        if db.postgres:
            cutoff: Any = func.now() - timedelta(seconds=cluster.dead_after)
        else:
            cutoff = bindparam("cutoff")
        live = select(ServerRow.id).where(ServerRow.heartbeat_at >= cutoff)
        free = or_(
            VmRow.owner.is_(None), (VmRow.owner != bindparam("me")) & VmRow.owner.not_in(live)
        )
        self._end_and_take = ended.values(
            **_RETURNED,
            updated_at=bindparam("now"),
            owner=case((free, bindparam("me")), else_=VmRow.owner),
        )

    def checkout_one(
        self,
        pool: str,
        digest: str,
        expires_at: datetime,
        *,
        holder: str | None,
        keyless: str | None = None,
    ) -> VmRow | None | HasKeys:
        """The check-out of one VM of ``pool`` without a quota, as one UPDATE: the
        longest ready VM on a host that is up becomes in-use under ``digest`` (on
        PostgreSQL the subquery skips rows other check-outs hold), and its event is
        added in the same transaction. None when the pool has none ready (the caller
        asks ``checkout`` then, which also counts what it found). ``keyless``: a user
        who must have no SSH keys registered (checked in the same transaction):
        ``HAS_KEYS`` and nothing done if they have some."""
        check_transition(VM_TRANSITIONS, [VmState.READY], VmState.IN_USE, "vm")
        params = {
            "pool_name": pool,
            "digest": digest,
            "holder": holder,
            "now": utcnow(),
            "expires": expires_at,
        }
        with self.db.tx() as s:
            conn = s.connection()
            if keyless is not None and conn.execute(self._has_keys, {"user": keyless}).first():
                return HAS_KEYS
            row = conn.execute(self._take_oldest, params).first()
            if row is None:
                return None
            vm = VmRow(**row._asdict())
            add_event(
                conn,
                "vm.checkout",
                vm_id=vm.id,
                host_id=vm.host_id,
                detail={"user": holder} if holder else None,
                owner=vm.held_by or vm.created_by,
                owner_known=True,
            )
        return vm

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

    def end_held(
        self,
        vm_id: int | None,
        ip: str | None,
        digest: str,
        may: Callable[[int, str, str | None], None],
        *,
        take: bool,
    ) -> Returned:
        """A check-in by the reservation's secret, in one transaction of plain
        statements: the VM (``vm_id``, else the one at ``ip`` that ``digest``
        holds), ``may(vm_id, state, held_by)`` (raises if the caller may not),
        in-use -> cleaning only under ``digest``, and its event. With ``take``, this
        server becomes the one that cleans it (if no live server works on it), in
        the same UPDATE. The same refusals as ``end``, ``VmStore.get`` and a check-in
        by address (``_by_ip``) always gave, in the same order."""
        with self.db.tx() as s:
            conn = s.connection()
            if vm_id is not None:
                row = conn.execute(self._held_by_id, {"vm_id": vm_id}).first()
                if row is None:
                    raise NotFound(f"vmid {vm_id} does not exist")
            else:
                row = _by_ip(conn.execute(self._held_at_ip, {"ip": ip}).all(), ip, digest)
            vid, state, held_hash, held_by, host_id, keys, owner, created_by = row
            may(vid, state, held_by)
            if state != VmState.IN_USE or held_hash is None:
                raise Conflict(f"vmid {vid} is not checked out (it is {state})")
            if not hmac.compare_digest(held_hash, digest):
                raise Forbidden(f"this reservation does not hold vmid {vid}")
            me = self.cluster.server_id
            params = {"vm_id": vid, "digest": digest, "now": utcnow()}
            if take and owner != me:
                params["me"] = me
                if not self.db.postgres:
                    params["cutoff"] = params["now"] - timedelta(seconds=self.cluster.dead_after)
                res = conn.execute(self._end_and_take, params).first()
            else:
                res = conn.execute(self._end, params).first()
            if res is None:
                raise Conflict(f"vmid {vid} changed while being checked in")
            taken = take and owner != me and res[0] == me
            # whose it was: its holder's (else, as the registry has it now, its creator's)
            add_event(
                conn,
                "vm.checkin",
                vm_id=vid,
                host_id=host_id,
                owner=held_by or created_by,
                owner_known=True,
            )
        return Returned(vid, held_by, keys or 0, taken)

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


def _by_ip(rows: list, ip: str | None, digest: str) -> Any:
    """The row among ``rows`` (the VMs at ``ip``) that the reservation ``digest``
    holds, or why there is none."""
    if not rows:
        raise NotFound(f"no VM has ip {ip}")
    for row in rows:
        if row.reservation_hash == digest:
            return row
    if not any(row.state == VmState.IN_USE for row in rows):
        raise Conflict(f"no VM with ip {ip} is checked out")
    raise Forbidden(f"the reservation does not hold a VM with ip {ip}")


def _check_holder(vm: VmRow, digest: str) -> None:
    if vm.state != VmState.IN_USE or vm.reservation_hash is None:
        raise Conflict(f"vmid {vm.id} is not checked out (it is {vm.state})")
    if not hmac.compare_digest(vm.reservation_hash, digest):
        raise Forbidden(f"this reservation does not hold vmid {vm.id}")
