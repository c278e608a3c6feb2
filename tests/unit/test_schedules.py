"""Scheduled capacity (seed 004) with an injectable clock: windows start and end,
catch-up after downtime, overlap on a pool, partial capacity, cron, force delete and
the API's validation. No test sleeps for a window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api import create_app, presenters
from orchestrator.errors import HostUnreachable
from orchestrator.model import VmState
from orchestrator.schedules import Cron, ScheduleService
from tests.conftest import THREE_HOSTS, make_pool_rig, make_rig

T0 = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)  # a Monday


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def set(self, t: datetime) -> None:
        self.t = t


def z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def one_off(start: datetime, end: datetime, **kw) -> dict:
    return {"name": "peak", "instance_type": 1, "image_id": 1, "count": 3,
            "start": z(start), "end": z(end), **kw}  # fmt: skip


def vm_names(registry) -> list[str]:
    return sorted(vm.name for vm in registry.vms.list())


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def rig(tmp_path, clock):
    """Three test:// hosts, the schedules on ``clock``."""
    r = make_rig(tmp_path, THREE_HOSTS, clock=clock)
    yield r
    r.stop()


class Shown:
    """The schedule service, its answers as the API shows them."""

    def __init__(self, svc: ScheduleService) -> None:
        self.svc = svc

    def get(self, sid: int) -> dict:
        return presenters.schedule(self.svc.get(sid))

    def list(self) -> list[dict]:
        return [presenters.schedule(s) for s in self.svc.list()]

    def create(self, data: dict) -> dict:
        return presenters.schedule(self.svc.create(data))

    def __getattr__(self, name: str):  # noqa: ANN204 - tick, start, stop, ...
        return getattr(self.svc, name)


@pytest.fixture
def svc(rig) -> Shown:
    return Shown(rig.services.schedules)


@pytest.fixture
def api(rig, svc):
    app = create_app(rig.services)
    app.testing = True
    return app.test_client()


# -- cron ----------------------------------------------------------------------


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", at(2026, 5, 4, 7, 0), at(2026, 5, 4, 7, 15)),
        ("*/15 * * * *", at(2026, 5, 4, 7, 59, 30), at(2026, 5, 4, 8, 0)),
        ("0 8 * * 1-5", at(2026, 5, 8, 9, 0), at(2026, 5, 11, 8, 0)),  # Fri -> Mon
        ("0 8 * * 1-5", at(2026, 5, 4, 7, 59), at(2026, 5, 4, 8, 0)),
        ("30 9 1,15 * *", at(2026, 5, 2, 0, 0), at(2026, 5, 15, 9, 30)),
        ("0 0 29 2 *", at(2026, 1, 1, 0, 0), at(2028, 2, 29, 0, 0)),
        ("0 12 * * 0", at(2026, 5, 4, 0, 0), at(2026, 5, 10, 12, 0)),  # Sunday
        ("0 12 * * 7", at(2026, 5, 4, 0, 0), at(2026, 5, 10, 12, 0)),  # 7 is Sunday too
        ("0 12 * * sat", at(2026, 5, 4, 0, 0), at(2026, 5, 9, 12, 0)),
        ("0 0 1 jan-mar *", at(2026, 5, 4, 0, 0), at(2027, 1, 1, 0, 0)),
        ("0 6 13 * 5", at(2026, 5, 4, 0, 0), at(2026, 5, 8, 6, 0)),  # 13th OR Friday
        ("0 6 */10 * *", at(2026, 5, 4, 0, 0), at(2026, 5, 11, 6, 0)),  # 1, 11, 21, 31
        ("5/20 1-10/3 * * *", at(2026, 5, 4, 1, 50), at(2026, 5, 4, 4, 5)),
        ("@daily", at(2026, 5, 4, 7, 0), at(2026, 5, 5, 0, 0)),
        ("59 23 31 12 *", at(2026, 12, 31, 23, 59), at(2027, 12, 31, 23, 59)),
    ],
)
def test_cron_next_occurrence(expr, after, expected):
    cron = Cron.parse(expr)
    assert cron.next_after(after) == expected
    assert cron.matches(expected)
    assert cron.last_at_or_before(expected) == expected
    assert cron.last_at_or_before(expected - timedelta(seconds=1)) < expected


def test_cron_last_occurrence_and_never():
    cron = Cron.parse("0 8 * * 1-5")
    assert cron.last_at_or_before(at(2026, 5, 10, 20, 0)) == at(2026, 5, 8, 8, 0)  # Sun -> Fri
    assert cron.last_at_or_before(at(2026, 5, 4, 8, 0, 59)) == at(2026, 5, 4, 8, 0)
    never = Cron.parse("0 0 31 2 *")
    assert never.next_after(T0) is None and never.last_at_or_before(T0) is None
    assert not never.matches(at(2027, 3, 3, 0, 0))


@pytest.mark.parametrize(
    ("expr", "after", "last", "following"),
    [
        # Feb 29 only in leap years, looking both ways
        ("0 0 29 2 *", at(2028, 3, 1, 0, 0), at(2028, 2, 29, 0, 0), at(2032, 2, 29, 0, 0)),
        # both day fields restricted: the 31st of February never comes, Mondays do
        ("0 0 31 2 1", T0, at(2026, 2, 23, 0, 0), at(2027, 2, 1, 0, 0)),
        # day-of-month starting with '*' is unrestricted: days 1, 11, 21, 31 AND Friday
        ("0 6 */10 * 5", T0, at(2026, 5, 1, 6, 0), at(2026, 7, 31, 6, 0)),
        # a range of one value with a step is that value alone
        ("5-5/2 * * * *", T0, at(2026, 5, 4, 6, 5), at(2026, 5, 4, 7, 5)),
        ("@DAILY", T0, at(2026, 5, 4, 0, 0), at(2026, 5, 5, 0, 0)),
        # Feb 29 on a Sunday: 2032, then 2060
        ("0 0 29 2 */7", at(2033, 1, 1, 0, 0), at(2032, 2, 29, 0, 0), at(2060, 2, 29, 0, 0)),
    ],
)
def test_cron_around_a_time(expr, after, last, following):
    cron = Cron.parse(expr)
    assert cron.last_at_or_before(after) == last
    assert cron.next_after(after) == following
    assert cron.matches(last) and cron.matches(following)


@pytest.mark.parametrize("expr", ["0 0 31 4,6,9,11 *", "0 0 30,31 2 *", "0 0 30 feb */7"])
def test_cron_that_never_fires(expr):
    cron = Cron.parse(expr)
    assert cron.next_after(T0) is None and cron.last_at_or_before(T0) is None


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("1,,2 * * * *", "empty item"),
        ("a * * * *", "not a number"),
        ("0 0 * * mon-", "not a number"),
        ("٣ * * * *", "not a number"),  # a non-ASCII digit
        ("005 * * * *", "minute: '005' is not a number"),
        ("*/100 * * * *", "minute: step '100' must be 1-99"),
        ("@reboot", "5 fields"),
        # extensions of other crons are not part of the grammar
        ("0 0 L * *", "day-of-month: 'L' is not a number"),
        ("0 0 LW * *", "day-of-month: 'LW' is not a number"),
        ("0 0 * * 5L", "day-of-week: '5L' is not a number"),
        ("0 0 * * 5#2", "day-of-week: '5#2' is not a number"),
        ("0 0 ? * *", r"day-of-month: '\?' is not a number"),
    ],
)
def test_cron_rejects_bad_expressions(expr, words):
    with pytest.raises(ValueError, match=words):
        Cron.parse(expr)


# -- one-off windows -------------------------------------------------------------


def test_window_starts_and_ends_on_the_clock(rig, svc, clock):
    s = svc.create(one_off(T0 + timedelta(hours=1), T0 + timedelta(hours=3)))
    assert s["state"] == "pending" and s["next_start"] == z(T0 + timedelta(hours=1))
    svc.tick()
    assert rig.registry.vms.list() == []
    clock.set(T0 + timedelta(hours=1))
    svc.tick()
    vms = rig.registry.vms.list()
    assert [vm.state for vm in vms] == [VmState.ACTIVE] * 3
    assert vm_names(rig.registry) == ["peak-1", "peak-2", "peak-3"]
    got = svc.get(s["id"])
    assert got["state"] == "active"
    assert got["progress"]["wanted"] == 3 and got["progress"]["made"] == 3
    assert got["progress"]["last_error"] is None
    assert sorted(got["progress"]["vmids"]) == [vm.id for vm in vms]
    clock.set(T0 + timedelta(hours=2))
    svc.tick()
    assert len(rig.registry.vms.list()) == 3  # nothing more while the window is open
    clock.set(T0 + timedelta(hours=3))
    svc.tick()
    assert rig.registry.vms.list() == []
    done = svc.get(s["id"])
    assert done["state"] == "done" and done["progress"]["phase"] == "done"
    assert done["progress"]["vmids"] == []
    assert rig.registry.claims.consistent() == []
    clock.set(T0 + timedelta(hours=1, minutes=30))  # a clock going back restarts nothing
    svc.tick()
    assert rig.registry.vms.list() == []


def test_catch_up_after_downtime_and_end_after_downtime(rig, svc):
    sid = svc.create(one_off(T0 + timedelta(hours=1), T0 + timedelta(hours=3), count=2))["id"]
    svc.tick()
    # The fabric is down over the start; it comes back while the window is open.
    svc = Shown(rig.restart(clock=Clock(T0 + timedelta(hours=2))).schedules)
    assert svc.get(sid)["state"] == "pending"
    svc.tick()
    assert len(rig.registry.vms.list()) == 2
    assert svc.get(sid)["progress"]["window_start"] == z(T0 + timedelta(hours=1))
    # ...and down again over the end: the next start removes them.
    svc = Shown(rig.restart(clock=Clock(T0 + timedelta(hours=5))).schedules)
    assert svc.get(sid)["state"] == "active"
    svc.tick()
    assert rig.registry.vms.list() == []
    assert svc.get(sid)["state"] == "done"


def test_a_window_that_passed_while_down_is_skipped(rig, svc, clock):
    sid = svc.create(one_off(T0 + timedelta(hours=1), T0 + timedelta(hours=2)))["id"]
    svc.tick()
    clock.set(T0 + timedelta(hours=2))
    svc.tick()
    assert rig.registry.vms.list() == []
    s = svc.get(sid)
    assert s["state"] == "done" and s["skipped"] is True and s["progress"] is None


def test_partial_capacity_is_recorded_and_completed_later(tmp_path):
    clock = Clock(T0)
    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 2048}], clock=clock)  # four 512 MB VMs fit
    try:
        svc = Shown(rig.services.schedules)
        mine = [rig.fabric.create_vm(f"user{i}", 1, 1).id for i in range(2)]
        sid = svc.create(one_off(T0, T0 + timedelta(hours=1), count=3))["id"]
        svc.tick()
        p = svc.get(sid)["progress"]
        assert (p["wanted"], p["made"]) == (3, 2)
        assert "no host can fit" in p["last_error"]
        svc.tick()  # still no room: still 2, still trying
        assert svc.get(sid)["progress"]["made"] == 2
        rig.fabric.destroy_vm(mine[0])
        clock.set(T0 + timedelta(minutes=10))
        svc.tick()
        p = svc.get(sid)["progress"]
        assert (p["made"], p["last_error"]) == (3, None)
        assert len(rig.registry.vms.list()) == 4
        clock.set(T0 + timedelta(hours=1))
        svc.tick()
        assert [vm.id for vm in rig.registry.vms.list()] == [mine[1]]  # the user's VM stays
    finally:
        rig.stop()


def test_an_end_that_cannot_destroy_keeps_trying(rig, svc, clock, monkeypatch):
    sid = svc.create(one_off(T0, T0 + timedelta(hours=1), count=2))["id"]
    svc.tick()
    real = rig.fabric.destroy_vm

    def host_down(vm_id, force=False):
        raise HostUnreachable("pm1", "connection refused")

    monkeypatch.setattr(rig.fabric, "destroy_vm", host_down)
    clock.set(T0 + timedelta(hours=1))
    svc.tick()
    s = svc.get(sid)
    assert s["state"] == "active" and s["progress"]["phase"] == "ending"
    assert "connection refused" in s["progress"]["last_error"]
    assert len(rig.registry.vms.list()) == 2
    monkeypatch.setattr(rig.fabric, "destroy_vm", real)
    svc.tick()
    assert rig.registry.vms.list() == [] and svc.get(sid)["state"] == "done"


def test_a_vm_destroyed_by_hand_is_not_a_problem_at_the_end(rig, svc, clock):
    sid = svc.create(one_off(T0, T0 + timedelta(hours=1), count=2))["id"]
    svc.tick()
    rig.fabric.destroy_vm(svc.get(sid)["progress"]["vmids"][0])
    clock.set(T0 + timedelta(minutes=30))
    svc.tick()
    assert len(rig.registry.vms.list()) == 1  # made counts creates; the user's choice stands
    clock.set(T0 + timedelta(hours=1))
    svc.tick()
    assert rig.registry.vms.list() == [] and svc.get(sid)["state"] == "done"


# -- recurring windows -----------------------------------------------------------


def test_recurring_windows_start_each_occurrence(rig, svc, clock):
    sid = svc.create({"name": "morning", "instance_type": 2, "image_id": 2, "count": 1,
                      "cron": "0 8 * * 1-5", "duration_minutes": 90})["id"]  # fmt: skip
    s = svc.get(sid)
    assert s["state"] == "pending" and s["next_start"] == "2026-05-04T08:00:00Z"
    svc.tick()
    assert rig.registry.vms.list() == []
    clock.set(at(2026, 5, 4, 8, 30))
    svc.tick()
    assert vm_names(rig.registry) == ["morning-1"]
    assert svc.get(sid)["progress"]["window_end"] == "2026-05-04T09:30:00Z"
    clock.set(at(2026, 5, 4, 9, 30))
    svc.tick()
    assert rig.registry.vms.list() == []
    s = svc.get(sid)
    assert s["state"] == "pending" and s["next_start"] == "2026-05-05T08:00:00Z"
    clock.set(at(2026, 5, 5, 8, 0))
    svc.tick()
    assert len(rig.registry.vms.list()) == 1
    assert svc.get(sid)["progress"]["window_start"] == "2026-05-05T08:00:00Z"
    # Friday's window is missed (down until Saturday): nothing starts at the weekend.
    clock.set(at(2026, 5, 9, 8, 30))
    svc.tick()
    assert rig.registry.vms.list() == []
    assert svc.get(sid)["state"] == "pending"


def test_overlapping_occurrences_of_one_schedule_merge(rig, svc, clock):
    sid = svc.create({"instance_type": 1, "image_id": 1, "count": 2,
                      "cron": "0 * * * *", "duration_minutes": 90})["id"]  # fmt: skip
    clock.set(at(2026, 5, 4, 7, 10))
    svc.tick()
    clock.set(at(2026, 5, 4, 8, 10))  # 08:00 opened while 07:00 (until 08:30) is open
    svc.tick()
    assert len(rig.registry.vms.list()) == 2
    assert svc.get(sid)["progress"]["window_end"] == "2026-05-04T09:30:00Z"
    clock.set(at(2026, 5, 4, 8, 45))
    svc.tick()
    assert len(rig.registry.vms.list()) == 2


# -- pools -----------------------------------------------------------------------

POOL_HOSTS = [{"cpus": 4, "ram": 4096}, {"cpus": 4, "ram": 4096}]
POOL = {"name": "small", "instance_type": 1, "image": "debian-12", "ready_check": "none",
        "size": 1, "max": 2, "cleanup": "reset"}  # fmt: skip


@pytest.fixture
def pr(tmp_path, clock):
    p = make_pool_rig(tmp_path, POOL_HOSTS, [POOL], start_worker=False, clock=clock)
    refill(p)
    yield p
    p.stop()


def refill(pr) -> dict:
    pr.worker.run_once()
    pr.worker.drain()
    return pr.pools.status()["small"]


def test_overlapping_schedules_on_a_pool_add_up(pr, clock, monkeypatch):
    woken = []
    monkeypatch.setattr(pr.worker, "wake", lambda: woken.append(1))
    svc = Shown(pr.rig.services.schedules)
    a = svc.create({"pool": "small", "count": 2, "start": z(T0), "end": z(T0 + timedelta(hours=2))})
    b = svc.create({"pool": "small", "count": 3, "start": z(T0 + timedelta(hours=1)),
                    "end": z(T0 + timedelta(hours=3))})  # fmt: skip
    assert refill(pr)["ready"] == 1
    svc.tick()
    assert pr.pools.extra == {"small": 2} and woken
    assert refill(pr)["ready"] == 3
    clock.set(T0 + timedelta(hours=1))
    svc.tick()
    assert pr.pools.extra == {"small": 5}
    assert refill(pr)["ready"] == 6  # size 1 + 2 + 3 (max 2 grew by 5 too)
    assert svc.get(a["id"])["progress"]["made"] == 2
    assert svc.get(b["id"])["state"] == "active"
    clock.set(T0 + timedelta(hours=2))
    svc.tick()
    assert pr.pools.extra == {"small": 3}
    assert refill(pr)["ready"] == 4  # the first window's two are removed
    clock.set(T0 + timedelta(hours=3))
    svc.tick()
    assert pr.pools.extra == {}
    st = refill(pr)
    assert (st["ready"], st["total"]) == (1, 1)
    assert [s["state"] for s in svc.list()] == ["done", "done"]


def test_pool_trim_never_takes_a_checked_out_vm(pr, clock):
    svc = Shown(pr.rig.services.schedules)
    svc.create({"pool": "small", "count": 2, "start": z(T0), "end": z(T0 + timedelta(hours=1))})
    svc.tick()
    assert refill(pr)["ready"] == 3
    # (one call takes at most the configured max, 2: Reservations checks p.max)
    got = pr.reservations.checkout(pool="small", count=2)
    got += pr.reservations.checkout(pool="small")
    clock.set(T0 + timedelta(hours=1))
    svc.tick()
    st = refill(pr)
    assert st["in_use"] == 3 and pr.pools.extra == {}
    assert {vm.id for vm in pr.rig.registry.vms.list(states=[VmState.IN_USE])} == {
        c.vm.id for c in got
    }


def test_pool_extra_is_restored_after_a_restart(pr, clock):
    clock.set(T0 + timedelta(minutes=5))
    svc = Shown(pr.rig.services.schedules)
    svc.create({"pool": "small", "count": 2, "start": z(T0), "end": z(T0 + timedelta(hours=1))})
    svc.tick()
    pr.pools.set_extra("small", 0)  # as a fresh PoolService would start
    svc.start()  # as the restarted server does, before its first pass
    try:
        assert pr.pools.extra == {"small": 2}
    finally:
        svc.stop()


def test_force_delete_of_a_pool_schedule_lowers_the_pool(pr):
    svc = Shown(pr.rig.services.schedules)
    app = create_app(pr.rig.services)
    app.testing = True
    c = app.test_client()
    r = c.post("/schedules", json={"pool": "small", "count": 2, "start": z(T0),
                                   "end": z(T0 + timedelta(hours=1))})  # fmt: skip
    assert r.status_code == 201
    sid = r.get_json()["id"]
    svc.tick()
    assert refill(pr)["ready"] == 3
    assert c.delete(f"/schedules/{sid}").status_code == 409
    assert c.delete(f"/schedules/{sid}?force=1").get_json() == {"status": 1}
    assert pr.pools.extra == {}
    assert refill(pr)["ready"] == 1
    assert c.get("/schedules").get_json() == {"schedules": []}
    r = c.post("/schedules", json={"pool": "nope", "count": 1, "start": z(T0),
                                   "end": z(T0 + timedelta(hours=1))})  # fmt: skip
    assert r.status_code == 404 and "pool 'nope' does not exist" in r.get_json()["error"]


# -- API -------------------------------------------------------------------------


def test_api_create_list_delete(api, rig, clock, svc):
    r = api.post("/schedules", json=one_off(T0 + timedelta(hours=1), T0 + timedelta(hours=2)))
    assert r.status_code == 201
    body = r.get_json()
    assert body["id"] > 0 and body["state"] == "pending" and body["count"] == 3
    r = api.post("/schedules", data={"name": "nightly", "instance_type": "2", "image_id": "2",
                                     "count": "1", "cron": "0 22 * * *",
                                     "duration_minutes": "60"})  # fmt: skip
    assert r.status_code == 201 and r.get_json()["cron"] == "0 22 * * *"
    listed = api.get("/schedules").get_json()["schedules"]
    assert [s["name"] for s in listed] == ["peak", "nightly"]
    assert api.get(f"/schedules/{body['id']}").get_json()["name"] == "peak"
    assert api.delete(f"/schedules/{body['id']}").get_json() == {"status": 1}  # pending: fine
    assert api.get(f"/schedules/{body['id']}").status_code == 404
    assert [s["name"] for s in api.get("/schedules").get_json()["schedules"]] == ["nightly"]


def test_api_active_schedule_needs_force(api, rig, clock, svc):
    sid = api.post("/schedules", json=one_off(T0, T0 + timedelta(hours=1))).get_json()["id"]
    svc.tick()
    assert len(rig.registry.vms.list()) == 3
    r = api.delete(f"/schedules/{sid}")
    assert r.status_code == 409
    assert r.get_json()["status"] == 0 and "force=1" in r.get_json()["error"]
    assert len(rig.registry.vms.list()) == 3
    r = api.delete(f"/schedules/{sid}", json={"force": True})
    assert r.get_json() == {"status": 1}
    assert rig.registry.vms.list() == []
    assert api.get("/schedules").get_json() == {"schedules": []}
    assert rig.registry.claims.consistent() == []


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"instance_type": 9}, 404, "instance_type 9 does not exist"),
        ({"image_id": 7}, 404, "image_id 7 does not exist"),
        ({"pool": "small"}, 400, "either pool, or instance_type"),
        ({"instance_type": None}, 400, "instance_type is required"),
        ({"instance_type": None, "image_id": None}, 400, "instance_type and image_id, or pool"),
        ({"count": 0}, 400, "count must be between 1 and 100"),
        ({"count": 101}, 400, "count must be between 1 and 100"),
        ({"count": "many"}, 400, "count must be an integer"),
        ({"count": True}, 400, "count must be an integer"),
        ({"count": 2.5}, 400, "count must be an integer"),
        ({"count": None}, 400, "count is required"),
        ({"name": "bad name!"}, 400, "name must be"),
        ({"start": "tomorrow"}, 400, "start is not an ISO 8601 time"),
        ({"start": 12}, 400, "start must be an ISO 8601 time"),
        ({"end": None}, 400, "end is required"),
        ({"end": z(T0 + timedelta(minutes=30))}, 400, "must be after start"),
        ({"start": z(T0 - timedelta(hours=3)), "end": z(T0 - timedelta(hours=1))}, 400,
         "in the past"),
        ({"end": "9999-12-31T23:59:59+00:00"}, 400, "between the years"),
        ({"end": z(T0 + timedelta(days=400))}, 400, "at most 366 days"),
        ({"cron": "0 8 * * *"}, 400, "not both"),
        ({"start": None, "end": None}, 400, "give a window"),
        ({"start": None, "end": None, "cron": "0 25 * * *", "duration_minutes": 5}, 400,
         "hour: 25 is out of range"),
        ({"start": None, "end": None, "cron": "0 8 * *", "duration_minutes": 5}, 400,
         "5 fields"),
        ({"start": None, "end": None, "cron": "0 0 30 2 *", "duration_minutes": 5}, 400,
         "never fires"),
        ({"start": None, "end": None, "cron": "0 8 * * *"}, 400, "duration_minutes is required"),
        ({"start": None, "end": None, "cron": "0 8 * * *", "duration_minutes": 0}, 400,
         "duration_minutes must be between 1 and 10080"),
        ({"start": None, "end": None, "duration_minutes": 5}, 400, "cron is required"),
        ({"flavor": 1}, 400, "unknown field 'flavor'"),
    ],
)  # fmt: skip
def test_api_validation(api, change, status, words):
    data = {k: v for k, v in {**one_off(T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
                              **change}.items() if v is not None}  # fmt: skip
    r = api.post("/schedules", json=data)
    assert r.status_code == status, r.get_json()
    assert r.get_json()["id"] == 0
    assert words in r.get_json()["error"]
    assert api.get("/schedules").get_json() == {"schedules": []}


def test_api_bad_requests_are_never_500(api):
    assert api.post("/schedules", data="[1]", content_type="application/json").status_code == 400
    assert api.post("/schedules", data="{", content_type="application/json").status_code == 400
    assert api.post("/schedules").status_code == 400
    assert api.delete("/schedules/abc").status_code == 400
    assert api.delete("/schedules/0").status_code == 400
    assert api.delete("/schedules/99999999999999999999").status_code == 400
    r = api.delete("/schedules/42")
    assert r.status_code == 404 and r.get_json() == {
        "status": 0,
        "error": "schedule 42 does not exist",
    }
    assert api.get("/schedules/42").status_code == 404
    assert api.delete("/schedules/42?force=maybe").status_code == 400
    rnd = random.Random(4)
    junk = [None, "", " ", "x" * 300, "٣", "-1", "1e3", 0, -5, 2**70, 1.5, True, [], {},
            "2026-13-01T00:00:00Z", "0 8 * * *", "*/0 * * * *", "2026-05-04T08:00:00+14:00",
            "small", "\x00", "1"]  # fmt: skip
    fields = ["name", "instance_type", "image_id", "pool", "count", "start", "end", "cron",
              "duration_minutes"]  # fmt: skip
    for _ in range(300):
        body = {f: rnd.choice(junk) for f in rnd.sample(fields, rnd.randint(1, len(fields)))}
        r = api.post("/schedules", json=body)
        assert r.status_code in (201, 400, 404), (body, r.get_json())


def test_config_interval(tmp_path):
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 2048}], config={"schedules": {"interval": 5}})
    rig.stop()
    assert rig.services.schedules.interval == 5.0
    assert config_from_dict({}).schedules.interval == 30.0
    with pytest.raises(
        ConfigError, match=r"^fabric.yaml: schedules\.interval: must be a positive number of sec"
    ):
        config_from_dict({"schedules": {"interval": 0}}, "fabric.yaml")
    with pytest.raises(
        ConfigError, match=r"^fabric.yaml: schedules\.every: unknown setting \(valid: interval\)"
    ):
        config_from_dict({"schedules": {"every": 5}}, "fabric.yaml")


@pytest.mark.parametrize(
    ("window", "cron", "minutes"),
    [
        ({"repeat": "daily", "start": "08:00", "end": "10:30"}, "0 8 * * *", 150),
        ({"repeat": "daily", "start": "22:00", "end": "02:00"}, "0 22 * * *", 240),
        ({"repeat": "daily", "start": "2026-05-04T08:15:00Z", "end": "2026-05-04T09:15:00Z"},
         "15 8 * * *", 60),
        ({"repeat": "weekly", "start": "2026-05-09T10:00:00Z", "end": "2026-05-10T10:00:00Z"},
         "0 10 * * 6", 1440),
        ({"repeat": "0 8 * * 1-5", "start": "08:00", "end": "09:00"}, "0 8 * * 1-5", 60),
    ],
)  # fmt: skip
def test_repeat_is_a_friendlier_cron(svc, window, cron, minutes):
    s = svc.create({"instance_type": 1, "image_id": 1, "count": 1, **window})
    assert (s["cron"], s["duration_minutes"]) == (cron, minutes)


@pytest.mark.parametrize(
    ("window", "words"),
    [
        ({"repeat": "daily", "start": "08:00", "end": "08:00"}, "must differ"),
        ({"repeat": "daily", "start": "2026-05-04T08:00:00Z", "end": "2026-05-06T08:00:00Z"},
         "1 to 1440 minutes"),
        ({"repeat": "weekly", "start": "08:00", "end": "09:00"}, "weekday"),
        ({"repeat": "hourly", "start": "08:00", "end": "09:00"}, "repeat: cron must have 5"),
        ({"repeat": "daily", "start": "08:00", "end": "2026-05-04T09:00:00Z"}, "ISO 8601"),
        ({"repeat": "daily", "cron": "0 8 * * *", "duration_minutes": 5}, "not both"),
    ],
)  # fmt: skip
def test_repeat_validation(api, window, words):
    r = api.post("/schedules", json={"instance_type": 1, "image_id": 1, "count": 1, **window})
    assert r.status_code == 400 and words in r.get_json()["error"], r.get_json()
