"""Servers, leases and who works on what (tables ``servers`` and ``leases``).

Several fabric servers may share one registry. Each records itself in
``servers`` and heartbeats; a server whose heartbeat is older than
``dead_after`` seconds is dead. Background work runs on the holder of its
lease. A VM or volume being worked on carries its server's id in ``owner``;
the predicates here say whether that owner is still alive.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import as_utc, utcnow
from .database import Database
from .tables import LeaseRow, ServerRow, VmRow

log = logging.getLogger(__name__)


class ClusterStore:
    def __init__(self, db: Database, dead_after: float = 10.0) -> None:
        self.db = db
        # This process, as one of possibly several servers sharing the registry.
        self.server_id = secrets.token_hex(8)
        self.dead_after = dead_after
        self._whoami: tuple[str, int] | None = None  # (machine, pid) once registered

    # -- liveness --------------------------------------------------------------

    def live_servers(self, now: datetime | None = None) -> Select[tuple[str]]:
        """Ids of servers whose heartbeat is fresh at ``now`` (default: the
        database's now, inside the statement, so it costs no round trip)."""
        if now is None:
            if self.db.postgres:
                cutoff: Any = func.now() - timedelta(seconds=self.dead_after)
                return select(ServerRow.id).where(ServerRow.heartbeat_at >= cutoff)
            now = utcnow()
        cutoff = now - timedelta(seconds=self.dead_after)
        return select(ServerRow.id).where(ServerRow.heartbeat_at >= cutoff)

    def free(self, owner: Any, *, mine: bool = False) -> ColumnElement[bool]:
        """No live server works on the row whose owner column is ``owner`` (``mine``:
        or only this one does)."""
        live = self.live_servers()
        if mine:
            return or_(owner.is_(None), owner == self.server_id, owner.not_in(live))
        return or_(owner.is_(None), (owner != self.server_id) & owner.not_in(live))

    def owner_alive(self, owner: str | None) -> bool:
        """Whether ``owner`` (a VM's or volume's) is a live server, this one included."""
        if owner is None:
            return False
        if owner == self.server_id:
            return True
        with self.db.read() as s:
            return owner in set(s.scalars(self.live_servers()))

    # -- membership ------------------------------------------------------------

    def register(self, host: str, pid: int) -> None:
        self._whoami = (host, pid)
        with self.db.tx() as s:
            now = self.db.now(s)
            s.merge(
                ServerRow(id=self.server_id, host=host, pid=pid, started_at=now, heartbeat_at=now)
            )

    def heartbeat(self) -> None:
        """Say this server is alive; forget servers silent for a day."""
        with self.db.tx() as s:
            now = self.db.now(s)
            res = s.execute(
                update(ServerRow).where(ServerRow.id == self.server_id).values(heartbeat_at=now)
            )
            if res.rowcount == 0 and self._whoami is not None:
                # Taken for dead (silent too long): say so, and be counted again.
                log.warning("server %s had been given up for dead; rejoining", self.server_id)
                host, pid = self._whoami
                s.add(
                    ServerRow(
                        id=self.server_id, host=host, pid=pid, started_at=now, heartbeat_at=now
                    )
                )
            forget = now - timedelta(seconds=max(86400.0, 10 * self.dead_after))
            s.execute(delete(ServerRow).where(ServerRow.heartbeat_at < forget))

    def leave(self) -> None:
        """A clean stop: give up every lease and every VM at once and leave."""
        with self.db.tx() as s:
            now = self.db.now(s)
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.holder == self.server_id)
                .values(holder=None, expires_at=now)
            )
            s.execute(
                update(VmRow)
                .where(VmRow.owner == self.server_id)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
            s.execute(delete(ServerRow).where(ServerRow.id == self.server_id))

    def bury(self, ids: list[str]) -> None:
        """Servers known to be dead: their leases are free and their work orphaned now."""
        with self.db.tx() as s:
            now = self.db.now(s)
            s.execute(
                update(LeaseRow).where(LeaseRow.holder.in_(ids)).values(holder=None, expires_at=now)
            )
            s.execute(delete(ServerRow).where(ServerRow.id.in_(ids)))

    # -- leases ----------------------------------------------------------------

    def acquire(self, name: str, ttl: float) -> str | None:
        """Take or renew lease ``name`` for ``ttl`` seconds: "taken" (it was not
        ours), "renewed" (it was), or None (another server holds it).

        Free, expired, or already ours: it is ours (one conditional UPDATE, so two
        servers can never both win). Held by another and fresh: not ours.
        """
        me = self.server_id
        try:
            with self.db.tx() as s:
                now = self.db.now(s)
                held_before = s.scalar(
                    select(LeaseRow.holder).where(LeaseRow.name == name).with_for_update()
                )
                until = now + timedelta(seconds=ttl)
                ours = LeaseRow.holder == me
                res = s.execute(
                    update(LeaseRow)
                    .where(
                        LeaseRow.name == name,
                        or_(ours, LeaseRow.holder.is_(None), LeaseRow.expires_at < now),
                    )
                    .values(
                        holder=me,
                        expires_at=until,
                        acquired_at=case((ours, LeaseRow.acquired_at), else_=now),
                        fence=case((ours, LeaseRow.fence), else_=LeaseRow.fence + 1),
                    )
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    return "renewed" if held_before == me else "taken"
                if s.get(LeaseRow, name) is not None:
                    return None
                s.add(LeaseRow(name=name, holder=me, expires_at=until, acquired_at=now, fence=1))
            return "taken"
        except IntegrityError:
            return None  # another server created it first

    def release(self, name: str) -> None:
        with self.db.tx() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == self.server_id)
                .values(holder=None, expires_at=self.db.now(s))
            )

    def snapshot(self) -> dict[str, Any]:
        """Servers (alive or not) and leases, as the database sees them now."""
        with self.db.read() as s:
            now = self.db.now(s)
            cutoff = now - timedelta(seconds=self.dead_after)
            servers = [
                {
                    "id": r.id,
                    "host": r.host,
                    "pid": r.pid,
                    "started_at": as_utc(r.started_at),
                    "heartbeat_at": as_utc(r.heartbeat_at),
                    "alive": as_utc(r.heartbeat_at) >= cutoff,
                    "me": r.id == self.server_id,
                }
                for r in s.scalars(select(ServerRow).order_by(ServerRow.started_at))
            ]
            leases = [
                {
                    "name": r.name,
                    "holder": r.holder if as_utc(r.expires_at) >= now else None,
                    "expires_at": as_utc(r.expires_at),
                    "fence": r.fence,
                }
                for r in s.scalars(select(LeaseRow).order_by(LeaseRow.name))
            ]
        return {"now": now, "servers": servers, "leases": leases}
