"""Tables of scheduled capacity (seed 004): schedules, their windows and their VMs.

They share Base with tables.py, so ``create_schema`` makes them with the rest.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .tables import Base, Id, utcnow


class ScheduleRow(Base):
    """Extra capacity for a window: ``count`` plain VMs of (tid, image_id), or ``count``
    more ready VMs in ``pool``. The window is one-off (start_at/end_at) or recurring
    (cron + duration_minutes)."""

    __tablename__ = "schedules"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    tid: Mapped[int | None] = mapped_column(Id)
    image_id: Mapped[int | None] = mapped_column(Id)
    pool: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cron: Mapped[str | None] = mapped_column(String(128))
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    # Deleted with force while its teardown could not finish: no new window starts,
    # later ticks finish the teardown and then delete the rows.
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScheduleRunRow(Base):
    """One window of a schedule and how far it got. ``phase``: active (window open),
    ending (window over, extra VMs still being removed), done."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "window_start", name="uq_schedule_window"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(Id, ForeignKey("schedules.id"), index=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    wanted: Mapped[int] = mapped_column(Integer)
    made: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ScheduleVmRow(Base):
    """A plain VM a schedule's window created (to be destroyed when the window ends).

    ``vm_id`` has no foreign key: the VM's row is deleted when it is destroyed, by
    whoever destroys it; a link to a VM that is gone is simply dropped."""

    __tablename__ = "schedule_vms"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(Id, ForeignKey("schedules.id"), index=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("schedule_runs.id"), index=True)
    vm_id: Mapped[int] = mapped_column(Id, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
