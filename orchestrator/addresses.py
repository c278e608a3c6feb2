"""Each VM's address: given from a network's plan, and learned from what a real host
offers, most trusted first (as cockpit-machines and WebVirtCloud merge them):

- ``agent``: the QEMU guest agent inside the guest (through libvirt);
- ``lease``: the DHCP server's lease for the VM's MAC: a libvirt network's own
  leases (``network:NAME``), or the lease file of the LAN's DHCP server
  (``networks.KEY.dhcp_leases`` in the configuration);
- ``arp``: the host's neighbour table for the VM's MAC (through libvirt, or
  ``ip neigh`` over the host's SSH).

A plan (``networks.KEY.plan``) gives each VM an address of its own before it
boots: as a DHCP reservation on the host's libvirt network, or as a file in the
LAN's DHCP server's reservation directory (``dhcp_hosts``, dnsmasq's
``--dhcp-hostsdir``). The VM's address is still what a source sees it take.

Names: where the LAN's DNS server reads a hosts directory (``dns_hosts``, dnsmasq's
``--hostsdir``), each VM with an address has a file there named after its hostname,
``IP hostname fqdn``: written when its address is first seen or changes, removed
when the VM goes (destroyed, or replaced by an evacuation). A VM rebuilt on another
host keeps its name: its MAC, and so its planned address on the shared LAN, move
with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import NetworkSettings
from .config.networks import remote_location
from .errors import FabricError, NotFound, NoValidHost
from .hostnames import LABEL, fqdn
from .hosts import host_target
from .hypervisor.driver import LibvirtDriver
from .model import VM_RUNNING, AddressSource, HostStatus, NetworkKind, NetworkMode, VmState
from .periodic import PeriodicWorker
from .registry import HostRow, Registry, VmRow
from .remote import Remote, SshSettings

log = logging.getLogger(__name__)

IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def lease_lines(text: str) -> Iterator[tuple[str, str, str]]:
    """``(expiry, mac, ip)`` of each lease in dnsmasq's lease file format (``expiry
    mac ip hostname client-id`` a line; expiry 0: never), the MAC in lower case."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and ":" in parts[1] and "." in parts[2]:
            yield parts[0], parts[1].lower(), parts[2]


@dataclass(frozen=True)
class Found:
    ip: str
    source: AddressSource


class Lookup:
    """One pass of looking for addresses: what a source gives for a whole network or
    host (a lease file, a neighbour table) is read once per pass, not once per VM."""

    def __init__(self, addresses: Addresses) -> None:
        self.addresses = addresses
        self._maps: dict[tuple[str, str], dict[str, str]] = {}

    def _map(self, key: tuple[str, str], read: Callable[[], dict[str, str]]) -> dict[str, str]:
        if key not in self._maps:
            try:
                self._maps[key] = read()
            except FabricError as e:
                log.debug("address source %s: %s", key, e)
                self._maps[key] = {}
        return self._maps[key]

    def find(self, vm: VmRow, host: HostRow) -> Found | None:
        """The VM's address by the most trusted source that knows it; None if none does."""
        if not vm.network:
            return None
        mode = NetworkMode.parse(vm.network)
        if not mode.on_lan:
            return None
        mac = vm.mac.lower()
        target = host_target(host)
        driver = self.addresses.driver

        def agent() -> dict[str, str]:
            return driver.interface_addresses(target, vm.uuid, "agent")

        def leases() -> dict[str, str]:
            if mode.kind == NetworkKind.NETWORK:
                return driver.network_leases(target, mode.name or "")
            return self.addresses.lease_file(str(mode))

        def arp() -> dict[str, str]:
            return driver.interface_addresses(target, vm.uuid, "arp")

        def neighbours() -> dict[str, str]:
            return self.addresses.neighbours(host)

        lan = f"{host.id}/{mode}" if mode.kind == NetworkKind.NETWORK else str(mode)
        for source, key, read in (
            (AddressSource.AGENT, ("agent", vm.uuid), agent),
            (AddressSource.LEASE, ("leases", lan), leases),
            (AddressSource.ARP, ("arp", vm.uuid), arp),
            (AddressSource.ARP, ("neigh", str(host.id)), neighbours),
        ):
            ip = self._map(key, read).get(mac)
            if ip:
                return Found(ip, source)
        return None


class Addresses:
    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        networks: dict[str, NetworkSettings],
        ssh: SshSettings,
        default_user: str,
        domain: str | None = None,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.networks = networks
        self.ssh = ssh  # how the fabric reaches hosts and DHCP servers
        self.default_user = default_user
        self.domain = domain  # hostnames.domain: the FQDNs' domain

    def lookup(self) -> Lookup:
        return Lookup(self)

    def refresh(self) -> list[int]:
        """Look again at the address of every running VM on a LAN (with discovery):
        one that changed (a lease renewed elsewhere) is recorded, with an event. The
        ids of the VMs whose address changed."""
        lookup = self.lookup()
        hosts = {h.id: h for h in self.registry.hosts.list(include_retired=True)}
        changed = []
        for vm in self.registry.vms.list(states=VM_RUNNING):
            host = hosts.get(vm.host_id or 0)
            if host is None or host.status != HostStatus.UP or not vm.ip:
                continue
            found = lookup.find(vm, host)
            if found is None or found.ip == vm.ip:
                continue
            before = self.registry.vms.record_address(vm.id, found.ip, found.source)
            self.registry.events.record(
                "vm.address_changed",
                vm_id=vm.id,
                host_id=vm.host_id,
                detail={"from": before, "to": found.ip, "source": found.source},
            )
            log.info("vm %d: address %s -> %s (%s)", vm.id, before, found.ip, found.source)
            self.publish(vm, found.ip)
            changed.append(vm.id)
        return changed

    def find(self, vm: VmRow, host: HostRow) -> Found | None:
        return Lookup(self).find(vm, host)

    # -- the plan ------------------------------------------------------------------

    def plan(self, vm: VmRow, host: HostRow) -> str | None:
        """Give the VM an address of its network's plan and reserve it for the VM's
        MAC; None when its network has no plan. Raises NoValidHost when the plan has
        no free address left."""
        settings = self.networks.get(vm.network or "")
        if settings is None or settings.plan is None:
            return None
        elsewhere = self.taken_on_the_lan(settings, vm.mac)
        free = (a for a in settings.planned() if a not in elsewhere)
        ip = self.registry.addresses.allocate(vm.network or "", vm.id, free)
        if ip is None:
            lo, hi = settings.plan
            raise NoValidHost(f"network {vm.network}'s plan {lo}-{hi} has no free address")
        self._reserve(vm, host, ip, add=True)
        return ip

    def taken_on_the_lan(self, settings: NetworkSettings, mac: str) -> set[str]:
        """Addresses the LAN's DHCP server already ties to a MAC other than ``mac``:
        reserved by a file of its reservation directory (another installation's, an
        operator's own line) or leased and not expired. Neither can be given: dnsmasq
        ignores a second reservation of an address ("duplicate dhcp-host IP address")
        and will not hand a reserved address to its MAC while another MAC holds its
        lease, so the VM would boot on an address of the server's dynamic range. What
        cannot be read is logged and left out (the reservation's own write says more)."""
        mac = mac.lower()
        out: set[str] = set()
        if settings.dhcp_hosts:
            try:
                files = self._read_dir(settings.dhcp_hosts)
            except FabricError as e:
                log.warning("cannot read the reservations in %s: %s", settings.dhcp_hosts, e)
                files = {}
            for data in files.values():
                for line in data.decode(errors="replace").splitlines():
                    fields = [f.strip().lower() for f in line.split("#")[0].split(",")]
                    if mac not in fields:
                        out.update(f for f in fields if IPV4.fullmatch(f))
        if settings.dhcp_leases:
            try:
                text = self._read(settings.dhcp_leases).decode(errors="replace")
            except FabricError as e:
                log.warning("cannot read the leases in %s: %s", settings.dhcp_leases, e)
                text = ""
            now = time.time()
            for expiry, other, ip in lease_lines(text):
                live = expiry.isdigit() and (int(expiry) == 0 or int(expiry) > now)
                if live and other != mac:
                    out.add(ip)
        return out

    def unplan(self, vm: VmRow, host: HostRow | None) -> None:
        """Take back the VM's reservation (the address itself is freed with its row)."""
        ip = self.registry.addresses.of(vm.id)
        if ip is None:
            return
        try:
            self._reserve(vm, host, ip, add=False)
        except FabricError as e:
            log.warning("vm %d: could not remove the reservation of %s: %s", vm.id, ip, e)

    def _reserve(self, vm: VmRow, host: HostRow | None, ip: str, *, add: bool) -> None:
        mode = NetworkMode.parse(vm.network or "user")
        settings = self.networks.get(str(mode))
        if mode.kind == NetworkKind.NETWORK and host is not None:
            self.driver.reserve_address(host_target(host), mode.name or "", vm.mac, ip, add=add)
        elif settings is not None and settings.dhcp_hosts:
            name = f"fabric-{self.registry.installation_id}-vm-{vm.id}"
            where = settings.dhcp_hosts.rstrip("/") + "/" + name
            if add:
                self._write(where, f"{vm.mac},{ip}\n".encode())
            else:
                self._remove(where)

    # -- names: the LAN's DNS server's hosts directory -----------------------------

    def _dns_file(self, vm: VmRow) -> str | None:
        """Where the VM's hosts file goes: ``dns_hosts/<hostname>`` of its network;
        None when its network has no ``dns_hosts`` (or the VM no hostname)."""
        settings = self.networks.get(vm.network or "")
        if settings is None or not settings.dns_hosts or not vm.hostname:
            return None
        if not LABEL.fullmatch(vm.hostname):  # a file name, never a path
            return None
        return settings.dns_hosts.rstrip("/") + "/" + vm.hostname

    def publish(self, vm: VmRow, ip: str) -> None:
        """Write the VM's name to its LAN's DNS hosts directory: ``IP hostname fqdn``.
        A DNS server that cannot be written to is logged, not fatal: the VM works."""
        where = self._dns_file(vm)
        if where is None:
            return
        names = [vm.hostname or ""]
        full = fqdn(vm.hostname, self.domain)
        if full and full not in names:
            names.append(full)
        try:
            self._write(where, f"{ip} {' '.join(names)}\n".encode())
        except FabricError as e:
            log.warning("vm %d: could not write its DNS name to %s: %s", vm.id, where, e)

    def unpublish(self, vm: VmRow) -> None:
        """Remove the VM's name from its LAN's DNS hosts directory (absent is fine)."""
        where = self._dns_file(vm)
        if where is None:
            return
        try:
            self._remove(where)
        except FabricError as e:
            log.warning("vm %d: could not remove its DNS name %s: %s", vm.id, where, e)

    # -- what the sources read -------------------------------------------------------

    def lease_file(self, network: str) -> dict[str, str]:
        """MAC -> address of the LAN's DHCP leases (dnsmasq's lease file format:
        ``expiry mac ip hostname client-id`` a line; the last line of a MAC wins)."""
        settings = self.networks.get(network)
        if settings is None or not settings.dhcp_leases:
            return {}
        text = self._read(settings.dhcp_leases).decode(errors="replace")
        return {mac: ip for _expiry, mac, ip in lease_lines(text)}

    def neighbours(self, host: HostRow) -> dict[str, str]:
        """MAC -> IPv4 address from the host's neighbour table (``ip -j neigh`` over
        its SSH); empty for a host the fabric does not reach over SSH."""
        parts = urlsplit(host.uri)
        if not parts.scheme.endswith("+ssh") or not parts.hostname:
            return {}
        remote = Remote(
            parts.username or self.default_user, parts.hostname, parts.port or 22, self.ssh
        )
        # A big LAN's table is larger than a command's usual output cap.
        res = remote.run(["ip", "-j", "-4", "neigh", "show"], timeout=10, max_output=4 << 20)
        if res.status != 0:
            return {}
        try:
            entries = json.loads(res.stdout or "[]")
        except ValueError:
            return {}
        out = {}
        for e in entries:
            state = set(e.get("state") or [])
            if e.get("lladdr") and e.get("dst") and not state & {"FAILED", "INCOMPLETE"}:
                out[e["lladdr"].lower()] = e["dst"]
        return out

    def _remote(self, location: str) -> tuple[Remote | None, str]:
        user, host, port, path = remote_location(location)
        if host is None:
            return None, path
        return Remote(user or self.default_user, host, port or 22, self.ssh), path

    def _read(self, location: str) -> bytes:
        remote, path = self._remote(location)
        if remote is None:
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                return b""
            except OSError as e:
                raise FabricError(f"cannot read {path}: {e.strerror}") from None
        with remote.open_file(path) as (fh, _size):
            return fh.read()

    def _read_dir(self, location: str) -> dict[str, bytes]:
        """Name -> content of each file of a directory that a DHCP server reading it
        reads (not dot-files, not backups ending in ``~``); {} when it does not exist."""
        remote, path = self._remote(location)
        if remote is not None:
            found = remote.read_dir(path)
        else:
            found = {}
            try:
                entries = list(Path(path).iterdir())
            except FileNotFoundError:
                return {}
            except OSError as e:
                raise FabricError(f"cannot read {path}: {e.strerror}") from None
            for entry in entries:
                with contextlib.suppress(OSError):  # gone meanwhile, a directory
                    found[entry.name] = entry.read_bytes()
        return {
            name: data
            for name, data in found.items()
            if not name.startswith(".") and not name.endswith("~")
        }

    def _write(self, location: str, data: bytes) -> None:
        remote, path = self._remote(location)
        if remote is not None:
            remote.write_file(path, data)
            return
        # A dot-file first (a DHCP server reading the directory skips those), readable
        # by all (dnsmasq reads reservations as nobody), then renamed into place.
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            tmp.replace(target)
        except OSError as e:
            raise FabricError(f"cannot write {path}: {e.strerror}") from None

    def _remove(self, location: str) -> None:
        remote, path = self._remote(location)
        if remote is not None:
            remote.remove_file(path)
            return
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


class AddressWatcher(PeriodicWorker):
    """Learns the address of each VM this server has just started on a LAN: a plain VM
    becomes ``active`` once its address is seen, a pool VM carries on to its readiness
    check; one whose address is not seen within ``guest.address_timeout`` seconds is
    ``failed`` with the reason. (Each server watches its own VMs; one that takes over a
    dead server's half-done create watches that VM from then on.)"""

    name = "addresses"

    def __init__(
        self, registry: Registry, addresses: Addresses, timeout: float, interval: float = 1.0
    ) -> None:
        super().__init__(interval)
        self.registry = registry
        self.addresses = addresses
        self.timeout = timeout
        self._lock = threading.Lock()
        self._since: dict[int, float] = {}  # VM id -> when it was started (monotonic)

    def watch(self, vm_id: int) -> None:
        with self._lock:
            self._since.setdefault(vm_id, time.monotonic())
        self.wake()

    def watching(self) -> set[int]:
        with self._lock:
            return set(self._since)

    def run_once(self) -> None:
        lookup = self.addresses.lookup()
        for vm_id, since in sorted(self._snapshot().items()):
            if self.stopping:
                return
            self._look(lookup, vm_id, since)

    def _snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self._since)

    def _done(self, vm_id: int) -> None:
        with self._lock:
            self._since.pop(vm_id, None)

    def _look(self, lookup: Lookup, vm_id: int, since: float) -> None:
        try:
            vm = self.registry.vms.get(vm_id)
        except NotFound:
            self._done(vm_id)  # destroyed meanwhile
            return
        if vm.state != VmState.BUILDING or vm.ip or vm.host_id is None:
            self._done(vm_id)
            return
        host = self.registry.hosts.get_any(vm.host_id)
        found = lookup.find(vm, host)
        waited = time.monotonic() - since
        if found is not None:
            self._done(vm_id)
            self.registry.vms.record_address(vm_id, found.ip, found.source)
            self.addresses.publish(vm, found.ip)
            self.registry.events.record(
                "vm.address",
                vm_id=vm_id,
                host_id=vm.host_id,
                duration=waited,
                detail={"ip": found.ip, "source": found.source},
            )
            if vm.pool is None:  # a pool VM goes on to its readiness check
                self.registry.vms.transition(vm_id, VmState.ACTIVE, expect=[VmState.BUILDING])
            log.info("vm %d: address %s (%s) after %.1f s", vm_id, found.ip, found.source, waited)
            return
        if waited < self.timeout:
            return
        self._done(vm_id)
        reason = (
            f"no address seen for MAC {vm.mac} on {vm.network} within {self.timeout:g} s "
            "(guest agent, DHCP leases, neighbour table)"
        )
        log.warning("vm %d: %s", vm_id, reason)
        if self.registry.vms.transition(
            vm_id, VmState.FAILED, expect=[VmState.BUILDING], error=reason
        ):
            self.registry.events.record(
                "vm.failed",
                vm_id=vm_id,
                host_id=vm.host_id,
                detail={"pool": vm.pool, "reason": reason},
            )

    def wait_for(self, vm_id: int, poll: float = 0.5) -> VmRow:
        """Until the VM has an address (returns it) or has failed (FabricError with the
        reason); for a pool's builder, which carries on from there. When the server
        stops, at once (FabricError): the VM stays building, and the next start (or
        another server) watches it on, so a stop never waits for a guest."""
        deadline = time.monotonic() + self.timeout + 10 * self.interval + 5
        while time.monotonic() < deadline:
            vm = self.registry.vms.get(vm_id)
            if vm.ip:
                return vm
            if vm.state != VmState.BUILDING:
                raise FabricError(vm.error or f"vmid {vm_id} is {vm.state}")
            if self.stopped(poll):
                raise FabricError(f"vmid {vm_id}: the server is stopping; watched on at start")
        raise FabricError(f"vmid {vm_id}: no address within {self.timeout:g} s")
