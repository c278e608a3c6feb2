"""Cron expressions for schedules: the 5-field grammar the fabric accepts, evaluated by cronsim."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim, CronSimError

from .clock import as_utc

FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_NAMES = {
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "day-of-week": ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
}
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_NUMBER = re.compile(r"[0-9]{1,2}")


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), in UTC.

    Each field takes ``*``, numbers, lists (``1,2``), ranges (``1-5``) and steps
    (``*/15``, ``1-10/3``, ``5/10``); months and weekdays also by their English
    three-letter names. Day of week 0 and 7 are Sunday. As in cron, when both
    day-of-month and day-of-week are restricted, a day matching either matches.

    ``parse`` checks that grammar itself, so that a mistake is named precisely and
    cronsim's extensions (seconds, ``L``, ``#``) stay out; cronsim does the rest.
    """

    text: str  # as given, white space folded
    expr: str  # the five fields as cronsim takes them (an alias expanded)
    fires: bool  # False: it never fires (no month of it has its day of month: 30 February)

    @classmethod
    def parse(cls, text: str) -> Cron:
        """The expression, or ValueError with a message that names the bad field."""
        if not isinstance(text, str):
            raise ValueError("cron must be a string like '0 8 * * 1-5'")
        norm = " ".join(text.split())
        expr = ALIASES.get(norm.lower(), norm)
        parts = expr.split(" ")
        if len(parts) != 5:
            raise ValueError(
                f"cron must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts) if expr else 0}: {norm[:60]!r}"
            )
        expr = " ".join(
            _field(part, name, lo, hi) for part, (name, lo, hi) in zip(parts, FIELDS, strict=True)
        )
        try:
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError:
            # The grammar is checked above: what cronsim still refuses is a day of
            # month that none of the months has where both day fields must match
            # (one of them starts with '*'): an expression that never fires.
            return cls(norm, expr, fires=False)
        return cls(norm, expr, fires=True)

    def next_after(self, t: datetime) -> datetime | None:
        """The first time strictly after ``t`` (UTC, whole minutes) the expression
        fires; None if it never does."""
        return self._first(_minute(t), reverse=False)

    def last_at_or_before(self, t: datetime) -> datetime | None:
        """The last time at or before ``t`` the expression fired; None if it never did."""
        # cronsim's reverse search starts a second before the time it is given.
        return self._first(_minute(t) + timedelta(seconds=1), reverse=True)

    def matches(self, t: datetime) -> bool:
        """Whether the expression fires in the minute of ``t``."""
        return self.last_at_or_before(t) == _minute(t)

    def _first(self, start: datetime, reverse: bool) -> datetime | None:
        if not self.fires:
            return None
        try:
            return next(CronSim(self.expr, start, reverse=reverse))
        except (StopIteration, OverflowError):  # none within 50 years, or past year 9999
            return None


def _minute(t: datetime) -> datetime:
    return as_utc(t).replace(second=0, microsecond=0)


def _field(text: str, name: str, lo: int, hi: int) -> str:
    """The field checked item by item, as cronsim is to read it: ValueError names
    the first bad item."""
    items = []
    for item in text.split(","):
        if not item:
            raise ValueError(f"cron {name}: empty item in {text[:40]!r}")
        span, slash, step = item.partition("/")
        if slash and (not _NUMBER.fullmatch(step) or int(step) == 0):
            raise ValueError(f"cron {name}: step {step[:20]!r} must be 1-99")
        if span != "*":
            first, dash, last = span.partition("-")
            a = _value(first, name, lo, hi)
            b = _value(last, name, lo, hi) if dash else None
            if b is not None and b < a:
                raise ValueError(f"cron {name}: range {span!r} goes backwards")
            if b == a:
                item = first  # cronsim reads "5-5/2" as "5/2" (5, 7, 9, ...): it is just 5
        items.append(item)
    return ",".join(items)


def _value(text: str, name: str, lo: int, hi: int) -> int:
    names = _NAMES.get(name, ())
    if text.lower() in names:
        return names.index(text.lower()) + lo
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"cron {name}: {text[:20]!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"cron {name}: {value} is out of range {lo}-{hi}")
    return value
