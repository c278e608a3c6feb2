"""Scheduled capacity (tables ``schedules``, ``schedule_runs``, ``schedule_vms``):
schedules, their windows and the VMs each window made.

A window's phase (``SchedulePhase``) is changed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import NotFound
from ..model import SCHEDULE_TRANSITIONS, SchedulePhase, check_transition
from .database import Database
from .tables_schedules import ScheduleRow, ScheduleRunRow, ScheduleVmRow

OPEN = (SchedulePhase.ACTIVE, SchedulePhase.ENDING)


class ScheduleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- schedules -----------------------------------------------------------------

    def add(self, values: dict[str, Any]) -> int:
        """Store a new schedule (its columns, already checked); its id."""
        with self.db.tx() as s:
            row = ScheduleRow(**values)
            s.add(row)
            s.flush()
            return row.id

    def all(self) -> list[ScheduleRow]:
        with self.db.read() as s:
            return list(s.scalars(select(ScheduleRow).order_by(ScheduleRow.id)))

    def get(self, sid: int) -> ScheduleRow:
        with self.db.read() as s:
            row = s.get(ScheduleRow, sid)
        if row is None:
            raise NotFound(f"schedule {sid} does not exist")
        return row

    def cancel(self, sid: int) -> None:
        """No new window starts; later passes finish the teardown, then delete it."""
        with self.db.tx() as s:
            s.execute(update(ScheduleRow).where(ScheduleRow.id == sid).values(cancelled=True))

    def delete(self, sid: int) -> None:
        """The schedule, its windows and their links, at once."""
        with self.db.tx() as s:
            s.execute(delete(ScheduleVmRow).where(ScheduleVmRow.schedule_id == sid))
            s.execute(delete(ScheduleRunRow).where(ScheduleRunRow.schedule_id == sid))
            s.execute(delete(ScheduleRow).where(ScheduleRow.id == sid))

    def with_latest(
        self, sid: int | None = None
    ) -> list[tuple[ScheduleRow, ScheduleRunRow | None, list[int]]]:
        """Schedules (or one) with their latest window and the VMs it holds, in one
        snapshot."""
        with self.db.read() as s:
            q = select(ScheduleRow).order_by(ScheduleRow.id)
            runs = select(ScheduleRunRow).order_by(ScheduleRunRow.id)
            links = select(ScheduleVmRow).order_by(ScheduleVmRow.id)
            if sid is not None:
                q = q.where(ScheduleRow.id == sid)
                runs = runs.where(ScheduleRunRow.schedule_id == sid)
                links = links.where(ScheduleVmRow.schedule_id == sid)
            rows = list(s.scalars(q))
            latest: dict[int, ScheduleRunRow] = {}
            for run in s.scalars(runs):
                latest[run.schedule_id] = run
            vms: dict[int, list[int]] = {}
            for link in s.scalars(links):
                vms.setdefault(link.run_id, []).append(link.vm_id)
        out = []
        for r in rows:
            run = latest.get(r.id)
            out.append((r, run, vms.get(run.id, []) if run is not None else []))
        return out

    def pool_extra(self) -> dict[str, int]:
        """Per pool, the extra ready VMs its open (active) windows ask for in all."""
        want: dict[str, int] = {}
        with self.db.read() as s:
            q = (
                select(ScheduleRow.pool, ScheduleRow.count)
                .join(ScheduleRunRow, ScheduleRunRow.schedule_id == ScheduleRow.id)
                .where(ScheduleRow.pool.is_not(None), ScheduleRunRow.phase == SchedulePhase.ACTIVE)
            )
            for pool, count in s.execute(q):
                want[pool] = want.get(pool, 0) + count
        return want

    # -- windows -------------------------------------------------------------------

    def begin(self, sid: int, start: datetime, end: datetime, wanted: int) -> ScheduleRunRow | None:
        """Record a window as started (``active``); None if it was started already."""
        try:
            with self.db.tx() as s:
                run = ScheduleRunRow(
                    schedule_id=sid,
                    window_start=start,
                    window_end=end,
                    phase=SchedulePhase.ACTIVE,
                    wanted=wanted,
                    made=0,
                )
                s.add(run)
            return run
        except IntegrityError:
            return None

    def runs(self, sid: int, phases: Iterable[SchedulePhase] | None = None) -> list[ScheduleRunRow]:
        with self.db.read() as s:
            q = select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == sid)
            if phases is not None:
                q = q.where(ScheduleRunRow.phase.in_(list(phases)))
            return list(s.scalars(q.order_by(ScheduleRunRow.id)))

    def open_run(self, sid: int) -> ScheduleRunRow | None:
        """The schedule's window that is active or ending, if any."""
        runs = self.runs(sid, phases=OPEN)
        return runs[0] if runs else None

    def has_run(self, sid: int, window_start: datetime) -> bool:
        with self.db.read() as s:
            q = select(ScheduleRunRow.id).where(
                ScheduleRunRow.schedule_id == sid, ScheduleRunRow.window_start == window_start
            )
            return s.scalar(q) is not None

    def update_run(
        self,
        run_id: int,
        *,
        advance: tuple[SchedulePhase, SchedulePhase] | None = None,
        **values: Any,
    ) -> None:
        """Record a window's progress; ``advance=(from, to)`` also moves its phase
        (only if it is still ``from``)."""
        q = update(ScheduleRunRow).where(ScheduleRunRow.id == run_id)
        if advance is not None:
            frm, to = advance
            check_transition(SCHEDULE_TRANSITIONS, [frm], to, "schedule window")
            q = q.where(ScheduleRunRow.phase == frm)
            values["phase"] = to
        with self.db.tx() as s:
            s.execute(q.values(**values))

    # -- the VMs a window made ------------------------------------------------------

    def add_vm(self, sid: int, run_id: int, vm_id: int, *, made: int, complete: bool) -> None:
        """A VM the window made, and how many it has made now (``complete``: all)."""
        with self.db.tx() as s:
            s.add(ScheduleVmRow(schedule_id=sid, run_id=run_id, vm_id=vm_id))
            values: dict[str, Any] = {"made": made}
            if complete:
                values["last_error"] = None
            s.execute(update(ScheduleRunRow).where(ScheduleRunRow.id == run_id).values(**values))

    def vms_of(self, run_id: int) -> list[ScheduleVmRow]:
        with self.db.read() as s:
            q = select(ScheduleVmRow).where(ScheduleVmRow.run_id == run_id)
            return list(s.scalars(q.order_by(ScheduleVmRow.id)))

    def drop_vm(self, link_id: int) -> None:
        with self.db.tx() as s:
            s.execute(delete(ScheduleVmRow).where(ScheduleVmRow.id == link_id))
