"""The use cases: one place that joins registry, scheduler and driver.

A request asks the registry what exists, the scheduler where to put it, the
registry to claim it, the driver to make it, and records the result. A step
that fails undoes what the steps before it did.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .clock import iso  # noqa: F401 - pools, reservations and schedules import it from here
from .config import Config, effective_capacity
from .errors import (
    Conflict,
    FabricError,
    HostUnreachable,
    HypervisorError,
    ImageUnavailable,
    NotFound,
    NoValidHost,
)
from .hostcache import HostCache
from .hypervisor.connection import SshOptions
from .hypervisor.driver import HostTarget, LibvirtDriver, StagedImage, VmPlan
from .model import ImageSpec, Inventory, VmState
from .registry import HostRow, Registry, TypeRow, VmRow, image_spec_from_row
from .remote import Remote, SshSettings, open_local
from .scheduler import PlacementRequest, Scheduler

if TYPE_CHECKING:
    from .cluster import Cluster

# What QEMU says when a forwarded port on the host is already bound.
PORT_TAKEN = "Could not set up host forwarding rule"

log = logging.getLogger(__name__)

# States in which a VM holds its host's capacity and has (or will have) a domain.
LIVE_STATES = (
    VmState.BUILDING,
    VmState.ACTIVE,
    VmState.READY,
    VmState.IN_USE,
    VmState.CLEANING,
    VmState.DELETING,
    VmState.FAILED,
    VmState.VANISHED,
)


@dataclass
class ReconcileReport:
    vanished: list[int]
    resumed: list[int]
    removed: list[int]
    unknown_domains: list[dict]
    skipped_hosts: list[str]
    restarted: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "vanished": self.vanished,
            "resumed": self.resumed,
            "removed": self.removed,
            "unknown_domains": self.unknown_domains,
            "skipped_hosts": self.skipped_hosts,
            "restarted": self.restarted,
        }


def host_target(row: HostRow) -> HostTarget:
    return HostTarget(
        id=row.id,
        label=row.label,
        uri=row.uri,
        domain_type=row.domain_type,
        network=row.network,
        address=row.address,
        pool_path=row.pool_path,
    )


class Fabric:
    def __init__(
        self,
        registry: Registry,
        config: Config,
        driver: LibvirtDriver | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        ssh = config.ssh
        self.ssh_settings = SshSettings(
            key=ssh.key, known_hosts=ssh.known_hosts, connect_timeout=ssh.connect_timeout
        )
        self.driver = driver or LibvirtDriver(
            ssh=SshOptions(ssh.key, ssh.known_hosts, ssh.connect_timeout),
            state_dir=Path(config.state_dir),
            connect_timeout=config.libvirt.connect_timeout,
            call_timeout=config.libvirt.call_timeout,
            upload_timeout=config.libvirt.upload_timeout,
        )
        self.scheduler = scheduler or Scheduler(config.scheduler)
        self.host_cache = HostCache(registry, config.cluster.host_cache)
        self.cluster: Cluster | None = None  # set by start_background when serving
        self._due = 0.0  # when discovery and reconciliation run next
        # More reconciliation (volumes) run with every periodic pass.
        self.reconcilers: list[Callable[[], Any]] = []
        self._inv_lock = threading.Lock()
        # Forwarded ports found taken on a host by something else (until restart).
        self._foreign_ports: dict[int, set[int]] = {}
        self._inv_gen = -1
        self._types: dict[int, TypeRow] = {}
        self._images: dict[int, ImageSpec] = {}
        self.last_reconcile: ReconcileReport | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- start-up and background ---------------------------------------------

    def load(self, inventory: Inventory) -> None:
        self.registry.create_schema()
        self.registry.sync_inventory(inventory)

    def start(self, inventory: Inventory | None = None) -> ReconcileReport:
        """Sync the files into the registry, discover every host, reconcile."""
        if inventory is not None:
            self.load(inventory)
        self.discover_all()
        return self.reconcile()

    DISCOVERY_LEASE = "discovery"

    def start_background(self, cluster: Cluster | None = None) -> None:
        """Discovery and reconciliation every ``discovery.interval`` seconds, and the
        orphan sweep every few seconds; with a cluster, only while holding its lease."""
        self.cluster = cluster
        self._due = time.monotonic() + self.config.discovery.interval
        if cluster is not None:
            cluster.on_gain.append(self._on_lease)
        t = threading.Thread(target=self._maintenance_loop, name="maintenance", daemon=True)
        t.start()
        self._threads.append(t)

    def _on_lease(self, name: str) -> None:
        if name == self.DISCOVERY_LEASE:
            self._due = 0.0  # taken over from a dead server: look at every host now

    def _maintenance_loop(self) -> None:
        tick = self.config.cluster.heartbeat
        while not self._stop.wait(min(tick, self.config.discovery.interval)):
            if self.cluster is not None and not self.cluster.holds(self.DISCOVERY_LEASE):
                continue
            try:
                removed = self.sweep_orphans()
                if removed:
                    log.info("finished the half-done work of dead servers: vms %s", removed)
                if time.monotonic() >= self._due:
                    self._due = time.monotonic() + self.config.discovery.interval
                    self.discover_all()
                    self.reconcile()
                    for more in self.reconcilers:
                        more()
            except Exception:  # noqa: BLE001 - a background loop must survive anything
                if self._stop.is_set():
                    return  # cut short by the server stopping
                log.exception("maintenance pass failed")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.driver.close()

    # -- discovery -----------------------------------------------------------

    def discover_all(self) -> None:
        hosts = self.registry.hosts()
        if not hosts:
            return

        def one(h: HostRow) -> bool:
            return False if self._stop.is_set() else self.discover_host(h)

        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            futures = [pool.submit(one, h) for h in hosts]
            for f in as_completed(futures):
                f.result()

    def discover_host(self, row: HostRow) -> bool:
        """Read one host's capacity; mark it down with the reason if that fails."""
        try:
            facts = self.driver.discover(host_target(row))
        except FabricError as e:
            reason = e.reason if isinstance(e, HostUnreachable) else e.message
            log.warning("host %s is down: %s", row.label, reason)
            self.registry.record_discovery(row.id, up=False, reason=reason)
            return False
        phys = (
            row.cpu_override or facts.cpu,
            row.ram_override or facts.ram_mb,
            row.disk_override or facts.disk_gb,
        )
        totals = effective_capacity(phys, self.config.capacity)
        self.registry.record_discovery(
            row.id, up=True, reason=None, phys=phys, totals=totals, arch=facts.arch
        )
        return True

    # -- images --------------------------------------------------------------

    def _opener(self, spec: ImageSpec) -> Any:
        if spec.host is None:
            return open_local
        remote = Remote(
            spec.user or self.config.guest.user, spec.host, spec.port or 22, self.ssh_settings
        )

        @contextlib.contextmanager
        def open_remote(path: str) -> Iterator[tuple[IO[bytes], int]]:
            try:
                with remote.open_file(path) as opened:
                    yield opened
            except HostUnreachable as e:
                raise ImageUnavailable(f"image host {e.host}: {e.reason}") from None

        return open_remote

    def _stage(self, host: HostRow, image_id: int, spec: ImageSpec) -> StagedImage:
        sources = {"disk": spec.path}
        if spec.kernel:
            sources["kernel"] = spec.kernel
        if spec.initrd:
            sources["initrd"] = spec.initrd
        known = self.registry.staged_image(host.id, image_id) is not None
        staged = self.driver.stage(
            host_target(host),
            f"{image_id}-{spec.name}",
            spec.format,
            sources,
            self._opener(spec),
            reuse=known,
        )
        if not known:
            self.registry.record_staged(host.id, image_id, staged.path, staged.capacity)
        return staged

    # -- VMs -----------------------------------------------------------------

    def create_vm(self, name: str, tid: int, image_id: int, pool: str | None = None) -> VmRow:
        """Place, claim and build one VM; undoes itself on failure.

        A plain VM comes back ``active``. A pool VM comes back ``building`` with its
        domain running; the pool makes it ``ready`` once its guest answers.
        """
        started = time.monotonic()
        vt, spec = self._type_and_image(tid, image_id)
        req = PlacementRequest(
            cpu=vt.cpu, ram=vt.ram, disk=vt.disk, arch=spec.arch, label=f"instance_type {tid}"
        )
        excluded: set[int] = set()
        failures: list[str] = []
        while len(failures) < self.config.create.max_attempts:
            try:
                placement = self.scheduler.select(
                    self.host_cache.states(), replace(req, exclude=frozenset(excluded))
                )
            except NoValidHost as e:
                if failures:
                    raise NoValidHost(
                        f"{e.message}; earlier attempts failed: {'; '.join(failures)}", e.report
                    ) from None
                raise
            vm = host = None
            for cand in placement.hosts:
                vm = self.registry.claim_vm(
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
                )
                if vm is not None:
                    self.host_cache.claimed(cand.id, vt.cpu, vt.ram, vt.disk)
                    host = self.registry.host(cand.id)
                    break
                self.host_cache.refresh_host(cand.id)  # our view of it was out of date
            if vm is None or host is None:
                continue  # every candidate was taken by a concurrent request: look again
            try:
                final = VmState.BUILDING if pool else VmState.ACTIVE
                return self._build(vm, host, spec, started, final)
            except ImageUnavailable:
                raise
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
                    self.registry.record_discovery(host.id, up=False, reason=e.reason)
        raise FabricError(f"could not create the VM: {'; '.join(failures)}")

    def _type_and_image(self, tid: int, image_id: int) -> tuple[TypeRow, ImageSpec]:
        """A VM type and an image, read once per sync of the files (they change
        only then), not on every request."""
        with self._inv_lock:
            if self._inv_gen != self.registry.inventory_gen:
                self._inv_gen = self.registry.inventory_gen
                self._types.clear()
                self._images.clear()
            vt = self._types.get(tid)
            spec = self._images.get(image_id)
        if vt is None:
            vt = self.registry.vm_type(tid)
        if spec is None:
            spec = image_spec_from_row(self.registry.image(image_id))
        with self._inv_lock:
            self._types[tid] = vt
            self._images[image_id] = spec
        return vt, spec

    def _port_range(self, host_id: int) -> range | None:
        forward = self.host_cache.network(host_id) == "forward"
        return self.config.create.port_range if forward else None

    def _build(
        self, vm: VmRow, host: HostRow, spec: ImageSpec, started: float, final: str
    ) -> VmRow:
        target = host_target(host)
        try:
            staged = self._stage(host, vm.image_id, spec)
            console = self.driver.create(target, self._plan(vm, host, spec), staged)
        except BaseException as e:
            # The driver removed what it made; give the claim back and forget the VM.
            with contextlib.suppress(FabricError):
                self.driver.destroy(target, vm.uuid, vm.id)
            if isinstance(e, HypervisorError) and PORT_TAKEN not in str(e):
                # The staged copy may be what broke (e.g. removed behind our back):
                # the next create on this host copies the image again.
                self.registry.forget_staged(host.id, vm.image_id)
            detail = {"error": str(e), "host": host.label}
            self.registry.forget_vm(vm.id, event_kind="vm.create_failed", detail=detail)
            raise
        ip = host.address if host.network == "forward" else None
        self.registry.transition(
            vm.id, final, expect=[VmState.BUILDING], ip=ip, console_path=console
        )
        self.registry.record_event(
            "vm.create", vm_id=vm.id, host_id=host.id, duration=time.monotonic() - started
        )
        return self.registry.vm(vm.id)

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

    def reset_vm_disk(self, vm: VmRow) -> None:
        """Put the VM's disk back to its image's state and boot it again."""
        host = self.registry.host_any(vm.host_id) if vm.host_id else None
        if host is None:
            raise Conflict(f"vmid {vm.id} has no host")
        spec = image_spec_from_row(self.registry.image(vm.image_id))
        staged = self._stage(host, vm.image_id, spec)
        self.driver.reset(host_target(host), self._plan(vm, host, spec), staged)

    def guest(self, vm: VmRow) -> Remote:
        """SSH to the VM's guest. Its host key is pinned: from ``guest.host_keys`` if
        configured, else the key it showed the first time (recorded in the registry)."""
        if not vm.ip or not vm.ssh_port:
            raise Conflict(f"vmid {vm.id} has no SSH endpoint the fabric can reach")
        g = self.config.guest
        settings = SshSettings(
            key=g.key or self.config.ssh.key,
            connect_timeout=self.config.ssh.connect_timeout,
            command_timeout=g.command_timeout,
        )
        if g.host_keys:
            pinned = [ln for ln in Path(g.host_keys).read_text().splitlines() if ln.strip()]
            return Remote(g.user, vm.ip, vm.ssh_port, settings, pinned_keys=pinned)
        if vm.guest_host_key:
            return Remote(g.user, vm.ip, vm.ssh_port, settings, pinned_keys=[vm.guest_host_key])
        return Remote(
            g.user,
            vm.ip,
            vm.ssh_port,
            settings,
            on_new_key=lambda key: self.registry.set_guest_host_key(vm.id, key),
        )

    def destroy_vm(self, vm_id: int, force: bool = False, *, taken: bool = False) -> None:
        """Remove the domain, its definition and disk, then the VM and its claim.

        A checked-out VM is only destroyed with ``force`` (its reservation ends). A VM
        some server is working on (being cleaned, say) is refused with a Conflict,
        unless ``taken``: the caller is that work, on this server.
        """
        vm = self.registry.vm(vm_id)
        previous = vm.state
        if vm.state == VmState.IN_USE and not force:
            raise Conflict(
                f"vmid {vm_id} is checked out; check it in first (or destroy with force=1)"
            )
        allowed = [s for s in LIVE_STATES if s != VmState.BUILDING]
        if not self.registry.transition(
            vm_id, VmState.DELETING, expect=allowed, unowned=not taken, mine=taken
        ):
            current = self.registry.vm(vm_id)
            if current.state in allowed and current.owner is not None:
                raise Conflict(
                    f"vmid {vm_id} is {current.state} and the fabric is working on it; "
                    "try again shortly"
                )
            raise Conflict(f"vmid {vm_id} is {current.state}; it cannot be destroyed now")
        if vm.host_id is not None:
            host = self.registry.host_any(vm.host_id)
            try:
                self.driver.destroy(host_target(host), vm.uuid, vm.id)
            except FabricError:
                self.registry.transition(vm_id, previous, expect=[VmState.DELETING])
                raise
        self.registry.forget_vm(vm_id, event_kind="vm.destroy")

    # -- reconciliation ------------------------------------------------------

    def reconcile(self) -> ReconcileReport:
        """Compare the registry with what each reachable host really runs, and resume.

        - building, no domain: the create died half-way; its claim is released.
        - building, domain present: finished if it runs, removed if not.
        - deleting: the destroy is finished.
        - a live VM whose domain is gone: marked ``vanished`` (kept, so it is seen).
        - a domain with our metadata that the registry does not know: reported.

        A VM that a live server (this one included) is working on is left alone:
        its work is in flight, not half-done. Safe to run while serving.
        """
        report = ReconcileReport([], [], [], [], [])
        # The registry first, the hosts second: a VM that is live in this snapshot
        # had its domain before the listings below, so it cannot be taken for
        # vanished; one that changed since fails the conditional transitions.
        by_host: dict[int, dict[int, VmRow]] = {}
        for vm in self.registry.vms():
            if vm.host_id is not None:
                by_host.setdefault(vm.host_id, {})[vm.id] = vm
        for host in self.registry.hosts():
            if self._stop.is_set():
                break
            if host.status != "up":
                report.skipped_hosts.append(host.label)
                continue
            target = host_target(host)
            known = by_host.get(host.id, {})
            try:
                domains = self.driver.domains(target)
            except FabricError as e:
                report.skipped_hosts.append(host.label)
                log.warning("reconcile skipped %s: %s", host.label, e)
                continue
            mine = self.registry.installation_id
            ours = {
                d.vm_id: d
                for d in domains
                if d.vm_id is not None and d.installation in (mine, None)
            }
            for vm in known.values():
                if self.registry.owner_alive(vm):
                    continue  # being built, cleaned or destroyed right now
                dom = ours.get(vm.id)
                if vm.state == VmState.DELETING or (
                    vm.state == VmState.BUILDING
                    and (dom is None or not dom.active or vm.pool is not None)
                ):
                    if self._finish_orphan(target, vm):
                        report.removed.append(vm.id)
                elif vm.state == VmState.BUILDING:
                    if self.registry.transition(
                        vm.id, VmState.ACTIVE, expect=[VmState.BUILDING], unowned=True
                    ):
                        report.resumed.append(vm.id)
                elif (
                    dom is not None
                    and not dom.active
                    and vm.state
                    in (VmState.ACTIVE, VmState.READY, VmState.IN_USE, VmState.CLEANING)
                ):
                    # Stopped behind our back (e.g. the host rebooted): it should run.
                    # Held while we look again and start it, so that no cleaner is
                    # resetting it at the same time.
                    if self._restart(target, vm):
                        report.restarted.append(vm.id)
                elif dom is None and vm.state != VmState.VANISHED:
                    if self.registry.transition(
                        vm.id,
                        VmState.VANISHED,
                        expect=[vm.state],
                        unowned=True,
                        error=f"domain {vm.domain_name} is no longer on {host.label}",
                    ):
                        report.vanished.append(vm.id)
            for vm_id, dom in ours.items():
                if vm_id in known or self.vm_exists(vm_id):
                    continue
                with contextlib.suppress(FabricError):  # unsure: report it
                    if not self.driver.domain_defined(target, dom.uuid):
                        continue  # destroyed meanwhile, with its VM
                report.unknown_domains.append(
                    {"pmid": host.id, "domain": dom.name, "vmid": vm_id, "active": dom.active}
                )
        for kind, ids in (
            ("reconcile.vanished", report.vanished),
            ("reconcile.resumed", report.resumed),
            ("reconcile.restarted", report.restarted),
        ):
            for vm_id in ids:
                self.registry.record_event(kind, vm_id=vm_id)
        for d in report.unknown_domains:
            log.warning("unknown domain with fabric metadata: %s", d)
            self.registry.record_event("reconcile.unknown_domain", host_id=d["pmid"], detail=d)
        self.last_reconcile = report
        return report

    def _restart(self, target: HostTarget, vm: VmRow) -> bool:
        if not self.registry.take_vm(vm.id, [vm.state]):
            return False  # it moved on, or someone is working on it
        try:
            if self.driver.domain_running(target, vm.uuid):
                return False
            self.driver.start(target, vm.domain_name)
            return True
        except FabricError as e:
            self.registry.transition(
                vm.id, VmState.FAILED, expect=[vm.state], error=f"could not restart: {e}"
            )
            return False
        finally:
            self.registry.let_go(vm.id)

    def _finish_orphan(self, target: HostTarget, vm: VmRow) -> bool:
        """Remove a VM whose create or destroy stopped half-way (its server died, or
        this one restarted): the domain if any, then the VM and its claim."""
        if not self.registry.take_vm(vm.id, [VmState.BUILDING, VmState.DELETING]):
            return False  # someone live took it meanwhile
        try:
            self.driver.destroy(target, vm.uuid, vm.id)
        except FabricError as e:
            log.warning("vm %d: could not remove its half-made domain yet: %s", vm.id, e)
            self.registry.let_go(vm.id)
            return False
        self.registry.forget_vm(vm.id, event_kind="reconcile.removed")
        return True

    def sweep_orphans(self) -> list[int]:
        """Finish the creates and destroys that servers died in the middle of. Cheap
        when there are none (one query), so it runs often."""
        done = []
        for vm in self.registry.orphans():
            if vm.host_id is None:
                continue
            host = self.registry.host_any(vm.host_id)
            target = host_target(host)
            if vm.state == VmState.BUILDING and vm.pool is None:
                # A create that got as far as a running domain is finished instead.
                try:
                    dom = next((d for d in self.driver.domains(target) if d.vm_id == vm.id), None)
                except FabricError:
                    continue  # the host is unreachable: next time
                if dom is not None and dom.active:
                    if self.registry.transition(
                        vm.id, VmState.ACTIVE, expect=[VmState.BUILDING], unowned=True
                    ):
                        self.registry.record_event("reconcile.resumed", vm_id=vm.id)
                    continue
            if self._finish_orphan(target, vm):
                done.append(vm.id)
        return done

    def vm_exists(self, vm_id: int) -> bool:
        try:
            self.registry.vm(vm_id)
        except NotFound:
            return False
        return True
