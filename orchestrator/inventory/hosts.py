"""The physical machines file: ``user@address key=value`` lines or a YAML list -> HostSpec."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.model import HostSpec, Source

from . import checks
from .reading import Entry, Errors, Problem, each_entry, text_entry

HOST_KEYS = (
    "port",
    "uri",
    "domain",
    "cpu",
    "ram",
    "disk",
    "arch",
    "network",
    "pool",
    "migrate_address",
)
HOST_YAML_KEYS = ("user", "address", *HOST_KEYS)
DOMAIN_TYPES = ("kvm", "qemu")


def _build_host(user: str | None, address: str | None, entry: Entry, path: str) -> HostSpec:
    port = entry.get("port", checks.port)
    given = entry.get("uri", checks.uri)
    if given is not None:
        uri = given.uri
        if address is None:
            user, address = given.user, given.address
        elif user is None and given.address == address:
            user = given.user
        if port is None:
            port = given.port
    elif address is None:
        raise Problem("a host needs user@address or uri=...")
    else:
        netloc = f"{user}@{address}" if user else address
        uri = f"qemu+ssh://{netloc}{f':{port}' if port else ''}/system"
    return HostSpec(
        user=user,
        address=address,
        port=port,
        uri=uri,
        domain_type=entry.get("domain", checks.choice("domain", DOMAIN_TYPES)) or "kvm",
        cpu=entry.get("cpu", checks.positive("cpu")),
        ram=entry.get("ram", checks.positive("ram")),
        disk=entry.get("disk", checks.positive("disk")),
        arch=entry.get("arch", checks.arch),
        network=entry.get("network", checks.network),
        pool_path=entry.get("pool", checks.abs_path("pool")),
        migrate_address=entry.get("migrate_address", checks.migrate_address),
        source=Source(path, entry.line),
    )


def _host_from_text(tokens: list[str], line: int, path: str) -> HostSpec:
    user = address = None
    if "=" not in tokens[0]:
        user, address = checks.user_at_host(tokens[0])
        tokens = tokens[1:]
    entry = text_entry(tokens, line, HOST_KEYS, ("port", "cpu", "ram", "disk"))
    return _build_host(user, address, entry, path)


def _host_from_yaml(entry: Entry, path: str) -> HostSpec:
    entry.check_keys(HOST_YAML_KEYS)
    address = entry.get("address", lambda v: checks.check_address(v, "address"))
    user = entry.get("user", lambda v: checks.check_user(v, "user"))
    if user is not None and address is None:
        raise Problem("user is given without an address")
    return _build_host(user, address, entry, path)


def parse_hosts(path: str) -> tuple[tuple[HostSpec, ...], Errors]:
    errors = Errors(path)
    hosts: list[HostSpec] = []
    seen: dict[str, int] = {}

    def keep(make: Callable[[], HostSpec], line: int) -> None:
        try:
            host = make()
            if host.key in seen:
                raise Problem(f"duplicate host {host.key} (first on line {seen[host.key]})")
        except Problem as p:
            errors.add(p, line)
            return
        seen[host.key] = line
        hosts.append(host)

    each_entry(path, "hosts", _host_from_yaml, _host_from_text, keep, errors)
    if not hosts and not errors:
        errors.add(Problem("no physical machines"))
    return tuple(hosts), errors
