"""What happened (table ``events``): creates, check-outs, failures, findings of
reconciliation, and the audit trail (one event per state-changing API request);
the history behind ``/summary``, ``/metrics``, the charts and ``GET /events``.

Other stores add their events in the same transaction as the change they
record (an ``EventRow``); this module records the rest and reads them all.
Who did it (``actor``) comes from orchestrator/audit.py when not given.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    bindparam,
    event,
    func,
    insert,
    or_,
    select,
)

from ..audit import FAILED, OK, current_actor, touched
from .database import Database
from .tables import EventRow, VmRow, VolumeRow
from .tables_access import SshKeyRow
from .tables_schedules import ScheduleRow

MAX_PAGE = 1000  # events in one page of ``page``
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventFilter:
    """Which events (all of them when every field is None)."""

    vm_id: int | None = None  # about this VM (its vm_id, or the object vm:<id>)
    host_id: int | None = None  # about this host
    object_type: str | None = None  # about this object (any id when object_id is None)
    object_id: str | None = None
    actor: str | None = None  # done by this user (or "system", "anonymous")
    kind: str | None = None  # whose kind starts with this
    operation: str | None = None  # API requests whose "METHOD /path" starts with this
    outcome: str | None = None  # ok, refused or failed
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before
    visible_to: str | None = None  # only what this (non-admin) user may see


@dataclass(eq=False)
class _Waiting:
    """One event handed to a group commit, and what became of it."""

    kind: str
    fields: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # this caller writes the next batch
    error: BaseException | None = None


class GroupCommit:
    """Events from many threads written in one transaction each time: the first caller
    to arrive writes every event waiting then (its own included), the others wait for
    that commit; whoever waits first when it ends writes the next batch. Each caller
    returns once its event is committed (or raises what its write raised), exactly as
    with a transaction of its own; one alone pays no more than that transaction. What
    it saves: with many requests at once, one writer's turn, one commit, for all."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False

    def add(self, kind: str, **fields: Any) -> None:
        me = _Waiting(kind, fields)
        with self._lock:
            self._queue.append(me)
            if not self._writing:
                self._writing = me.lead = True
        if not me.lead:
            me.wake.wait()
        if me.lead:
            self._lead(me)
        if me.error is not None:
            raise me.error

    def _lead(self, me: _Waiting) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            # a fresh context: the batch is not the leader's own request's work
            contextvars.Context().run(self._write, batch)
        except BaseException as e:  # interrupted: no one may take its event as written
            for w in batch:
                w.error = w.error or e
            raise
        finally:
            with self._lock:
                nxt = self._queue[0] if self._queue else None
                if nxt is None:
                    self._writing = False
                else:
                    nxt.lead = True
            for w in batch:
                if w is not me:
                    w.lead = False
                    w.wake.set()
            if nxt is not None:
                nxt.wake.set()

    def _write(self, batch: list[_Waiting]) -> None:
        try:
            with self.db.tx() as s:
                conn = s.connection()
                for w in batch:
                    add_event(conn, w.kind, **w.fields)
            return
        except Exception as e:  # noqa: BLE001 - one bad event must not lose the others
            if len(batch) == 1:
                batch[0].error = e
                return
            log.debug("a batch of %d events failed (%s); writing each alone", len(batch), e)
        for w in batch:
            try:
                with self.db.tx() as s:
                    add_event(s.connection(), w.kind, **w.fields)
            except Exception as e:  # noqa: BLE001 - raised in its caller's thread
                w.error = e


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.grouped = GroupCommit(db)  # the API's audit events

    def record(
        self,
        kind: str,
        *,
        vm_id: int | None = None,
        host_id: int | None = None,
        duration: float | None = None,
        detail: dict | None = None,
        actor: str | None = None,
        operation: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        outcome: str | None = None,
        status: int | None = None,
        owner: str | None = None,
    ) -> None:
        """One event; ``actor`` defaults to orchestrator.audit's current actor, the
        object to the VM (or else the host), the outcome to ok (failed for kinds
        ending in ``_failed``)."""
        with self.db.tx() as s:
            add_event(
                s.connection(),
                kind,
                vm_id=vm_id,
                host_id=host_id,
                duration=duration,
                detail=detail,
                actor=actor,
                operation=operation,
                object_type=object_type,
                object_id=object_id,
                outcome=outcome,
                status=status,
                owner=owner,
            )

    def owner_of(self, object_type: str, object_id: str | None) -> str | None:
        """Whose an object is now (None: no one's, or no such object)."""
        if not object_id or not object_id.isdigit() or len(object_id) > 15:
            return None  # no object that has an owner: no transaction either
        with self.db.read() as s:
            return _owner(s.connection(), object_type, object_id)

    def page(
        self,
        where: EventFilter,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        """At most ``limit`` events matching ``where``, newest first: the newest ones
        older than ``before`` (or the newest of all), or with ``after``, the oldest
        ones newer than ``after`` (so that paging forward skips none)."""
        limit = max(1, min(limit, MAX_PAGE))
        conds = _conditions(where)
        with self.db.read() as s:
            q = select(EventRow).where(*conds)
            if before is not None:
                q = q.where(EventRow.id < before)
            if after is not None:
                q = q.where(EventRow.id > after).order_by(EventRow.id.asc())
            else:
                q = q.order_by(EventRow.id.desc())
            rows = list(s.scalars(q.limit(limit)))
        if after is not None:
            rows.reverse()
        return rows

    def list(self, kind: str | None = None, limit: int = 100) -> list[EventRow]:
        """The newest events first (of one ``kind``, if given)."""
        with self.db.read() as s:
            q = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
            if kind:
                q = q.where(EventRow.kind == kind)
            return list(s.scalars(q))

    def durations(self, kinds: Iterable[str], since: datetime, until: datetime) -> list[Row[Any]]:
        """``(at, kind, duration)`` of the timed events of ``kinds`` in [since, until)."""
        with self.db.read() as s:
            q = select(EventRow.at, EventRow.kind, EventRow.duration).where(
                EventRow.kind.in_(list(kinds)),
                EventRow.at >= since,
                EventRow.at < until,
                EventRow.duration.is_not(None),
            )
            return list(s.execute(q))

    def details(self, kind: str, since: datetime, until: datetime) -> list[Row[Any]]:
        """``(at, detail)`` of the events of ``kind`` in [since, until), oldest first."""
        with self.db.read() as s:
            q = (
                select(EventRow.at, EventRow.detail)
                .where(EventRow.kind == kind, EventRow.at >= since, EventRow.at < until)
                .order_by(EventRow.id)
            )
            return list(s.execute(q))

    def last_id(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.max(EventRow.id))) or 0)

    def after(self, event_id: int, kinds: Iterable[str], limit: int) -> list[Row[Any]]:
        """``(id, kind, duration)`` of the events of ``kinds`` newer than ``event_id``,
        oldest first."""
        with self.db.read() as s:
            q = (
                select(EventRow.id, EventRow.kind, EventRow.duration)
                .where(EventRow.id > event_id, EventRow.kind.in_(list(kinds)))
                .order_by(EventRow.id)
                .limit(limit)
            )
            return list(s.execute(q))


def _conditions(f: EventFilter) -> list[ColumnElement[bool]]:
    e = EventRow
    out: list[ColumnElement[bool]] = []
    if f.vm_id is not None:
        out.append(e.vm_id == f.vm_id)
    if f.host_id is not None:
        out.append(e.host_id == f.host_id)
    if f.object_type is not None:
        out.append(e.object_type == f.object_type)
    if f.object_id is not None:
        out.append(e.object_id == f.object_id)
    if f.actor is not None:
        out.append(e.actor == f.actor)
    if f.kind:
        out.append(e.kind.startswith(f.kind, autoescape=True))
    if f.operation:
        out.append(e.operation.startswith(f.operation, autoescape=True))
    if f.outcome is not None:
        out.append(e.outcome == f.outcome)
    if f.since is not None:
        out.append(e.at >= f.since)
    if f.until is not None:
        out.append(e.at < f.until)
    if f.visible_to is not None:
        out.append(_visible_to(f.visible_to))
    return out


def _visible_to(user: str) -> ColumnElement[bool]:
    """A user's events: what they did, and what happened to what was theirs then."""
    return or_(EventRow.actor == user, EventRow.owner == user)


def _owner(conn: Connection, object_type: str | None, object_id: str | None) -> str | None:
    """Whose the object is: a VM's holder (else its creator), a volume's or a
    schedule's creator, a key's user."""
    if not object_id or not object_id.isdigit() or len(object_id) > 15:
        return None
    ident = int(object_id)
    if object_type == "vm":
        row = conn.execute(_VM_OWNER, {"ident": ident}).first()
        return (row[0] or row[1]) if row else None
    q = _OWNERS.get(object_type or "")
    if q is None:
        return None
    return conn.execute(q, {"ident": ident}).scalar()


# whose an object is (``_owner``), built once
_VM_OWNER = select(VmRow.held_by, VmRow.created_by).where(VmRow.id == bindparam("ident"))
_OWNERS = {
    "volume": select(VolumeRow.created_by).where(VolumeRow.id == bindparam("ident")),
    "schedule": select(ScheduleRow.created_by).where(ScheduleRow.id == bindparam("ident")),
    "key": select(SshKeyRow.user).where(SshKeyRow.id == bindparam("ident")),
}


def _failed_kind(kind: str) -> bool:
    return kind.endswith(("_failed", ".failed", ".error"))


@event.listens_for(EventRow, "before_insert")
def _audit_defaults(_mapper: object, conn: Connection, row: EventRow) -> None:
    """Who, on what, whose and how it ended, for the events stores add without
    saying: the current actor (orchestrator/audit.py), the VM (else the host), the
    object's owner as the registry has it now (in the event's own transaction), ok
    (failed for kinds ending in ``_failed``/``.failed``)."""
    values = {name: getattr(row, name) for name in _DEFAULTED}
    fill_defaults(conn, values, row.kind or "")
    for name in _DEFAULTED:
        setattr(row, name, values[name])


_DEFAULTED = ("actor", "object_type", "object_id", "vm_id", "host_id", "owner", "outcome")


def fill_defaults(
    conn: Connection, values: dict[str, Any], kind: str, *, owner_known: bool = False
) -> None:
    """The defaults of ``_audit_defaults`` for an event's column ``values`` (a dict
    with every key of ``_DEFAULTED``), filled in place."""
    if values["actor"] is None:
        values["actor"] = current_actor()
    if values["object_type"] is None:
        if values["vm_id"] is not None:
            values["object_type"], values["object_id"] = "vm", str(values["vm_id"])
        elif values["host_id"] is not None:
            values["object_type"], values["object_id"] = "host", str(values["host_id"])
    else:
        object_id = values["object_id"]
        if object_id is not None and object_id.isdigit() and len(object_id) < 16:
            if values["object_type"] == "vm" and values["vm_id"] is None:
                values["vm_id"] = int(object_id)
            elif values["object_type"] == "host" and values["host_id"] is None:
                values["host_id"] = int(object_id)
    if values["owner"] is None and not owner_known:
        owner = _owner(conn, values["object_type"], values["object_id"])
        if owner is None and values["vm_id"] is not None and values["object_type"] != "vm":
            owner = _owner(conn, "vm", str(values["vm_id"]))
        values["owner"] = owner
    if values["outcome"] is None:
        values["outcome"] = FAILED if _failed_kind(kind) else OK
    touched(values["object_type"], values["object_id"], values["owner"])


_INSERT = insert(EventRow.__table__)
_COLUMNS = tuple(c.key for c in EventRow.__table__.c if c.key not in ("id", "kind"))


def add_row(conn: Connection, row: EventRow) -> None:
    """``add_event`` for an ``EventRow`` built by a caller (not added to a session):
    the columns it sets, the others defaulted alike."""
    fields = {k: v for k in _COLUMNS if (v := getattr(row, k)) is not None}
    add_event(conn, row.kind, **fields)


def add_event(conn: Connection, kind: str, *, owner_known: bool = False, **fields: Any) -> None:
    """Insert one event in ``conn``'s transaction without building an ``EventRow``
    (a Core INSERT; the same defaults as ``_audit_defaults``). ``owner_known``: the
    ``owner`` given is the object's owner even when None (the caller read it in this
    transaction), so it is not looked up again."""
    values: dict[str, Any] = {name: None for name in _DEFAULTED}
    values.update(fields)
    fill_defaults(conn, values, kind, owner_known=owner_known)
    values["kind"] = kind
    conn.execute(_INSERT, values)
