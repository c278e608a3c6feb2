"""The schema of the YAML configuration: one pydantic model per section, every key
optional, unknown keys refused.

What the services consume is typed here too: the scheduler's ``Policy``, the
storage backends with their cephx keys (``Storage``), ``AuthSettings``,
``SchedulesSettings``, and each pool's shape (``PoolSettings``; what it refers to
in the input files is checked in ``.pools``). Problems are raised as pydantic
errors whose location is the key path; ``.load`` turns them into messages.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..hypervisor.xml import RbdBackend
from ..model import NAME, NAME_RULE
from ..scheduler.policy import FIRST_FIT, POLICY_WEIGHTS, Policy
from ..scheduler.weighers import WEIGHERS
from .yamlmap import Loc, dotted, line_of

# -- problems ---------------------------------------------------------------------


def show(value: Any) -> str:
    """A value as a message quotes it (cut short)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def problem(message: str) -> PydanticCustomError:
    """An error whose message is ``message`` as it is (type ``config``)."""
    return PydanticCustomError("config", "{message}", {"message": message})


def _details(problems: tuple[tuple[Loc, str, Any], ...]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=problem(m), loc=loc, input=value) for loc, m, value in problems]


def fail(*problems: tuple[Loc, str, Any]) -> ValidationError:
    """Errors at keys below the model or field being validated:
    ``(loc, message, value)`` each."""
    return ValidationError.from_exception_data("config", _details(problems))


def _again(err: ValidationError) -> list[InitErrorDetails]:
    """``err``'s errors, to be raised again with more (type, key and message kept)."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], "{message}", {"message": e["msg"]}),
            loc=tuple(e["loc"]),
            input=e.get("input"),
        )
        for e in err.errors(include_url=False)
    ]


def _valid(names: Any) -> str:
    return ", ".join(sorted(names))


def _null_dict(value: Any) -> Any:
    return {} if value is None else value


def _null_list(value: Any) -> Any:
    return [] if value is None else value


def _name(value: Any) -> str:
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise problem(f"must be {NAME_RULE}, got {show(value)}")
    return value


Name = Annotated[str, PlainValidator(_name)]  # the one name rule (orchestrator.model)


class Section(BaseModel):
    """A mapping of the file: unknown keys refused, values of the YAML types only
    (no "2" for 2, no 1 for true), numbers finite; an empty section is the defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


# -- the plain sections -----------------------------------------------------------


class CapacityConfig(Section):
    """How much of a host VMs may claim: ``physical * ratio - reserved``."""

    cpu_allocation_ratio: float = Field(4.0, ge=0)
    ram_allocation_ratio: float = Field(1.0, ge=0)
    disk_allocation_ratio: float = Field(1.0, ge=0)
    reserved_host_cpus: int = Field(0, ge=0)
    reserved_host_ram: int = Field(0, ge=0)  # MB
    reserved_host_disk: int = Field(0, ge=0)  # GB


def effective_capacity(phys: tuple[int, int, int], cap: CapacityConfig) -> tuple[int, int, int]:
    """What VMs may claim on a host with ``phys`` = (cpus, ram MB, disk GB)."""
    cpu, ram, disk = phys
    return (
        max(0, int(cpu * cap.cpu_allocation_ratio) - cap.reserved_host_cpus),
        max(0, int(ram * cap.ram_allocation_ratio) - cap.reserved_host_ram),
        max(0, int(disk * cap.disk_allocation_ratio) - cap.reserved_host_disk),
    )


class SshConfig(Section):
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = Field(5, ge=0)


class LibvirtConfig(Section):
    connect_timeout: float = Field(10.0, ge=0)
    call_timeout: float = Field(60.0, ge=0)
    upload_timeout: float = Field(900.0, ge=0)


_PORTS = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")


class CreateConfig(Section):
    max_attempts: int = Field(3, ge=1)  # hosts tried before a create gives up
    # per-host range for network=forward guests
    forward_ports: str = Field("22000-22999", description="a port range like 22000-22999")

    @field_validator("forward_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        m = _PORTS.fullmatch(value)
        if m is None or not 1 <= int(m[1]) <= int(m[2]) <= 65535:
            raise problem(
                f"must look like 22000-22999 (ports 1-65535, the first <= the last), "
                f"got {show(value)}"
            )
        return value

    @property
    def port_range(self) -> range:
        lo, _, hi = self.forward_ports.partition("-")
        return range(int(lo), int(hi) + 1)


class GuestConfig(Section):
    """How the fabric logs into guests (readiness checks, cleanup)."""

    user: str = "root"
    key: str | None = None  # default: ssh.key
    host_keys: str | None = None  # file of keys every guest may present; default: TOFU
    ready_timeout: float = Field(300.0, ge=0)  # seconds for a new or reset guest to answer SSH
    command_timeout: float = Field(60.0, ge=0)


class WorkerConfig(Section):
    """Background work: pool refill, cleanup, the lifetime reaper."""

    interval: float = Field(2.0, gt=0)  # seconds between passes
    build_workers: int = Field(2, ge=1)  # pool VMs built at once
    cleanup_workers: int = Field(4, ge=1)  # returned VMs cleaned at once
    retry_after: int = Field(5, ge=0)  # seconds a caller is told to wait when a pool is empty


class DiscoveryConfig(Section):
    interval: float = Field(60.0, gt=0)  # seconds between re-reads of every host


class ClusterConfig(Section):
    """Several fabric servers on one registry (PostgreSQL): each heartbeats, and
    background work runs on whichever server holds its lease."""

    heartbeat: float = Field(2.0, gt=0)  # seconds between heartbeats and lease renewals
    dead_after: float = Field(10.0, ge=0)  # a server silent this long is dead; its work moves
    host_cache: float = Field(2.0, ge=0)  # seconds the scheduler's host state may be old

    @model_validator(mode="after")
    def _twice_the_heartbeat(self) -> ClusterConfig:
        if self.dead_after < 2 * self.heartbeat:
            raise fail(
                (
                    ("dead_after",),
                    f"must be at least twice cluster.heartbeat ({2 * self.heartbeat:g}), "
                    f"got {self.dead_after:g}",
                    self.dead_after,
                )
            )
        return self


class LimitsConfig(Section):
    max_vms: int | None = Field(None, ge=0)  # VMs the fabric runs in all (None: no limit)


class SchedulesSettings(Section):
    """Scheduled capacity (orchestrator.schedules)."""

    interval: float = Field(30.0, gt=0, description="a positive number of seconds")


# -- scheduler: builds the Policy -------------------------------------------------


def _weigher(name: Any) -> str:
    if not isinstance(name, str) or name not in WEIGHERS:
        raise problem(f"unknown weigher (valid: {_valid(WEIGHERS)})")
    return name


def _multiplier(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise problem(f"must be a finite number, got {show(value)}")
    return float(value)


class SchedulerSettings(Section):
    """``scheduler:``; custom weights override the policy's defaults one by one."""

    policy: str = Field("spread", description=f"one of {_valid(POLICY_WEIGHTS)}")
    host_subset_size: int = Field(1, ge=1)
    weights: Annotated[
        dict[
            Annotated[str, PlainValidator(_weigher)],
            Annotated[float, PlainValidator(_multiplier)],
        ],
        BeforeValidator(_null_dict),
    ] = Field(
        default_factory=dict,
        description=f"a mapping of weigher name to number (weighers: {_valid(WEIGHERS)})",
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        name = value.strip().lower().replace("_", "-")
        if name not in POLICY_WEIGHTS:
            raise problem(f"unknown policy {show(value)} (valid: {_valid(POLICY_WEIGHTS)})")
        return name

    @model_validator(mode="after")
    def _first_fit_has_no_weights(self) -> SchedulerSettings:
        if self.policy == FIRST_FIT and any(v != 0 for v in self.weights.values()):
            others = _valid(set(POLICY_WEIGHTS) - {FIRST_FIT})
            raise fail(
                (
                    ("weights",),
                    f"policy {FIRST_FIT} takes no weights (use one of: {others})",
                    self.weights,
                )
            )
        return self

    def build(self) -> Policy:
        return Policy.named(
            self.policy, weights=self.weights, host_subset_size=self.host_subset_size
        )


def _policy(value: Any) -> Policy:
    if isinstance(value, Policy):
        return value
    return SchedulerSettings.model_validate(value).build()


# -- pools: their shape -----------------------------------------------------------


def _image(value: Any) -> str | int:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise problem(f"must be an image name or id from the images file, got {show(value)}")


class PoolSettings(Section):
    """One ``pools:`` entry as written; ``.pools.resolve_pools`` makes it a PoolConfig."""

    name: Name = Field(description=NAME_RULE)
    instance_type: int = Field(ge=1, description="an integer tid from the VM types file")
    image: Annotated[str | int, PlainValidator(_image)] = Field(
        description="an image name or id from the images file"
    )
    size: int = Field(1, ge=0)  # ready VMs to keep
    max: int | None = Field(None, ge=0)  # VMs in all (any state); default: size
    lifetime: float = Field(2.0, gt=0, description="a positive number of hours")
    lifetime_max: float = Field(24.0, gt=0, description="a positive number of hours")
    cleanup: Literal["tmp", "reset"] = "tmp"
    ready_check: Literal["ssh", "none"] = "ssh"

    @model_validator(mode="after")
    def _bounds(self) -> PoolSettings:
        problems: list[tuple[Loc, str, Any]] = []
        if self.max is not None and self.max < self.size:
            problems.append(
                (("max",), f"must be an integer >= size ({self.size}), got {self.max}", self.max)
            )
        if self.lifetime > self.lifetime_max:
            if "lifetime" in self.model_fields_set:
                problems.append(
                    (
                        ("lifetime",),
                        f"{self.lifetime:g} h exceeds lifetime_max ({self.lifetime_max:g} h)",
                        self.lifetime,
                    )
                )
            else:
                problems.append(
                    (
                        ("lifetime_max",),
                        f"{self.lifetime_max:g} h is less than lifetime "
                        f"(default {self.lifetime:g} h)",
                        self.lifetime_max,
                    )
                )
        if problems:
            raise fail(*problems)
        return self

    @property
    def most(self) -> int:
        """``max``, or ``size`` when not given."""
        return self.size if self.max is None else self.max


# -- storage: builds Storage ------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    """The ``storage:`` section as Volumes uses it: RBD backends by name, host label ->
    backend (``dir``, the default, or ``rbd:NAME``), and each backend's cephx key."""

    backends: Mapping[str, RbdBackend] = field(default_factory=dict)
    hosts: Mapping[str, str] = field(default_factory=dict)
    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)


def _monitor(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise problem(f"must be host:port, got {show(value)}")
    return value


def _backend_ref(value: Any) -> str:
    if value == "dir":
        return value
    if isinstance(value, str) and value.startswith("rbd:") and NAME.fullmatch(value[4:]):
        return value
    raise problem(f"must be dir or rbd:NAME, got {show(value)}")


class RbdSettings(Section):
    """One ``storage.rbd.NAME``: a Ceph RBD pool and how libvirt logs into it."""

    pool: str = Field(min_length=1, description="the name of the RBD pool in Ceph")
    monitors: list[Annotated[str, PlainValidator(_monitor)]] = Field(
        min_length=1, description="a non-empty list of host:port"
    )
    user: str = Field(min_length=1, description="a cephx user name")
    secret_uuid: str = Field(description="the UUID of the libvirt secret for the key")
    key_file: str = Field(description="the path of a file holding the cephx key")
    _key: bytes = PrivateAttr(b"")

    @field_validator("secret_uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise problem(f"must be a UUID, got {show(value)}") from None
        return value

    @field_validator("key_file")
    @classmethod
    def _key_file_exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise problem(f"{value} does not exist")
        return value

    @model_validator(mode="after")
    def _read_key(self) -> RbdSettings:
        # The key is a secret: never put it (or a part of it) in a message.
        try:
            key = Path(self.key_file).read_bytes().strip()
        except OSError as e:
            raise fail(
                (("key_file",), f"{self.key_file} cannot be read ({e.strerror})", self.key_file)
            ) from None
        if not key:
            raise fail((("key_file",), f"{self.key_file} is empty", self.key_file))
        self._key = key
        return self

    @property
    def key(self) -> bytes:
        return self._key

    def backend(self, name: str) -> RbdBackend:
        return RbdBackend(
            name=name,
            pool=self.pool,
            monitors=tuple(self.monitors),
            user=self.user,
            secret_uuid=self.secret_uuid,
        )


class StorageSettings(Section):
    """``storage:`` as written."""

    rbd: Annotated[dict[Name, RbdSettings], BeforeValidator(_null_dict)] = Field(
        default_factory=dict
    )
    hosts: Annotated[
        dict[str, Annotated[str, PlainValidator(_backend_ref)]], BeforeValidator(_null_dict)
    ] = Field(default_factory=dict, description="a mapping of host label to dir or rbd:NAME")

    @field_validator("hosts")
    @classmethod
    def _backends_defined(cls, hosts: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        rbd = info.data.get("rbd")  # absent when storage.rbd itself is wrong
        if rbd is None:
            return hosts
        defined = _valid(rbd) or "none"
        problems = [
            ((label,), f"{show(ref)} names no storage.rbd backend (defined: {defined})", ref)
            for label, ref in hosts.items()
            if ref != "dir" and ref[4:] not in rbd
        ]
        if problems:
            raise fail(*problems)
        return hosts

    def build(self) -> Storage:
        return Storage(
            backends={name: item.backend(name) for name, item in self.rbd.items()},
            hosts=dict(self.hosts),
            keys={name: item.key for name, item in self.rbd.items()},
        )


def _storage(value: Any) -> Storage:
    if isinstance(value, Storage):
        return value
    return StorageSettings.model_validate(value).build()


# -- auth -------------------------------------------------------------------------


def _user_name(value: Any) -> str:
    if not isinstance(value, str) or not value or ":" in value or len(value) > 128:
        raise problem(
            f"{show(str(value)[:40])} is not a valid user name (1-128 characters, no ':')"
        )
    return value


def _password_hash(value: Any) -> str:
    from ..auth import is_password_hash  # the hash format is the auth domain's

    if not isinstance(value, str) or not is_password_hash(value):
        # Never echo the value: it may be a password typed in by mistake.
        raise problem("not a password hash (make one with `./script hash-password`)")
    return value


class AuthSettings(Section):
    """``auth:`` (orchestrator.auth): off by default, then every call is allowed."""

    enabled: bool = False
    users: Annotated[
        dict[
            Annotated[str, PlainValidator(_user_name)],
            Annotated[str, PlainValidator(_password_hash)],
        ],
        BeforeValidator(_null_dict),
    ] = Field(default_factory=dict, description="a mapping of user name to password hash")
    open_reads: bool = True  # GETs that change nothing need no token
    token_ttl_hours: float = Field(
        24.0, gt=0, le=24 * 3660, description="a positive number of hours (at most 87840)"
    )
    max_failures: int = Field(5, ge=1)  # failed logins per user and address ...
    lockout_seconds: int = Field(60, ge=0)  # ... before they are refused for this long

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> AuthSettings:
        if self.enabled and not self.users:
            raise fail((("users",), "auth is enabled but no user is configured", None))
        return self


# -- the whole file ---------------------------------------------------------------


class Config(Section):
    """The configuration file: every section optional."""

    scheduler: Annotated[Policy, PlainValidator(_policy)] = Field(
        default_factory=lambda: Policy.named("spread")
    )
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    ssh: SshConfig = Field(default_factory=SshConfig)
    libvirt: LibvirtConfig = Field(default_factory=LibvirtConfig)
    create: CreateConfig = Field(default_factory=CreateConfig)
    guest: GuestConfig = Field(default_factory=GuestConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    state_dir: str = Field("/var/lib/fabric", description="an absolute path")
    pools: Annotated[list[PoolSettings], BeforeValidator(_null_list)] = Field(default_factory=list)
    storage: Annotated[Storage, PlainValidator(_storage)] = Field(default_factory=Storage)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    schedules: SchedulesSettings = Field(default_factory=SchedulesSettings)

    # Where the file was read from, for messages about it after loading (.pools).
    _where: str = PrivateAttr("config")
    _node: Any = PrivateAttr(None)

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise problem(f"must be an absolute path, got {show(value)}")
        return value

    @field_validator("pools", mode="wrap")
    @classmethod
    def _pool_names_unique(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        twice: list[tuple[Loc, str, Any]] = []
        first: dict[str, int] = {}
        for i, item in enumerate(value if isinstance(value, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in first:
                again = f"{show(name)} is defined twice (first: pools[{first[name]}])"
                twice.append(((i, "name"), again, name))
            elif isinstance(name, str):
                first[name] = i
        try:
            pools = handler(value)
        except ValidationError as e:
            if not twice:
                raise
            raise ValidationError.from_exception_data(
                "config", [*_again(e), *_details(tuple(twice))]
            ) from None
        if twice:
            raise fail(*twice)
        return pools

    @property
    def max_vms(self) -> int | None:
        """``limits.max_vms``: VMs the fabric runs in all (None: no limit)."""
        return self.limits.max_vms

    def locate(self, *loc: str | int) -> str:
        """``file:line: key`` of ``loc`` (e.g. ``"pools", 0, "image"``), as messages
        begin; the line is that of the key in the file read (when there is one)."""
        line = line_of(self._node, loc)
        where = f"{self._where}:{line}" if line else self._where
        return f"{where}: {dotted(loc)}"


# Config fields whose value is built from a section model: that model is the schema.
SHAPES: dict[type, type[Section]] = {Policy: SchedulerSettings, Storage: StorageSettings}
