"""Scheduled capacity (seed 004): extra VMs, or a bigger pool, during peak windows.

A schedule names what to add (``count`` plain VMs of a type and image, or ``count``
more ready VMs in a pool) and when: a one-off window (``start``/``end``) or a
recurring one (a 5-field ``cron`` expression, in UTC, plus ``duration_minutes``).

``ScheduleService.tick()`` does one pass: a window that is open and not yet
started starts (the VMs are created, or the pool's size is raised); a window
that is over ends (its VMs are destroyed, or the pool goes back and its surplus
ready VMs are removed). Every window is a row in ``schedule_runs`` with how far
it got (``wanted``, ``made``, ``last_error``) and every VM it made a row in
``schedule_vms``, so a restart carries on: a window that opened while the fabric
was down is caught up if it is still open, one that closed before it came back
is skipped, and a start that could not be fully met (no capacity) is retried on
every pass while its window is open. Overlapping schedules add up.
"""

from __future__ import annotations

import calendar
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .clock import as_utc as _aware
from .errors import BadRequest, Conflict, FabricError, NotFound, Unavailable
from .fabric import iso
from .model import VmState
from .registry.tables_schedules import ScheduleRow, ScheduleRunRow, ScheduleVmRow

if TYPE_CHECKING:
    from .fabric import Fabric
    from .pools import PoolService

log = logging.getLogger(__name__)

MAX_COUNT = 100  # extra VMs one schedule may ask for
MAX_DURATION = 7 * 24 * 60  # minutes a recurring window may last
MAX_WINDOW = timedelta(days=366)  # length of a one-off window
SEARCH_DAYS = 366 * 9  # how far a cron search looks (Feb 29 can be 8 years apart)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INT = re.compile(r"[0-9]{1,20}")

ACTIVE, ENDING, DONE = "active", "ending", "done"


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- cron ----------------------------------------------------------------------

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), in UTC.

    Each field takes ``*``, numbers, lists (``1,2``), ranges (``1-5``) and steps
    (``*/15``, ``1-10/3``, ``5/10``); months and weekdays also by their English
    three-letter names. Day of week 0 and 7 are Sunday. As in cron, when both
    day-of-month and day-of-week are restricted, a day matching either matches.
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month starts with '*'
    any_weekday: bool  # day-of-week starts with '*'

    @classmethod
    def parse(cls, text: str) -> Cron:
        """The expression, or ValueError with a message that names the bad field."""
        if not isinstance(text, str):
            raise ValueError("cron must be a string like '0 8 * * 1-5'")
        norm = " ".join(text.split())
        expr = _ALIASES.get(norm.lower(), norm)
        parts = expr.split(" ")
        if len(parts) != 5:
            raise ValueError(
                f"cron must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts) if expr else 0}: {norm[:60]!r}"
            )
        sets = [
            _cron_field(part, name, lo, hi)
            for part, (name, lo, hi) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(
            text=norm,
            minutes=tuple(sorted(sets[0])),
            hours=tuple(sorted(sets[1])),
            days=frozenset(sets[2]),
            months=frozenset(sets[3]),
            weekdays=weekdays,
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def matches(self, t: datetime) -> bool:
        return self.day_matches(t.date()) and t.hour in self.hours and t.minute in self.minutes

    def next_after(self, t: datetime) -> datetime | None:
        """The first time strictly after ``t`` (UTC, whole minutes) the expression fires;
        None if it does not fire within about nine years."""
        start = _aware(t).replace(second=0, microsecond=0) + timedelta(minutes=1)
        first = start.date()
        try:
            for i in range(SEARCH_DAYS):
                day = first + timedelta(days=i)
                if not self.day_matches(day):
                    continue
                for h in self.hours:
                    if i == 0 and h < start.hour:
                        continue
                    for m in self.minutes:
                        if i == 0 and h == start.hour and m < start.minute:
                            continue
                        return datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
        except OverflowError:
            return None
        return None

    def last_at_or_before(self, t: datetime) -> datetime | None:
        """The last time at or before ``t`` the expression fired; None if not within
        about nine years."""
        end = _aware(t).replace(second=0, microsecond=0)
        last = end.date()
        try:
            for i in range(SEARCH_DAYS):
                day = last - timedelta(days=i)
                if not self.day_matches(day):
                    continue
                for h in reversed(self.hours):
                    if i == 0 and h > end.hour:
                        continue
                    for m in reversed(self.minutes):
                        if i == 0 and h == end.hour and m > end.minute:
                            continue
                        return datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
        except OverflowError:
            return None
        return None


def _cron_value(text: str, name: str, lo: int, hi: int) -> int:
    names = _MONTHS if name == "month" else _DAYS if name == "day-of-week" else {}
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[0-9]{1,2}", text):
        raise ValueError(f"cron {name}: {text[:20]!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"cron {name}: {value} is out of range {lo}-{hi}")
    return value


def _cron_field(text: str, name: str, lo: int, hi: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"cron {name}: empty item in {text[:40]!r}")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not re.fullmatch(r"[0-9]{1,2}", step_text) or int(step_text) == 0:
                raise ValueError(f"cron {name}: step {step_text[:20]!r} must be 1-99")
            step = int(step_text)
        if span == "*":
            a, b = lo, hi
        elif "-" in span:
            first, _, second = span.partition("-")
            a = _cron_value(first, name, lo, hi)
            b = _cron_value(second, name, lo, hi)
            if a > b:
                raise ValueError(f"cron {name}: range {span!r} goes backwards")
        else:
            a = _cron_value(span, name, lo, hi)
            b = hi if slash else a
        values.update(range(a, b + 1, step))
    return values


# -- validation of a new schedule ----------------------------------------------


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
    data: Mapping[str, Any], fabric: Fabric, pools: PoolService | None, now: datetime
) -> dict[str, Any]:
    """A new schedule's column values, or BadRequest/NotFound saying what is wrong."""
    name = data.get("name") if _present(data, "name") else "schedule"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest(
            "name must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    out: dict[str, Any] = {"name": name, "tid": None, "image_id": None, "pool": None}
    wants_vms = _present(data, "instance_type") or _present(data, "image_id")
    if _present(data, "pool"):
        if wants_vms:
            raise BadRequest("give either pool, or instance_type and image_id, not both")
        pool = data["pool"]
        if not isinstance(pool, str) or not _NAME.fullmatch(pool):
            raise BadRequest("pool must be a pool name")
        if pools is None:
            raise BadRequest("no pools are configured on this fabric")
        pools.pool(pool)  # NotFound names it
        out["pool"] = pool
    elif wants_vms:
        for key in ("instance_type", "image_id"):
            if not _present(data, key):
                raise BadRequest(f"{key} is required (with instance_type and image_id)")
        out["tid"] = _int(data, "instance_type", 1, 2**53)
        out["image_id"] = _int(data, "image_id", 1, 2**53)
        fabric.registry.vm_type(out["tid"])  # NotFound: "instance_type N does not exist"
        fabric.registry.image(out["image_id"])
    else:
        raise BadRequest("give what to add: instance_type and image_id, or pool")
    if not _present(data, "count"):
        raise BadRequest("count is required (how many extra VMs)")
    out["count"] = _int(data, "count", 1, MAX_COUNT)

    out.update(_parse_window(data, now))
    return out


def _cron(text: Any, now: datetime, key: str = "cron") -> Cron:
    if not isinstance(text, str) or len(text) > 100:
        raise BadRequest(f"{key} must be a string of at most 100 characters")
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


# -- the service ---------------------------------------------------------------


class ScheduleService:
    """Starts and ends scheduled windows. ``tick()`` is one pass; ``start()`` runs it
    every ``schedules.interval`` seconds in a thread. Safe to call from threads."""

    LEASE = "schedules"

    def __init__(
        self,
        fabric: Fabric,
        pools: PoolService | None = None,
        clock: Callable[[], datetime] = now_utc,
        *,
        on_pool_change: Callable[[], None] | None = None,
    ) -> None:
        self.fabric = fabric
        self.registry = fabric.registry
        self.pools = pools
        self.clock = clock
        self.on_pool_change = on_pool_change  # e.g. Worker.wake: refill at once
        self.interval = fabric.config.schedules.interval
        self.cluster: Any = None  # with several servers, passes run on the lease holder
        self._lock = threading.RLock()  # one pass or teardown at a time
        self._cancel: set[int] = set()  # schedules being deleted: stop creating for them
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- background --------------------------------------------------------

    def start(self) -> None:
        self.apply_pool_extra()  # the pools are right before the first pass
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.cluster is None or self.cluster.holds(self.LEASE):
                    self.tick()
                else:
                    self.apply_pool_extra()  # another server runs them; follow its windows
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("schedule pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- API ---------------------------------------------------------------

    def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a schedule; its window starts on the next pass."""
        values = parse_schedule(data, self.fabric, self.pools, self.clock())
        with self.registry.tx() as s:
            row = ScheduleRow(**values)
            s.add(row)
            s.flush()
            sid = row.id
        log.info("schedule %d (%s) created", sid, values["name"])
        self.wake()
        return self.get(sid)

    def list(self) -> list[dict[str, Any]]:
        return [self._describe(*item) for item in self._load()]

    def get(self, sid: int) -> dict[str, Any]:
        found = self._load(sid)
        if not found:
            raise NotFound(f"schedule {sid} does not exist")
        return self._describe(*found[0])

    def delete(self, sid: int, force: bool = False) -> None:
        """Delete a schedule. An active one (window open, extra VMs present) only with
        ``force``: its VMs are destroyed (or its pool lowered back) first."""
        row = self._schedule(sid)
        if self._open_run(sid) is not None and not force:
            raise self._active_conflict(row)
        self._cancel.add(sid)
        try:
            with self._lock:
                row = self._schedule(sid)
                run = self._open_run(sid)
                if run is not None and not force:
                    raise self._active_conflict(row)
                if run is None:
                    self._delete_rows(sid)
                    log.info("schedule %d deleted", sid)
                    return
                with self.registry.tx() as s:
                    s.execute(
                        update(ScheduleRow).where(ScheduleRow.id == sid).values(cancelled=True)
                    )
                if not self._finish_cancelled(row):
                    run = self._open_run(sid)
                    why = run.last_error if run is not None else "unknown"
                    raise Unavailable(
                        f"schedule {sid} is cancelled but not all of its VMs could be removed "
                        f"yet ({why}); the fabric keeps trying"
                    )
                log.info("schedule %d ended early and deleted", sid)
        finally:
            self._cancel.discard(sid)

    def _active_conflict(self, row: ScheduleRow) -> Conflict:
        what = f"pool {row.pool}'s extra VMs" if row.pool else "its extra VMs"
        return Conflict(
            f"schedule {row.id} is active; delete it with force=1 to end it now "
            f"({what} are removed)"
        )

    # -- one pass ----------------------------------------------------------

    def tick(self) -> None:
        """One pass over every schedule at ``clock()``."""
        with self._lock:
            now = self.clock()
            for row in self._schedules():
                if self._stop.is_set():
                    break
                try:
                    if row.cancelled:
                        self._finish_cancelled(row)
                    else:
                        self._tick_one(row, now)
                except Exception:  # noqa: BLE001 - one schedule must not stop the others
                    log.exception("schedule %d: pass failed", row.id)
            self.apply_pool_extra()

    def _tick_one(self, row: ScheduleRow, now: datetime) -> None:
        run = self._open_run(row.id)
        if run is not None and run.phase == ENDING:
            if not self._end(row, run, now):
                return  # its VMs are not all gone yet: no new window before they are
            run = None
        window = self.window_at(row, now)
        if run is not None:
            end = _aware(run.window_end)
            if window is not None and window[0] > _aware(run.window_start) and window[1] > end:
                # A recurring window opened again while this one was still open: merge.
                self._update_run(run.id, window_end=window[1])
                end = window[1]
            if now >= end:
                self._end(row, run, now)
            else:
                self._fill(row, run)
            return
        if window is None or self._has_run(row.id, window[0]):
            return
        run = self._begin(row, window)
        if run is not None:
            self._fill(row, run)

    @staticmethod
    def window_at(row: ScheduleRow, now: datetime) -> tuple[datetime, datetime] | None:
        """The schedule's window that is open at ``now`` (start <= now < end), if any."""
        if row.cron:
            last = Cron.parse(row.cron).last_at_or_before(now)
            if last is None:
                return None
            end = last + timedelta(minutes=row.duration_minutes or 0)
            return (last, end) if now < end else None
        if row.start_at is None or row.end_at is None:
            return None
        start, end = _aware(row.start_at), _aware(row.end_at)
        return (start, end) if start <= now < end else None

    def _begin(self, row: ScheduleRow, window: tuple[datetime, datetime]) -> ScheduleRunRow | None:
        try:
            with self.registry.tx() as s:
                run = ScheduleRunRow(
                    schedule_id=row.id,
                    window_start=window[0],
                    window_end=window[1],
                    phase=ACTIVE,
                    wanted=row.count,
                    made=0,
                )
                s.add(run)
        except IntegrityError:
            return None  # this window was started already
        log.info(
            "schedule %d (%s): window %s-%s starts",
            row.id,
            row.name,
            iso(window[0]),
            iso(window[1]),
        )
        self.registry.record_event(
            "schedule.start", detail={"schedule": row.id, "window_start": iso(window[0])}
        )
        return run

    def _fill(self, row: ScheduleRow, run: ScheduleRunRow) -> None:
        """Make what the window still lacks; record how far it got."""
        if row.pool:
            if self.pools is None or row.pool not in self.pools.pools:
                self._update_run(run.id, last_error=f"pool {row.pool!r} is not configured")
            elif run.made < run.wanted or run.last_error:
                self._update_run(run.id, made=run.wanted, last_error=None)
            return
        made = run.made
        while made < run.wanted:
            if row.id in self._cancel or self._stop.is_set():
                return
            try:
                vm = self.fabric.create_vm(f"{row.name[:58]}-{made + 1}", row.tid, row.image_id)
            except FabricError as e:
                log.warning(
                    "schedule %d: made %d of %d VMs: %s", row.id, made, run.wanted, e.message
                )
                self._update_run(run.id, last_error=e.message)
                return
            made += 1
            with self.registry.tx() as s:
                s.add(ScheduleVmRow(schedule_id=row.id, run_id=run.id, vm_id=vm.id))
                values: dict[str, Any] = {"made": made}
                if made >= run.wanted:
                    values["last_error"] = None
                s.execute(
                    update(ScheduleRunRow).where(ScheduleRunRow.id == run.id).values(**values)
                )

    def _end(self, row: ScheduleRow, run: ScheduleRunRow, now: datetime) -> bool:
        """The window is over: remove what it added. True once all is gone."""
        if run.phase == ACTIVE:
            self._update_run(run.id, phase=ENDING)
            log.info("schedule %d (%s): window ends", row.id, row.name)
        errors: list[str] = []
        if row.pool:
            self.apply_pool_extra()
            errors = self._trim_pool(row.pool, run.made)
            done = True  # surplus ready VMs are removed at best effort; the pool goes on
        else:
            for link in self._links(run.id):
                try:
                    self.fabric.destroy_vm(link.vm_id, force=True)
                except NotFound:
                    pass  # destroyed by someone else already
                except FabricError as e:
                    errors.append(f"vmid {link.vm_id}: {e.message}")
                    continue
                with self.registry.tx() as s:
                    s.execute(delete(ScheduleVmRow).where(ScheduleVmRow.id == link.id))
            done = not errors
        values: dict[str, Any] = {"last_error": "; ".join(errors)[:2000] if errors else None}
        if done:
            values.update(phase=DONE, ended_at=now)
            self.registry.record_event(
                "schedule.end", detail={"schedule": row.id, "made": run.made}
            )
        self._update_run(run.id, **values)
        return done

    def _finish_cancelled(self, row: ScheduleRow) -> bool:
        """End a cancelled schedule's window now and delete it. True if it is gone."""
        now = self.clock()
        for run in self._runs(row.id, phases=(ACTIVE, ENDING)):
            if not self._end(row, run, now):
                return False
        self._delete_rows(row.id)
        self.apply_pool_extra()
        return True

    def _trim_pool(self, pool: str, most: int) -> list[str]:
        """Remove ready VMs the pool no longer wants now that its size went back down
        (at most ``most``, what this window added). Checked-out VMs are never touched:
        only a ``ready`` VM is taken, atomically, so a concurrent check-out wins."""
        if self.pools is None or pool not in self.pools.pools:
            return []
        p = self.pools.pools[pool]
        target = p.size + self.pools.extra.get(pool, 0)
        st = self.pools.status().get(pool, {})
        surplus = min(most, st.get("ready", 0) + st.get("building", 0) - target)
        errors: list[str] = []
        ready = [vm for vm in self.registry.vms(states=[VmState.READY]) if vm.pool == pool]
        for vm in reversed(ready):
            if surplus <= 0:
                break
            if not self.registry.transition(vm.id, VmState.DELETING, expect=[VmState.READY]):
                continue  # checked out meanwhile
            try:
                self.fabric.destroy_vm(vm.id, taken=True)
            except FabricError as e:
                self.registry.transition(vm.id, VmState.READY, expect=[VmState.DELETING])
                errors.append(f"vmid {vm.id}: {e.message}")
                continue
            surplus -= 1
        return errors

    def apply_pool_extra(self) -> None:
        """Set each pool's extra size to the sum of its open windows' counts."""
        if self.pools is None:
            return
        want = dict.fromkeys(self.pools.pools, 0)
        with self.registry.read() as s:
            q = (
                select(ScheduleRow.pool, ScheduleRow.count)
                .join(ScheduleRunRow, ScheduleRunRow.schedule_id == ScheduleRow.id)
                .where(ScheduleRow.pool.is_not(None), ScheduleRunRow.phase == ACTIVE)
            )
            for pool, count in s.execute(q):
                if pool in want:
                    want[pool] += count
        changed = False
        for name, n in want.items():
            if self.pools.extra.get(name, 0) != n:
                self.pools.set_extra(name, n)
                changed = True
        if changed and self.on_pool_change is not None:
            self.on_pool_change()

    # -- registry ----------------------------------------------------------

    def _schedules(self) -> list[ScheduleRow]:
        with self.registry.read() as s:
            return list(s.scalars(select(ScheduleRow).order_by(ScheduleRow.id)))

    def _schedule(self, sid: int) -> ScheduleRow:
        with self.registry.read() as s:
            row = s.get(ScheduleRow, sid)
        if row is None:
            raise NotFound(f"schedule {sid} does not exist")
        return row

    def _runs(self, sid: int, phases: Iterable[str] | None = None) -> list[ScheduleRunRow]:
        with self.registry.read() as s:
            q = select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == sid)
            if phases is not None:
                q = q.where(ScheduleRunRow.phase.in_(list(phases)))
            return list(s.scalars(q.order_by(ScheduleRunRow.id)))

    def _open_run(self, sid: int) -> ScheduleRunRow | None:
        runs = self._runs(sid, phases=(ACTIVE, ENDING))
        return runs[0] if runs else None

    def _has_run(self, sid: int, window_start: datetime) -> bool:
        with self.registry.read() as s:
            q = select(ScheduleRunRow.id).where(
                ScheduleRunRow.schedule_id == sid, ScheduleRunRow.window_start == window_start
            )
            return s.scalar(q) is not None

    def _links(self, run_id: int) -> list[ScheduleVmRow]:
        with self.registry.read() as s:
            q = select(ScheduleVmRow).where(ScheduleVmRow.run_id == run_id)
            return list(s.scalars(q.order_by(ScheduleVmRow.id)))

    def _update_run(self, run_id: int, **values: Any) -> None:
        with self.registry.tx() as s:
            s.execute(update(ScheduleRunRow).where(ScheduleRunRow.id == run_id).values(**values))

    def _delete_rows(self, sid: int) -> None:
        with self.registry.tx() as s:
            s.execute(delete(ScheduleVmRow).where(ScheduleVmRow.schedule_id == sid))
            s.execute(delete(ScheduleRunRow).where(ScheduleRunRow.schedule_id == sid))
            s.execute(delete(ScheduleRow).where(ScheduleRow.id == sid))

    def _load(
        self, sid: int | None = None
    ) -> list[tuple[ScheduleRow, ScheduleRunRow | None, list[int]]]:
        """Schedules with their latest window and the VMs it holds, in one snapshot."""
        with self.registry.read() as s:
            q = select(ScheduleRow).order_by(ScheduleRow.id)
            if sid is not None:
                q = q.where(ScheduleRow.id == sid)
            rows = list(s.scalars(q))
            latest: dict[int, ScheduleRunRow] = {}
            runs = select(ScheduleRunRow).order_by(ScheduleRunRow.id)
            if sid is not None:
                runs = runs.where(ScheduleRunRow.schedule_id == sid)
            for run in s.scalars(runs):
                latest[run.schedule_id] = run
            vms: dict[int, list[int]] = {}
            links = select(ScheduleVmRow).order_by(ScheduleVmRow.id)
            if sid is not None:
                links = links.where(ScheduleVmRow.schedule_id == sid)
            for link in s.scalars(links):
                vms.setdefault(link.run_id, []).append(link.vm_id)
        return [
            (r, latest.get(r.id), vms.get(latest[r.id].id, []) if r.id in latest else [])
            for r in rows
        ]

    def _describe(
        self, row: ScheduleRow, run: ScheduleRunRow | None, vmids: list[int]
    ) -> dict[str, Any]:
        now = self.clock()
        out: dict[str, Any] = {"id": row.id, "name": row.name}
        if row.pool:
            out["pool"] = row.pool
        else:
            out["instance_type"] = row.tid
            out["image_id"] = row.image_id
        out["count"] = row.count
        next_start: datetime | None = None
        if row.cron:
            out["cron"] = row.cron
            out["duration_minutes"] = row.duration_minutes
            try:
                next_start = Cron.parse(row.cron).next_after(now)
            except ValueError:
                next_start = None
        else:
            out["start"] = iso(row.start_at) if row.start_at else None
            out["end"] = iso(row.end_at) if row.end_at else None
        if run is not None and run.phase in (ACTIVE, ENDING):
            state = "active"
        elif row.cron:
            state = "pending"
        elif run is not None or (row.end_at is not None and now >= _aware(row.end_at)):
            state = "done"
            if run is None:
                out["skipped"] = True  # its whole window passed while the fabric was down
        else:
            state = "pending"
            next_start = _aware(row.start_at) if row.start_at else None
        out["state"] = state
        if row.cancelled:
            out["cancelled"] = True
        out["next_start"] = iso(next_start) if next_start and state != "active" else None
        progress = None
        if run is not None:
            progress = {
                "window_start": iso(run.window_start),
                "window_end": iso(run.window_end),
                "phase": run.phase,
                "wanted": run.wanted,
                "made": run.made,
                "last_error": run.last_error,
            }
            if not row.pool:
                progress["vmids"] = vmids
        out["progress"] = progress
        return out
