"""Networks on a host: the libvirt networks it has, and what libvirt knows of a
domain's addresses (its guest agent, a libvirt network's DHCP leases, the host's
neighbour table), and DHCP reservations on a libvirt network."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import libvirt

from .base import DriverBase
from .records import HostTarget
from .xml import safe_fromstring

log = logging.getLogger(__name__)

# The address sources libvirt offers for a domain's interfaces.
SOURCES = {
    "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
}


@dataclass(frozen=True)
class NetworkInfo:
    """A libvirt network on a host."""

    name: str
    bridge: str | None
    active: bool
    subnet: str | None  # its first IPv4 subnet, e.g. 192.168.122.0/24

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "bridge": self.bridge,
            "active": self.active,
            "subnet": self.subnet,
        }


class NetworksMixin(DriverBase):
    """The network half of LibvirtDriver."""

    def networks(self, host: HostTarget) -> list[NetworkInfo]:
        """The host's libvirt networks (none where the daemon has no network driver,
        as a session daemon)."""

        def fn(conn: libvirt.virConnect) -> list[NetworkInfo]:
            try:
                nets = conn.listAllNetworks(0)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    return []
                raise
            return [_network_info(n) for n in nets]

        return self.connection(host).call(fn)

    def interface_addresses(self, host: HostTarget, uuid: str, source: str) -> dict[str, str]:
        """MAC -> IPv4 address of the domain's interfaces, as ``source`` (agent, lease
        or arp) sees them. Empty when that source knows nothing (no agent in the guest,
        no lease yet, a source this libvirt cannot read)."""

        if host.is_test:
            # libvirt's test driver makes addresses up (192.168.0.N for any interface
            # of any domain): they are no one's, so it has none to tell.
            return {}

        def fn(conn: libvirt.virConnect) -> dict[str, str]:
            try:
                dom = conn.lookupByUUIDString(uuid)
                found = dom.interfaceAddresses(SOURCES[source], 0) or {}
            except libvirt.libvirtError as e:
                log.debug("%s: %s addresses of %s: %s", host.label, source, uuid, e)
                return {}
            out = {}
            for iface in found.values():
                mac = (iface.get("hwaddr") or "").lower()
                for addr in iface.get("addrs") or []:
                    if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and mac:
                        out.setdefault(mac, addr["addr"])
            return out

        return self.connection(host).call(fn)

    def network_leases(self, host: HostTarget, network: str) -> dict[str, str]:
        """MAC -> IPv4 address of the DHCP leases of the host's libvirt network."""

        def fn(conn: libvirt.virConnect) -> dict[str, str]:
            try:
                leases = conn.networkLookupByName(network).DHCPLeases(None, 0)
            except libvirt.libvirtError as e:
                log.debug("%s: leases of network %s: %s", host.label, network, e)
                return {}
            out = {}
            for lease in leases:
                if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("mac"):
                    out[lease["mac"].lower()] = lease["ipaddr"]
            return out

        return self.connection(host).call(fn)

    def reserve_address(
        self, host: HostTarget, network: str, mac: str, ip: str, *, add: bool = True
    ) -> None:
        """Add (or remove) a DHCP reservation ``mac`` -> ``ip`` on the host's libvirt
        network, live and in its definition. Removing an absent one is fine."""
        xml = f"<host mac='{mac}' ip='{ipaddress.IPv4Address(ip)}'/>"
        command = (
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
            if add
            else libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
        )

        def fn(conn: libvirt.virConnect) -> None:
            net = conn.networkLookupByName(network)
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            try:
                net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)
            except libvirt.libvirtError as e:
                # adding one that is there, or removing one that is not: nothing to do
                if e.get_error_code() not in (
                    libvirt.VIR_ERR_OPERATION_INVALID,
                    libvirt.VIR_ERR_OPERATION_FAILED,
                ):
                    raise
                log.debug("%s: reservation %s -> %s on %s: %s", host.label, mac, ip, network, e)

        self.connection(host).call(fn)


def _network_info(net: libvirt.virNetwork) -> NetworkInfo:
    root = safe_fromstring(net.XMLDesc(0))
    bridge = root.find("bridge")
    subnet = None
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        prefix = ip.get("prefix") or ip.get("netmask") or "24"
        subnet = str(ipaddress.IPv4Interface(f"{ip.get('address')}/{prefix}").network)
        break
    return NetworkInfo(
        name=net.name(),
        bridge=bridge.get("name") if bridge is not None else None,
        active=bool(net.isActive()),
        subnet=subnet,
    )
