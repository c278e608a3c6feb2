"""The schema of the YAML configuration: one pydantic model per section (in
``.sections`` and ``.settings``), every key optional, unknown keys refused, values
of the YAML types only. Problems are raised as pydantic errors located at their
key path; ``.load`` turns them into ``file:line: key: problem`` lines.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from ..scheduler.policy import Policy
from .base import (
    Section,
    again,
    details,
    fail,
    none_is_empty_dict,
    none_is_empty_list,
    problem,
    show,
)
from .networks import NetworkSettings, network_key
from .sections import (
    CapacityConfig,
    ClusterConfig,
    CreateConfig,
    DiscoveryConfig,
    EvacuateConfig,
    GuestConfig,
    HostnamesConfig,
    LibvirtConfig,
    LimitsConfig,
    OnDemandConfig,
    ReconcileConfig,
    SchedulerSettings,
    SchedulesSettings,
    SshConfig,
    WorkerConfig,
    build_policy,
)
from .server import ServerSettings
from .settings import AuthSettings, PoolSettings, Storage, StorageSettings, build_storage
from .yamlmap import Loc, dotted, line_of

# -- the whole file ---------------------------------------------------------------


class Config(Section):
    """The configuration file: every section optional."""

    scheduler: Annotated[Policy, PlainValidator(build_policy)] = Field(
        default_factory=lambda: Policy.named("spread")
    )
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    ssh: SshConfig = Field(default_factory=SshConfig)
    libvirt: LibvirtConfig = Field(default_factory=LibvirtConfig)
    create: CreateConfig = Field(default_factory=CreateConfig)
    guest: GuestConfig = Field(default_factory=GuestConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    evacuate: EvacuateConfig = Field(default_factory=EvacuateConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    hostnames: HostnamesConfig = Field(default_factory=HostnamesConfig)
    ondemand: OnDemandConfig = Field(default_factory=OnDemandConfig)
    state_dir: str = Field("/var/lib/fabric", description="an absolute path")
    pools: Annotated[list[PoolSettings], BeforeValidator(none_is_empty_list)] = Field(
        default_factory=list
    )
    storage: Annotated[Storage, PlainValidator(build_storage)] = Field(default_factory=Storage)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    schedules: SchedulesSettings = Field(default_factory=SchedulesSettings)
    networks: Annotated[
        dict[Annotated[str, PlainValidator(network_key)], NetworkSettings],
        BeforeValidator(none_is_empty_dict),
    ] = Field(default_factory=dict, description="the LANs VMs are on, by hosts' network=")
    server: ServerSettings = Field(default_factory=ServerSettings)

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
                message = f"{show(name)} is defined twice (first: pools[{first[name]}])"
                twice.append(((i, "name"), message, name))
            elif isinstance(name, str):
                first[name] = i
        try:
            pools = handler(value)
        except ValidationError as e:
            if not twice:
                raise
            raise ValidationError.from_exception_data(
                "config", [*again(e), *details(tuple(twice))]
            ) from None
        if twice:
            raise fail(*twice)
        return pools

    @model_validator(mode="after")
    def _pool_users_known(self) -> Config:
        if not self.auth.enabled:
            return self  # nobody logs in: a pool's users never matter (validate warns)
        unknown = [
            ((i, "users", j), f"{show(u)} is not a user of auth.users", u)
            for i, p in enumerate(self.pools)
            for j, u in enumerate(p.users or [])
            if u not in self.auth.users
        ]
        if unknown:
            raise fail(*[(("pools", *loc), msg, v) for loc, msg, v in unknown])
        return self

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
