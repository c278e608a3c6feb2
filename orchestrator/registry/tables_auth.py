"""Tables for authentication (they share Base with tables.py).

A token is stored only as its SHA-256: the registry (or a copy of its file) never
holds a usable token. Failed logins are counted per account (``remote`` is
``*``), so a guesser is slowed down whichever server process and address it uses.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .tables import Base, Id, utcnow


class TokenRow(Base):
    """An API token: its SHA-256 (hex), its owner, and when it stops being valid."""

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailureRow(Base):
    """Failed password checks of one account (``remote`` ``*``; earlier versions kept
    one row per address), and until when its next attempt must wait."""

    __tablename__ = "auth_failures"
    __table_args__ = (UniqueConstraint("user", "remote", name="uq_auth_failure"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(128))
    remote: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
