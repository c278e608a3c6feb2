"""What happened (table ``events``): creates, check-outs, failures, findings of
reconciliation; the history behind ``/summary``, ``/metrics`` and the charts.

Other stores add their events in the same transaction as the change they
record (an ``EventRow``); this module records the rest and reads them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select

from .database import Database
from .tables import EventRow


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        kind: str,
        *,
        vm_id: int | None = None,
        host_id: int | None = None,
        duration: float | None = None,
        detail: dict | None = None,
    ) -> None:
        with self.db.tx() as s:
            s.add(
                EventRow(kind=kind, vm_id=vm_id, host_id=host_id, duration=duration, detail=detail)
            )

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
