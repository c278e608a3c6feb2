"""Pure placement: HostState in, ranked hosts out, no I/O.

A pipeline of small filters (status, exclude, arch, cpu, ram, disk), then
weighers normalised and multiplied as a Policy says (first-fit, pack, spread,
balanced, or custom weights), as in nova's filter scheduler. ``Scheduler``
(columnar.py) runs it over the hosts held as columns (columns.py);
``ReferenceScheduler`` (engine.py, with filters.py and weighers.py) is the same
pipeline one host at a time, the oracle its tests compare it with.
"""

from orchestrator.scheduler.columnar import COLUMN_FILTERS, COLUMN_WEIGHERS, ColumnFilter, Scheduler
from orchestrator.scheduler.columns import HostColumns
from orchestrator.scheduler.engine import Placement, ReferenceScheduler, refusal_message
from orchestrator.scheduler.filters import (
    FILTERS,
    ArchFilter,
    CpuFilter,
    DiskFilter,
    ExcludeFilter,
    HostFilter,
    RamFilter,
    StatusFilter,
    default_filters,
)
from orchestrator.scheduler.policy import (
    DEFAULT_POLICY,
    POLICY_WEIGHTS,
    Policy,
)
from orchestrator.scheduler.state import HostState, PlacementRequest
from orchestrator.scheduler.weighers import (
    WEIGHERS,
    BalanceWeigher,
    CpuFreeWeigher,
    DiskFreeWeigher,
    RamFreeWeigher,
    VmsWeigher,
    Weigher,
    weigh_hosts,
)

__all__ = [
    "COLUMN_FILTERS",
    "COLUMN_WEIGHERS",
    "ColumnFilter",
    "HostColumns",
    "ReferenceScheduler",
    "DEFAULT_POLICY",
    "FILTERS",
    "POLICY_WEIGHTS",
    "WEIGHERS",
    "ArchFilter",
    "BalanceWeigher",
    "CpuFilter",
    "CpuFreeWeigher",
    "DiskFilter",
    "DiskFreeWeigher",
    "ExcludeFilter",
    "HostFilter",
    "HostState",
    "Placement",
    "PlacementRequest",
    "Policy",
    "RamFilter",
    "RamFreeWeigher",
    "Scheduler",
    "StatusFilter",
    "VmsWeigher",
    "Weigher",
    "default_filters",
    "refusal_message",
    "weigh_hosts",
]
