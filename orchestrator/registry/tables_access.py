"""Tables for who owns what (they share Base with tables.py).

``users`` has one row per user the fabric has seen act: the row each quota check
locks, so that two requests of one user never both pass a limit that only one
fits under. ``ssh_keys`` holds the public keys users registered, put into every
guest they check out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .tables import Base, Id, utcnow


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SshKeyRow(Base):
    """A user's public key, as ``TYPE BASE64`` (no options, no comment) and its
    SHA-256 fingerprint (as ``ssh-keygen -l`` shows it)."""

    __tablename__ = "ssh_keys"
    __table_args__ = (
        UniqueConstraint("user", "fingerprint", name="uq_ssh_key"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
