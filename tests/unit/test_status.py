"""GET /status, /summary and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api import create_app
from orchestrator.registry import EventRow
from tests.conftest import make_pool_rig, make_rig, wait_for

# -- /status -------------------------------------------------------------------


def test_status_without_pools(rig, client):
    body = client.get("/status").get_json()
    labels = [h.label for h in rig.registry.hosts.list()]
    assert body == {
        "ok": True,
        "capacity": {"current": 0, "total": 0, "percent": 0.0},
        "queue": {},
        "hosts": {"up": labels, "down": [], "maintenance": {}},
        "empty": [],
        # an app made in-process has not joined a cluster: no server is alive
        "servers": {"alive": 0, "this": rig.registry.cluster.server_id},
        # test:// hosts have no libvirt network: without network= they give user networking
        "networks": {
            "user": {"kind": "user", "hosts": labels, "vms": 0, "waiting": 0, "plan": None}
        },
    }


def test_status_names_hosts_that_are_down(rig, client):
    host = rig.registry.hosts.list()[1]
    rig.registry.hosts.record_discovery(host.id, up=False, reason="connection refused")
    body = client.get("/status").get_json()
    assert host.label not in body["hosts"]["up"] and len(body["hosts"]["up"]) == 2
    assert body["hosts"]["down"] == [{"name": host.label, "reason": "connection refused"}]
    assert body["ok"] is True  # hosts down do not make the pools empty


POOL = {
    "instance_type": 1,
    "image": "debian-12",
    "ready_check": "none",
    "cleanup": "reset",
    "lifetime": 1,
    "lifetime_max": 2,
}


@pytest.fixture
def pr(tmp_path):
    p = make_pool_rig(
        tmp_path,
        [{"cpus": 4, "ram": 4096}, {"cpus": 4, "ram": 4096}],
        [
            {"name": "web", "size": 2, "max": 2, **POOL},
            {"name": "spare", "size": 0, "max": 1, **POOL},
        ],
    )
    wait_for(lambda: p.pools.status()["web"]["ready"] == 2)
    yield p
    p.stop()


def test_status_with_pools_and_an_empty_one(pr):
    c = create_app(pr.rig.services).test_client()
    body = c.get("/status").get_json()
    assert body["ok"] is True and body["empty"] == []
    assert body["capacity"] == {"current": 2, "total": 2, "percent": 100.0}
    assert body["queue"] == {
        "web": {"building": 0, "ready": 2, "in_use": 0, "cleaning": 0},
        "spare": {"building": 0, "ready": 0, "in_use": 0, "cleaning": 0},
    }
    assert list(body) == ["ok", "capacity", "queue", "hosts", "empty", "servers", "networks"]
    one = c.post("/vm/checkout", json={"pool": "web"})
    assert one.status_code == 200
    body = c.get("/status").get_json()
    assert body["capacity"] == {"current": 1, "total": 2, "percent": 50.0}
    assert body["queue"]["web"]["in_use"] == 1
    assert c.post("/vm/checkout", json={"pool": "web"}).status_code == 200
    body = c.get("/status").get_json()  # max reached: nothing refills it
    assert body["ok"] is False
    assert body["empty"] == ["web"]  # a pool of size 0 is never "empty"
    assert "web" in body["message"]
    assert body["capacity"]["current"] == 0 and body["queue"]["web"]["in_use"] == 2


# -- /summary ------------------------------------------------------------------


def seed(rig, day: datetime, kind: str, *durations: float) -> None:
    with rig.registry.db.tx() as s:
        for i, d in enumerate(durations):
            s.add(EventRow(kind=kind, at=day + timedelta(minutes=i), duration=d))


def test_summary_per_day_from_events(rig, client):
    d1 = datetime(2024, 3, 1, 10, tzinfo=UTC)
    d2 = datetime(2024, 3, 2, 23, 30, tzinfo=UTC)
    seed(rig, d1, "vm.create", 1.0, 2.0, 6.0)
    seed(rig, d1, "vm.ready", 10.0)
    seed(rig, d2, "vm.create", 4.0)
    seed(rig, d2, "vm.cleaned", 0.5, 1.5)
    seed(rig, d2, "vm.destroy", 99.0)  # not a duration /summary reports
    seed(rig, d1 - timedelta(days=1), "vm.create", 50.0)  # outside the range
    r = client.get("/summary?from=2024-03-01&to=2024-03-03")
    assert r.status_code == 200
    body = r.get_json()
    assert body["from"] == "2024-03-01" and body["to"] == "2024-03-03"
    assert body["clone"] == {
        "duration": {"average": 3.25, "min": 1.0, "max": 6.0, "total": 13.0},
        "count": {"average": 1.333, "min": 0, "max": 3, "total": 4},
    }
    assert body["boot"]["count"]["total"] == 1 and body["boot"]["duration"]["max"] == 10.0
    assert body["cleanup"]["duration"] == {"average": 1.0, "min": 0.5, "max": 1.5, "total": 2.0}
    assert [d["date"] for d in body["daily"]] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    day1, day2, day3 = body["daily"]
    assert day1["clone"] == {
        "duration": {"average": 3.0, "min": 1.0, "max": 6.0, "total": 9.0},
        "count": {"total": 3},
    }
    assert day1["boot"]["count"] == {"total": 1} and day1["cleanup"]["count"] == {"total": 0}
    assert day2["clone"]["duration"]["total"] == 4.0 and day2["cleanup"]["count"]["total"] == 2
    assert day3["clone"] == {
        "duration": {"average": 0, "min": 0, "max": 0, "total": 0},
        "count": {"total": 0},
    }


def test_summary_defaults_to_today_and_counts_real_creates(client):
    r = client.get("/vm/create?name=a&instance_type=1&image_id=1")
    assert r.status_code == 200
    body = client.get("/summary").get_json()
    today = datetime.now(UTC).date().isoformat()
    assert body["from"] == body["to"] == today
    assert [d["date"] for d in body["daily"]] == [today]
    assert body["clone"]["count"]["total"] == 1 and body["clone"]["duration"]["total"] > 0
    one_day = client.get(f"/summary?from={today}").get_json()
    assert one_day["to"] == today


@pytest.mark.parametrize(
    "query",
    [
        "from=2024-3-1",
        "from=yesterday",
        "from=2024-02-30",
        "to=2024-13-01",
        "from=2024-03-02&to=2024-03-01",
        "from=2020-01-01&to=2024-01-01",
        "from=2024-03-01T00:00",
    ],
)
def test_summary_bad_dates_are_400(client, query):
    r = client.get(f"/summary?{query}")
    assert r.status_code == 400
    assert set(r.get_json()) == {"error"}


@pytest.mark.parametrize(
    "query", ["from=9999-12-31", "to=9999-12-31", "from=9999-12-30&to=9999-12-31"]
)
def test_summary_at_the_end_of_the_calendar_is_400_not_500(client, query):
    # the range's end (the day after 'to') is past what a date can hold
    r = client.get(f"/summary?{query}")
    assert r.status_code == 400, r.get_json()
    assert r.get_json() == {"error": "the range must end before 9999-12-31"}


def test_summary_on_the_last_day_it_can_count(client):
    r = client.get("/summary?from=9999-12-29&to=9999-12-30")
    assert r.status_code == 200 and r.get_json()["to"] == "9999-12-30"


# -- /metrics ------------------------------------------------------------------


def test_metrics_after_some_requests(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 1024}])  # room for two small VMs
    try:
        app = create_app(rig.services)
        other = create_app(rig.services)  # apps keep their own registries
        c = app.test_client()
        c.get("/vm/types")
        c.get("/vm/types")
        c.get("/no/such/path")
        url = "/vm/create?name=a&instance_type=1&image_id=1"
        assert c.get(url).status_code == 200
        assert c.get(url).status_code == 200
        assert c.get(url).status_code == 503
        assert c.get("/vm/create?name=a").status_code == 400  # not a placement
        r = c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.get_data(as_text=True)
        label = rig.registry.hosts.list()[0].label
        for line in (
            'fabric_http_requests_total{endpoint="/vm/types",method="GET",status="200"} 2.0',
            'fabric_http_requests_total{endpoint="unmatched",method="GET",status="404"} 1.0',
            'fabric_http_requests_total{endpoint="/vm/create",method="GET",status="503"} 1.0',
            'fabric_placements_total{result="success"} 2.0',
            'fabric_placements_total{result="no_valid_host"} 1.0',
            "fabric_vm_create_seconds_count 2.0",
            "fabric_vm_boot_seconds_count 0.0",
            "fabric_vm_cleanup_seconds_count 0.0",
            f'fabric_host_up{{host="{label}"}} 1.0',
            f'fabric_host_used{{host="{label}",resource="ram"}} 1024.0',
        ):
            assert line in text, line
        assert 'fabric_placements_total{result="failed"}' not in text
        # the scrape itself is counted by the next one; events are not counted twice
        text = c.get("/metrics").get_data(as_text=True)
        assert 'endpoint="/metrics",method="GET",status="200"} 1.0' in text
        assert "fabric_vm_create_seconds_count 2.0" in text
        # another app: its own request counters; durations come from the shared registry
        text = other.test_client().get("/metrics").get_data(as_text=True)
        assert 'endpoint="/vm/types"' not in text
        assert "fabric_vm_create_seconds_count 2.0" in text
    finally:
        rig.stop()


def test_metrics_pool_levels(pr):
    c = create_app(pr.rig.services).test_client()
    assert c.post("/vm/checkout", json={"pool": "web"}).status_code == 200
    text = c.get("/metrics").get_data(as_text=True)
    for line in (
        'fabric_pool_vms{pool="web",state="ready"} 1.0',
        'fabric_pool_vms{pool="web",state="in_use"} 1.0',
        'fabric_pool_vms{pool="spare",state="ready"} 0.0',
        'fabric_pool_size{pool="web"} 2.0',
        'fabric_placements_total{result="success"}',
    ):
        if line.startswith("fabric_placements"):
            assert line not in text  # no /vm/create through this app
        else:
            assert line in text, line
