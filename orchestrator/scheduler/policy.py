"""Placement policies: named sets of weigher multipliers, chosen by configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.scheduler.weighers import WEIGHERS

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

CONFIG_KEYS = ("policy", "host_subset_size", "weights")


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

    @property
    def weighted(self) -> bool:
        return self.name != FIRST_FIT

    def to_config(self) -> dict[str, Any]:
        """The config dict that builds this policy again."""
        return {
            "policy": self.name,
            "host_subset_size": self.host_subset_size,
            "weights": dict(self.weights),
        }


def _valid(values: Any) -> str:
    return ", ".join(sorted(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_policy(cfg: Mapping[str, Any] | None = None, *, section: str = "scheduler") -> Policy:
    """Build a Policy from e.g. ``{"policy": "spread", "host_subset_size": 1,
    "weights": {"ram_free": 1.0}}``. Custom weights override the policy's
    defaults one by one (0 switches a weigher off).

    Raises ConfigError naming the key (``<section>.<key>``) and the valid values.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{section}: expected a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(str(k) for k in cfg if k not in CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key (valid: {', '.join(CONFIG_KEYS)})")

    raw_name = cfg.get("policy", DEFAULT_POLICY)
    name = raw_name.strip().lower().replace("_", "-") if isinstance(raw_name, str) else None
    if name not in POLICY_WEIGHTS:
        raise ConfigError(
            f"{section}.policy: unknown policy {raw_name!r} (valid: {_valid(POLICY_WEIGHTS)})"
        )

    subset = cfg.get("host_subset_size", 1)
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 1:
        raise ConfigError(f"{section}.host_subset_size: must be an integer >= 1, got {subset!r}")

    custom = cfg.get("weights") or {}
    if not isinstance(custom, Mapping):
        raise ConfigError(
            f"{section}.weights: expected a mapping of weigher name to number "
            f"(weighers: {_valid(WEIGHERS)})"
        )
    weights = dict(POLICY_WEIGHTS[name])
    for weigher, value in custom.items():
        if weigher not in WEIGHERS:
            raise ConfigError(
                f"{section}.weights.{weigher}: unknown weigher (valid: {_valid(WEIGHERS)})"
            )
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(
                f"{section}.weights.{weigher}: must be a finite number, got {value!r}"
            )
        weights[weigher] = float(value)

    if name == FIRST_FIT and any(v != 0 for v in weights.values()):
        raise ConfigError(
            f"{section}.weights: policy {FIRST_FIT} takes no weights "
            f"(use one of: {_valid(set(POLICY_WEIGHTS) - {FIRST_FIT})})"
        )
    return Policy(
        name=name,
        weights=tuple(sorted((k, v) for k, v in weights.items() if v != 0)),
        host_subset_size=subset,
    )
