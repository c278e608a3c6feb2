"""A VM's power (stop, start, reboot), its serial console, and resizing it to
another VM type.

Decisions (README, "VM power, console and resize"):

- A stopped VM keeps its claim on its host, as nova's SHUTOFF does: starting it
  again can never fail for want of capacity, and what the host shows as used is
  what its VMs may use. An operator (or its owner) gives the capacity back by
  destroying the VM.
- Only plain VMs (``/vm/create``) are stopped and started: they go ``active`` <->
  ``stopped``. Pool VMs are always running (a ``ready`` VM must be ready to hand
  out; an ``in-use`` one is its holder's running machine): stopping one is refused
  (409); rebooting one is allowed to admins and to the holder of a checked-out VM.
- A reboot is a power cycle the fabric drives: a graceful stop (ACPI, then forced
  after the timeout) and a start, so that it happens whatever the guest does with
  a reboot request; the VM keeps its state throughout.
- A resize is cold: the VM is stopped (graceful, then forced), its vCPUs and memory
  changed in its definition, its disk grown if the new type's is larger (never
  shrunk: a smaller type keeps the bigger disk and its claim), then started again
  if it was running. The claim on its host grows (or shrinks) to the new size, in
  the same transaction as the VM's row, within its owner's quota; a resize that
  does not fit is refused (409, naming what does not fit) before anything changes.

Who may: the VM's creator or an admin (a pool VM: admins, and for a reboot its
holder). While one of these runs, this server marks itself the VM's owner, so
reconciliation and other requests leave the VM alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from .access import SYSTEM, Principal, Role
from .errors import BadRequest, Conflict, FabricError, Forbidden
from .hosts import host_target
from .hypervisor.driver import LibvirtDriver
from .hypervisor.records import HostTarget
from .model import VmState
from .quotas import Quotas
from .registry import Registry, VmRow

log = logging.getLogger(__name__)

# Seconds a graceful stop waits for the guest to power off before pulling it.
DEFAULT_GRACE = 60.0
MAX_GRACE = 600.0
# The console tail: kilobytes returned by default, and at most.
DEFAULT_CONSOLE_KB = 16
MAX_CONSOLE_KB = 256


@dataclass(frozen=True)
class Console:
    vm_id: int
    text: str
    size: int  # bytes in the whole log
    kb: int  # what was asked
    note: str | None = None

    def as_dict(self) -> dict:
        out: dict = {"vmid": self.vm_id, "kb": self.kb, "size": self.size, "console": self.text}
        out["truncated"] = self.size > len(self.text.encode("utf-8", "replace"))
        if self.note:
            out["note"] = self.note
        return out


class PowerService:
    """Stop, start, reboot, console and resize of VMs."""

    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        quotas: Quotas | None = None,
        *,
        auth_on: bool = False,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.quotas = quotas
        self.auth_on = auth_on

    # -- who may -------------------------------------------------------------------

    def _may_power(self, vm: VmRow, by: Principal, what: str, *, holder_ok: bool) -> None:
        by.require_writer(what)
        if vm.pool is None:
            by.require_owner(vm.created_by, what)
            return
        if by.admin:
            return
        if holder_ok and vm.state == VmState.IN_USE and by.owns(vm.held_by):
            return
        raise_forbidden(by, what, vm)

    def _target(self, vm: VmRow) -> HostTarget:
        if vm.host_id is None:
            raise Conflict(f"vmid {vm.id} has no host")
        return host_target(self.registry.hosts.get_any(vm.host_id))

    def _take(self, vm: VmRow, states: list[VmState], what: str) -> None:
        if not self.registry.vms.take(vm.id, states):
            now = self.registry.vms.get(vm.id)
            if now.state in states:
                raise Conflict(
                    f"vmid {vm.id} is {now.state} and the fabric is working on it; "
                    "try again shortly"
                )
            wanted = ", ".join(str(s) for s in states)
            raise Conflict(f"vmid {vm.id} is {now.state}; only VMs {wanted} can be {what}")

    # -- power ---------------------------------------------------------------------

    def stop(self, vm_id: int, *, grace: float = DEFAULT_GRACE, by: Principal = SYSTEM) -> str:
        """Shut the VM off (ACPI, then forced after ``grace`` seconds); it becomes
        ``stopped`` and keeps its claim. Returns how it went off."""
        grace = _grace(grace)
        vm = self.registry.vms.get(vm_id)
        self._may_power(vm, by, f"stop vmid {vm_id}", holder_ok=False)
        if vm.pool is not None:
            raise Conflict(
                f"vmid {vm_id} is a pool VM ({vm.pool}); pool VMs are not stopped "
                "(reboot it, check it in, or destroy it)"
            )
        if vm.state == VmState.STOPPED:
            raise Conflict(f"vmid {vm_id} is already stopped")
        self._take(vm, [VmState.ACTIVE], "stopped")
        started = time.monotonic()
        try:
            how = self.driver.shutdown(self._target(vm), vm.uuid, grace)
        except FabricError:
            self.registry.vms.let_go(vm_id)
            raise
        self.registry.vms.transition(vm_id, VmState.STOPPED, expect=[VmState.ACTIVE], mine=True)
        self.registry.events.record(
            "vm.stopped",
            vm_id=vm_id,
            host_id=vm.host_id,
            duration=time.monotonic() - started,
            detail={"how": how, "grace": grace},
        )
        return how

    def start(self, vm_id: int, *, by: Principal = SYSTEM) -> None:
        """Start a stopped VM again on its host (its claim was kept: it fits)."""
        vm = self.registry.vms.get(vm_id)
        self._may_power(vm, by, f"start vmid {vm_id}", holder_ok=False)
        if vm.state == VmState.ACTIVE:
            raise Conflict(f"vmid {vm_id} is already running")
        self._take(vm, [VmState.STOPPED], "started")
        started = time.monotonic()
        try:
            self.driver.power_on(self._target(vm), vm.uuid)
        except FabricError:
            self.registry.vms.let_go(vm_id)
            raise
        self.registry.vms.transition(vm_id, VmState.ACTIVE, expect=[VmState.STOPPED], mine=True)
        self.registry.events.record(
            "vm.started", vm_id=vm_id, host_id=vm.host_id, duration=time.monotonic() - started
        )

    def reboot(self, vm_id: int, *, grace: float = DEFAULT_GRACE, by: Principal = SYSTEM) -> str:
        """Power-cycle a running VM: a graceful stop (forced after ``grace``), then a
        start. Its state stays what it was. Returns how it went off."""
        grace = _grace(grace)
        vm = self.registry.vms.get(vm_id)
        self._may_power(vm, by, f"reboot vmid {vm_id}", holder_ok=True)
        running = [VmState.ACTIVE, VmState.READY, VmState.IN_USE]
        self._take(vm, running, "rebooted")
        started = time.monotonic()
        target = self._target(vm)
        try:
            how = self.driver.shutdown(target, vm.uuid, grace)
            self.driver.power_on(target, vm.uuid)
        except FabricError as e:
            self.registry.events.record(
                "vm.reboot_failed", vm_id=vm_id, host_id=vm.host_id, detail={"error": str(e)}
            )
            raise
        finally:
            self.registry.vms.let_go(vm_id)
        self.registry.events.record(
            "vm.rebooted",
            vm_id=vm_id,
            host_id=vm.host_id,
            duration=time.monotonic() - started,
            detail={"how": how, "grace": grace},
        )
        return how

    # -- console -------------------------------------------------------------------

    def console(
        self, vm_id: int, kb: int = DEFAULT_CONSOLE_KB, *, by: Principal = SYSTEM
    ) -> Console:
        """The last ``kb`` kilobytes of the VM's serial console (its creator, its holder
        or an admin: a console shows what the guest prints, keys included)."""
        if not 1 <= kb <= MAX_CONSOLE_KB:
            raise BadRequest(f"kb must be 1-{MAX_CONSOLE_KB}, got {kb}")
        vm = self.registry.vms.get(vm_id)
        if not (by.owns(vm.created_by) or (vm.held_by is not None and by.owns(vm.held_by))):
            raise_forbidden(by, f"read the console of vmid {vm_id}", vm)
        tail = self.driver.console_tail(self._target(vm), vm_id, kb * 1024, uuid=vm.uuid)
        text = tail.data.decode("utf-8", "replace")
        return Console(vm_id, text, tail.size, kb, tail.note)

    # -- resize --------------------------------------------------------------------

    def resize(
        self, vm_id: int, tid: int, *, grace: float = DEFAULT_GRACE, by: Principal = SYSTEM
    ) -> VmRow:
        """Give a plain VM the size of VM type ``tid`` (cold). The claim is taken first;
        one that does not fit is refused (409) with nothing changed."""
        grace = _grace(grace)
        vm = self.registry.vms.get(vm_id)
        what = f"resize vmid {vm_id}"
        by.require_owner(vm.created_by, what)
        if vm.pool is not None:
            raise Conflict(f"vmid {vm_id} is a pool VM ({vm.pool}); its size is its pool's")
        vt = self.registry.inventory.vm_type(tid)
        if vm.tid == tid and (vm.cpu, vm.ram) == (vt.cpu, vt.ram) and vm.disk >= vt.disk:
            raise Conflict(f"vmid {vm_id} is already of instance_type {tid}")
        self._take(vm, [VmState.ACTIVE, VmState.STOPPED], "resized")
        disk = max(vm.disk, vt.disk)  # a disk never shrinks
        try:
            resized = self.registry.vms.resize(
                vm_id,
                tid=tid,
                cpu=vt.cpu,
                ram=vt.ram,
                disk=disk,
                quota=self._quota_of(vm),
                detail={"disk_kept": disk > vt.disk} if disk > vt.disk else None,
            )
        except FabricError:
            self.registry.vms.let_go(vm_id)
            raise
        target = self._target(vm)
        was_running = vm.state == VmState.ACTIVE
        try:
            if was_running:
                self.driver.shutdown(target, vm.uuid, grace)
            self.driver.resize_domain(
                target, vm.uuid, vm_id, vcpus=vt.cpu, ram_mb=vt.ram, disk_gb=disk
            )
        except FabricError as e:
            self._undo_resize(vm, target, was_running, e)
            raise
        try:
            if was_running:
                self.driver.power_on(target, vm.uuid)
        except FabricError as e:
            # It does not start at its new size: back to the old one, started again.
            with contextlib.suppress(FabricError):
                self.driver.resize_domain(
                    target, vm.uuid, vm_id, vcpus=vm.cpu, ram_mb=vm.ram, disk_gb=vm.disk
                )
            self._undo_resize(vm, target, was_running, e)
            raise
        finally:
            self.registry.vms.let_go(vm_id)
        return resized

    def _undo_resize(
        self, vm: VmRow, target: HostTarget, was_running: bool, error: FabricError
    ) -> None:
        """Put the registry back as it was (the claim shrinks back: always fits) and the
        VM running again if it was."""
        with contextlib.suppress(FabricError):
            self.registry.vms.resize(
                vm.id,
                tid=vm.tid,
                cpu=vm.cpu,
                ram=vm.ram,
                disk=vm.disk,
                detail={"undone": str(error)},
            )
        if was_running:
            with contextlib.suppress(FabricError):
                self.driver.power_on(target, vm.uuid)
        self.registry.vms.let_go(vm.id)
        self.registry.events.record(
            "vm.resize_failed", vm_id=vm.id, host_id=vm.host_id, detail={"error": str(error)}
        )

    def _quota_of(self, vm: VmRow):  # noqa: ANN202 - a registry Quota or None
        """A resize counts against the VM's creator's quota, whoever asks."""
        if self.quotas is None or not self.auth_on or vm.created_by is None:
            return None
        return self.quotas.of(Principal(name=vm.created_by, role=Role.USER))


def raise_forbidden(by: Principal, what: str, vm: VmRow) -> None:
    whose = f"{vm.created_by}'s" if vm.created_by else "not yours"
    if vm.pool is not None:
        whose = f"a pool VM ({vm.pool})" + (f" held by {vm.held_by}" if vm.held_by else "")
    raise Forbidden(f"{by.label} may not {what}: it is {whose}")


def _grace(value: float) -> float:
    if not 0 <= value <= MAX_GRACE:
        raise BadRequest(f"timeout must be 0-{MAX_GRACE:g} seconds, got {value:g}")
    return float(value)
