"""The fabric's YAML configuration (``--config fabric.yaml``): one schema for every
section, problems reported all at once as ``file:line: key: problem``.

- ``load_config(path)`` / ``config_from_dict(data)``: the checked ``Config``.
- ``check_pools(config, inventory)``: pools against the three input files, before
  anything starts; ``resolve_pools(config, registry)``: the ``PoolConfig`` list the
  pool service runs, once the files are synced into the registry.
"""

from .load import config_from_dict, load_config
from .networks import NetworkSettings
from .pools import PoolConfig, check_pools, reach_warnings, resolve_pools, sharing_warnings
from .schema import Config
from .sections import (
    CapacityConfig,
    ClusterConfig,
    CreateConfig,
    DiscoveryConfig,
    EvacuateConfig,
    GuestConfig,
    LibvirtConfig,
    LimitsConfig,
    OnDemandConfig,
    ReconcileConfig,
    SchedulerSettings,
    SchedulesSettings,
    SshConfig,
    WorkerConfig,
    effective_capacity,
)
from .server import ServerSettings, exposure_warnings
from .settings import AuthSettings, PoolSettings, RbdSettings, Storage, StorageSettings

__all__ = [
    "AuthSettings",
    "CapacityConfig",
    "ClusterConfig",
    "Config",
    "CreateConfig",
    "DiscoveryConfig",
    "EvacuateConfig",
    "GuestConfig",
    "LibvirtConfig",
    "LimitsConfig",
    "NetworkSettings",
    "OnDemandConfig",
    "PoolConfig",
    "PoolSettings",
    "RbdSettings",
    "ReconcileConfig",
    "SchedulerSettings",
    "SchedulesSettings",
    "ServerSettings",
    "SshConfig",
    "Storage",
    "StorageSettings",
    "WorkerConfig",
    "check_pools",
    "config_from_dict",
    "effective_capacity",
    "exposure_warnings",
    "load_config",
    "reach_warnings",
    "sharing_warnings",
    "resolve_pools",
]
