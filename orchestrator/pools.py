"""Pools of ready VMs: refill, readiness, cleanup and retirement (their settings are
checked by the configuration's schema, orchestrator/config/).

A pool VM lives: building -> ready -> in-use -> cleaning -> ready ...; a VM whose
build, readiness check or cleanup fails becomes ``failed`` and is retired
(destroyed), and the refill builds a replacement. Every step is a registry
transition, so a restart resumes from wherever the VM was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clock import iso
from .config import PoolConfig
from .errors import FabricError, NotFound
from .fabric import Fabric, host_target
from .guests import Guests
from .model import NetworkMode, VmState
from .registry import EventRow, HostRow, Registry, VmRow

if TYPE_CHECKING:
    from .addresses import AddressWatcher

log = logging.getLogger(__name__)


def on_lan(vm: VmRow) -> bool:
    return bool(vm.network) and NetworkMode.parse(vm.network or "").on_lan


class PoolService:
    """Keeps pools filled and returned VMs clean. Methods are safe to call from threads."""

    def __init__(
        self,
        registry: Registry,
        fabric: Fabric,
        guests: Guests,
        watcher: AddressWatcher,
        pools: list[PoolConfig],
        max_vms: int | None = None,
    ) -> None:
        self.registry = registry
        self.fabric = fabric
        self.guests = guests
        self.watcher = watcher  # says when a VM on a LAN has its address
        self.pools = {p.name: p for p in pools}
        self.max_vms = max_vms  # the fabric never runs more VMs than this in all
        self._lock = threading.Lock()
        self._building: dict[str, int] = {}  # builds submitted but not yet recorded
        self._busy: set[int] = set()  # VMs being cleaned or retired in this process
        self._finishing = 0  # builds past create_vm, not yet ready or failed
        self.extra: dict[str, int] = {}  # scheduled extra VMs per pool (see set_extra)
        # VMs pending on-demand requests still want per pool (ondemand.py), set by the
        # worker's pass: the refill builds them too, within max
        self.demand: dict[str, int] = {}
        self.on_ready: Callable[[], None] | None = None  # told when a VM becomes ready

    def pool(self, name: str) -> PoolConfig:
        try:
            return self.pools[name]
        except KeyError:
            raise NotFound(f"pool {name!r} does not exist") from None

    @property
    def configured(self) -> bool:
        return bool(self.pools)

    def idle(self) -> bool:
        """Nothing is being built, cleaned or retired by this process."""
        with self._lock:
            return not self._busy and not any(self._building.values()) and not self._finishing

    def max_of(self, name: str) -> int:
        """A pool's ``max`` now, scheduled extra capacity included."""
        with self._lock:
            return self.pools[name].max + self.extra.get(name, 0)

    # -- counts --------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        counts = self.registry.reservations.pool_counts()
        out = {}
        for name, p in self.pools.items():
            c = counts.get(name, {})
            out[name] = {
                **p.as_dict(),
                "extra": self.extra.get(name, 0),
                "ready": c.get(VmState.READY, 0),
                "in_use": c.get(VmState.IN_USE, 0),
                "cleaning": c.get(VmState.CLEANING, 0),
                "building": c.get(VmState.BUILDING, 0),
                "failed": c.get(VmState.FAILED, 0) + c.get(VmState.VANISHED, 0),
                "unreachable": c.get("unreachable", 0),
                "total": sum(c.values()),
            }
        return out

    # -- refill --------------------------------------------------------------

    def builds_wanted(self) -> dict[str, int]:
        """How many VMs each pool should start building now: up to its size, plus what
        on-demand requests still want, within its max and the global limit."""
        # Builds submitted but not yet in the registry, read BEFORE the registry:
        # a build that records its row and leaves ``_building`` in between is then
        # counted twice (never too few), so neither a pool's max nor the global
        # limit is passed while builds are under way.
        with self._lock:
            building = dict(self._building)
        status = self.status()
        total = self.registry.vms.count() + sum(building.values())
        room = None if self.max_vms is None else self.max_vms - total
        wanted = {}
        with self._lock:
            for name, st in status.items():
                p = self.pools[name]
                pending = building.get(name, 0)
                have = st["ready"] + st["building"] + pending
                extra = self.extra.get(name, 0)
                n = max(0, p.size + extra + self.demand.get(name, 0) - have)
                n = min(n, max(0, p.max + extra - st["total"] - pending))
                if room is not None:
                    n = min(n, max(0, room))
                    room -= n
                if n:
                    wanted[name] = n
        return wanted

    def set_extra(self, name: str, n: int) -> None:
        """Keep ``n`` more ready VMs in pool ``name`` (its size and max both grow by
        ``n``) until set back to 0. Scheduled capacity (schedules.py) sets it."""
        self.pool(name)
        with self._lock:
            if n > 0:
                self.extra[name] = n
            else:
                self.extra.pop(name, None)

    def claim_build(self, name: str) -> None:
        with self._lock:
            self._building[name] = self._building.get(name, 0) + 1

    def build(self, name: str) -> VmRow | None:
        """Build one VM for pool ``name`` and make it ready. Returns it, or None."""
        p = self.pools[name]
        with self._lock:
            self._finishing += 1  # until it is ready or failed: not idle
        try:
            try:
                vm = self.fabric.create_vm(f"{name}-vm", p.tid, p.image_id, pool=name)
            finally:
                # Its row (building) counts it from now on, for builds_wanted.
                with self._lock:
                    self._building[name] = max(0, self._building.get(name, 0) - 1)
            if vm.ip is None and vm.state == VmState.BUILDING and on_lan(vm):
                try:
                    vm = self.watcher.wait_for(vm.id)
                except FabricError as e:  # the watcher gave up: the VM is failed (and retired)
                    log.warning("pool %s: vm %d: %s", name, vm.id, e)
                    return None
            return vm if self.make_ready(vm) else None
        except FabricError as e:
            log.warning("pool %s: could not build a VM: %s", name, e)
            self.registry.events.record("pool.build_failed", detail={"pool": name, "error": str(e)})
            return None
        finally:
            with self._lock:
                self._finishing -= 1

    def make_ready(self, vm: VmRow) -> bool:
        """building -> ready once the guest answers SSH (at once if it has no endpoint)."""
        started = time.monotonic()
        if self._checks_ssh(vm):
            try:
                self.guests.wait_until_up(vm.id)
            except FabricError as e:
                self._fail(vm, VmState.BUILDING, f"guest did not come up: {e}")
                return False
        ok = self.registry.vms.transition(
            vm.id,
            VmState.READY,
            expect=[VmState.BUILDING],
            event=EventRow(
                kind="vm.ready",
                vm_id=vm.id,
                host_id=vm.host_id,
                duration=time.monotonic() - started,
            ),
        )
        self._became_ready(ok)
        return ok

    def _became_ready(self, ok: bool) -> None:
        """A VM is ready: a request waiting for one hears of it now, not next pass."""
        if ok and self.demand and self.on_ready is not None:
            self.on_ready()

    def _checks_ssh(self, vm: VmRow) -> bool:
        p = self.pools.get(vm.pool or "")
        endpoint = vm.ssh_port is not None or on_lan(vm)
        return bool(vm.ip and endpoint and p is not None and p.ready_check == "ssh")

    # -- cleanup -------------------------------------------------------------

    def take(self, vm_id: int, states: list[str]) -> bool:
        """Start working on a VM in one of ``states``: False if this process already
        is, or another live server is (the registry's ``owner`` decides)."""
        with self._lock:
            if vm_id in self._busy:
                return False
            self._busy.add(vm_id)
        if not self.registry.vms.take(vm_id, states):
            with self._lock:
                self._busy.discard(vm_id)
            return False
        return True

    def adopt(self, vm_id: int) -> bool:
        """Start working on a VM the registry already says this server works on (a
        check-in took it): False if this process already is."""
        with self._lock:
            if vm_id in self._busy:
                return False
            self._busy.add(vm_id)
        return True

    def release(self, vm_id: int) -> None:
        try:
            self.registry.vms.let_go(vm_id)  # no-op once a transition cleared the owner
        finally:
            with self._lock:
                self._busy.discard(vm_id)

    def clean(self, vm_id: int) -> bool:
        """cleaning -> ready after the pool's cleanup; -> failed if it does not work."""
        ok = False
        try:
            vm = self.registry.vms.get(vm_id)
            if vm.state != VmState.CLEANING or vm.pool not in self.pools:
                return False
            p = self.pools[vm.pool]
            started = time.monotonic()
            try:
                host = self.registry.hosts.get_any(vm.host_id) if vm.host_id else None
                changed = self._changed_in_use(vm, host)
                if changed:
                    # never handed to the next borrower: it is retired and replaced
                    self._fail(vm, VmState.CLEANING, f"not reused: {changed}")
                    return False
                if p.cleanup == "reset":
                    self.fabric.reset_vm_disk(vm, host)
                    if self._checks_ssh(vm):
                        self.guests.wait_until_up(vm.id)
                else:
                    self.guests.empty_tmp(vm)
                    self.guests.remove_keys(vm)  # a borrower's, if the check-in could not
            except FabricError as e:
                self._fail(vm, VmState.CLEANING, f"cleanup ({p.cleanup}) failed: {e}")
                return False
            ok = self.registry.vms.transition(
                vm_id,
                VmState.READY,
                expect=[VmState.CLEANING],
                error=None,
                event=EventRow(
                    kind="vm.cleaned",
                    vm_id=vm_id,
                    host_id=vm.host_id,
                    duration=time.monotonic() - started,
                    detail={"mode": p.cleanup},
                ),
            )
            self._became_ready(ok)
            return ok
        finally:
            if ok:  # its move to ready cleared its owner: nothing to let go of
                with self._lock:
                    self._busy.discard(vm_id)
            else:
                self.release(vm_id)

    def _changed_in_use(self, vm: VmRow, host: HostRow | None) -> str | None:
        """What a borrower added that a cleanup does not take away (vmpooler's API v3
        adds disks and takes snapshots): then the VM is replaced, not reused."""
        if self.registry.volumes.list(vm_id=vm.id):
            return "a volume was attached during its check-out"
        if host is not None and self.fabric.driver.snapshots(host_target(host), vm.uuid):
            return "snapshots were taken during its check-out"
        return None

    def _fail(self, vm: VmRow, expect: str, reason: str) -> None:
        log.warning("vm %d (pool %s): %s", vm.id, vm.pool, reason)
        self.registry.vms.transition(
            vm.id, VmState.FAILED, expect=[expect], error=reason, failures=vm.failures + 1
        )
        self.registry.events.record(
            "vm.failed", vm_id=vm.id, host_id=vm.host_id, detail={"pool": vm.pool, "reason": reason}
        )

    def recent_failures(self, name: str, limit: int = 5) -> list[dict[str, Any]]:
        out = []
        for ev in self.registry.events.list(kind="vm.failed", limit=200):
            if (ev.detail or {}).get("pool") == name:
                out.append({"vmid": ev.vm_id, "at": iso(ev.at), "reason": ev.detail["reason"]})
                if len(out) >= limit:
                    break
        return out

    # -- retirement ----------------------------------------------------------

    def retire(self, vm_id: int) -> bool:
        """Destroy a failed or vanished pool VM; the refill replaces it."""
        try:
            vm = self.registry.vms.get(vm_id)
            if vm.state not in (VmState.FAILED, VmState.VANISHED):
                return False
            self.fabric.destroy_vm(vm_id, taken=True)
            self.registry.events.record("vm.retired", vm_id=vm_id, detail={"error": vm.error})
            return True
        except FabricError as e:
            log.warning("could not retire vm %d: %s", vm_id, e)
            return False
        finally:
            self.release(vm_id)
