"""Users' SSH public keys (table ``ssh_keys``)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, NotFound
from .database import Database
from .tables import EventRow
from .tables_access import SshKeyRow

MAX_KEYS = 32  # per user


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, user: str, name: str, key: str, fingerprint: str) -> SshKeyRow:
        try:
            with self.db.tx() as s:
                n = s.scalar(select(func.count()).where(SshKeyRow.user == user)) or 0
                if n >= MAX_KEYS:
                    raise Conflict(f"user {user} already has {MAX_KEYS} keys; remove one first")
                row = SshKeyRow(user=user, name=name, key=key, fingerprint=fingerprint)
                s.add(row)
                s.flush()
                s.add(EventRow(kind="key.add", detail={"user": user, "key": fingerprint}))
                return row
        except IntegrityError:
            raise Conflict(f"user {user} has this key already ({fingerprint})") from None

    def list(self, user: str | None = None) -> list[SshKeyRow]:
        """One user's keys (None: everyone's)."""
        with self.db.read() as s:
            q = select(SshKeyRow).order_by(SshKeyRow.id)
            if user is not None:
                q = q.where(SshKeyRow.user == user)
            return list(s.scalars(q))

    def get(self, key_id: int) -> SshKeyRow:
        with self.db.read() as s:
            row = s.get(SshKeyRow, key_id)
        if row is None:
            raise NotFound(f"keyid {key_id} does not exist")
        return row

    def remove(self, key_id: int) -> None:
        with self.db.tx() as s:
            row = s.get(SshKeyRow, key_id)
            if row is None:
                raise NotFound(f"keyid {key_id} does not exist")
            s.execute(delete(SshKeyRow).where(SshKeyRow.id == key_id))
            s.add(EventRow(kind="key.remove", detail={"user": row.user, "key": row.fingerprint}))
