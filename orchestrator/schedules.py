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

import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .clock import as_utc as _aware
from .clock import iso
from .cron import Cron
from .errors import BadRequest, Conflict, FabricError, NotFound, Unavailable
from .model import NAME_RULE, Lease, SchedulePhase, ScheduleState, VmState, is_name
from .periodic import PeriodicWorker
from .registry import Registry
from .registry.inventory import InventoryStore
from .registry.tables_schedules import ScheduleRow, ScheduleRunRow

if TYPE_CHECKING:
    from .cluster import Cluster
    from .fabric import Fabric
    from .pools import PoolService
    from .worker import Worker

log = logging.getLogger(__name__)

MAX_COUNT = 100  # extra VMs one schedule may ask for
MAX_DURATION = 7 * 24 * 60  # minutes a recurring window may last
MAX_WINDOW = timedelta(days=366)  # length of a one-off window
_INT = re.compile(r"[0-9]{1,20}")

OPEN_PHASES = (SchedulePhase.ACTIVE, SchedulePhase.ENDING)  # a window that is not over


def now_utc() -> datetime:
    return datetime.now(UTC)


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


class ScheduleService(PeriodicWorker):
    """Starts and ends scheduled windows. ``tick()`` is one pass, run every
    ``schedules.interval`` seconds on the server holding the schedules lease.
    Safe to call from threads."""

    name = "schedules"

    def __init__(
        self,
        registry: Registry,
        fabric: Fabric,
        pools: PoolService,
        refill: Worker | None = None,
        *,
        interval: float = 30.0,
        clock: Callable[[], datetime] = now_utc,
        cluster: Cluster | None = None,
    ) -> None:
        super().__init__(interval, lease=Lease.SCHEDULES, cluster=cluster)
        self.registry = registry
        self.store = registry.schedules
        self.fabric = fabric
        self.pools = pools
        self.refill = refill  # woken when a pool's size changes
        self.clock = clock
        self._lock = threading.RLock()  # one pass or teardown at a time
        self._cancel: set[int] = set()  # schedules being deleted: stop creating for them

    # -- background --------------------------------------------------------

    def start(self) -> None:
        self.apply_pool_extra()  # the pools are right before the first pass
        super().start()

    def run_once(self) -> None:
        self.tick()

    def follow(self) -> None:
        self.apply_pool_extra()  # another server runs them; follow its windows

    # -- API ---------------------------------------------------------------

    def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a schedule; its window starts on the next pass."""
        values = parse_schedule(data, self.registry.inventory, self.pools, self.clock())
        sid = self.store.add(values)
        log.info("schedule %d (%s) created", sid, values["name"])
        self.wake()
        return self.get(sid)

    def list(self) -> list[dict[str, Any]]:
        return [self._describe(*item) for item in self.store.with_latest()]

    def get(self, sid: int) -> dict[str, Any]:
        found = self.store.with_latest(sid)
        if not found:
            raise NotFound(f"schedule {sid} does not exist")
        return self._describe(*found[0])

    def delete(self, sid: int, force: bool = False) -> None:
        """Delete a schedule. An active one (window open, extra VMs present) only with
        ``force``: its VMs are destroyed (or its pool lowered back) first."""
        row = self.store.get(sid)
        if self.store.open_run(sid) is not None and not force:
            raise self._active_conflict(row)
        self._cancel.add(sid)
        try:
            with self._lock:
                row = self.store.get(sid)
                run = self.store.open_run(sid)
                if run is not None and not force:
                    raise self._active_conflict(row)
                if run is None:
                    self.store.delete(sid)
                    log.info("schedule %d deleted", sid)
                    return
                self.store.cancel(sid)
                if not self._finish_cancelled(row):
                    run = self.store.open_run(sid)
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
            for row in self.store.all():
                if self.stopping:
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
        run = self.store.open_run(row.id)
        if run is not None and run.phase == SchedulePhase.ENDING:
            if not self._end(row, run, now):
                return  # its VMs are not all gone yet: no new window before they are
            run = None
        window = self.window_at(row, now)
        if run is not None:
            end = _aware(run.window_end)
            if window is not None and window[0] > _aware(run.window_start) and window[1] > end:
                # A recurring window opened again while this one was still open: merge.
                self.store.update_run(run.id, window_end=window[1])
                end = window[1]
            if now >= end:
                self._end(row, run, now)
            else:
                self._fill(row, run)
            return
        if window is None or self.store.has_run(row.id, window[0]):
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
        run = self.store.begin(row.id, window[0], window[1], row.count)
        if run is None:
            return None  # this window was started already
        log.info(
            "schedule %d (%s): window %s-%s starts",
            row.id,
            row.name,
            iso(window[0]),
            iso(window[1]),
        )
        self.registry.events.record(
            "schedule.start", detail={"schedule": row.id, "window_start": iso(window[0])}
        )
        return run

    def _fill(self, row: ScheduleRow, run: ScheduleRunRow) -> None:
        """Make what the window still lacks; record how far it got."""
        if row.pool:
            if row.pool not in self.pools.pools:
                self.store.update_run(run.id, last_error=f"pool {row.pool!r} is not configured")
            elif run.made < run.wanted or run.last_error:
                self.store.update_run(run.id, made=run.wanted, last_error=None)
            return
        made = run.made
        while made < run.wanted:
            if row.id in self._cancel or self.stopping:
                return
            try:
                vm = self.fabric.create_vm(f"{row.name[:58]}-{made + 1}", row.tid, row.image_id)
            except FabricError as e:
                log.warning(
                    "schedule %d: made %d of %d VMs: %s", row.id, made, run.wanted, e.message
                )
                self.store.update_run(run.id, last_error=e.message)
                return
            made += 1
            self.store.add_vm(row.id, run.id, vm.id, made=made, complete=made >= run.wanted)

    def _end(self, row: ScheduleRow, run: ScheduleRunRow, now: datetime) -> bool:
        """The window is over: remove what it added. True once all is gone."""
        if run.phase == SchedulePhase.ACTIVE:
            self.store.update_run(run.id, advance=(SchedulePhase.ACTIVE, SchedulePhase.ENDING))
            log.info("schedule %d (%s): window ends", row.id, row.name)
        errors: list[str] = []
        if row.pool:
            self.apply_pool_extra()
            errors = self._trim_pool(row.pool, run.made)
            done = True  # surplus ready VMs are removed at best effort; the pool goes on
        else:
            for link in self.store.vms_of(run.id):
                try:
                    self.fabric.destroy_vm(link.vm_id, force=True)
                except NotFound:
                    pass  # destroyed by someone else already
                except FabricError as e:
                    errors.append(f"vmid {link.vm_id}: {e.message}")
                    continue
                self.store.drop_vm(link.id)
            done = not errors
        last_error = "; ".join(errors)[:2000] if errors else None
        if done:
            self.store.update_run(
                run.id,
                advance=(SchedulePhase.ENDING, SchedulePhase.DONE),
                last_error=last_error,
                ended_at=now,
            )
            self.registry.events.record(
                "schedule.end", detail={"schedule": row.id, "made": run.made}
            )
        else:
            self.store.update_run(run.id, last_error=last_error)
        return done

    def _finish_cancelled(self, row: ScheduleRow) -> bool:
        """End a cancelled schedule's window now and delete it. True if it is gone."""
        now = self.clock()
        for run in self.store.runs(row.id, phases=OPEN_PHASES):
            if not self._end(row, run, now):
                return False
        self.store.delete(row.id)
        self.apply_pool_extra()
        return True

    def _trim_pool(self, pool: str, most: int) -> list[str]:
        """Remove ready VMs the pool no longer wants now that its size went back down
        (at most ``most``, what this window added). Checked-out VMs are never touched:
        only a ``ready`` VM is taken, atomically, so a concurrent check-out wins."""
        if pool not in self.pools.pools:
            return []
        p = self.pools.pools[pool]
        target = p.size + self.pools.extra.get(pool, 0)
        st = self.pools.status().get(pool, {})
        surplus = min(most, st.get("ready", 0) + st.get("building", 0) - target)
        errors: list[str] = []
        ready = [vm for vm in self.registry.vms.list(states=[VmState.READY]) if vm.pool == pool]
        for vm in reversed(ready):
            if surplus <= 0:
                break
            if not self.registry.vms.transition(vm.id, VmState.DELETING, expect=[VmState.READY]):
                continue  # checked out meanwhile
            try:
                self.fabric.destroy_vm(vm.id, taken=True)
            except FabricError as e:
                self.registry.vms.transition(vm.id, VmState.READY, expect=[VmState.DELETING])
                errors.append(f"vmid {vm.id}: {e.message}")
                continue
            surplus -= 1
        return errors

    def apply_pool_extra(self) -> None:
        """Set each pool's extra size to the sum of its open windows' counts."""
        want = dict.fromkeys(self.pools.pools, 0)
        for pool, n in self.store.pool_extra().items():
            if pool in want:
                want[pool] = n
        changed = False
        for name, n in want.items():
            if self.pools.extra.get(name, 0) != n:
                self.pools.set_extra(name, n)
                changed = True
        if changed and self.refill is not None:
            self.refill.wake()

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
        if run is not None and run.phase in OPEN_PHASES:
            state = ScheduleState.ACTIVE
        elif row.cron:
            state = ScheduleState.PENDING
        elif run is not None or (row.end_at is not None and now >= _aware(row.end_at)):
            state = ScheduleState.DONE
            if run is None:
                out["skipped"] = True  # its whole window passed while the fabric was down
        else:
            state = ScheduleState.PENDING
            next_start = _aware(row.start_at) if row.start_at else None
        out["state"] = state
        if row.cancelled:
            out["cancelled"] = True
        shown = next_start is not None and state != ScheduleState.ACTIVE
        out["next_start"] = iso(next_start) if shown else None
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
