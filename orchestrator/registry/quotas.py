"""Per-user quotas, checked in the very transaction that takes what they limit.

A user's use is counted from the rows themselves (VMs they created or hold,
volumes they created), never kept in a counter that could drift. What makes the
check atomic is the user's row in ``users``: every check locks it (``SELECT ...
FOR UPDATE`` on PostgreSQL; SQLite's write transactions are serial anyway)
before counting, so two requests of one user are counted one after the other
and both cannot slip under a limit only one of them fits (the race nodepool and
nova's old quota counters had).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Forbidden
from .database import Database
from .tables import VmRow, VolumeRow
from .tables_access import UserRow

# How each limit is called in a message.
WHAT = {
    "vms": "VMs",
    "checked_out": "checked-out VMs",
    "vcpu": "vCPUs",
    "ram": "MB of RAM",
    "disk": "GB of disk",
    "volumes": "volumes",
}


class QuotaExceeded(Forbidden):
    """A request would take a user past one of their limits."""


@dataclass(frozen=True)
class Usage:
    vms: int = 0  # VMs they created
    checked_out: int = 0  # pool VMs they hold
    vcpu: int = 0  # of the VMs they created or hold
    ram: int = 0  # MB, likewise
    disk: int = 0  # GB: those VMs' disks and their volumes
    volumes: int = 0  # volumes they created

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Quota:
    """A check to make: ``user``'s ``limits`` (a limit None is no limit)."""

    user: str
    limits: Mapping[str, int | None]

    @property
    def limited(self) -> bool:
        return any(v is not None for v in self.limits.values())


class QuotaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def lock(self, s: Session, user: str) -> None:
        """Lock ``user``'s row (made on first use) until the transaction ends."""
        if s.get(UserRow, user) is None:
            try:
                with s.begin_nested():
                    s.add(UserRow(name=user))
            except IntegrityError:
                pass  # a concurrent request made it first
        s.execute(select(UserRow.name).where(UserRow.name == user).with_for_update())

    def usage(self, s: Session, user: str) -> Usage:
        mine = or_(VmRow.created_by == user, VmRow.held_by == user)
        vms = s.scalar(select(func.count()).where(VmRow.created_by == user)) or 0
        held = s.scalar(select(func.count()).where(VmRow.held_by == user)) or 0
        cpu, ram, disk = s.execute(
            select(
                func.coalesce(func.sum(VmRow.cpu), 0),
                func.coalesce(func.sum(VmRow.ram), 0),
                func.coalesce(func.sum(VmRow.disk), 0),
            ).where(mine)
        ).one()
        nvol, vdisk = s.execute(
            select(func.count(), func.coalesce(func.sum(VolumeRow.size), 0)).where(
                VolumeRow.created_by == user
            )
        ).one()
        return Usage(
            vms=int(vms),
            checked_out=int(held),
            vcpu=int(cpu),
            ram=int(ram),
            disk=int(disk) + int(vdisk),
            volumes=int(nvol),
        )

    def check(self, s: Session, quota: Quota | None, add: Usage) -> None:
        """In the caller's transaction: raise QuotaExceeded if ``add`` would take the
        user past a limit. The user's row stays locked until that transaction ends."""
        if quota is None or not quota.limited:
            return
        self.lock(s, quota.user)
        have = self.usage(s, quota.user)
        over = []
        for key, limit in quota.limits.items():
            want = getattr(add, key)
            if limit is not None and want and getattr(have, key) + want > limit:
                over.append(f"{WHAT[key]}: {getattr(have, key)} in use + {want} > {limit}")
        if over:
            raise QuotaExceeded(f"quota exceeded for user {quota.user} ({'; '.join(over)})")

    def show(self, user: str) -> Usage:
        with self.db.read() as s:
            return self.usage(s, user)
