"""Facts about the registry itself (table ``meta``): its schema, its installation
id, secrets every server shares (the session cookie's key), and values kept for
one showing (a reservation id the dashboard shows once, after a redirect)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import Database
from .tables import MetaRow

ONCE = "once:"  # the prefix of one-time values' keys: once:<expiry, epoch s>:<digest>


def _keystream(nonce: str, n: int) -> bytes:
    return hashlib.shake_256(b"fabric-once:" + nonce.encode("ascii")).digest(n)


def _once_key(expires: int, nonce: str) -> str:
    digest = hashlib.sha256(nonce.encode("ascii")).hexdigest()[:32]
    return f"{ONCE}{expires:010d}:{digest}"


class MetaStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._installation: str | None = None

    def create_schema(self) -> None:
        """Bring an empty database to the current schema (Alembic), or check that an
        existing one is at it; then make sure it has an installation id."""
        from .migrate import ensure_schema

        ensure_schema(self.db.engine)
        self._installation = None
        with self.db.tx() as s:
            if s.get(MetaRow, "installation_id") is None:
                s.add(MetaRow(key="installation_id", value=secrets.token_hex(4)))

    def installation_id(self) -> str:
        """A short random id of this registry: it tells our domains from another
        fabric's on shared hosts, and keeps domain names unique between them."""
        if self._installation is None:
            with self.db.read() as s:
                row = s.get(MetaRow, "installation_id")
            if row is None:
                raise Conflict("the registry has no schema yet")
            self._installation = row.value
        return self._installation

    def shared_secret(self, key: str) -> str:
        """The secret stored under ``key``, made (256 random bits, hex) by whichever
        server asks first; every server on this registry gets the same one."""
        with self.db.read() as s:
            row = s.get(MetaRow, key)
            if row is not None:
                return row.value
        try:
            with self.db.tx() as s:
                if s.get(MetaRow, key) is None:
                    s.add(MetaRow(key=key, value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another server made it first: take theirs
        with self.db.read() as s:
            row = s.get(MetaRow, key)
            if row is None:
                raise Conflict(f"the registry lost its {key}")
            return row.value

    # -- values shown once -------------------------------------------------------------

    def put_once(self, value: str, ttl: timedelta) -> str:
        """Keep ``value`` for one ``take_once`` within ``ttl``; return its handle.

        The row holds ``value`` only masked with a key derived from the handle, and
        is found by a digest of it: the registry alone does not give the value
        back, and the handle alone (in a session cookie) is good for one showing.
        Expired values are deleted meanwhile.
        """
        now = int(time.time())
        expires = now + max(1, int(ttl.total_seconds()))
        nonce = secrets.token_urlsafe(24)
        data = value.encode("utf-8")
        masked = bytes(a ^ b for a, b in zip(data, _keystream(nonce, len(data)), strict=True))
        with self.db.tx() as s:
            s.execute(
                delete(MetaRow)
                .where(MetaRow.key >= ONCE, MetaRow.key < f"{ONCE}{now:010d}")
                .execution_options(synchronize_session=False)
            )
            s.add(MetaRow(key=_once_key(expires, nonce), value=base64.b64encode(masked).decode()))
        return f"{expires}.{nonce}"

    def take_once(self, handle: str) -> str | None:
        """The value kept under ``handle``, deleted as it is read; None if it was
        taken already, has expired, or the handle is not one of ours."""
        expires_text, _, nonce = str(handle).partition(".")
        if not expires_text.isdigit() or len(expires_text) > 10 or not 16 <= len(nonce) <= 64:
            return None
        try:
            key = _once_key(int(expires_text), nonce)
        except UnicodeEncodeError:
            return None
        with self.db.tx() as s:
            row = s.get(MetaRow, key)
            if row is None:
                return None
            masked_text = row.value
            taken = s.execute(
                delete(MetaRow)
                .where(MetaRow.key == key)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:
                return None  # another server showed it at the same moment
        if int(expires_text) < time.time():
            return None
        try:
            masked = base64.b64decode(masked_text, validate=True)
        except (ValueError, binascii.Error):
            return None
        data = bytes(a ^ b for a, b in zip(masked, _keystream(nonce, len(masked)), strict=True))
        return data.decode("utf-8", errors="replace")
