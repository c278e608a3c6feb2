"""The columnar Scheduler makes the choices, reports and refusals of the
one-host-at-a-time reference pipeline (the oracle), on random fleets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from orchestrator.errors import NoValidHost
from orchestrator.scheduler import (
    HostState,
    PlacementRequest,
    Policy,
    ReferenceScheduler,
    Scheduler,
)
from orchestrator.scheduler.columns import HostColumns
from tests.unit.test_scheduler import (
    POLICY_CONFIGS,
    messy_fleet,
    messy_request,
    reference_select,
)

CONFIG_IDS = ["first-fit", "pack", "spread", "balanced", "4w", "5w", "1w"]


def outcome(sched: Scheduler | ReferenceScheduler, hosts, r: PlacementRequest):
    try:
        p = sched.select(hosts, r)
    except NoValidHost as e:
        return str(e), e.report
    return [h.id for h in p.hosts], p.report


def fleet_with_maintenance(rng: random.Random, n: int) -> list[HostState]:
    fleet = messy_fleet(rng, n)
    for i, h in enumerate(fleet):
        if rng.random() < 0.05:
            fleet[i] = replace(h, maintenance="kernel update")
    return fleet


@pytest.mark.parametrize("cfg", POLICY_CONFIGS, ids=CONFIG_IDS)
def test_same_as_reference_on_random_fleets(cfg):
    policy = Policy.named(cfg["policy"], weights=cfg.get("weights"))
    sched = Scheduler(policy)
    rng = random.Random(f"columnar {cfg}")
    for _ in range(30):
        fleet = fleet_with_maintenance(rng, rng.choice([0, 1, 5, 40, 128, 129, 300, 600]))
        cols = HostColumns(fleet)
        for _ in range(5):
            r = messy_request(rng, fleet)
            want = reference_select(policy, fleet, r)
            assert outcome(sched, fleet, r) == want
            assert outcome(sched, cols, r) == want


@pytest.mark.parametrize("cfg", POLICY_CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("subset", [1, 3])
def test_same_as_engine_as_claims_land(cfg, subset):
    """Columns updated in place claim after claim give the engine's choices,
    host_subset_size's random pick included (same seed)."""
    policy = replace(
        Policy.named(cfg["policy"], weights=cfg.get("weights")), host_subset_size=subset
    )
    engine = ReferenceScheduler(policy, rng=random.Random(5))
    columnar = Scheduler(policy, rng=random.Random(5))
    rng = random.Random(f"claims {cfg}")
    fleet = fleet_with_maintenance(rng, 200)
    cols = HostColumns(fleet)
    where = {h.id: i for i, h in enumerate(fleet)}
    for _ in range(150):
        r = messy_request(rng, fleet)
        want = outcome(engine, fleet, r)
        assert outcome(columnar, cols, r) == want
        if isinstance(want[0], list):
            h = fleet[where[want[0][0]]]
            fleet[where[h.id]] = cols[where[h.id]] = h.consume(r)
    assert list(cols) == fleet
    assert HostColumns(fleet).cpu_free.tolist() == cols.cpu_free.tolist()


def test_unknown_arch_and_empty_fleet():
    sched = Scheduler(Policy.named("spread"))
    fleet = messy_fleet(random.Random(3), 20)
    r = PlacementRequest(cpu=0, ram=0, disk=0, arch="riscv64", label="t")
    assert outcome(sched, fleet, r) == reference_select(sched.policy, fleet, r)
    with pytest.raises(NoValidHost, match="no physical machines are known"):
        sched.select([], r)


def test_columns_follow_hosts_replaced_in_place():
    """A host that goes down, into maintenance or changes arch in place changes
    the choices and the refusal words as it does for the reference."""
    rng = random.Random(8)
    policy = Policy.named("balanced")
    sched = Scheduler(policy)
    fleet = fleet_with_maintenance(rng, 60)
    cols = HostColumns(fleet)
    changes = [
        {"up": False, "down_reason": "ssh refused"},
        {"up": True, "enabled": True, "maintenance": None},
        {"maintenance": "disk swap"},
        {"arch": "aarch64"},
        {"arch": None},
        {"arch": "ppc64le"},
        {"name": "renamed"},
    ]
    for _ in range(200):
        i = rng.randrange(len(fleet))
        fleet[i] = cols[i] = replace(fleet[i], **rng.choice(changes))
        r = messy_request(rng, fleet)
        r = replace(r, arch=rng.choice([None, "x86_64", "aarch64", "ppc64le"]))
        assert outcome(sched, cols, r) == reference_select(policy, fleet, r)
