"""Checks of single values in the input files: numbers, names, paths, addresses and libvirt URIs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .reading import DIGITS, Problem, show

# libvirt drivers and remote transports; a URI is driver[+transport]://[user@][host][:port]/path
URI_DRIVERS = frozenset(
    "qemu test lxc xen libxl vbox vmwareplayer vmwarews vmwarefusion esx gsx vpx "
    "bhyve ch openvz vz parallels hyperv uml phyp".split()
)
URI_TRANSPORTS = frozenset("ssh libssh libssh2 tcp tls unix ext".split())
# Transports that reach a host without the fabric's ssh (connection.SshOptions: host
# keys checked against ssh.known_hosts, ssh.key, batch mode): refused.
UNCHECKED_TRANSPORTS = {
    "ext": "runs a command of its own in place of ssh",
    "libssh": "uses libvirt's own SSH client, not the fabric's ssh",
    "libssh2": "uses libvirt's own SSH client, not the fabric's ssh",
}
QEMU_URI_PATHS = ("/system", "/session", "/embed")
URI_EXAMPLES = "e.g. qemu+ssh://user@host/system, qemu:///system or test:///abs/path/node.xml"

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_ARCH = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_URI = re.compile(r"(?P<driver>[a-z][a-z0-9]*)(?:\+(?P<transport>[a-z][a-z0-9]*))?://(?P<rest>.*)")


# The registry keeps capacities (a host's cpu, ram, disk; a type's) in 32-bit columns
# (registry/tables.py); a type's tid is an id, which the API takes up to 2**53
# (api/params.py MAX_ID: JSON clients lose precision past it; the column is 64-bit).
MAX_SIZE = 2**31 - 1
MAX_TID = 2**53


def positive(key: str, maximum: int = MAX_SIZE) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise Problem(f"{key} must be a positive integer, not {show(value)}")
        if value > maximum:
            raise Problem(f"{key} must be at most {maximum}, not {value}")
        return value

    return check


def port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Problem(f"port must be an integer in 1..65535, not {show(value)}")
    return value


def string(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Problem(f"{key} must be a non-empty string, not {show(value)}")
        return value

    return check


def choice(key: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise Problem(f"{key} must be one of {', '.join(choices)}, not {show(value)}")
        return str(value)

    return check


def abs_path(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        value = string(key)(value)
        if not value.startswith("/"):
            raise Problem(f"{key} {value!r} is not an absolute path")
        return value

    return check


def arch(value: Any) -> str:
    if not isinstance(value, str) or not _ARCH.fullmatch(value):
        raise Problem(f"arch must look like x86_64, aarch64 or i686, not {show(value)}")
    return value


def network(value: Any) -> str:
    if value in ("user", "forward"):
        return str(value)
    if isinstance(value, str):
        kind, sep, net = value.partition(":")
        if sep and kind in ("network", "bridge") and _NET_NAME.fullmatch(net):
            return value
    raise Problem(f"network must be user, forward, network:NAME or bridge:NAME, not {show(value)}")


def name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Problem(
            f"name {show(value)} is not valid (letters, digits and . _ + -, "
            "starting with a letter or digit, at most 64 characters)"
        )
    return value


def check_user(user: Any, where: str) -> str:
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise Problem(f"{where}: {show(user)} is not a valid user name")
    return user


def _is_hostname(address: str) -> bool:
    labels = address.rstrip(".").split(".") if len(address) <= 253 else []
    return bool(labels) and all(_HOST_LABEL.fullmatch(label) for label in labels)


def check_address(address: Any, where: str, allow_ipv6: bool = False) -> str:
    if not isinstance(address, str) or not address:
        raise Problem(f"address must be a non-empty string, not {show(address)}")
    if re.fullmatch(r"[0-9.]+", address):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise Problem(f"{where}: {address!r} is not a valid IPv4 address") from None
        return address
    if allow_ipv6 and ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise Problem(f"{where}: {address!r} is not a valid IPv6 address") from None
        return address
    if not _is_hostname(address):
        raise Problem(f"{where}: {address!r} is not a valid IPv4 address or hostname")
    return address


def migrate_address(value: Any) -> str:
    """The address other hosts send live-migration streams to (QEMU's ``tcp://ADDR``):
    an IPv4 or IPv6 address or a hostname, no port."""
    if not isinstance(value, str) or not value:
        raise Problem(f"migrate_address must be an address, not {show(value)}")
    return check_address(value, "migrate_address", allow_ipv6=True)


def user_at_host(target: str) -> tuple[str | None, str]:
    """``user@address`` (or a bare address) -> (user, address), validated."""
    user: str | None = None
    address = target
    if "@" in target:
        user, _, address = target.partition("@")
        if not address:
            raise Problem(f"{target!r} has no host")
        if not user:
            raise Problem(f"{target!r} has no user")
        if "@" in address:
            raise Problem(f"{target!r} has more than one '@'")
        check_user(user, repr(target))
    head, colon, tail = address.rpartition(":")
    if colon and DIGITS.fullmatch(tail):
        raise Problem(f"{target!r}: write the SSH port as port={tail}, not after a ':'")
    return user, check_address(address, repr(target))


@dataclass(frozen=True)
class Uri:
    uri: str
    user: str | None
    address: str | None
    port: int | None


def uri(value: Any) -> Uri:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise Problem(f"uri must be a libvirt URI ({URI_EXAMPLES}), not {show(value)}")
    m = _URI.fullmatch(value)
    if m is None:
        raise Problem(f"uri {value!r} is not a libvirt URI ({URI_EXAMPLES})")
    driver, transport = m["driver"], m["transport"]
    scheme = f"{driver}+{transport}" if transport else driver
    if driver not in URI_DRIVERS or (transport and transport not in URI_TRANSPORTS):
        raise Problem(
            f"uri {value!r} has unsupported scheme {scheme!r}: expected driver[+transport]:// "
            f"with driver one of {', '.join(sorted(URI_DRIVERS))} and transport one of "
            f"{', '.join(sorted(URI_TRANSPORTS))} ({URI_EXAMPLES})"
        )
    if transport in UNCHECKED_TRANSPORTS:
        raise Problem(
            f"uri {value!r}: transport {transport!r} {UNCHECKED_TRANSPORTS[transport]}, "
            "so the host key is not checked against ssh.known_hosts "
            f"(write {driver}+ssh://)"
        )
    parts = urlsplit(value)
    _check_query(value, parts.query)
    try:
        number = parts.port
    except ValueError:
        raise Problem(f"uri {value!r} has an invalid port") from None
    user, address = parts.username, parts.hostname
    where = f"uri {value!r}"
    if user is not None:
        check_user(user, where)
    if parts.netloc and address is None:
        raise Problem(f"{where} has no host")
    if address is not None:
        check_address(address, where, allow_ipv6=True)
    if number is not None and not 1 <= number <= 65535:
        raise Problem(f"{where} has an invalid port")
    if driver == "test" and not transport and (parts.netloc or len(parts.path) < 2):
        raise Problem(f"{where}: write test:///default or test:///abs/path/node.xml")
    if driver == "qemu" and parts.path not in QEMU_URI_PATHS:
        raise Problem(f"{where} must end in {' or '.join(QEMU_URI_PATHS)}")
    return Uri(value, user, address, number)


def _check_query(value: str, query: str) -> None:
    """Refuse URI parameters that take host-key checking away from the fabric's ssh
    (libvirt reads parameter names in any case; ``no_verify`` is on unless 0)."""
    for key, setting in parse_qsl(query, keep_blank_values=True):
        name = key.lower()
        if name == "command":
            raise Problem(
                f"uri {value!r}: ?{key}= replaces the fabric's ssh, which checks host keys "
                "(set ssh.key and ssh.known_hosts in the config instead)"
            )
        if name == "no_verify" and setting.strip() != "0":
            raise Problem(f"uri {value!r}: ?{key}={setting} turns host-key checking off")
