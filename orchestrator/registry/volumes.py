"""Block-storage volumes (table ``volumes``) and their disk claims.

A volume's state (``VolumeState``) is changed here and nowhere else: every
change is a conditional UPDATE from the states the caller expects, checked
against ``VOLUME_TRANSITIONS``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..errors import NotFound
from ..model import VOLUME_BUSY, VOLUME_TRANSITIONS, VolumeState, check_transition
from .claims import Claims
from .cluster import ClusterStore
from .database import Database
from .quotas import Quota, QuotaStore, Usage
from .tables import EventRow, VolumeRow


class VolumeStore:
    def __init__(
        self,
        db: Database,
        cluster: ClusterStore,
        claims: Claims,
        quotas: QuotaStore,
        installation: Callable[[], str],
    ) -> None:
        self.db = db
        self.cluster = cluster
        self.claims = claims
        self.quotas = quotas
        self._installation = installation

    def claim(
        self,
        host_id: int,
        *,
        name: str,
        size: int,
        created_by: str | None = None,
        quota: Quota | None = None,
    ) -> VolumeRow | None:
        """Claim ``size`` GB on the host and record a ``creating`` volume there, within
        ``quota`` (QuotaExceeded if not); None when the host no longer has the room
        (the caller tries its next candidate)."""
        with self.db.tx() as s:
            self.quotas.check(s, quota, Usage(volumes=1, disk=size))
            self.claims.changes.mark(host_id)
            if not self.claims.take(s, host_id, disk=size, listed_only=False):
                return None
            vol = VolumeRow(
                name=name,
                size=size,
                host_id=host_id,
                status=VolumeState.CREATING,
                vol_name=f"volume-{secrets.token_hex(8)}",
                created_by=created_by,
                owner=self.cluster.server_id,
            )
            s.add(vol)
            s.flush()
            vol.vol_name = f"volume-{self._installation()}-{vol.id}"
            self.claims.record(s, host_id, volume_id=vol.id, disk=size)
            s.add(EventRow(kind="volume.claim", host_id=host_id, detail={"volume": vol.id}))
            return vol

    def get(self, volume_id: int) -> VolumeRow:
        with self.db.read() as s:
            row = s.get(VolumeRow, volume_id)
        if row is None:
            raise NotFound(f"volumeid : {volume_id} does not exist")
        return row

    def list(self, *, vm_id: int | None = None, host_id: int | None = None) -> list[VolumeRow]:
        with self.db.read() as s:
            q = select(VolumeRow).order_by(VolumeRow.id)
            if vm_id is not None:
                q = q.where(VolumeRow.vm_id == vm_id)
            if host_id is not None:
                q = q.where(VolumeRow.host_id == host_id)
            return list(s.scalars(q))

    def transition(
        self,
        volume_id: int,
        to: VolumeState,
        *,
        expect: Iterable[VolumeState],
        unowned: bool = False,
        **values: Any,
    ) -> bool:
        """Move a volume to ``to`` only if it is in one of ``expect``; True if it moved.

        Moving to a busy state (creating, attaching, detaching, deleting) marks this
        server as the volume's owner, any other state clears it; ``unowned``: only
        if no live server is changing it.
        """
        expect = [VolumeState(e) for e in expect]
        check_transition(VOLUME_TRANSITIONS, expect, to, "volume")
        values.setdefault("owner", self.cluster.server_id if to in VOLUME_BUSY else None)
        with self.db.tx() as s:
            q = update(VolumeRow).where(VolumeRow.id == volume_id, VolumeRow.status.in_(expect))
            if unowned:
                q = q.where(self.cluster.free(VolumeRow.owner))
            res = s.execute(
                q.values(status=to, updated_at=utcnow(), **values).execution_options(
                    synchronize_session=False
                )
            )
            return res.rowcount == 1

    def take(self, volume_id: int, status: VolumeState) -> bool:
        """Become the server working on a volume left ``status`` (busy) by one that is
        no longer alive, its status unchanged. True if taken."""
        return self.transition(
            volume_id, status, expect=[status], unowned=True, owner=self.cluster.server_id
        )

    def let_go(self, volume_id: int, status: VolumeState) -> None:
        """Stop working on a volume without changing its status."""
        self.transition(volume_id, status, expect=[status], owner=None)

    def move_claim(self, volume_id: int, to_host: int) -> bool:
        """Move a volume's disk claim to another host (for a copy there); False if it
        does not fit."""
        with self.db.tx() as s:
            vol = s.get(VolumeRow, volume_id)
            if vol is None:
                raise NotFound(f"volumeid : {volume_id} does not exist")
            if not self.claims.take(s, to_host, disk=vol.size, listed_only=False):
                return False
            self.claims.changes.mark(to_host)
            self.claims.release(s, volume_id=volume_id)
            self.claims.record(s, to_host, volume_id=volume_id, disk=vol.size)
            vol.host_id = to_host
            return True

    def forget(self, volume_id: int, *, event_kind: str) -> None:
        """Release the volume's claim and delete its row, in one transaction."""
        with self.db.tx() as s:
            vol = s.get(VolumeRow, volume_id)
            if vol is None:
                return
            self.claims.release(s, volume_id=volume_id)
            s.add(EventRow(kind=event_kind, host_id=vol.host_id, detail={"volume": volume_id}))
            s.delete(vol)

    def lose(self, host_id: int, reason: str, *, local_only: bool = True) -> list[int]:
        """Mark the volumes stored on ``host_id`` (host-local, ``dir``, unless not
        ``local_only``) lost: their host died and was evacuated. Their claims go back;
        attached ones are detached from their VM. Returns their ids."""
        lost = []
        with self.db.tx() as s:
            q = select(VolumeRow).where(
                VolumeRow.host_id == host_id, VolumeRow.status != VolumeState.LOST
            )
            for vol in s.scalars(q):
                if local_only and vol.backend != "dir":
                    continue
                self.claims.release(s, volume_id=vol.id)
                vol.status = VolumeState.LOST
                vol.error = reason
                vol.vm_id = None
                vol.target = None
                vol.owner = None
                vol.updated_at = utcnow()
                s.add(
                    EventRow(
                        kind="volume.lost",
                        host_id=host_id,
                        detail={"volume": vol.id, "reason": reason},
                    )
                )
                lost.append(vol.id)
        return lost

    def release_vm(self, s: Session, vm_id: int) -> None:
        """In the caller's transaction: the VM is gone, so its volumes are detached
        and available, data kept."""
        s.execute(
            update(VolumeRow)
            .where(VolumeRow.vm_id == vm_id)
            .values(status=VolumeState.AVAILABLE, vm_id=None, target=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
