"""Placement policies: named sets of weigher multipliers, chosen by configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FIRST_FIT = "first-fit"
DEFAULT_POLICY = FIRST_FIT  # the original behaviour

# Default multipliers per policy. Free resources are measured after placement;
# disk counts half because cpu and ram are what usually runs out.
POLICY_WEIGHTS: dict[str, dict[str, float]] = {
    FIRST_FIT: {},
    "pack": {"ram_free": -1.0, "cpu_free": -1.0, "disk_free": -0.5},
    "spread": {"ram_free": 1.0, "cpu_free": 1.0, "disk_free": 0.5},
    # balance 10 outweighs the spread terms (2.5 at most) unless hosts are near-equal
    "balanced": {"balance": 10.0, "ram_free": 1.0, "cpu_free": 1.0, "disk_free": 0.5},
}


@dataclass(frozen=True, slots=True)
class Policy:
    """How to rank the hosts that pass the filters.

    ``weights`` are (weigher name, multiplier) pairs; a first-fit policy has
    none and ranks by pmid. ``host_subset_size`` k > 1 picks the first host at
    random among the best k.
    """

    name: str
    weights: tuple[tuple[str, float], ...] = ()
    host_subset_size: int = 1

    @classmethod
    def named(
        cls,
        name: str = DEFAULT_POLICY,
        *,
        weights: Mapping[str, float] | None = None,
        host_subset_size: int = 1,
    ) -> Policy:
        """The policy ``name`` with its default multipliers, which ``weights``
        override one by one (0 switches a weigher off).

        Checks nothing a user could get wrong: the configuration's schema
        (orchestrator.config) does that before it calls this.
        """
        if name not in POLICY_WEIGHTS:
            raise ValueError(f"unknown policy {name!r}")
        merged = {**POLICY_WEIGHTS[name], **(weights or {})}
        return cls(
            name=name,
            weights=tuple(sorted((k, float(v)) for k, v in merged.items() if v != 0)),
            host_subset_size=host_subset_size,
        )

    @property
    def weighted(self) -> bool:
        return self.name != FIRST_FIT

    def to_config(self) -> dict[str, Any]:
        """The ``scheduler:`` config section that builds this policy again."""
        return {
            "policy": self.name,
            "host_subset_size": self.host_subset_size,
            "weights": dict(self.weights),
        }
