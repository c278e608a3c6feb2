"""Time in UTC, the one zone the registry stores (SQLite hands datetimes back naive)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """A datetime from the registry, made zone-aware: naive ones were written in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(when: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: 2026-11-22T02:25:13Z."""
    return as_utc(when).isoformat(timespec="seconds").replace("+00:00", "Z")
