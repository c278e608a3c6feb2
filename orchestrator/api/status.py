"""Status, history and metrics: ``GET /status``, ``GET /summary``, ``GET /metrics``.

``/status`` and ``/summary`` follow vmpooler's shapes (seed 002). ``/metrics``
is Prometheus text from a registry of the app's own (never the process-global
one), so any number of apps can live in one process.
"""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from ..clock import as_utc
from ..errors import BadRequest
from ..model import HostStatus
from ..services import Services
from ..supervisor import CURSOR_FILE, SHARED_METRICS
from . import presenters
from .context import services
from .params import Date, takes

bp = Blueprint("status", __name__)

POOL_STATES = ("building", "ready", "in_use", "cleaning")
# /summary's names for the events' durations.
SUMMARY_KINDS = {"clone": "vm.create", "boot": "vm.ready", "cleanup": "vm.cleaned"}
MAX_SUMMARY_DAYS = 366
FROM = Date(name="from", description="YYYY-MM-DD (UTC)")
TO = Date(name="to", description="YYYY-MM-DD (UTC)")


def _pools() -> dict[str, dict[str, Any]]:
    return services().pools.status()


# -- /status -----------------------------------------------------------------


@bp.route("/status", methods=["GET"])
def status() -> ResponseReturnValue:
    """The fabric at a glance.

    - ``capacity``: ready VMs over what the pools are meant to keep ready:
      ``current`` = ready VMs in all pools (on hosts that are up), ``total`` =
      the sum of the pools' ``size``, ``percent`` = current/total (0 with no pools).
    - ``queue``: per pool, VMs building, ready, in use and cleaning.
    - ``hosts``: labels of hosts that are up; the others with the reason; hosts in
      ``maintenance`` (by pmid) with the operator's reason and their last drain
      (``draining``: its state, ``moved`` of ``total``, the VMs that stayed).
    - ``empty``: pools with no ready VM (pools of size 0 are never empty);
      ``ok`` is false, with a ``message`` naming them, when there is any.
    - ``networks``: per network mode the hosts give their VMs: its ``kind``, those
      ``hosts``, ``vms`` on it with an address, VMs ``waiting`` for theirs (building
      on a LAN) and its ``plan``'s ``size`` and ``free`` addresses (null without one).
    """
    pools = _pools()
    current = sum(p["ready"] for p in pools.values())
    total = sum(p["size"] for p in pools.values())
    empty = [name for name, p in pools.items() if p["ready"] == 0 and p["size"] > 0]
    up, down = [], []
    registry = services().registry
    hosts = registry.hosts.list()
    for h in hosts:
        if h.status == HostStatus.UP:
            up.append(h.label)
        else:
            down.append({"name": h.label, "reason": h.reason or h.status})
    body: dict[str, Any] = {"ok": not empty}
    if empty:
        body["message"] = f"{len(empty)} empty pool(s): {', '.join(empty)}"
    body["capacity"] = {
        "current": current,
        "total": total,
        "percent": round(100.0 * current / total, 1) if total else 0.0,
    }
    body["queue"] = {name: {k: p[k] for k in POOL_STATES} for name, p in pools.items()}
    body["hosts"] = {
        "up": up,
        "down": down,
        # pmid -> why it is out of service, since when, and its last drain
        "maintenance": {
            str(h.id): {
                "name": h.label,
                "reason": h.maintenance,
                "since": presenters.iso_or_none(h.maintenance_at),
                "drain": _drain(h.id),
            }
            for h in hosts
            if h.maintenance is not None
        },
    }
    body["empty"] = empty
    info = services().cluster.as_dict()
    body["servers"] = {
        "alive": sum(1 for srv in info["servers"] if srv["alive"]),
        "this": info["server"],
    }
    body["networks"] = presenters.network_status(
        hosts, registry.vms.list(), services().config.networks, registry.addresses.in_use()
    )
    return jsonify(body)


def _drain(host_id: int) -> dict[str, Any] | None:
    row = services().registry.moves.latest_drain(host_id)
    return presenters.drain(row) if row is not None else None


# -- /cluster ----------------------------------------------------------------


@bp.route("/cluster", methods=["GET"])
def cluster() -> ResponseReturnValue:
    """The fabric servers sharing this registry and who runs which background work.

    ``servers``: each with ``alive`` (heartbeat fresher than ``dead_after``) and
    ``me`` (the server answering). ``leases``: ``pool-worker``, ``schedules`` and
    ``discovery``, each with its ``holder`` (null when free or expired).
    """
    return jsonify(services().cluster.as_dict())


# -- /summary ----------------------------------------------------------------


def _durations(values: list[float]) -> dict[str, float]:
    if not values:
        return {"average": 0, "min": 0, "max": 0, "total": 0}
    total = sum(values)
    return {
        "average": round(total / len(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "total": round(total, 3),
    }


@bp.route("/summary", methods=["GET"])
@takes(FROM, TO)
def summary() -> ResponseReturnValue:
    """Per day (UTC), durations in seconds and counts of clones (``vm.create``: place,
    copy and start), boots (``vm.ready``: started until the guest answers SSH) and
    cleanups (``vm.cleaned``), from the registry's events.

    ``from`` defaults to ``to`` (or today), ``to`` to today; at most 366 days. The
    totals' ``count`` has the average, min and max per day, as vmpooler's has. Days
    without events show zeros.
    """
    return jsonify(summary_of(FROM.value(), TO.value()))


def summary_of(start: date | None, end: date | None) -> dict[str, Any]:
    """/summary's body for the days from ``start`` to ``end`` (see ``summary``);
    BadRequest for a range it does not serve."""
    today = datetime.now(UTC).date()
    if end is None:
        end = today if start is None or start <= today else start
    if start is None:
        start = end
    if start > end:
        raise BadRequest(f"from ({start}) is after to ({end})")
    if end == date.max:  # the range ends the day after: past what a date can hold
        raise BadRequest(f"the range must end before {date.max}")
    days = (end - start).days + 1
    if days > MAX_SUMMARY_DAYS:
        raise BadRequest(f"the range is {days} days; at most {MAX_SUMMARY_DAYS}")
    lo = datetime.combine(start, time(), UTC)
    hi = datetime.combine(end + timedelta(days=1), time(), UTC)
    kind_to_name = {v: k for k, v in SUMMARY_KINDS.items()}
    per_day: dict[date, dict[str, list[float]]] = {
        start + timedelta(days=i): {name: [] for name in SUMMARY_KINDS} for i in range(days)
    }
    events = services().registry.events
    for at, kind, duration in events.durations(SUMMARY_KINDS.values(), lo, hi):
        day = as_utc(at).date()
        if day in per_day:
            per_day[day][kind_to_name[kind]].append(float(duration))
    out: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat()}
    for name in SUMMARY_KINDS:
        counts = [len(d[name]) for d in per_day.values()]
        everything = [v for d in per_day.values() for v in d[name]]
        out[name] = {
            "duration": _durations(everything),
            "count": {
                "average": round(sum(counts) / len(counts), 3),
                "min": min(counts),
                "max": max(counts),
                "total": sum(counts),
            },
        }
    out["daily"] = [
        {
            "date": day.isoformat(),
            **{
                name: {"duration": _durations(vals), "count": {"total": len(vals)}}
                for name, vals in d.items()
            },
        }
        for day, d in per_day.items()
    ]
    return out


# -- /metrics ----------------------------------------------------------------

_EXTENSION = "fabric_metrics"
_EVENT_BATCH = 10_000
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One app's Prometheus registry: counters fed per request, histograms fed from
    new events at scrape time, and gauges read from the registry at scrape time.

    Durations, pool levels and host states are fabric-wide (read from the shared
    registry, whichever process recorded them): with several servers on one
    registry, aggregate them with ``max``, not ``sum``. Request and placement
    counters are this server's own.

    With ``--workers N`` the launcher sets ``PROMETHEUS_MULTIPROC_DIR`` (a directory
    of the server's, see ``SHARED_METRICS``) before the workers import
    prometheus_client: every counter and histogram is then kept in a file per
    worker, a scrape sums them over the workers (whichever worker answers, the same
    figures), and the event cursor is one file all workers advance under a lock,
    so each event's duration is observed by one worker only.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fabric_http_requests",
            "HTTP requests by route, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.placements = Counter(
            "fabric_placements",
            "Results of /vm/create: success, no_valid_host (503) or failed (other 5xx)",
            ["result"],
            registry=self.registry,
        )
        slow = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
        self.durations = {
            "vm.create": Histogram(
                "fabric_vm_create_seconds",
                "Time to place, stage and start a VM (vm.create events)",
                buckets=slow,
                registry=self.registry,
            ),
            "vm.ready": Histogram(
                "fabric_vm_boot_seconds",
                "Time from start until a pool VM's guest answers (vm.ready events)",
                buckets=slow,
                registry=self.registry,
            ),
            "vm.cleaned": Histogram(
                "fabric_vm_cleanup_seconds",
                "Time to clean a returned pool VM (vm.cleaned events)",
                buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
                registry=self.registry,
            ),
        }
        self.registry.register(_StateCollector(app))
        self._lock = threading.Lock()
        shared = os.environ.get(SHARED_METRICS)
        # only the launcher's directory (with its cursor), not a variable set by hand
        launched = shared and os.path.exists(os.path.join(shared, CURSOR_FILE))
        self.shared = shared if launched else None
        if self.shared:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, self.shared)
            self.exposed.register(_StateCollector(app))
        else:
            self.exposed = self.registry
            self._cursor = self._last_event_id()

    def _services(self) -> Services:
        return self.app.config["SERVICES"]

    def _last_event_id(self) -> int:
        """Events before the app was made are history (see /summary), not metrics."""
        return self._services().registry.events.last_id()

    def feed_events(self) -> None:
        """Observe the durations of events recorded since the last scrape."""
        with self._lock:
            if not self.shared:
                self._cursor = self._feed(self._cursor)
                return
            with open(os.path.join(self.shared, CURSOR_FILE), "r+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # one worker at a time moves it on
                cursor = self._feed(int(fh.read().strip() or 0))
                fh.seek(0)
                fh.truncate()
                fh.write(str(cursor))

    def _feed(self, cursor: int) -> int:
        events = self._services().registry.events
        for event_id, kind, duration in events.after(cursor, self.durations, _EVENT_BATCH):
            cursor = max(cursor, event_id)
            if duration is not None:
                self.durations[kind].observe(float(duration))
        return cursor

    def count(self, endpoint: str, method: str, status: int) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        if endpoint == "/vm/create":
            if status == 200:
                self.placements.labels("success").inc()
            elif status == 503:
                self.placements.labels("no_valid_host").inc()
            elif status >= 500:
                self.placements.labels("failed").inc()


class _StateCollector:
    """Pool levels and host states, read when Prometheus scrapes."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list:
        return []  # nothing to read at registration

    def collect(self) -> Any:
        svc: Services = self.app.config["SERVICES"]
        pools = svc.pools.status()
        levels = GaugeMetricFamily(
            "fabric_pool_vms", "VMs of each pool by state", labels=["pool", "state"]
        )
        size = GaugeMetricFamily("fabric_pool_size", "Ready VMs each pool keeps", labels=["pool"])
        for name, p in pools.items():
            for state in ("ready", "in_use", "cleaning", "building", "failed", "unreachable"):
                levels.add_metric([name, state], p.get(state, 0))
            size.add_metric([name], p["size"])
        yield levels
        yield size
        up = GaugeMetricFamily("fabric_host_up", "1 if the host is up, else 0", labels=["host"])
        used = GaugeMetricFamily(
            "fabric_host_used", "Claimed capacity per host", labels=["host", "resource"]
        )
        total = GaugeMetricFamily(
            "fabric_host_capacity", "Effective capacity per host", labels=["host", "resource"]
        )
        for h in svc.registry.hosts.list():
            up.add_metric([h.label], 1.0 if h.status == HostStatus.UP else 0.0)
            for res_name in ("cpu", "ram", "disk"):
                used.add_metric([h.label, res_name], getattr(h, f"{res_name}_used"))
                total.add_metric([h.label, res_name], getattr(h, f"{res_name}_total"))
        yield up
        yield used
        yield total


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    state.app.extensions[_EXTENSION] = Metrics(state.app)


def metrics_of(app: Flask) -> Metrics:
    return app.extensions[_EXTENSION]


@bp.after_app_request
def _count(resp: Response) -> Response:
    m = current_app.extensions.get(_EXTENSION)
    if m is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        m.count(rule, method, resp.status_code)
    return resp


@bp.route("/metrics", methods=["GET"])
def metrics() -> ResponseReturnValue:
    m = metrics_of(current_app)
    m.feed_events()
    return Response(generate_latest(m.exposed), mimetype=None, content_type=CONTENT_TYPE_LATEST)
