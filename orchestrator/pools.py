"""Pools of ready VMs: their configuration, refill, readiness, cleanup and retirement.

A pool VM lives: building -> ready -> in-use -> cleaning -> ready ...; a VM whose
build, readiness check or cleanup fails becomes ``failed`` and is retired
(destroyed), and the refill builds a replacement. Every step is a registry
transition, so a restart resumes from wherever the VM was.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .config import Config, PoolConfig
from .errors import FabricError, NotFound
from .fabric import Fabric, iso
from .model import VmState
from .registry import EventRow, VmRow

log = logging.getLogger(__name__)

GUEST_TMP = "/tmp"  # noqa: S108 - the guest's /tmp, emptied on check-in (seed 000)
# A constant command (nothing from input in it): every entry of /tmp, dot-files too.
# Works with busybox, whose find may lack -delete.
EMPTY_TMP = "rm -rf -- /tmp/* /tmp/.[!.]* /tmp/..?*"


class PoolService:
    """Keeps pools filled and returned VMs clean. Methods are safe to call from threads."""

    def __init__(self, fabric: Fabric, pools: list[PoolConfig], config: Config) -> None:
        self.fabric = fabric
        self.registry = fabric.registry
        self.pools = {p.name: p for p in pools}
        self.config = config
        self._lock = threading.Lock()
        self._building: dict[str, int] = {}  # builds submitted but not yet recorded
        self._busy: set[int] = set()  # VMs being cleaned or retired in this process
        self.extra: dict[str, int] = {}  # scheduled extra VMs per pool (see set_extra)

    def pool(self, name: str) -> PoolConfig:
        try:
            return self.pools[name]
        except KeyError:
            raise NotFound(f"pool {name!r} does not exist") from None

    def max_of(self, name: str) -> int:
        """A pool's ``max`` now, scheduled extra capacity included."""
        with self._lock:
            return self.pools[name].max + self.extra.get(name, 0)

    # -- counts --------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        counts = self.registry.pool_counts()
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
        """How many VMs each pool should start building now (within its max and the
        global limit)."""
        status = self.status()
        total = self.registry.count_vms()
        room = None if self.config.max_vms is None else self.config.max_vms - total
        wanted = {}
        with self._lock:
            for name, st in status.items():
                p = self.pools[name]
                pending = self._building.get(name, 0)
                have = st["ready"] + st["building"] + pending
                extra = self.extra.get(name, 0)
                n = max(0, p.size + extra - have)
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
        try:
            try:
                vm = self.fabric.create_vm(f"{name}-vm", p.tid, p.image_id, pool=name)
            finally:
                with self._lock:
                    self._building[name] = max(0, self._building.get(name, 0) - 1)
        except FabricError as e:
            log.warning("pool %s: could not build a VM: %s", name, e)
            self.registry.record_event("pool.build_failed", detail={"pool": name, "error": str(e)})
            return None
        return vm if self.make_ready(vm) else None

    def make_ready(self, vm: VmRow) -> bool:
        """building -> ready once the guest answers SSH (at once if it has no endpoint)."""
        started = time.monotonic()
        if self._checks_ssh(vm):
            try:
                self._wait_for_guest(vm)
            except FabricError as e:
                self._fail(vm, VmState.BUILDING, f"guest did not come up: {e}")
                return False
        return self.registry.transition(
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

    def _checks_ssh(self, vm: VmRow) -> bool:
        p = self.pools.get(vm.pool or "")
        return bool(vm.ip and vm.ssh_port and p is not None and p.ready_check == "ssh")

    def _wait_for_guest(self, vm: VmRow) -> None:
        deadline = time.monotonic() + self.config.guest.ready_timeout
        last: FabricError | None = None
        while time.monotonic() < deadline:
            try:
                res = self.fabric.guest(self.registry.vm(vm.id)).run(["true"], timeout=15)
                if res.status == 0:
                    return
            except FabricError as e:
                last = e
            time.sleep(1)
        raise last or FabricError("SSH did not answer")

    # -- cleanup -------------------------------------------------------------

    def take(self, vm_id: int, states: list[str]) -> bool:
        """Start working on a VM in one of ``states``: False if this process already
        is, or another live server is (the registry's ``owner`` decides)."""
        with self._lock:
            if vm_id in self._busy:
                return False
            self._busy.add(vm_id)
        if not self.registry.take_vm(vm_id, states):
            with self._lock:
                self._busy.discard(vm_id)
            return False
        return True

    def release(self, vm_id: int) -> None:
        try:
            self.registry.let_go(vm_id)  # no-op once a transition cleared the owner
        finally:
            with self._lock:
                self._busy.discard(vm_id)

    def clean(self, vm_id: int) -> bool:
        """cleaning -> ready after the pool's cleanup; -> failed if it does not work."""
        try:
            vm = self.registry.vm(vm_id)
            if vm.state != VmState.CLEANING or vm.pool not in self.pools:
                return False
            p = self.pools[vm.pool]
            started = time.monotonic()
            try:
                if p.cleanup == "reset":
                    self.fabric.reset_vm_disk(vm)
                    if self._checks_ssh(vm):
                        self._wait_for_guest(vm)
                else:
                    self._empty_tmp(vm)
            except FabricError as e:
                self._fail(vm, VmState.CLEANING, f"cleanup ({p.cleanup}) failed: {e}")
                return False
            return self.registry.transition(
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
        finally:
            self.release(vm_id)

    def _empty_tmp(self, vm: VmRow) -> None:
        guest = self.fabric.guest(vm)
        tmp = GUEST_TMP
        res = guest.run(["sh", "-c", EMPTY_TMP])
        if res.status != 0:
            raise FabricError(f"emptying {tmp} exited {res.status}: {res.stderr.strip()[:200]}")
        left = guest.run(["find", tmp, "-mindepth", "1"])
        if left.stdout.strip():
            raise FabricError(f"{tmp} still holds: {left.stdout.split()[:5]}")

    def _fail(self, vm: VmRow, expect: str, reason: str) -> None:
        log.warning("vm %d (pool %s): %s", vm.id, vm.pool, reason)
        self.registry.transition(
            vm.id, VmState.FAILED, expect=[expect], error=reason, failures=vm.failures + 1
        )
        self.registry.record_event(
            "vm.failed", vm_id=vm.id, host_id=vm.host_id, detail={"pool": vm.pool, "reason": reason}
        )

    def recent_failures(self, name: str, limit: int = 5) -> list[dict[str, Any]]:
        out = []
        for ev in self.registry.events(kind="vm.failed", limit=200):
            if (ev.detail or {}).get("pool") == name:
                out.append({"vmid": ev.vm_id, "at": iso(ev.at), "reason": ev.detail["reason"]})
                if len(out) >= limit:
                    break
        return out

    # -- retirement ----------------------------------------------------------

    def retire(self, vm_id: int) -> bool:
        """Destroy a failed or vanished pool VM; the refill replaces it."""
        try:
            vm = self.registry.vm(vm_id)
            if vm.state not in (VmState.FAILED, VmState.VANISHED):
                return False
            self.fabric.destroy_vm(vm_id, taken=True)
            self.registry.record_event("vm.retired", vm_id=vm_id, detail={"error": vm.error})
            return True
        except FabricError as e:
            log.warning("could not retire vm %d: %s", vm_id, e)
            return False
        finally:
            self.release(vm_id)
