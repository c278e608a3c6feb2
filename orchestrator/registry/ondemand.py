"""On-demand requests (table ``requests``) and the VMs set aside for them
(``vms.request_id``): each step one transaction.

A VM is set aside by the same reservation a check-out makes (ready -> in-use,
``held_by`` the requester, a reservation hash), with ``request_id`` naming the
request; the request row is locked first (``FOR UPDATE`` on PostgreSQL, SQLite's
write lock), so a cancel and the pool worker's set-aside never interleave: once a
request has ended, no VM is set aside for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..errors import Conflict, NotFound
from ..model import (
    REQUEST_TRANSITIONS,
    VM_TRANSITIONS,
    RequestState,
    VmState,
    check_transition,
)
from .database import Database
from .quotas import Quota, QuotaStore
from .reservations import _RETURNED, check_quota, hand_out, ready_ids
from .tables import EventRow, RequestRow, VmRow

# A VM set aside for a request that ended before anyone got it: ready again at
# once (it was never used), held by no one.
_UNUSED = {
    "state": VmState.READY,
    "held_by": None,
    "borrower_keys": 0,
    "reservation_hash": None,
    "reserved_at": None,
    "expires_at": None,
    "request_id": None,
}


class RequestStore:
    def __init__(self, db: Database, quotas: QuotaStore) -> None:
        self.db = db
        self.quotas = quotas

    # -- requests ------------------------------------------------------------------

    def create(
        self,
        request_id: str,
        requested_by: str | None,
        pools: dict[str, int],
        hours: float | None,
        deadline: datetime,
    ) -> RequestRow:
        """A new pending request; 409 if ``request_id`` was ever used."""
        try:
            with self.db.tx() as s:
                if self.db.postgres:
                    # Requests are numbered in the order they commit (SQLite's write
                    # lock does that already): a pass never sees a later number before
                    # an earlier one, so arrival order is the order of the ids.
                    s.execute(text("LOCK TABLE requests IN SHARE ROW EXCLUSIVE MODE"))
                row = RequestRow(
                    request_id=request_id,
                    requested_by=requested_by,
                    pools=dict(pools),
                    state=RequestState.PENDING,
                    hours=hours,
                    created_at=utcnow(),
                    deadline=deadline,
                )
                s.add(row)
                s.flush()
                s.add(
                    EventRow(
                        kind="request.created",
                        detail={"request": request_id, "pools": dict(pools)},
                        object_type="request",
                        object_id=request_id,
                        owner=requested_by,
                    )
                )
                return row
        except IntegrityError:
            raise Conflict(f"request id {request_id!r} is already used") from None

    def get(self, request_id: str) -> RequestRow:
        with self.db.read() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.request_id == request_id))
        if row is None:
            raise NotFound(f"no request {request_id[:64]!r}")
        return row

    def list(
        self,
        *,
        requested_by: str | None = None,
        everyone: bool = True,
        states: Iterable[str] | None = None,
        limit: int = 500,
    ) -> list[RequestRow]:
        """The newest first: everyone's, or ``requested_by``'s only."""
        q = select(RequestRow).order_by(RequestRow.id.desc()).limit(limit)
        if not everyone:
            q = q.where(RequestRow.requested_by == requested_by)
        if states is not None:
            q = q.where(RequestRow.state.in_(list(states)))
        with self.db.read() as s:
            return list(s.scalars(q))

    def pending(self) -> list[RequestRow]:
        """Pending requests in arrival order."""
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(RequestRow)
                    .where(RequestRow.state == RequestState.PENDING)
                    .order_by(RequestRow.id)
                )
            )

    def held(self, request_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """VMs set aside (or handed out) per request, per pool."""
        ids = list(request_ids)
        out: dict[str, dict[str, int]] = {r: {} for r in ids}
        if not ids:
            return out
        with self.db.read() as s:
            q = (
                select(VmRow.request_id, VmRow.pool, func.count())
                .where(VmRow.request_id.in_(ids), VmRow.state == VmState.IN_USE)
                .group_by(VmRow.request_id, VmRow.pool)
            )
            for rid, pool, n in s.execute(q):
                out[rid][pool] = int(n)
        return out

    def vms_of(self, request_id: str) -> list[VmRow]:
        """The VMs it holds now (in-use under it), by id."""
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(VmRow)
                    .where(VmRow.request_id == request_id, VmRow.state == VmState.IN_USE)
                    .order_by(VmRow.id)
                )
            )

    def last_failure(self, pool: str, since: datetime) -> str | None:
        """The newest build or readiness failure of ``pool`` since ``since``."""
        with self.db.read() as s:
            rows = s.scalars(
                select(EventRow)
                .where(
                    EventRow.kind.in_(["pool.build_failed", "vm.failed"]),
                    EventRow.at >= since,
                )
                .order_by(EventRow.id.desc())
                .limit(200)
            )
            for ev in rows:
                d = ev.detail or {}
                if d.get("pool") == pool:
                    return str(d.get("error") or d.get("reason") or "")
        return None

    # -- the pool worker's steps -------------------------------------------------------

    def set_aside(
        self,
        request_id: str,
        pool: str,
        n: int,
        hashes: list[str],
        safety_expiry: datetime,
        *,
        holder: str | None,
        quota: Quota | None,
    ) -> int:
        """Set aside up to ``n`` ready VMs of ``pool`` for a pending request (each under
        its own reservation hash), within the requester's quota (QuotaExceeded: none).
        ``safety_expiry``: when the reaper takes them back should the request never
        end (it always does first). Returns how many."""
        with self.db.tx() as s:
            if not self._lock_pending(s, request_id):
                return 0
            ids = ready_ids(s, pool, n)
            if not ids:
                return 0
            check_quota(s, self.quotas, quota, ids)
            taken = hand_out(
                s,
                ids,
                hashes,
                holder=holder,
                now=utcnow(),
                expires_at=safety_expiry,
                request_id=request_id,
            )
            for vm_id in taken:
                s.add(
                    EventRow(
                        kind="vm.set_aside",
                        vm_id=vm_id,
                        detail={"request": request_id, "pool": pool},
                        owner=holder,
                    )
                )
            return len(taken)
            return taken

    def complete(self, request_id: str, hours: dict[str, float]) -> RequestRow | None:
        """pending -> ready once it holds every VM it asked for: their lifetimes start
        now (``hours`` per pool). None if it is not pending or still short."""
        with self.db.tx() as s:
            row = self._lock_pending(s, request_id)
            if row is None:
                return None
            vms = list(
                s.scalars(
                    select(VmRow)
                    .where(VmRow.request_id == request_id, VmRow.state == VmState.IN_USE)
                    .order_by(VmRow.id)
                )
            )
            have: dict[str, int] = {}
            for vm in vms:
                have[vm.pool or ""] = have.get(vm.pool or "", 0) + 1
            if any(have.get(p, 0) < n for p, n in row.pools.items()):
                return None
            check_transition(REQUEST_TRANSITIONS, [row.state], RequestState.READY, "request")
            now = utcnow()
            for vm in vms:
                vm.expires_at = now + timedelta(hours=hours.get(vm.pool or "", 1.0))
                vm.reserved_at = now
                vm.updated_at = now
                s.add(
                    EventRow(
                        kind="vm.checkout",
                        vm_id=vm.id,
                        host_id=vm.host_id,
                        detail={"user": row.requested_by, "request": request_id}
                        if row.requested_by
                        else {"request": request_id},
                    )
                )
            row.state = RequestState.READY
            row.finished_at = now
            row.vms = [{"vmid": v.id, "hostname": v.hostname, "pool": v.pool} for v in vms]
            s.add(
                EventRow(
                    kind="request.ready",
                    detail={"request": request_id, "vmids": [v.id for v in vms]},
                    object_type="request",
                    object_id=request_id,
                    owner=row.requested_by,
                )
            )
            s.flush()
            return row

    def end(
        self, request_id: str, to: RequestState, message: str | None, *, actor: str | None = None
    ) -> tuple[RequestRow, list[int]]:
        """End a request (failed or cancelled): VMs set aside go back to ready; a ready
        request's VMs (cancelled) go to cleaning, as at a check-in. Idempotent: a
        request already ended stays as it is. Returns it and the VMs to clean."""
        with self.db.tx() as s:
            row = s.scalar(
                select(RequestRow).where(RequestRow.request_id == request_id).with_for_update()
            )
            if row is None:
                raise NotFound(f"no request {request_id[:64]!r}")
            was = row.state
            ends = was == RequestState.PENDING or (
                was == RequestState.READY and to == RequestState.CANCELLED
            )
            if not ends:
                return row, []  # already ended (a second cancel, say): nothing to do
            held = dict(
                s.execute(
                    select(VmRow.id, VmRow.held_by).where(
                        VmRow.request_id == request_id, VmRow.state == VmState.IN_USE
                    )
                ).all()
            )
            check_transition(REQUEST_TRANSITIONS, [was], to, "request")
            now = utcnow()
            back = _UNUSED if was == RequestState.PENDING else {**_RETURNED, "request_id": None}
            check_transition(VM_TRANSITIONS, [VmState.IN_USE], back["state"], "vm")
            if held:
                s.execute(
                    update(VmRow)
                    .where(VmRow.id.in_(list(held)), VmRow.state == VmState.IN_USE)
                    .values(**back, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            kind = "vm.unset_aside" if was == RequestState.PENDING else "vm.checkin"
            for vm_id, holder in held.items():
                detail = {"request": request_id}
                s.add(EventRow(kind=kind, vm_id=vm_id, owner=holder, detail=detail))
            row.state = to
            row.message = message
            if was == RequestState.PENDING:
                row.finished_at = now
            s.add(
                EventRow(
                    kind=f"request.{to}",
                    detail={"request": request_id, "message": message, "by": actor},
                    object_type="request",
                    object_id=request_id,
                    owner=row.requested_by,
                )
            )
            s.flush()
            return row, [] if was == RequestState.PENDING else list(held)

    def note(
        self, request_id: str, message: str | None, *, state: str = RequestState.PENDING
    ) -> None:
        """What a pending request waits for now (shown with its progress), or what went
        wrong as a ready one was handed over."""
        with self.db.tx() as s:
            s.execute(
                update(RequestRow)
                .where(
                    RequestRow.request_id == request_id,
                    RequestRow.state == state,
                    RequestRow.message.is_distinct_from(message),
                )
                .values(message=message)
                .execution_options(synchronize_session=False)
            )

    def counts(self) -> dict[str, Any]:
        """Requests per state."""
        with self.db.read() as s:
            return dict(
                s.execute(select(RequestRow.state, func.count()).group_by(RequestRow.state)).all()
            )

    @staticmethod
    def _lock_pending(s: Session, request_id: str) -> RequestRow | None:
        row = s.scalar(
            select(RequestRow).where(RequestRow.request_id == request_id).with_for_update()
        )
        return row if row is not None and row.state == RequestState.PENDING else None
