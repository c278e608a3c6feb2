"""Creating, resetting and destroying VMs: the use case that joins registry,
scheduler and driver.

A create asks the registry what exists, the scheduler where to put it, the
registry to claim it, the driver to make it, and records the result. A step
that fails undoes what the steps before it did.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from .config import CreateConfig
from .errors import (
    BadRequest,
    Conflict,
    FabricError,
    HostUnreachable,
    HypervisorError,
    ImageUnavailable,
    NoValidHost,
    Unavailable,
)
from .hostcache import HostCache
from .hosts import host_target
from .hypervisor.driver import Fence, LibvirtDriver, VmPlan
from .images import ImageStager

if TYPE_CHECKING:
    from .addresses import Addresses, AddressWatcher
    from .quotas import Quotas
from .access import SYSTEM, Principal
from .clock import utcnow
from .model import (
    VM_DESTROYABLE,
    AddressSource,
    HostStatus,
    ImageSpec,
    NetworkKind,
    NetworkMode,
    VmState,
)
from .registry import HostRow, Registry, TypeRow, VmRow
from .scheduler import PlacementRequest, Scheduler

# VMs that have a running domain to snapshot, and the characters of a snapshot's id.
_SNAPSHOT_STATES = (VmState.IN_USE, VmState.ACTIVE, VmState.READY)
_SNAPSHOT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

# What QEMU says when a forwarded port on the host is already bound.
PORT_TAKEN = "Could not set up host forwarding rule"

log = logging.getLogger(__name__)


class Fabric:
    """Creating, resetting and destroying VMs."""

    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        scheduler: Scheduler,
        hosts: HostCache,
        images: ImageStager,
        addresses: Addresses,
        watcher: AddressWatcher,
        config: CreateConfig,
        quotas: Quotas | None = None,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.scheduler = scheduler
        self.hosts = hosts
        self.images = images
        self.addresses = addresses
        self.watcher = watcher  # learns the address of a VM on a LAN once it has booted
        self.config = config
        self.quotas = quotas  # None: no user has a quota (tests of the mechanics)
        self._inv_lock = threading.Lock()
        # Forwarded ports found taken on a host by something else (until restart).
        self._foreign_ports: dict[int, set[int]] = {}
        self._inv_gen = -1
        self._types: dict[int, TypeRow] = {}
        self._images: dict[int, ImageSpec] = {}
        self._admission = threading.BoundedSemaphore(config.concurrent)

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A place among the creates that requests run at once (``create.concurrent``),
        or Unavailable (503, Retry-After) at once when every place is taken: creates
        that wait on a slow host or image store never hold all of the server's
        request threads, so reads and health checks are still answered."""
        if not self._admission.acquire(blocking=False):
            raise Unavailable(
                f"{self.config.concurrent} creates are in progress, the most this server "
                "runs at once; try again shortly"
            )
        try:
            yield
        finally:
            self._admission.release()

    def create_vm(
        self,
        name: str,
        tid: int,
        image_id: int,
        pool: str | None = None,
        *,
        by: Principal = SYSTEM,
    ) -> VmRow:
        """Place, claim and build one VM for ``by`` (within their quota); undoes itself
        on failure.

        A plain VM comes back ``active``, unless it is on a LAN (``bridge:`` or
        ``network:``): then it stays ``building``, its domain running, until the fabric
        sees its address (then ``active``) or gives up (``failed``). A pool VM comes
        back ``building``; the pool makes it ``ready`` once its guest answers.
        """
        by.require_writer("create VMs")
        if pool is not None:
            by.require_admin("build pool VMs")
        quota = self.quotas.of(by) if self.quotas is not None else None
        started = time.monotonic()
        vt, spec = self._type_and_image(tid, image_id)
        req = PlacementRequest(
            cpu=vt.cpu, ram=vt.ram, disk=vt.disk, arch=spec.arch, label=f"instance_type {tid}"
        )
        excluded: set[int] = set()
        failures: list[str] = []
        while len(failures) < self.config.max_attempts:
            try:
                placement = self.scheduler.select(
                    self.hosts.states(), replace(req, exclude=frozenset(excluded))
                )
            except NoValidHost as e:
                if failures:
                    raise NoValidHost(
                        f"{e.message}; earlier attempts failed: {'; '.join(failures)}", e.report
                    ) from None
                raise
            vm = host = None
            for cand in placement.hosts:
                vm = self.registry.vms.claim(
                    cand.id,
                    name=name,
                    tid=tid,
                    image_id=image_id,
                    cpu=vt.cpu,
                    ram=vt.ram,
                    disk=vt.disk,
                    ssh_ports=self._port_range(cand.id),
                    avoid_ports=set(self._foreign_ports.get(cand.id, ())),
                    pool=pool,
                    network=self.hosts.network(cand.id),
                    created_by=by.name,
                    quota=quota,
                )
                if vm is not None:
                    self.hosts.claimed(cand.id, vt.cpu, vt.ram, vt.disk)
                    host = self.registry.hosts.get(cand.id)
                    break
                self.hosts.refresh_host(cand.id)  # our view of it was out of date
            if vm is None or host is None:
                continue  # every candidate was taken by a concurrent request: look again
            try:
                final = VmState.BUILDING if pool else VmState.ACTIVE
                return self._build(vm, host, spec, started, final)
            except (ImageUnavailable, Unavailable):
                raise  # not the host's fault: another host would not do better
            except FabricError as e:
                failures.append(f"{host.label}: {e.message}")
                if vm.ssh_port is not None and PORT_TAKEN in e.message:
                    # Something else on the host holds that port (another fabric, a
                    # service): remember it and try the same host on another port.
                    self._foreign_ports.setdefault(host.id, set()).add(vm.ssh_port)
                    log.warning(
                        "%s: port %d is taken there; trying another", host.label, vm.ssh_port
                    )
                    continue
                excluded.add(host.id)
                if isinstance(e, HostUnreachable):
                    self.registry.hosts.record_discovery(host.id, up=False, reason=e.reason)
        # every host tried failed: theirs is the fault (a 502 with each reason), not ours
        raise HypervisorError(f"could not create the VM: {'; '.join(failures)}")

    def _type_and_image(self, tid: int, image_id: int) -> tuple[TypeRow, ImageSpec]:
        """A VM type and an image, read once per sync of the files (they change
        only then), not on every request."""
        with self._inv_lock:
            if self._inv_gen != self.registry.inventory.generation:
                self._inv_gen = self.registry.inventory.generation
                self._types.clear()
                self._images.clear()
            vt = self._types.get(tid)
            spec = self._images.get(image_id)
        if vt is None:
            vt = self.registry.inventory.vm_type(tid)
        if spec is None:
            spec = self.registry.inventory.image_spec(image_id)
        with self._inv_lock:
            self._types[tid] = vt
            self._images[image_id] = spec
        return vt, spec

    def _port_range(self, host_id: int) -> range | None:
        forward = self.hosts.network(host_id) == NetworkKind.FORWARD
        return self.config.port_range if forward else None

    def _build(
        self, vm: VmRow, host: HostRow, spec: ImageSpec, started: float, final: str
    ) -> VmRow:
        target = host_target(host)
        fence = Fence(f"the create of vm {vm.id}")  # abandoned once this create gives up
        try:
            self.addresses.plan(vm, host)  # an address of its own, if its network has a plan
            staged = self.images.stage(host, vm.image_id, spec)
            console = self.driver.create(target, self._plan(vm, host, spec), staged, fence)
        except BaseException as e:
            # A driver call still running (it timed out) removes what it makes from now
            # on; what the driver made so far is removed here. The claim goes back and
            # the VM is forgotten.
            fence.abandon()
            with contextlib.suppress(FabricError):
                self.driver.destroy(target, vm.uuid, vm.id)
            self.addresses.unplan(vm, host)
            self.addresses.unpublish(vm)
            if isinstance(e, HypervisorError) and PORT_TAKEN not in str(e):
                # The staged copy may be what broke (e.g. removed behind our back):
                # the next create on this host copies the image again.
                self.images.forget(host.id, vm.image_id)
            detail = {"error": str(e), "host": host.label}
            self.registry.vms.forget(vm.id, event_kind="vm.create_failed", detail=detail)
            raise
        mode = NetworkMode.parse(vm.network or "user")
        found = {}
        if mode.kind == NetworkKind.FORWARD and host.address:
            found = {"ip": host.address, "ip_source": AddressSource.FORWARD, "ip_seen_at": utcnow()}
        if mode.on_lan:
            final = VmState.BUILDING  # until its address is seen
        self.registry.vms.transition(
            vm.id, final, expect=[VmState.BUILDING], console_path=console, **found
        )
        self.registry.events.record(
            "vm.create", vm_id=vm.id, host_id=host.id, duration=time.monotonic() - started
        )
        if mode.on_lan:
            self.watcher.watch(vm.id)
        return self.registry.vms.get(vm.id)

    def _plan(self, vm: VmRow, host: HostRow, spec: ImageSpec) -> VmPlan:
        return VmPlan(
            vm_id=vm.id,
            name=vm.name,
            domain_name=vm.domain_name,
            uuid=vm.uuid,
            mac=vm.mac,
            vcpus=vm.cpu,
            ram_mb=vm.ram,
            disk_gb=vm.disk,
            arch=spec.arch or host.arch or "x86_64",
            ssh_port=vm.ssh_port,
            cmdline=spec.cmdline,
            installation=self.registry.installation_id,
        )

    def rebuild_vm(self, vm: VmRow, dead: HostRow) -> VmRow:
        """Rebuild a VM whose host ``dead`` died on another host, from its image, by
        the create path: the scheduler picks (never ``dead``), its claim moves there
        (registry ``vms.move``), the domain is made there under its id, name, UUID and
        MAC. Its state (and so a check-out's reservation and holder) is kept; it records
        when and where from it was rebuilt. The caller has taken the VM (``vms.take``).

        A host that fails is left for the next candidate (``create.max_attempts``);
        when every try failed, the VM is ``failed`` with the reasons (HypervisorError).
        """
        spec = self.registry.inventory.image_spec(vm.image_id)  # its type may be retired
        req = PlacementRequest(
            cpu=vm.cpu, ram=vm.ram, disk=vm.disk, arch=spec.arch, label=f"vmid {vm.id}"
        )
        excluded: set[int] = {dead.id}
        failures: list[str] = []
        at = dead.id  # where the registry has it now
        started = time.monotonic()
        while len(failures) < self.config.max_attempts:
            try:
                placement = self.scheduler.select(
                    self.hosts.states(), replace(req, exclude=frozenset(excluded))
                )
            except NoValidHost as e:
                failures.append(e.message)
                break
            moved = host = None
            for cand in placement.hosts:
                moved = self.registry.vms.move(
                    vm.id,
                    at,
                    cand.id,
                    ssh_ports=self._port_range(cand.id),
                    avoid_ports=set(self._foreign_ports.get(cand.id, ())),
                    network=self.hosts.network(cand.id),
                    origin=dead.id,
                )
                if moved is not None:
                    self.hosts.claimed(cand.id, vm.cpu, vm.ram, vm.disk)
                    host = self.registry.hosts.get(cand.id)
                    at = cand.id
                    break
                self.hosts.refresh_host(cand.id)
            if moved is None or host is None:
                excluded.update(c.id for c in placement.hosts)
                failures.append("no candidate host could take its claim")
                continue
            target = host_target(host)
            fence = Fence(f"the rebuild of vm {vm.id}")
            try:
                staged = self.images.stage(host, moved.image_id, spec)
                console = self.driver.create(target, self._plan(moved, host, spec), staged, fence)
            except FabricError as e:
                fence.abandon()
                with contextlib.suppress(FabricError):
                    self.driver.destroy(target, moved.uuid, moved.id)
                failures.append(f"{host.label}: {e.message}")
                excluded.add(host.id)
                if isinstance(e, HostUnreachable):
                    self.registry.hosts.record_discovery(host.id, up=False, reason=e.reason)
                continue
            mode = NetworkMode.parse(moved.network or "user")
            found: dict = {"console_path": console}
            if mode.kind == NetworkKind.FORWARD and host.address:
                found |= {
                    "ip": host.address,
                    "ip_source": AddressSource.FORWARD,
                    "ip_seen_at": utcnow(),
                }
            self.registry.vms.rebuilt(vm.id, **found)
            self.registry.events.record(
                "vm.rebuilt",
                vm_id=vm.id,
                host_id=dead.id,
                duration=time.monotonic() - started,
                detail={
                    "from": dead.label,
                    "from_pmid": dead.id,
                    "to": host.label,
                    "to_pmid": host.id,
                    "holder": vm.held_by,
                },
            )
            return self.registry.vms.get(vm.id)
        reason = f"could not rebuild it off {dead.label}: {'; '.join(failures)}"
        self.registry.vms.transition(vm.id, VmState.FAILED, expect=[vm.state], error=reason)
        self.registry.events.record(
            "vm.rebuild_failed", vm_id=vm.id, host_id=dead.id, detail={"error": reason}
        )
        raise HypervisorError(reason)

    def reset_vm_disk(self, vm: VmRow, host: HostRow | None = None) -> None:
        """Put the VM's disk back to its image's state and boot it again (on ``host``,
        its host's row if the caller has read it)."""
        if host is None or host.id != vm.host_id:
            host = self.registry.hosts.get_any(vm.host_id) if vm.host_id else None
        if host is None:
            raise Conflict(f"vmid {vm.id} has no host")
        spec = self.registry.inventory.image_spec(vm.image_id)
        staged = self.images.stage(host, vm.image_id, spec)
        self.driver.reset(host_target(host), self._plan(vm, host, spec), staged)

    # -- snapshots (vmpooler's API v3) -------------------------------------------------

    def _snapshot_host(self, vm: VmRow) -> HostRow:
        if vm.host_id is None or vm.state not in _SNAPSHOT_STATES:
            raise BadRequest(f"{vm.hostname} is {vm.state}: only a running VM has snapshots")
        return self.registry.hosts.get(vm.host_id)

    def snapshot(self, vm: VmRow, description: str) -> str:
        """A libvirt snapshot of the VM now (its disk, and its memory while it runs);
        returns its id."""
        host = self._snapshot_host(vm)
        name = secrets.choice(_SNAPSHOT_ALPHABET[:26]) + "".join(
            secrets.choice(_SNAPSHOT_ALPHABET) for _ in range(31)
        )
        self.driver.create_snapshot(host_target(host), vm.uuid, name, description)
        self.registry.events.record(
            "vm.snapshot", vm_id=vm.id, host_id=host.id, detail={"snapshot": name}
        )
        return name

    def snapshots(self, vm: VmRow, host: HostRow) -> list[str]:
        """The VM's snapshots, asked of its host when it is up (none said otherwise)."""
        if host.status != HostStatus.UP or vm.state not in _SNAPSHOT_STATES:
            return []
        try:
            return self.driver.snapshots(host_target(host), vm.uuid)
        except FabricError:
            return []

    def revert_snapshot(self, vm: VmRow, snapshot: str) -> None:
        """Put the VM back to its snapshot ``snapshot`` (404 if it has none such)."""
        host = self._snapshot_host(vm)
        self.driver.revert_snapshot(host_target(host), vm.uuid, snapshot)
        self.registry.events.record(
            "vm.snapshot_revert", vm_id=vm.id, host_id=host.id, detail={"snapshot": snapshot}
        )

    def destroy_vm(
        self, vm_id: int, force: bool = False, *, taken: bool = False, by: Principal = SYSTEM
    ) -> None:
        """Remove the domain, its definition and disk, then the VM and its claim.

        Only its creator or an admin may (a pool VM was made by no user: admins
        only). A checked-out VM is only destroyed with ``force`` (its reservation
        ends). A VM some server is working on (being cleaned, say) is refused with a
        Conflict, unless ``taken``: the caller is that work, on this server.
        """
        vm = self.registry.vms.get(vm_id)
        by.require_owner(vm.created_by, f"destroy vmid {vm_id}")
        previous = vm.state
        if vm.state == VmState.IN_USE and not force:
            raise Conflict(
                f"vmid {vm_id} is checked out; check it in first (or destroy with force=1)"
            )
        allowed = list(VM_DESTROYABLE)
        if vm.state == VmState.BUILDING and vm_id in self.watcher.watching():
            # Its domain runs; this server only waits for its address: it may go.
            allowed.append(VmState.BUILDING)
            taken = True
        if not self.registry.vms.transition(
            vm_id, VmState.DELETING, expect=allowed, unowned=not taken, mine=taken
        ):
            current = self.registry.vms.get(vm_id)
            if current.state in allowed and current.owner is not None:
                raise Conflict(
                    f"vmid {vm_id} is {current.state} and the fabric is working on it; "
                    "try again shortly"
                )
            raise Conflict(f"vmid {vm_id} is {current.state}; it cannot be destroyed now")
        host = self.registry.hosts.get_any(vm.host_id) if vm.host_id is not None else None
        if host is not None:
            try:
                self.driver.destroy(host_target(host), vm.uuid, vm.id)
            except FabricError:
                self.registry.vms.transition(vm_id, previous, expect=[VmState.DELETING])
                raise
        self.addresses.unplan(vm, host)
        self.addresses.unpublish(vm)
        self.registry.vms.forget(vm_id, event_kind="vm.destroy")
