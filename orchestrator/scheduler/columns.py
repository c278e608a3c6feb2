"""The host view as columns: one numpy array per attribute, one row per host.

``HostColumns`` is a sequence of HostState (row ``i`` is ``hosts[i]``) that also
keeps the numbers the filters and weighers read as arrays. Replacing a host
(``columns[i] = host.consume(req)``, as a claim lands) updates its row in place,
so a decision costs array operations over the fleet, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, overload

import numpy as np

from orchestrator.scheduler.state import HostState

NO_ARCH = -1  # the arch code of a host that did not say


class HostColumns(Sequence[HostState]):
    """Hosts (input order) and their columns: ids, totals, used, free, vms, ok, arch.

    ``id`` is int64; the amounts (totals, used, free, vms) are float64, exact for
    whole numbers below 2**53, so that weighers compute on them without casts.
    ``ok`` is up, enabled and not in maintenance; ``arch`` holds a small code
    per architecture name (``arch_code``), NO_ARCH for None.
    """

    FIELDS = (
        "id",
        "cpu_total",
        "ram_total",
        "disk_total",
        "cpu_used",
        "ram_used",
        "disk_used",
        "vms",
    )

    def __init__(self, hosts: Iterable[HostState]) -> None:
        self.hosts: list[HostState] = list(hosts)
        n = len(self.hosts)
        self.arch_codes: dict[str, int] = {}
        col = {
            name: np.fromiter(
                map(attrgetter(name), self.hosts),
                dtype=np.int64 if name == "id" else np.float64,
                count=n,
            )
            for name in self.FIELDS
        }
        self.id = col["id"]
        self.cpu_total, self.ram_total, self.disk_total = (
            col["cpu_total"],
            col["ram_total"],
            col["disk_total"],
        )
        self.cpu_used, self.ram_used, self.disk_used = (
            col["cpu_used"],
            col["ram_used"],
            col["disk_used"],
        )
        self.vms = col["vms"]
        self.cpu_free = self.cpu_total - self.cpu_used
        self.ram_free = self.ram_total - self.ram_used
        self.disk_free = self.disk_total - self.disk_used
        self.ok = np.fromiter(map(_in_service, self.hosts), dtype=bool, count=n)
        self.arch = np.fromiter(
            (self.arch_code(h.arch) for h in self.hosts), dtype=np.int32, count=n
        )
        # What depends on the hosts' labels only (a refusal's "pm3 down: ssh
        # refused", the mask of the hosts of one arch); forgotten when one changes.
        self.memo: dict[Any, Any] = {}

    def arch_code(self, arch: str | None) -> int:
        """The code of ``arch`` (a new one the first time it is seen)."""
        if arch is None:
            return NO_ARCH
        return self.arch_codes.setdefault(arch, len(self.arch_codes))

    def __len__(self) -> int:
        return len(self.hosts)

    @overload
    def __getitem__(self, index: int) -> HostState: ...
    @overload
    def __getitem__(self, index: slice) -> list[HostState]: ...
    def __getitem__(self, index: Any) -> Any:
        return self.hosts[index]

    def __iter__(self) -> Iterator[HostState]:
        return iter(self.hosts)

    def __setitem__(self, i: int, host: HostState) -> None:
        """Replace row ``i`` (e.g. with the host after a claim) and its columns."""
        if not same_labels(self.hosts[i], host) or len(self.memo) > 256:
            self.memo.clear()
        self.hosts[i] = host
        self.id[i] = host.id
        self.cpu_total[i], self.cpu_used[i] = host.cpu_total, host.cpu_used
        self.ram_total[i], self.ram_used[i] = host.ram_total, host.ram_used
        self.disk_total[i], self.disk_used[i] = host.disk_total, host.disk_used
        self.cpu_free[i] = host.cpu_total - host.cpu_used
        self.ram_free[i] = host.ram_total - host.ram_used
        self.disk_free[i] = host.disk_total - host.disk_used
        self.vms[i] = host.vms
        self.ok[i] = _in_service(host)
        self.arch[i] = self.arch_code(host.arch)

    def pick(self, rows: Sequence[int] | np.ndarray) -> list[HostState]:
        """The hosts at ``rows``, in that order."""
        hosts = self.hosts
        return [hosts[i] for i in rows]


def _labels(h: HostState) -> tuple[Any, ...]:
    return (h.id, h.name, h.up, h.enabled, h.arch, h.down_reason, h.maintenance)


def same_labels(a: HostState, b: HostState) -> bool:
    """Whether two states of a host differ in numbers only (capacity, use)."""
    return _labels(a) == _labels(b)


def _in_service(h: HostState) -> bool:
    return h.up and h.enabled and h.maintenance is None
