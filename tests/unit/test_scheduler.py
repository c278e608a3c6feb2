"""The pure placement engine: filters, weighers, policies, refusals."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from orchestrator.errors import NoValidHost
from orchestrator.scheduler import (
    COLUMN_FILTERS,
    FILTERS,
    WEIGHERS,
    ArchFilter,
    CpuFilter,
    DiskFilter,
    ExcludeFilter,
    HostState,
    Placement,
    PlacementRequest,
    Policy,
    RamFilter,
    RamFreeWeigher,
    ReferenceScheduler,
    Scheduler,
    StatusFilter,
    default_filters,
    refusal_message,
    weigh_hosts,
)
from orchestrator.scheduler.engine import RANKED_UP_FRONT, RankedHosts
from orchestrator.scheduler.weighers import BalanceWeigher


def host(
    id: int,
    *,
    cpu: tuple[int, int] = (0, 8),
    ram: tuple[int, int] = (0, 8192),
    disk: tuple[int, int] = (0, 100),
    up: bool = True,
    enabled: bool = True,
    arch: str | None = "x86_64",
    vms: int = 0,
    down_reason: str | None = None,
    name: str | None = None,
) -> HostState:
    """A host with (used, total) per resource."""
    return HostState(
        id=id,
        name=name or f"pm{id}",
        up=up,
        enabled=enabled,
        arch=arch,
        cpu_total=cpu[1],
        ram_total=ram[1],
        disk_total=disk[1],
        cpu_used=cpu[0],
        ram_used=ram[0],
        disk_used=disk[0],
        vms=vms,
        down_reason=down_reason,
    )


def req(cpu: int = 1, ram: int = 512, disk: int = 1, **kw) -> PlacementRequest:
    kw.setdefault("label", "instance_type 3")
    return PlacementRequest(cpu=cpu, ram=ram, disk=disk, **kw)


def select(hosts, request, policy: str = "first-fit", **cfg) -> Placement:
    return Scheduler(Policy.named(policy, **cfg), rng=random.Random(0)).select(hosts, request)


def ids(placement: Placement) -> list[int]:
    return [h.id for h in placement.hosts]


# --- state -----------------------------------------------------------------


def test_host_state_free_and_consume():
    h = host(1, cpu=(2, 8), ram=(1024, 4096), disk=(10, 50), vms=1)
    assert (h.cpu_free, h.ram_free, h.disk_free) == (6, 3072, 40)
    after = h.consume(req(cpu=2, ram=512, disk=5))
    assert (after.cpu_used, after.ram_used, after.disk_used, after.vms) == (4, 1536, 15, 2)
    assert (after.cpu_free, after.ram_free, after.disk_free) == (4, 2560, 35)
    assert h.cpu_used == 2 and h.vms == 1  # the original is untouched
    assert after.id == h.id and after.name == h.name


def test_request_validation_and_exclude_coercion():
    r = PlacementRequest(cpu=1, ram=1, disk=1, arch=None, label="x", exclude={3, 4})
    assert r.exclude == frozenset({3, 4})
    assert PlacementRequest(cpu=0, ram=0, disk=0).exclude == frozenset()
    with pytest.raises(ValueError, match="ram"):
        PlacementRequest(cpu=1, ram=-1, disk=1)
    with pytest.raises(ValueError, match="cpu"):
        PlacementRequest(cpu=True, ram=1, disk=1)


# --- filters -----------------------------------------------------------------


def test_default_filter_order():
    assert [f.name for f in default_filters()] == [
        "status",
        "exclude",
        "arch",
        "cpu",
        "ram",
        "disk",
    ]
    assert set(FILTERS) == {"status", "exclude", "arch", "cpu", "ram", "disk"}


def test_status_filter():
    f = StatusFilter()
    r = req()
    assert f.host_passes(host(1), r)
    assert not f.host_passes(host(2, up=False), r)
    assert not f.host_passes(host(3, enabled=False), r)
    detail = f.detail(
        [host(2, up=False, down_reason="ssh refused"), host(3, enabled=False), host(4, up=False)], r
    )
    assert detail == "down: pm2 ssh refused; pm3 disabled; pm4 down"


def test_status_detail_is_brief_for_many_hosts():
    removed = [host(i, up=False, down_reason="timeout") for i in range(1, 21)]
    detail = StatusFilter().detail(removed, req())
    assert detail.startswith("down: pm1 timeout; pm2 timeout")
    assert detail.endswith("and 15 more")


def test_exclude_filter():
    f = ExcludeFilter()
    r = req(exclude=frozenset({2}))
    assert f.host_passes(host(1), r)
    assert not f.host_passes(host(2), r)
    assert f.is_noop(req()) and not f.is_noop(r)
    assert f.detail([host(2)], r) == "failed earlier: pm2"


@pytest.mark.parametrize(
    ("host_arch", "req_arch", "ok"),
    [
        ("x86_64", "x86_64", True),
        ("x86_64", None, True),
        (None, "aarch64", True),
        (None, None, True),
        ("x86_64", "i686", False),
        ("i686", "x86_64", False),
        ("aarch64", "x86_64", False),
    ],
)
def test_arch_filter(host_arch, req_arch, ok):
    assert ArchFilter().host_passes(host(1, arch=host_arch), req(arch=req_arch)) is ok


def test_arch_detail():
    d = ArchFilter().detail([host(1, arch="aarch64"), host(2, arch="i686")], req(arch="x86_64"))
    assert d == "needs arch x86_64, hosts are aarch64, i686"


@pytest.mark.parametrize(
    ("flt", "field", "amount"),
    [(CpuFilter(), "cpu", 4), (RamFilter(), "ram", 2048), (DiskFilter(), "disk", 30)],
)
def test_resource_filters_need_at_most_free(flt, field, amount):
    total = amount * 2
    exact = host(1, **{field: (total - amount, total)})
    short = host(2, **{field: (total - amount + 1, total)})
    r = req(**{field: amount})
    assert flt.host_passes(exact, r)  # need == free fits
    assert not flt.host_passes(short, r)


def test_resource_filter_details():
    r = req(cpu=4, ram=2048, disk=3)
    assert CpuFilter().detail([host(1, cpu=(7, 8)), host(2, cpu=(6, 8))], r) == (
        "needs 4 vCPUs, most free 2 vCPUs"
    )
    assert (
        CpuFilter().detail([host(1, cpu=(8, 8))], req(cpu=1)) == "needs 1 vCPU, most free 0 vCPUs"
    )
    assert RamFilter().detail([host(1, ram=(7168, 8192)), host(2, ram=(7680, 8192))], r) == (
        "needs 2048 MB, most free 1024 MB"
    )
    assert DiskFilter().detail([host(1, disk=(98, 100))], r) == "needs 3 GB, most free 2 GB"


def test_overcommitted_host_rejected_even_for_zero_need():
    over = host(1, ram=(9000, 8192))
    assert not RamFilter().host_passes(over, req(ram=0))


# --- policies ----------------------------------------------------------------

# cpu 8, ram 8192, disk 100 each; request 2 vCPU, 1024 MB, 10 GB
FLEET = [
    host(1, cpu=(2, 8), ram=(2048, 8192), disk=(20, 100), vms=1),  # light
    host(2, cpu=(6, 8), ram=(6144, 8192), disk=(80, 100), vms=3),  # fullest that fits
    host(3),  # empty
    host(4, cpu=(7, 8), ram=(7168, 8192), disk=(90, 100), vms=4),  # too full (cpu)
]
FLEET_REQ = req(cpu=2, ram=1024, disk=10)


def test_first_fit_lowest_pmid_that_fits():
    p = select(FLEET, FLEET_REQ, "first-fit")
    assert ids(p) == [1, 2, 3]


def test_first_fit_ignores_input_order():
    assert ids(select(list(reversed(FLEET)), FLEET_REQ, "first-fit")) == [1, 2, 3]


def test_default_policy_is_first_fit():
    assert Policy.named().name == "first-fit"
    assert Policy.named().weights == () and not Policy.named().weighted


def test_pack_fullest_host_that_fits():
    assert ids(select(FLEET, FLEET_REQ, "pack")) == [2, 1, 3]


def test_spread_emptiest_host():
    assert ids(select(FLEET, FLEET_REQ, "spread")) == [3, 1, 2]


def test_pack_and_spread_tie_break_by_pmid():
    same = [host(5), host(2), host(9)]
    assert ids(select(same, FLEET_REQ, "pack")) == [2, 5, 9]
    assert ids(select(same, FLEET_REQ, "spread")) == [2, 5, 9]


BALANCE_FLEET = [
    host(1, cpu=(0, 8), ram=(1024, 8192)),  # after: cpu 0.25, ram 0.25 -> balanced
    host(2, cpu=(0, 8), ram=(0, 8192)),  # emptiest, but after: 0.25 vs 0.125
    host(3, cpu=(4, 8), ram=(1024, 8192)),  # after: 0.75 vs 0.25
]


def test_balanced_keeps_cpu_ram_balance():
    assert select(BALANCE_FLEET, FLEET_REQ, "spread").best.id == 2
    assert ids(select(BALANCE_FLEET, FLEET_REQ, "balanced")) == [1, 2, 3]


def test_balance_weigher_raw_score():
    w = BalanceWeigher()
    assert w.raw(BALANCE_FLEET[0], FLEET_REQ) == 0
    assert w.raw(BALANCE_FLEET[1], FLEET_REQ) == pytest.approx(-0.125)
    assert w.raw(BALANCE_FLEET[2], FLEET_REQ) == pytest.approx(-0.5)


def test_vms_weigher_prefers_fewer_vms():
    fleet = [host(1, vms=5), host(2, vms=1), host(3, vms=3)]
    p = select(
        fleet,
        FLEET_REQ,
        "spread",
        weights={"vms": 1.0, "ram_free": 0, "cpu_free": 0, "disk_free": 0},
    )
    assert ids(p) == [2, 3, 1]


def test_weigh_hosts_normalises_and_multiplies():
    hosts = [host(1, ram=(0, 8192)), host(2, ram=(4096, 8192)), host(3, ram=(8192, 8192))]
    r = req(ram=0)
    ram_w = WEIGHERS["ram_free"]()
    assert weigh_hosts(hosts, r, [(ram_w, 2.0)]) == pytest.approx([2.0, 1.0, 0.0])
    assert weigh_hosts(hosts, r, [(ram_w, -1.0)]) == pytest.approx([-1.0, -0.5, 0.0])
    same = [host(1), host(2)]
    assert weigh_hosts(same, r, [(ram_w, 5.0)]) == [0.0, 0.0]  # all equal -> 0


def test_custom_weights_override_defaults():
    # host 1 has most free ram, host 2 most free cpu
    fleet = [host(1, cpu=(6, 8), ram=(0, 8192)), host(2, cpu=(0, 8), ram=(6144, 8192))]
    r = req(cpu=1, ram=512, disk=1)
    assert select(fleet, r, "spread", weights={"ram_free": 1.0, "cpu_free": 0.1}).best.id == 1
    assert select(fleet, r, "spread", weights={"ram_free": 0.1, "cpu_free": 1.0}).best.id == 2
    # a negative ram multiplier on spread packs by ram
    p = Policy.named("spread", weights={"ram_free": -3.0})
    assert dict(p.weights) == {"ram_free": -3.0, "cpu_free": 1.0, "disk_free": 0.5}
    # zero switches a weigher off
    p = Policy.named("pack", weights={"disk_free": 0})
    assert "disk_free" not in dict(p.weights)


def test_policy_to_config_round_trip():
    p = Policy.named("balanced", host_subset_size=3, weights={"vms": 0.5})
    c = p.to_config()
    assert Policy.named(c["policy"], weights=c["weights"], host_subset_size=3) == p
    assert p.host_subset_size == 3 and p.weighted
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        Policy.named("fastest")


# --- host_subset_size --------------------------------------------------------


def test_host_subset_size_picks_among_best_k():
    fleet = [host(i, ram=(i * 512, 8192)) for i in range(1, 9)]  # spread: 1 best ... 8 worst
    policy = Policy.named("spread", host_subset_size=3)
    sched = Scheduler(policy, rng=random.Random(42))
    firsts = []
    for _ in range(200):
        order = ids(sched.select(fleet, req()))
        firsts.append(order[0])
        assert order[0] in (1, 2, 3)
        rest = [i for i in range(1, 9) if i != order[0]]
        assert order[1:] == rest  # the others keep their rank order
    assert set(firsts) == {1, 2, 3}
    # seeded: repeatable
    a = [Scheduler(policy, rng=random.Random(7)).select(fleet, req()).best.id for _ in range(5)]
    b = [Scheduler(policy, rng=random.Random(7)).select(fleet, req()).best.id for _ in range(5)]
    assert a == b


def test_host_subset_size_larger_than_candidates():
    policy = Policy.named("pack", host_subset_size=10)
    sched = Scheduler(policy, rng=random.Random(1))
    seen = {sched.select(FLEET, FLEET_REQ).best.id for _ in range(100)}
    assert seen == {1, 2, 3}


def test_host_subset_size_one_is_deterministic():
    sched = Scheduler(Policy.named("spread"))  # unseeded rng, unused
    assert {sched.select(FLEET, FLEET_REQ).best.id for _ in range(20)} == {3}


# --- exclusion and report ----------------------------------------------------


def test_exclusion_skips_failed_hosts():
    r = req(cpu=2, ram=1024, disk=10, exclude=frozenset({3}))
    p = select(FLEET, r, "spread")
    assert ids(p) == [1, 2]
    entry = next(e for e in p.report if e["filter"] == "exclude")
    assert entry == {
        "filter": "exclude",
        "removed": 1,
        "remaining": 3,
        "detail": "failed earlier: pm3",
    }


def test_report_lists_every_filter_on_success():
    p = select(FLEET, FLEET_REQ, "first-fit")
    assert [e["filter"] for e in p.report] == ["status", "exclude", "arch", "cpu", "ram", "disk"]
    cpu = p.report[3]
    assert cpu == {
        "filter": "cpu",
        "removed": 1,
        "remaining": 3,
        "detail": "needs 2 vCPUs, most free 1 vCPU",
    }
    assert all(e["removed"] == 0 and e["detail"] == "" for i, e in enumerate(p.report) if i != 3)


def test_select_accepts_any_iterable_and_leaves_input_alone():
    before = list(FLEET)
    p = Scheduler(Policy.named("pack")).select(iter(FLEET), FLEET_REQ)
    assert p.best.id == 2
    assert FLEET == before


# --- refusals ----------------------------------------------------------------


def test_refusal_message_per_filter_numbers():
    fleet = [
        host(1, ram=(7168, 8192)),  # 1024 free
        host(2, ram=(7680, 8192)),  # 512 free
        host(3, ram=(0, 8192), disk=(98, 100)),  # fits ram, 2 GB disk free
    ]
    with pytest.raises(NoValidHost) as exc:
        select(fleet, req(cpu=1, ram=2048, disk=3), "spread")
    assert str(exc.value) == (
        "no host can fit instance_type 3: "
        "ram filter removed 2 of 3 hosts (needs 2048 MB, most free 1024 MB); "
        "disk filter removed 1 of 1 hosts (needs 3 GB, most free 2 GB)"
    )
    assert exc.value.status == 503
    report = exc.value.report
    assert [e["filter"] for e in report] == ["status", "exclude", "arch", "cpu", "ram", "disk"]
    assert report[4] == {
        "filter": "ram",
        "removed": 2,
        "remaining": 1,
        "detail": "needs 2048 MB, most free 1024 MB",
    }
    assert report[5]["remaining"] == 0


def test_refusal_all_hosts_down():
    fleet = [
        host(1, up=False, down_reason="ssh refused"),
        host(2, up=False, down_reason="libvirt timeout"),
        host(3, enabled=False),
    ]
    with pytest.raises(NoValidHost) as exc:
        select(fleet, req())
    msg = str(exc.value)
    assert msg == (
        "no host can fit instance_type 3: status filter removed 3 of 3 hosts "
        "(down: pm1 ssh refused; pm2 libvirt timeout; pm3 disabled)"
    )
    assert [e["filter"] for e in exc.value.report] == ["status"]  # stops at the first empty


def test_refusal_mixed_status_arch_cpu():
    fleet = [
        host(1, up=False, down_reason="ssh refused"),
        host(2, arch="aarch64"),
        host(3, cpu=(7, 8)),
    ]
    with pytest.raises(NoValidHost) as exc:
        select(fleet, req(cpu=2, arch="x86_64"), "pack")
    assert str(exc.value) == (
        "no host can fit instance_type 3: "
        "status filter removed 1 of 3 hosts (down: pm1 ssh refused); "
        "arch filter removed 1 of 2 hosts (needs arch x86_64, hosts are aarch64); "
        "cpu filter removed 1 of 1 hosts (needs 2 vCPUs, most free 1 vCPU)"
    )


def test_refusal_all_excluded():
    with pytest.raises(NoValidHost) as exc:
        select([host(1), host(2)], req(exclude=frozenset({1, 2})))
    assert "exclude filter removed 2 of 2 hosts (failed earlier: pm1, pm2)" in str(exc.value)


def test_no_hosts_at_all():
    with pytest.raises(NoValidHost) as exc:
        select([], req())
    assert str(exc.value) == "no physical machines are known"
    assert exc.value.report == []


# --- properties --------------------------------------------------------------


def random_fleet(rng: random.Random, n: int) -> list[HostState]:
    fleet = []
    for i in range(1, n + 1):
        cpu_t, ram_t, disk_t = rng.randint(0, 16), rng.randint(0, 16) * 512, rng.randint(0, 200)
        fleet.append(
            HostState(
                id=i,
                name=f"pm{i}",
                up=rng.random() > 0.1,
                enabled=rng.random() > 0.05,
                arch=rng.choice(["x86_64", "x86_64", "aarch64", None]),
                cpu_total=cpu_t,
                ram_total=ram_t,
                disk_total=disk_t,
                cpu_used=rng.randint(0, cpu_t),
                ram_used=rng.randint(0, ram_t),
                disk_used=rng.randint(0, disk_t),
                vms=rng.randint(0, 5),
                down_reason=rng.choice([None, "ssh refused"]),
            )
        )
    rng.shuffle(fleet)
    return fleet


def passes_all(h: HostState, r: PlacementRequest) -> bool:
    return all(f.host_passes(h, r) for f in default_filters())


@pytest.mark.parametrize("policy", ["first-fit", "pack", "spread", "balanced"])
@pytest.mark.parametrize("subset", [1, 3])
def test_property_chosen_host_passes_and_capacity_never_exceeded(policy, subset):
    rng = random.Random(f"{policy}-{subset}")
    for _round in range(25):
        fleet = {h.id: h for h in random_fleet(rng, rng.randint(0, 12))}
        totals = {h.id: (h.cpu_total, h.ram_total, h.disk_total) for h in fleet.values()}
        sched = Scheduler(
            Policy.named(policy, host_subset_size=subset),
            rng=random.Random(rng.random()),
        )
        for _ in range(200):
            r = PlacementRequest(
                cpu=rng.randint(0, 4),
                ram=rng.choice([256, 512, 1024, 2048]),
                disk=rng.randint(1, 20),
                arch=rng.choice([None, "x86_64", "aarch64"]),
                label="t",
                exclude=frozenset(rng.sample(sorted(fleet), k=min(len(fleet), rng.randint(0, 1)))),
            )
            try:
                p = sched.select(fleet.values(), r)
            except NoValidHost as e:
                # refusal is honest: nothing fits
                assert not any(passes_all(h, r) for h in fleet.values())
                assert str(e).startswith("no ")
                break
            assert p.hosts, "a placement always names a host"
            assert len({h.id for h in p.hosts}) == len(p.hosts)
            assert {h.id for h in p.hosts} == {h.id for h in fleet.values() if passes_all(h, r)}
            for h in p.hosts:
                assert passes_all(h, r)
            chosen = p.best.consume(r)
            cpu_t, ram_t, disk_t = totals[chosen.id]
            assert chosen.cpu_used <= cpu_t
            assert chosen.ram_used <= ram_t
            assert chosen.disk_used <= disk_t
            fleet[chosen.id] = chosen


def test_property_fill_until_refused():
    """Placing one size until refused fills every usable host exactly, whatever the policy."""
    rng = random.Random(5)
    r = req(cpu=1, ram=512, disk=5)
    for policy in ("first-fit", "pack", "spread", "balanced"):
        start = {h.id: h for h in random_fleet(rng, 10)}
        room = sum(
            max(0, min(h.cpu_free, h.ram_free // 512, h.disk_free // 5))
            for h in start.values()
            if h.up and h.enabled
        )
        fleet = dict(start)
        sched = Scheduler(Policy.named(policy, host_subset_size=2), rng=random.Random(1))
        placed = 0
        while True:
            try:
                h = sched.select(list(fleet.values()), r).best
            except NoValidHost:
                break
            fleet[h.id] = h.consume(r)
            placed += 1
            assert fleet[h.id].cpu_free >= 0
            assert fleet[h.id].ram_free >= 0
            assert fleet[h.id].disk_free >= 0
        assert placed == room
        assert not any(h.fits(r) for h in fleet.values() if h.up and h.enabled)


# --- the optimised pipeline gives what the plain one gave ---------------------


def reference_select(
    policy: Policy, hosts, r: PlacementRequest, filters=None
) -> tuple[list[int] | str, list[dict]]:
    """The pipeline as first written: one filter, one host, one weigher call at a
    time, one sort by (-weight, pmid). (ranked pmids or the refusal, report)."""
    candidates = list(hosts)
    if not candidates:
        return "no physical machines are known", []
    report = []
    for flt in filters if filters is not None else default_filters():
        removed = []
        if not flt.is_noop(r):
            removed = [h for h in candidates if not flt.host_passes(h, r)]
            candidates = [h for h in candidates if flt.host_passes(h, r)]
        report.append(
            {
                "filter": flt.name,
                "removed": len(removed),
                "remaining": len(candidates),
                "detail": flt.detail(removed, r) if removed else "",
            }
        )
        if not candidates:
            return refusal_message(r, report), report
    if not policy.weighted or not policy.weights:
        return [h.id for h in sorted(candidates, key=lambda h: h.id)], report
    totals = [0.0] * len(candidates)
    for name, multiplier in policy.weights:
        raw = [WEIGHERS[name]().raw(h, r) for h in candidates]
        low, span = min(raw), max(raw) - min(raw)
        if span:
            for i, score in enumerate(raw):
                totals[i] += (score - low) * (multiplier / span)
    order = sorted(range(len(candidates)), key=lambda i: (-totals[i], candidates[i].id))
    return [candidates[i].id for i in order], report


def outcome(sched: Scheduler, hosts, r: PlacementRequest) -> tuple[list[int] | str, list[dict]]:
    try:
        p = sched.select(hosts, r)
    except NoValidHost as e:
        return str(e), e.report
    return ids(p), p.report


def messy_fleet(rng: random.Random, n: int) -> list[HostState]:
    """random_fleet plus overcommitted hosts and many equal weights (ties)."""
    fleet = random_fleet(rng, n)
    for i, h in enumerate(fleet):
        if rng.random() < 0.05:
            fleet[i] = replace(h, cpu_used=h.cpu_total + 1)
        elif rng.random() < 0.3:
            fleet[i] = replace(h, cpu_total=16, cpu_used=0, ram_total=8192, ram_used=0, vms=0)
    return fleet


def messy_request(rng: random.Random, fleet: list[HostState]) -> PlacementRequest:
    return PlacementRequest(
        cpu=rng.randint(0, 4),
        ram=rng.choice([0, 256, 512, 1024, 2048, 8192]),
        disk=rng.randint(0, 40),
        arch=rng.choice([None, "x86_64", "aarch64"]),
        label="t",
        exclude=frozenset(h.id for h in fleet if rng.random() < 0.05),
    )


POLICY_CONFIGS = [
    {"policy": "first-fit"},
    {"policy": "pack"},
    {"policy": "spread"},
    {"policy": "balanced"},
    {"policy": "pack", "weights": {"vms": -1.0}},  # four weighers
    {"policy": "balanced", "weights": {"vms": 2.0}},  # five
    {"policy": "spread", "weights": {"ram_free": 0, "cpu_free": 0}},  # one
]


@pytest.mark.parametrize(
    "cfg", POLICY_CONFIGS, ids=["first-fit", "pack", "spread", "balanced", "4w", "5w", "1w"]
)
def test_select_same_as_reference_on_random_fleets(cfg):
    policy = Policy.named(cfg["policy"], weights=cfg.get("weights"))
    sched = Scheduler(policy)
    rng = random.Random(str(cfg))
    for _ in range(30):
        fleet = messy_fleet(rng, rng.choice([0, 1, 5, 40, 128, 129, 300, 600]))
        for _ in range(5):
            r = messy_request(rng, fleet)
            assert outcome(sched, fleet, r) == reference_select(policy, fleet, r)


def test_filters_in_any_order_same_as_reference():
    rng = random.Random(11)
    policy = Policy.named("spread")
    reused = Scheduler(policy)
    by_name = {f.name: f for f in default_filters()}
    for n in range(40):
        filters = list(COLUMN_FILTERS)
        rng.shuffle(filters)
        if rng.random() < 0.3:
            filters.pop()  # not the standard set
        if n % 2:
            sched = Scheduler(policy, filters=filters)
        else:
            sched = reused
            sched.filters = tuple(filters)  # changed after construction: still honoured
        same = [by_name[f.name] for f in filters]
        fleet = messy_fleet(rng, rng.randint(1, 30))
        for _ in range(5):
            r = messy_request(rng, fleet)
            assert outcome(sched, fleet, r) == reference_select(policy, fleet, r, same)
            ref = ReferenceScheduler(policy, filters=same)
            assert outcome(ref, fleet, r) == reference_select(policy, fleet, r, same)


def test_ten_thousand_hosts_same_as_reference():
    """Speed is bench/scheduler.py's; here, a big fleet ranks as the plain pipeline."""
    rng = random.Random(3)
    fleet = random_fleet(rng, 10_000)
    policy = Policy.named("balanced")
    r = req(cpu=1, ram=512, disk=5)
    got = Scheduler(policy).select(fleet, r)
    want, report = reference_select(policy, fleet, r)
    assert ids(got) == want and got.report == report


def test_placement_ranks_the_rest_when_read():
    fleet = [host(i, ram=(512 * (i % 7), 8192)) for i in range(1, 201)]
    sched = Scheduler(Policy.named("pack"))
    want = sched.rank(fleet, FLEET_REQ)
    assert [h.id for h in want[:3]] == [6, 13, 20]  # fullest, then by pmid
    p = sched.select(fleet, FLEET_REQ)
    assert isinstance(p.hosts, RankedHosts)
    assert len(p.hosts) == 200 and p.best == want[0]
    assert not p.hosts.fully_ranked  # only the best are ranked so far
    assert [p.hosts[i] for i in range(RANKED_UP_FRONT)] == want[:RANKED_UP_FRONT]
    assert not p.hosts.fully_ranked
    assert p.hosts[150] == want[150] and p.hosts.fully_ranked
    p = sched.select(fleet, FLEET_REQ)
    assert list(p.hosts) == want  # iterating past the best ranks the rest
    p = sched.select(fleet, FLEET_REQ)
    assert p.hosts[-1] == want[-1] and p.hosts[10:12] == want[10:12]
    assert p.hosts == want and p.hosts != want[:-1] and want[5] in p.hosts
    # all weigh the same: all ranked at once
    p = sched.select([host(i) for i in range(100, 0, -1)], FLEET_REQ)
    assert ids(p) == list(range(1, 101))


def test_placement_ranks_right_with_ties_at_the_cut():
    # every 4th host is among the emptiest, and hosts tie in weight across the
    # cut between the hosts ranked now and the rest
    fleet = [host(i, ram=(i % 3 if i % 4 == 1 else 4096 + i % 5, 8192)) for i in range(1, 1025)]
    sched = Scheduler(Policy.named("spread"))
    p = sched.select(fleet, req())
    want = ReferenceScheduler(Policy.named("spread")).select(fleet, req())
    assert [h.id for h in p.hosts[:RANKED_UP_FRONT]] == ids(want)[:RANKED_UP_FRONT]
    assert ids(p) == ids(want) == [h.id for h in sched.rank(fleet, req())]


def test_host_subset_size_above_ranked_up_front():
    fleet = [host(i, ram=(32 * i, 8192)) for i in range(1, 201)]  # spread: 1 best ... 200
    policy = Policy.named("spread", host_subset_size=RANKED_UP_FRONT + 10)
    sched = Scheduler(policy, rng=random.Random(4))
    firsts = set()
    for _ in range(200):
        order = ids(sched.select(fleet, req()))
        firsts.add(order[0])
        assert order[1:] == [i for i in range(1, 201) if i != order[0]]
    assert max(firsts) > RANKED_UP_FRONT and firsts <= set(range(1, RANKED_UP_FRONT + 11))


def test_weigher_overriding_raw_is_honoured():
    class MostVms(RamFreeWeigher):
        def raw(self, host, req):
            return host.vms

    fleet = [host(1, vms=1), host(2, vms=9), host(3, vms=4)]
    assert weigh_hosts(fleet, req(), [(MostVms(), 1.0)]) == [0.0, 1.0, 0.375]


def test_policy_built_directly():
    sched = Scheduler(Policy("pack", weights=(("ram_free", -1.0),)))
    assert sched.select(FLEET, FLEET_REQ).best.id == 2
