"""The overview's charts, computed here and drawn as inline SVG by the templates
(dashboard/charts.html): pool levels over time, and recent create durations."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...clock import as_utc, iso

if TYPE_CHECKING:
    from ...registry.events import EventStore

EVENT_LIMIT = 500  # events per kind the charts look at


@dataclass
class Chart:
    width: int = 560
    height: int = 200
    left: int = 44
    right: int = 12
    top: int = 26
    bottom: int = 30
    y_max: float = 1.0
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    bars: list[dict[str, Any]] = field(default_factory=list)
    empty: str | None = None
    y_label: str = ""

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    def y(self, v: float) -> float:
        return round(self.top + self.plot_h * (1 - v / self.y_max), 1)

    @property
    def baseline(self) -> float:
        return float(self.top + self.plot_h)


def nice_max(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``v``."""
    if v <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * scale * (1 + 1e-9):
            return m * scale
    return 10 * scale


def _fmt_num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{round(v, 4):g}"


def _y_ticks(chart: Chart, integers: bool = False) -> None:
    top = chart.y_max
    mantissa = round(top / 10.0 ** math.floor(math.log10(top)), 3)
    n = 5 if mantissa in (2.5, 5.0) else 4
    if integers and top <= 5:
        n = max(1, int(top))
    chart.y_ticks = [(chart.y(top * i / n), _fmt_num(top * i / n)) for i in range(n + 1)]


def _time_ticks(chart: Chart, t0: float, t1: float, x: Callable[[float], float]) -> None:
    span = t1 - t0
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M"
    chart.x_ticks = [
        (x(t), datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in (t0, t0 + span / 2, t1)
    ]


def charts(events: EventStore, pools: Mapping[str, Mapping[str, Any]]) -> dict[str, Chart]:
    """Both charts; ``pools`` are the pools' levels now (``PoolService.status()``)."""
    return {"levels": levels_chart(events, pools), "durations": durations_chart(events)}


def levels_chart(store: EventStore, pools: Mapping[str, Mapping[str, Any]]) -> Chart:
    """In use and cleaning over time, replayed backwards from today's counts through
    the check-out, check-in, expiry and cleaned events."""
    chart = Chart(y_label="VMs")
    deltas = {  # kind -> (in use, cleaning) change the event made
        "vm.checkout": (1, 0),
        "vm.checkin": (-1, 1),
        "vm.expired": (-1, 1),
        "vm.cleaned": (0, -1),
    }
    events = []
    for kind in deltas:
        events.extend(store.list(kind=kind, limit=EVENT_LIMIT))
    if not events:
        chart.empty = "No check-outs yet: pool activity shows here."
        return chart
    events.sort(key=lambda e: (as_utc(e.at), e.id))
    now = datetime.now(UTC).timestamp()
    in_use = sum(int(p.get("in_use") or 0) for p in pools.values())
    cleaning = sum(int(p.get("cleaning") or 0) for p in pools.values())
    # walk back from now: the value just before each event
    points_use = [(now, in_use)]
    points_clean = [(now, cleaning)]
    for ev in reversed(events):
        t = as_utc(ev.at).timestamp()
        du, dc = deltas[ev.kind]
        points_use.append((t, in_use))
        points_clean.append((t, cleaning))
        in_use = max(0, in_use - du)
        cleaning = max(0, cleaning - dc)
        points_use.append((t, in_use))
        points_clean.append((t, cleaning))
    t0 = as_utc(events[0].at).timestamp() - 1
    points_use.append((t0, in_use))
    points_clean.append((t0, cleaning))
    points_use.reverse()
    points_clean.reverse()
    t1 = max(now, t0 + 1)
    chart.y_max = nice_max(max(v for _, v in points_use + points_clean) or 1)

    def x(t: float) -> float:
        return round(chart.left + chart.plot_w * (t - t0) / (t1 - t0), 1)

    for name, pts, css in (
        ("in use", points_use, "s-inuse"),
        ("cleaning", points_clean, "s-clean"),
    ):
        chart.series.append(
            {
                "name": name,
                "css": css,
                "points": " ".join(f"{x(t)},{chart.y(v)}" for t, v in pts),
            }
        )
    _y_ticks(chart, integers=True)
    _time_ticks(chart, t0, t1, x)
    return chart


def durations_chart(store: EventStore, limit: int = 60) -> Chart:
    """Each recent create's duration (seconds), oldest to newest."""
    chart = Chart(y_label="seconds")
    events = [e for e in store.list(kind="vm.create", limit=limit) if e.duration is not None]
    if not events:
        chart.empty = "No VM created yet: create durations show here."
        return chart
    events.reverse()
    top = max(e.duration for e in events)
    chart.y_max = nice_max(top)
    n = len(events)
    slot = chart.plot_w / max(n, 1)
    width = max(2.0, min(24.0, slot * 0.7))
    for i, ev in enumerate(events):
        cx = chart.left + slot * (i + 0.5)
        y = chart.y(ev.duration)
        chart.bars.append(
            {
                "x": round(cx - width / 2, 1),
                "y": y,
                "w": round(width, 1),
                "h": round(chart.baseline - y, 1),
                "title": f"vmid {ev.vm_id}: {ev.duration:.2f} s at {iso(ev.at)}",
            }
        )
    _y_ticks(chart)
    t_first, t_last = as_utc(events[0].at), as_utc(events[-1].at)
    chart.x_ticks = [
        (chart.left + slot * 0.5, t_first.strftime("%H:%M:%S")),
        (chart.left + slot * (n - 0.5), t_last.strftime("%H:%M:%S")),
    ]
    if n == 1:
        chart.x_ticks = chart.x_ticks[:1]
    durs = [e.duration for e in events]
    chart.series.append({"avg": sum(durs) / n, "min": min(durs), "max": max(durs), "n": n})
    return chart
