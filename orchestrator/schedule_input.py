"""A new schedule, checked: what it adds (VMs of a type and image, or a bigger
pool) and its window (one-off ``start``/``end``, ``repeat`` daily or weekly, or a
``cron`` expression with ``duration_minutes``), turned into the columns the
registry stores. Every problem is a BadRequest (or NotFound) that says what is
wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .clock import iso
from .cron import Cron
from .errors import BadRequest
from .model import NAME_RULE, is_name
from .registry.inventory import InventoryStore

if TYPE_CHECKING:
    from .pools import PoolService

MAX_COUNT = 100  # extra VMs one schedule may ask for
MAX_DURATION = 7 * 24 * 60  # minutes a recurring window may last
MAX_WINDOW = timedelta(days=366)  # length of a one-off window
MAX_CRON = 100  # characters of a cron expression
_INT = re.compile(r"[0-9]{1,20}")


def _present(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def _int(data: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = data.get(key)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        shown = value[:40] if isinstance(value, str) else value
        raise BadRequest(f"{key} must be an integer, got {shown!r}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def parse_time(value: Any, key: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"{key} must be an ISO 8601 time like 2026-05-04T08:00:00Z")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(
            f"{key} is not an ISO 8601 time: {value[:40]!r} (e.g. 2026-05-04T08:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        when = when.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{key} is out of range") from None
    if not 2000 <= when.year <= 2999:
        raise BadRequest(f"{key} must be between the years 2000 and 2999")
    return when.replace(microsecond=0)


def parse_schedule(
    data: Mapping[str, Any], inventory: InventoryStore, pools: PoolService, now: datetime
) -> dict[str, Any]:
    """A new schedule's column values, or BadRequest/NotFound saying what is wrong."""
    name = data.get("name") if _present(data, "name") else "schedule"
    if not is_name(name):
        raise BadRequest(f"name must be {NAME_RULE}")
    out: dict[str, Any] = {"name": name, "tid": None, "image_id": None, "pool": None}
    wants_vms = _present(data, "instance_type") or _present(data, "image_id")
    if _present(data, "pool"):
        if wants_vms:
            raise BadRequest("give either pool, or instance_type and image_id, not both")
        pool = data["pool"]
        if not is_name(pool):
            raise BadRequest("pool must be a pool name")
        if not pools.configured:
            raise BadRequest("no pools are configured on this fabric")
        pools.pool(pool)  # NotFound names it
        out["pool"] = pool
    elif wants_vms:
        for key in ("instance_type", "image_id"):
            if not _present(data, key):
                raise BadRequest(f"{key} is required (with instance_type and image_id)")
        out["tid"] = _int(data, "instance_type", 1, 2**53)
        out["image_id"] = _int(data, "image_id", 1, 2**53)
        inventory.vm_type(out["tid"])  # NotFound: "instance_type N does not exist"
        inventory.image(out["image_id"])
    else:
        raise BadRequest("give what to add: instance_type and image_id, or pool")
    if not _present(data, "count"):
        raise BadRequest("count is required (how many extra VMs)")
    out["count"] = _int(data, "count", 1, MAX_COUNT)

    out.update(_parse_window(data, now))
    return out


def _cron(text: Any, now: datetime, key: str = "cron") -> Cron:
    if not isinstance(text, str) or len(text) > MAX_CRON:
        raise BadRequest(f"{key} must be a string of at most {MAX_CRON} characters")
    try:
        cron = Cron.parse(text)
    except ValueError as e:
        raise BadRequest(str(e) if key == "cron" else f"{key}: {e}") from None
    if cron.next_after(now) is None:
        raise BadRequest(f"{key} {cron.text!r} never fires")
    return cron


_TIME_OF_DAY = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def _parse_window(data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The window's columns: a one-off ``start``/``end``; or ``cron`` with
    ``duration_minutes``; or ``start``/``end`` with ``repeat`` (``daily``, ``weekly``
    or a cron expression), turned into a cron and a duration."""
    out: dict[str, Any] = {"start_at": None, "end_at": None, "cron": None, "duration_minutes": None}
    one_off = _present(data, "start") or _present(data, "end")
    recurring = _present(data, "cron") or _present(data, "duration_minutes")
    repeat = data.get("repeat") if _present(data, "repeat") else "once"
    if repeat != "once" and recurring:
        raise BadRequest("give repeat with start and end, or cron with duration_minutes, not both")
    if one_off and recurring:
        raise BadRequest("give either start and end, or cron and duration_minutes, not both")
    if not one_off and not recurring:
        raise BadRequest(
            "give a window: start and end (ISO 8601, UTC), or cron and duration_minutes"
        )
    if recurring:
        if not _present(data, "cron"):
            raise BadRequest("cron is required with duration_minutes (e.g. '0 8 * * 1-5')")
        if not _present(data, "duration_minutes"):
            raise BadRequest("duration_minutes is required with cron")
        out["cron"] = _cron(data["cron"], now).text
        out["duration_minutes"] = _int(data, "duration_minutes", 1, MAX_DURATION)
        return out
    for key in ("start", "end"):
        if not _present(data, key):
            raise BadRequest(f"{key} is required (a window needs start and end)")
    if repeat == "once":
        start = parse_time(data["start"], "start")
        end = parse_time(data["end"], "end")
        if end <= start:
            raise BadRequest(f"end ({iso(end)}) must be after start ({iso(start)})")
        if end - start > MAX_WINDOW:
            raise BadRequest("a one-off window may last at most 366 days")
        if end <= now:
            raise BadRequest(f"end ({iso(end)}) is in the past")
        out.update(start_at=start, end_at=end)
        return out
    # Repeating: start/end give the time of day (HH:MM, UTC) or a first window.
    times = [data["start"], data["end"]]
    if all(isinstance(t, str) and _TIME_OF_DAY.fullmatch(t.strip()) for t in times):
        (h1, m1), (h2, m2) = (map(int, _TIME_OF_DAY.fullmatch(t.strip()).groups()) for t in times)
        minutes = (h2 * 60 + m2 - h1 * 60 - m1) % (24 * 60)
        if minutes == 0:
            raise BadRequest("end must differ from start")
        first = None
        hour, minute = h1, m1
    else:
        first = parse_time(data["start"], "start")
        end = parse_time(data["end"], "end")
        if end <= first:
            raise BadRequest(f"end ({iso(end)}) must be after start ({iso(first)})")
        minutes = int((end - first).total_seconds() // 60)
        hour, minute = first.hour, first.minute
    if repeat == "daily":
        cron = f"{minute} {hour} * * *"
        longest = 24 * 60
    elif repeat == "weekly":
        if first is None:
            raise BadRequest("a weekly window needs start and end as ISO 8601 times (a weekday)")
        cron = f"{minute} {hour} * * {(first.weekday() + 1) % 7}"
        longest = 7 * 24 * 60
    else:
        cron = _cron(repeat, now, "repeat").text
        longest = MAX_DURATION
    if not 1 <= minutes <= longest:
        raise BadRequest(f"a {repeat} window may last 1 to {longest} minutes, not {minutes}")
    out.update(cron=cron, duration_minutes=minutes)
    return out
