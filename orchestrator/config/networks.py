"""``networks:``: what the fabric knows of the LANs its hosts put VMs on, keyed by
the hosts' ``network=`` value (``bridge:NAME`` or ``network:NAME``)::

    networks:
      "bridge:br0":
        subnet: 10.251.1.0/24
        gateway: 10.251.1.1              # optional
        dhcp_leases: /var/lib/misc/dnsmasq.leases   # the LAN's DHCP server's lease file
        dhcp_hosts: /etc/dnsmasq.d/fabric-hosts/    # a directory it reads reservations from
        dns_hosts: /var/lib/fabric/dns-hosts/       # its DNS server's hosts directory
        plan: 10.251.1.20-10.251.1.99    # addresses the fabric gives its VMs itself

``dns_hosts``: a directory the LAN's DNS server reads hosts files from (dnsmasq's
``--hostsdir``): the fabric writes one file per VM with an address, named after its
hostname, ``IP hostname fqdn``, so hostnames resolve to the VMs' addresses.

``dhcp_leases``, ``dhcp_hosts`` and ``dns_hosts`` are paths on this machine, or
``[user@]host[:port]:/path`` on another one, reached over SSH. A ``plan`` on a
libvirt network (``network:NAME``) is given as DHCP reservations of that network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from .base import Section, fail, problem, show

_KEY = re.compile(r"(bridge|network):[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_REMOTE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>\d+))?:(?P<path>/.*)"
)


def network_key(value: Any) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise problem(f"must be bridge:NAME or network:NAME (a hosts' network=), got {show(value)}")
    return value


def _subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except (TypeError, ValueError):
        raise problem(f"must be an IPv4 subnet like 10.0.0.0/24, got {show(value)}") from None


def _address(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (TypeError, ValueError):
        raise problem(f"must be an IPv4 address, got {show(value)}") from None


def _location(value: Any) -> str:
    if isinstance(value, str) and (value.startswith("/") or _REMOTE.fullmatch(value)):
        return value
    raise problem(f"must be an absolute path or [user@]host[:port]:/path, got {show(value)}")


def _plan(value: Any) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    text = value if isinstance(value, str) else ""
    first, dash, last = text.partition("-")
    try:
        lo, hi = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
    except ValueError:
        lo = hi = None
    if not dash or lo is None or hi is None or hi < lo:
        raise problem(f"must be a range FIRST-LAST of IPv4 addresses, got {show(value)}")
    return lo, hi


def remote_location(text: str) -> tuple[str | None, str | None, int | None, str]:
    """``(user, host, port, path)`` of a location; host None for a local path."""
    if text.startswith("/"):
        return None, None, None, text
    m = _REMOTE.fullmatch(text)
    assert m is not None  # checked by the schema
    return m["user"], m["host"], int(m["port"]) if m["port"] else None, m["path"]


class NetworkSettings(Section):
    """One ``networks.KEY``: its subnet, where its DHCP leases are, its plan."""

    subnet: Annotated[ipaddress.IPv4Network, PlainValidator(_subnet)] = Field(
        description="an IPv4 subnet like 10.0.0.0/24"
    )
    gateway: Annotated[ipaddress.IPv4Address | None, PlainValidator(_address)] = None
    dhcp_leases: Annotated[str | None, PlainValidator(_location)] = None
    dhcp_hosts: Annotated[str | None, PlainValidator(_location)] = None
    dns_hosts: Annotated[str | None, PlainValidator(_location)] = None
    plan: Annotated[
        tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None, PlainValidator(_plan)
    ] = Field(None, description="FIRST-LAST addresses the fabric gives its VMs")

    @model_validator(mode="after")
    def _plan_in_subnet(self) -> NetworkSettings:
        problems = []
        if self.plan is not None:
            lo, hi = self.plan
            outside = [str(a) for a in (lo, hi) if a not in self.subnet]
            if outside:
                problems.append(
                    (("plan",), f"{', '.join(outside)} is not in {self.subnet}", str(self.plan))
                )
            elif self.gateway is not None and lo <= self.gateway <= hi:
                problems.append((("plan",), f"holds the gateway {self.gateway}", f"{lo}-{hi}"))
        if self.gateway is not None and self.gateway not in self.subnet:
            problems.append((("gateway",), f"{self.gateway} is not in {self.subnet}", None))
        if problems:
            raise fail(*problems)
        return self

    def planned(self) -> Iterator[str]:
        """The plan's addresses, in order (none without a plan)."""
        if self.plan is None:
            return
        lo, hi = self.plan
        for n in range(int(lo), int(hi) + 1):
            yield str(ipaddress.IPv4Address(n))
