"""The fabric's YAML configuration: policy, capacity ratios, SSH, timeouts.

Every section is optional; unknown keys are errors that name the file and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .scheduler import Policy, build_policy


@dataclass(frozen=True)
class CapacityConfig:
    """How much of a host VMs may claim: ``physical * ratio - reserved``."""

    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_host_cpus: int = 0
    reserved_host_ram: int = 0  # MB
    reserved_host_disk: int = 0  # GB


@dataclass(frozen=True)
class SshConfig:
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = 5


@dataclass(frozen=True)
class LibvirtConfig:
    connect_timeout: float = 10.0
    call_timeout: float = 60.0
    upload_timeout: float = 900.0


@dataclass(frozen=True)
class CreateConfig:
    max_attempts: int = 3  # hosts tried before a create gives up
    forward_ports: str = "22000-22999"  # per-host range for network=forward guests

    @property
    def port_range(self) -> range:
        lo, _, hi = self.forward_ports.partition("-")
        return range(int(lo), int(hi) + 1)


@dataclass(frozen=True)
class GuestConfig:
    """How the fabric logs into guests (readiness checks, cleanup)."""

    user: str = "root"
    key: str | None = None  # default: ssh.key
    host_keys: str | None = None  # file of keys every guest may present; default: TOFU
    ready_timeout: float = 300.0  # seconds for a new or reset guest to answer SSH
    command_timeout: float = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    """Background work: pool refill, cleanup, the lifetime reaper."""

    interval: float = 2.0  # seconds between passes
    build_workers: int = 2  # pool VMs built at once
    cleanup_workers: int = 4  # returned VMs cleaned at once
    retry_after: int = 5  # seconds a caller is told to wait when a pool is empty


@dataclass(frozen=True)
class DiscoveryConfig:
    interval: float = 60.0  # seconds between re-reads of every host


@dataclass(frozen=True)
class ClusterConfig:
    """Several fabric servers on one registry (PostgreSQL): each heartbeats, and
    background work runs on whichever server holds its lease."""

    heartbeat: float = 2.0  # seconds between heartbeats and lease renewals
    dead_after: float = 10.0  # a server silent this long is dead; its leases and work move
    host_cache: float = 2.0  # seconds the scheduler's in-memory host state may be old


@dataclass(frozen=True)
class Config:
    scheduler: Policy = field(default_factory=lambda: build_policy({"policy": "spread"}))
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    libvirt: LibvirtConfig = field(default_factory=LibvirtConfig)
    create: CreateConfig = field(default_factory=CreateConfig)
    guest: GuestConfig = field(default_factory=GuestConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    max_vms: int | None = None  # global limit on VMs the fabric runs (None: no limit)
    state_dir: str = "/var/lib/fabric"
    raw: dict = field(default_factory=dict, compare=False)


_SECTIONS = {
    "capacity": CapacityConfig,
    "ssh": SshConfig,
    "libvirt": LibvirtConfig,
    "create": CreateConfig,
    "guest": GuestConfig,
    "discovery": DiscoveryConfig,
    "workers": WorkerConfig,
    "cluster": ClusterConfig,
}
# Sections later features read for themselves (kept, not checked here).
_PASSTHROUGH = {"pools", "auth", "storage", "schedules"}


def _section(where: str, cls: type, data: Any) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in known:
            valid = ", ".join(sorted(known))
            raise ConfigError(f"{where}.{key}: unknown setting (valid: {valid})")
        default = known[key].default
        want = type(default) if default is not None else str
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected {want.__name__}, got {value!r}")
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{where}.{key}: must not be negative")
        values[key] = value
    return cls(**values)


def load_config(path: str | Path | None) -> Config:
    """Read the YAML config at ``path`` (None: all defaults)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{p}{line}: not valid YAML: {problem}") from None
    return config_from_dict(data, str(p))


def config_from_dict(data: dict, where: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    known = set(_SECTIONS) | _PASSTHROUGH | {"scheduler", "state_dir", "limits"}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown section {key!r} (valid: {', '.join(sorted(known))})"
            )
    sched = dict(data.get("scheduler") or {})
    sched.setdefault("policy", "spread")
    try:
        policy = build_policy(sched)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    kwargs: dict[str, Any] = {"scheduler": policy, "raw": data}
    for name, cls in _SECTIONS.items():
        kwargs[name] = _section(f"{where}: {name}", cls, data.get(name))
    limits = data.get("limits") or {}
    if not isinstance(limits, dict) or set(limits) - {"max_vms"}:
        raise ConfigError(f"{where}: limits takes only max_vms")
    max_vms = limits.get("max_vms")
    if max_vms is not None and (
        not isinstance(max_vms, int) or isinstance(max_vms, bool) or max_vms < 0
    ):
        raise ConfigError(f"{where}: limits.max_vms must be a non-negative integer")
    kwargs["max_vms"] = max_vms
    if "state_dir" in data:
        if not isinstance(data["state_dir"], str) or not data["state_dir"].startswith("/"):
            raise ConfigError(f"{where}: state_dir must be an absolute path")
        kwargs["state_dir"] = data["state_dir"]
    cl = kwargs["cluster"]
    if cl.heartbeat <= 0 or cl.dead_after < 2 * cl.heartbeat:
        raise ConfigError(
            f"{where}: cluster.heartbeat must be > 0 and cluster.dead_after at least twice it"
        )
    try:
        kwargs["create"].port_range  # noqa: B018 - validate early
    except ValueError:
        raise ConfigError(f"{where}: create.forward_ports must look like 22000-22999") from None
    return Config(**kwargs)


def effective_capacity(phys: tuple[int, int, int], cap: CapacityConfig) -> tuple[int, int, int]:
    """What VMs may claim on a host with ``phys`` = (cpus, ram MB, disk GB)."""
    cpu, ram, disk = phys
    return (
        max(0, int(cpu * cap.cpu_allocation_ratio) - cap.reserved_host_cpus),
        max(0, int(ram * cap.ram_allocation_ratio) - cap.reserved_host_ram),
        max(0, int(disk * cap.disk_allocation_ratio) - cap.reserved_host_disk),
    )
