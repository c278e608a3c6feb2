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
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .access import SYSTEM, Principal
from .clock import as_utc as _aware
from .clock import iso
from .cron import Cron
from .errors import Conflict, FabricError, NotFound, Unavailable
from .model import Lease, SchedulePhase, ScheduleState, VmState
from .periodic import PeriodicWorker
from .registry import Registry
from .registry.tables_schedules import ScheduleRow, ScheduleRunRow
from .schedule_input import parse_schedule

if TYPE_CHECKING:
    from .cluster import Cluster
    from .fabric import Fabric
    from .pools import PoolService
    from .worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule as it stands: its row, its latest window (and the VMs that window
    holds), and what that makes it now."""

    row: ScheduleRow
    run: ScheduleRunRow | None
    vmids: list[int]
    state: ScheduleState
    next_start: datetime | None  # when a window opens next (None while one is open)
    skipped: bool  # a one-off whose whole window passed while the fabric was down


OPEN_PHASES = (SchedulePhase.ACTIVE, SchedulePhase.ENDING)  # a window that is not over


def now_utc() -> datetime:
    return datetime.now(UTC)


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

    def create(self, data: Mapping[str, Any], *, by: Principal = SYSTEM) -> ScheduleStatus:
        """Validate and store a schedule (admins only); its window starts on the next pass."""
        by.require_admin("create schedules")
        values = parse_schedule(data, self.registry.inventory, self.pools, self.clock())
        values["created_by"] = by.name
        sid = self.store.add(values)
        log.info("schedule %d (%s) created", sid, values["name"])
        self.wake()
        return self.get(sid)

    def list(self) -> list[ScheduleStatus]:
        return [self._status(*item) for item in self.store.with_latest()]

    def get(self, sid: int) -> ScheduleStatus:
        found = self.store.with_latest(sid)
        if not found:
            raise NotFound(f"schedule {sid} does not exist")
        return self._status(*found[0])

    def delete(self, sid: int, force: bool = False, *, by: Principal = SYSTEM) -> None:
        """Delete a schedule (admins only). An active one (window open, extra VMs
        present) only with ``force``: its VMs are destroyed (or its pool lowered back)
        first."""
        by.require_admin("delete schedules")
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

    def _status(
        self, row: ScheduleRow, run: ScheduleRunRow | None, vmids: list[int]
    ) -> ScheduleStatus:
        now = self.clock()
        next_start: datetime | None = None
        skipped = False
        if run is not None and run.phase in OPEN_PHASES:
            state = ScheduleState.ACTIVE
        elif row.cron:
            state = ScheduleState.PENDING
            try:
                next_start = Cron.parse(row.cron).next_after(now)
            except ValueError:  # stored by a fabric whose cron grammar was wider
                next_start = None
        elif run is not None or (row.end_at is not None and now >= _aware(row.end_at)):
            state = ScheduleState.DONE
            skipped = run is None  # its whole window passed while the fabric was down
        else:
            state = ScheduleState.PENDING
            next_start = _aware(row.start_at) if row.start_at else None
        return ScheduleStatus(row, run, vmids, state, next_start, skipped)
