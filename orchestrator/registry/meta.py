"""Facts about the registry itself (table ``meta``): its schema and its
installation id."""

from __future__ import annotations

import secrets

from ..errors import Conflict
from .database import Database
from .tables import MetaRow


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
