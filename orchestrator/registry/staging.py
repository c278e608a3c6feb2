"""Images already copied onto hosts (table ``staged_images``), so that later
creates on the same host reuse the copy."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .database import Database
from .tables import StagedImageRow


class StagingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, host_id: int, image_id: int) -> StagedImageRow | None:
        with self.db.read() as s:
            return s.scalar(
                select(StagedImageRow).where(
                    StagedImageRow.host_id == host_id, StagedImageRow.image_id == image_id
                )
            )

    def record(self, host_id: int, image_id: int, path: str, size: int) -> None:
        try:
            with self.db.tx() as s:
                s.add(StagedImageRow(host_id=host_id, image_id=image_id, path=path, size=size))
        except IntegrityError:
            pass  # another create staged it at the same time: same content, same path

    def forget(self, host_id: int, image_id: int) -> None:
        """The copy on the host is not to be trusted: the next create copies again."""
        with self.db.tx() as s:
            s.execute(
                delete(StagedImageRow).where(
                    StagedImageRow.host_id == host_id, StagedImageRow.image_id == image_id
                )
            )
