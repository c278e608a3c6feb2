"""The web dashboard: server-rendered pages over the fabric's own services.

``/`` shows hosts, VMs, pools, reservations, volumes, schedules and two charts
(drawn here as inline SVG from the events table); the forms under ``/ui/...``
call the Python services directly and come back to ``/`` with a flash message.
Every form carries a per-session CSRF token (the session is Flask's signed
cookie). With authentication on, ``/ui/login`` trades a user and password for a
token kept in the ``fabric_token`` cookie (HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

import hmac
import inspect
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from ..clock import as_utc as _aware
from ..errors import BadRequest, FabricError
from ..fabric import iso
from ..model import VmState
from ..volumes import MAX_SIZE_GB, Volumes
from . import params, presenters

log = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/ui/static",
)

TOKEN_COOKIE = "fabric_token"  # noqa: S105 - a cookie name, not a secret
CSRF_FIELD = "csrf_token"
EVENT_LIMIT = 500  # events per kind the charts look at


@bp.record_once
def _setup(state: Any) -> None:
    """A secret key for the signed session cookie (CSRF token, flash messages)."""
    app: Flask = state.app
    if not app.secret_key:
        app.secret_key = secrets.token_hex(32)
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


# -- services ----------------------------------------------------------------


def _fabric() -> Any:
    return current_app.config["FABRIC"]


def _reservations() -> Any:
    return current_app.config.get("RESERVATIONS")


def _volumes() -> Volumes:
    return current_app.config["VOLUMES"]


def _auth() -> Any:
    return current_app.config.get("AUTH")


def _schedules() -> Any:
    return current_app.config.get("SCHEDULES")


def _auth_on() -> bool:
    auth = _auth()
    return bool(auth is not None and getattr(auth, "enabled", False))


def _current_user() -> str | None:
    """The signed-in user, or None (auth off: "" means anyone)."""
    if not _auth_on():
        return ""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        return None
    try:
        user = _auth().check(token)
    except Exception:  # noqa: BLE001 - any refusal (or an unfinished service) is "not signed in"
        return None
    return str(user) if user else None


# -- CSRF --------------------------------------------------------------------


def csrf_token() -> str:
    tok = session.get(CSRF_FIELD)
    if not isinstance(tok, str) or len(tok) < 32:
        tok = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = tok
    return tok


def _csrf_ok() -> bool:
    want = session.get(CSRF_FIELD)
    got = request.form.get(CSRF_FIELD, "")
    return isinstance(want, str) and bool(want) and hmac.compare_digest(want, got)


@bp.after_app_request
def _to_login(resp: Response) -> Response:
    """The API's token rule answers a dashboard page with JSON 401/403 (no or a bad
    ``fabric_token`` cookie, with ``open_reads`` off or on a form post): a person gets
    the login page instead, with the reason."""
    path = request.path
    on_page = path == "/" or (path.startswith("/ui/") and not path.startswith("/ui/static/"))
    if (
        not on_page
        or path == "/ui/login"
        or resp.status_code not in (401, 403)
        or not resp.is_json
        or not _auth_on()
    ):
        return resp
    body = resp.get_json(silent=True) or {}
    reason = body.get("error") if isinstance(body, dict) else None
    flash(f"Sign in first ({reason})." if reason else "Sign in first.", "error")
    return redirect(url_for("dashboard.login"))


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


def _page(body: str, status: int) -> Response:
    html = render_template("dashboard/message.html", auth_on=_auth_on(), user=None, message=body)
    return _no_store(current_app.make_response((html, status)))


def _guard() -> Response | None:
    """For a form post: the CSRF token must match and, with auth on, a user be signed in."""
    if not _csrf_ok():
        return _page(
            "This form has expired or did not come from this dashboard "
            "(missing or wrong CSRF token). Reload the page and try again.",
            400,
        )
    if _current_user() is None:
        flash("Sign in first.", "error")
        return redirect(url_for("dashboard.login"))
    return None


def action(view: Callable[[], str | None]) -> Callable[[], ResponseReturnValue]:
    """A form handler: CSRF and auth checks, errors as flash messages, back to ``/``.

    The view returns a success message (or None); a FabricError becomes an error
    message; anything else is logged and reported without a traceback.
    """

    def inner() -> ResponseReturnValue:
        refused = _guard()
        if refused is not None:
            return refused
        try:
            msg = view()
            if msg:
                flash(msg, "ok")
        except FabricError as e:
            flash(e.message, "error")
        except Exception:  # noqa: BLE001 - a page never shows a traceback
            log.exception("dashboard action %s failed", view.__name__)
            flash("Internal error; the operator's log has details.", "error")
        return redirect(url_for("dashboard.overview") + _anchor())

    inner.__name__ = view.__name__
    inner.__doc__ = view.__doc__
    return inner


def _anchor() -> str:
    where = request.form.get("back", "")
    return f"#{where}" if where.isidentifier() else ""


def _no_store(resp: Response) -> Response:
    # Pages can carry a one-time secret (a reservation id in a flash message).
    resp.headers["Cache-Control"] = "no-store"
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    return resp


# -- login -------------------------------------------------------------------


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if not _auth_on():
        return redirect(url_for("dashboard.overview"))
    status = 200
    if request.method == "POST":
        if not _csrf_ok():
            flash("The login form expired; try again.", "error")
            return redirect(url_for("dashboard.login"))
        user = request.form.get("user", "").strip()
        password = request.form.get("password", "")
        if not user or not password:
            flash("Enter a user name and a password.", "error")
            status = 400
        else:
            try:
                token = _auth().login(user, password, request.remote_addr)
            except FabricError as e:
                flash(e.message, "error")
                status = e.status
            except NotImplementedError:
                flash("Logging in is not available on this fabric yet.", "error")
                status = 503
            except Exception:  # noqa: BLE001
                log.exception("dashboard login failed")
                flash("Internal error; the operator's log has details.", "error")
                status = 500
            else:
                resp = redirect(url_for("dashboard.overview"))
                resp.set_cookie(
                    TOKEN_COOKIE,
                    token,
                    httponly=True,
                    samesite="Strict",
                    secure=request.is_secure,
                    path="/",
                )
                session[CSRF_FIELD] = secrets.token_urlsafe(32)  # a new session, a new token
                flash(f"Signed in as {user}.", "ok")
                return resp
    resp = current_app.make_response(
        (render_template("dashboard/login.html", auth_on=True, user=None), status)
    )
    return _no_store(resp)


@bp.route("/ui/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    if not _csrf_ok():
        return _page("This form has expired; reload the page and try again.", 400)
    token = request.cookies.get(TOKEN_COOKIE)
    if token and _auth_on():
        try:
            _auth().revoke(token)
        except Exception:  # noqa: BLE001 - signing out works even if the token is already gone
            log.info("revoking the dashboard token failed", exc_info=True)
    resp = redirect(url_for("dashboard.login") if _auth_on() else url_for("dashboard.overview"))
    resp.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="Strict")
    session.pop(CSRF_FIELD, None)
    flash("Signed out.", "ok")
    return resp


# -- the overview --------------------------------------------------------------


@bp.route("/", methods=["GET"])
def overview() -> ResponseReturnValue:
    user = _current_user()
    if user is None:
        return redirect(url_for("dashboard.login"))
    errors: list[str] = []

    def section(name: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one broken section does not take the page down
            log.exception("dashboard section %s failed", name)
            msg = e.message if isinstance(e, FabricError) else "internal error"
            errors.append(f"{name}: {msg}")
            return default

    hosts = section("hosts", _hosts, [])
    catalog = section("catalog", _catalog, {"types": [], "images": []})
    vms = section("VMs", lambda: _vms(hosts, catalog), [])
    pools = section("pools", _pools, None)
    volumes = section("volumes", lambda: _volume_rows(hosts), [])
    schedules = section("schedules", _schedule_rows, {"enabled": False, "rows": [], "error": None})
    charts = section("charts", lambda: _charts(pools or {}), {})
    servers = section("servers", _servers, [])
    reserved = [v for v in vms if v["status"] == VmState.IN_USE]
    ctx = {
        "auth_on": _auth_on(),
        "user": user,
        "hosts": hosts,
        "vms": vms,
        "pools": pools,
        "reserved": reserved,
        "volumes": volumes,
        "schedules": schedules,
        "charts": charts,
        "servers": servers,
        "types": catalog["types"],
        "images": catalog["images"],
        "attachable": [v for v in vms if v["status"] in ("active", "ready", "in-use")],
        "max_volume": MAX_SIZE_GB,
        "section_errors": errors,
        "now": iso(datetime.now(UTC)),
        "summary": _summary(hosts, vms, pools, volumes),
    }
    return _no_store(current_app.make_response(render_template("dashboard/overview.html", **ctx)))


def _servers() -> list[dict[str, Any]]:
    from ..cluster import describe

    info = describe(_fabric().registry)
    runs: dict[str, list[str]] = {}
    for lease in info["leases"]:
        if lease["holder"]:
            runs.setdefault(lease["holder"], []).append(lease["name"])
    return [{**srv, "leases": runs.get(srv["id"], [])} for srv in info["servers"]]


def _bar(used: float, total: float) -> dict[str, Any]:
    pct = 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * used / total))
    level = "high" if pct >= 90 else "mid" if pct >= 70 else "low"
    return {
        "used": used,
        "total": total,
        "free": total - used,
        "pct": round(pct, 1),
        "level": level,
    }


def _hosts() -> list[dict[str, Any]]:
    registry = _fabric().registry
    counts = registry.vm_counts()
    out = []
    for h in registry.hosts():
        info = presenters.host(h, counts.get(h.id, 0))
        cap, free = info["capacity"], info["free"]
        out.append(
            {
                **info,
                "bars": [
                    ("CPU", _bar(cap["cpu"] - free["cpu"], cap["cpu"]), "vCPU"),
                    ("RAM", _bar(cap["ram"] - free["ram"], cap["ram"]), "MB"),
                    ("Disk", _bar(cap["disk"] - free["disk"], cap["disk"]), "GB"),
                ],
                "last_seen": iso(h.last_seen) if h.last_seen else None,
            }
        )
    return out


def _catalog() -> dict[str, Any]:
    reg = _fabric().registry
    types = [
        {
            "tid": t.tid,
            "label": f"{t.tid}: {t.name + ' ' if t.name else ''}"
            f"({t.cpu} vCPU, {t.ram} MB, {t.disk} GB)",
            "name": t.name or f"type {t.tid}",
        }
        for t in reg.types()
    ]
    images = [{"id": i.id, "name": i.name} for i in reg.images()]
    return {"types": types, "images": images}


def _vms(hosts: list[dict[str, Any]], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    fab = _fabric()
    host_names = {h["pmid"]: h["name"] for h in hosts}
    type_names = {t["tid"]: t["name"] for t in catalog["types"]}
    image_names = {i["id"]: i["name"] for i in catalog["images"]}
    out = []
    for vm in fab.registry.vms():
        d = presenters.vm(vm, fab.config.guest.user)
        d["host"] = host_names.get(vm.host_id or 0, f"pmid {vm.host_id}" if vm.host_id else "-")
        d["type_name"] = type_names.get(vm.tid, str(vm.tid))
        d["image_name"] = image_names.get(vm.image_id, str(vm.image_id))
        d["reserved_at"] = iso(vm.reserved_at) if vm.reserved_at else None
        d["expires_in"] = _until(vm.expires_at) if vm.expires_at else None
        out.append(d)
    return out


def _until(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    secs = int((when - datetime.now(UTC)).total_seconds())
    if secs <= 0:
        return "expired"
    h, rem = divmod(secs, 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min"


def _pools() -> dict[str, dict[str, Any]] | None:
    res = _reservations()
    if res is None:
        return None
    out = {}
    for name, st in res.pools.status().items():
        cap = max(int(st.get("max") or 0), int(st.get("total") or 0), 1)
        segments = []
        for key in ("ready", "in_use", "cleaning", "building", "failed"):
            n = int(st.get(key) or 0)
            if n:
                segments.append({"key": key, "n": n, "pct": round(100.0 * n / cap, 2)})
        out[name] = {**st, "segments": segments, "empty": not st.get("ready")}
    return out


def _volume_rows(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    vols = _volumes()
    names = {h["pmid"]: h["name"] for h in hosts}
    out = []
    for v in vols.registry.volumes():
        d = presenters.volume(v)
        d["host"] = names.get(d.get("pmid") or 0, f"pmid {d['pmid']}" if d.get("pmid") else "")
        out.append(d)
    return out


def _summary(
    hosts: list[dict[str, Any]],
    vms: list[dict[str, Any]],
    pools: dict[str, Any] | None,
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "hosts_up": sum(1 for h in hosts if h["status"] == "up"),
        "hosts": len(hosts),
        "vms": len(vms),
        "in_use": sum(1 for v in vms if v["status"] == VmState.IN_USE),
        "ready": sum(p.get("ready", 0) for p in (pools or {}).values()),
        "volumes": len(volumes),
        "empty_pools": [n for n, p in (pools or {}).items() if p.get("empty")],
    }


# -- schedules (their service is written elsewhere: used defensively) ----------


def _plain(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return dict(item)
    for meth in ("as_dict", "to_dict", "dict"):
        fn = getattr(item, meth, None)
        if callable(fn):
            try:
                got = fn()
            except Exception:  # noqa: BLE001, S112 - try the next shape
                continue
            if isinstance(got, dict):
                return got
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    if hasattr(item, "__table__"):  # a SQLAlchemy row
        return {c.name: getattr(item, c.name, None) for c in item.__table__.columns}
    if hasattr(item, "__dict__"):
        return {k: v for k, v in vars(item).items() if not k.startswith("_")}
    return {"value": item}


def _schedule_method(*names: str) -> Callable[..., Any] | None:
    svc = _schedules()
    for n in names:
        fn = getattr(svc, n, None)
        if callable(fn):
            return fn
    return None


def _schedule_row(d: dict[str, Any]) -> dict[str, Any]:
    """One schedule as the table shows it (keys as ``ScheduleService.list()`` gives them)."""
    if d.get("pool"):
        what = f"pool {d['pool']}"
    else:
        what = f"type {d.get('instance_type', '?')}, image {d.get('image_id', '?')}"
    if d.get("cron"):
        window = f"cron '{d['cron']}' for {d.get('duration_minutes', '?')} min"
    else:
        window = f"{_cell(d.get('start')) or '?'} to {_cell(d.get('end')) or '?'}"
    progress = d.get("progress")
    if isinstance(progress, dict):
        shown = f"{progress.get('made', '?')}/{progress.get('wanted', '?')} made"
        if progress.get("phase"):
            shown += f" ({progress['phase']})"
        if progress.get("last_error"):
            shown += f"; {progress['last_error']}"
    else:
        shown = _cell(progress) or ""
    state = str(d.get("state") or "")
    if d.get("cancelled"):
        state += " (cancelled)"
    if d.get("skipped"):
        state += " (skipped)"
    return {
        "id": d.get("id", d.get("schedule_id")),
        "name": d.get("name") or "",
        "what": what,
        "count": d.get("count", ""),
        "window": window,
        "state": state,
        "next_start": _cell(d.get("next_start")) or "",
        "progress": shown,
    }


def _schedule_rows() -> dict[str, Any]:
    if _schedules() is None:
        return {"enabled": False, "rows": [], "error": None}
    fn = _schedule_method("list", "list_schedules", "all")
    if fn is None:
        return {"enabled": True, "rows": [], "error": "the schedule service cannot list"}
    try:
        got = fn()
    except FabricError as e:
        return {"enabled": True, "rows": [], "error": e.message}
    if isinstance(got, dict):
        got = got.get("schedules", [])
    return {"enabled": True, "rows": [_schedule_row(_plain(i)) for i in got or []], "error": None}


def _cell(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso(v)
    return v


# -- charts (inline SVG, computed here) ------------------------------------------


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


def _nice_max(v: float) -> float:
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


def _charts(pools: dict[str, dict[str, Any]]) -> dict[str, Chart]:
    reg = _fabric().registry
    return {"levels": _levels_chart(reg, pools), "durations": _durations_chart(reg)}


def _levels_chart(reg: Any, pools: dict[str, dict[str, Any]]) -> Chart:
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
        events.extend(reg.events(kind=kind, limit=EVENT_LIMIT))
    if not events:
        chart.empty = "No check-outs yet: pool activity shows here."
        return chart
    events.sort(key=lambda e: (_aware(e.at), e.id))
    now = datetime.now(UTC).timestamp()
    in_use = sum(int(p.get("in_use") or 0) for p in pools.values())
    cleaning = sum(int(p.get("cleaning") or 0) for p in pools.values())
    # walk back from now: the value just before each event
    points_use = [(now, in_use)]
    points_clean = [(now, cleaning)]
    for ev in reversed(events):
        t = _aware(ev.at).timestamp()
        du, dc = deltas[ev.kind]
        points_use.append((t, in_use))
        points_clean.append((t, cleaning))
        in_use = max(0, in_use - du)
        cleaning = max(0, cleaning - dc)
        points_use.append((t, in_use))
        points_clean.append((t, cleaning))
    t0 = _aware(events[0].at).timestamp() - 1
    points_use.append((t0, in_use))
    points_clean.append((t0, cleaning))
    points_use.reverse()
    points_clean.reverse()
    t1 = max(now, t0 + 1)
    chart.y_max = _nice_max(max(v for _, v in points_use + points_clean) or 1)

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


def _durations_chart(reg: Any, limit: int = 60) -> Chart:
    """Each recent create's duration (seconds), oldest to newest."""
    chart = Chart(y_label="seconds")
    events = [e for e in reg.events(kind="vm.create", limit=limit) if e.duration is not None]
    if not events:
        chart.empty = "No VM created yet: create durations show here."
        return chart
    events.reverse()
    top = max(e.duration for e in events)
    chart.y_max = _nice_max(top)
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
    t_first, t_last = _aware(events[0].at), _aware(events[-1].at)
    chart.x_ticks = [
        (chart.left + slot * 0.5, t_first.strftime("%H:%M:%S")),
        (chart.left + slot * (n - 0.5), t_last.strftime("%H:%M:%S")),
    ]
    if n == 1:
        chart.x_ticks = chart.x_ticks[:1]
    durs = [e.duration for e in events]
    chart.series.append({"avg": sum(durs) / n, "min": min(durs), "max": max(durs), "n": n})
    return chart


# -- forms: VMs ------------------------------------------------------------------


def _int_field(name: str, label: str, *, maximum: int = params.MAX_ID) -> int:
    try:
        value = params.positive_int(name, maximum=maximum)
    except BadRequest as e:
        raise BadRequest(e.message.replace(name, label, 1)) from None
    assert value is not None
    return value


@bp.route("/ui/vm/create", methods=["POST"])
@action
def vm_create() -> str:
    name = params.vm_name()
    tid = _int_field("instance_type", "VM type")
    image_id = _int_field("image_id", "image")
    fab = _fabric()
    vm = fab.create_vm(name, tid, image_id)
    where = f" on {fab.registry.host_any(vm.host_id).label}" if vm.host_id else ""
    return f"Created VM {vm.name} (vmid {vm.id}){where}."


@bp.route("/ui/vm/destroy", methods=["POST"])
@action
def vm_destroy() -> str:
    vm_id = _int_field("vmid", "vmid")
    fab = _fabric()
    name = fab.registry.vm(vm_id).name
    fab.destroy_vm(vm_id, force=params.flag("force"))
    return f"Destroyed VM {name} (vmid {vm_id})."


def _need_reservations() -> Any:
    res = _reservations()
    if res is None:
        raise BadRequest("check-out is not enabled: no pools are configured")
    return res


@bp.route("/ui/vm/checkout", methods=["POST"])
@action
def vm_checkout() -> str:
    res = _need_reservations()
    pool = request.form.get("pool", "")
    if not pool:
        raise BadRequest("choose a pool")
    if not params.NAME.fullmatch(pool):
        raise BadRequest("pool must be a pool name")
    got = res.checkout(pool=pool)
    c = got[0]
    d = presenters.checkout(c, _fabric().config.guest.user)
    ssh = d.get("ssh")
    reach = f"; ssh -p {ssh['port']} {ssh['user']}@{ssh['host']}" if ssh else ""
    flash(c.reservation_id, "secret")
    return (
        f"Checked out vmid {c.vm.id} from pool {c.pool} until {d.get('expires_at')}{reach}. "
        "Its reservation id is shown below ONCE: copy it now, you need it to check the VM in."
    )


@bp.route("/ui/vm/checkin", methods=["POST"])
@action
def vm_checkin() -> str:
    res = _need_reservations()
    vm_id = _int_field("vmid", "vmid")
    token = request.form.get("reservation_id", "").strip()
    if not token:
        raise BadRequest("the reservation id is required")
    res.checkin(vm_id=vm_id, ip=None, token=token)
    return f"Checked in vmid {vm_id}; it is being cleaned for the next user."


# -- forms: volumes ----------------------------------------------------------------


@bp.route("/ui/volume/create", methods=["POST"])
@action
def volume_create() -> str:
    name = request.form.get("name", "").strip()
    if not name:
        raise BadRequest("the volume needs a name")
    Volumes.check_name(name)
    size = _int_field("size", "size (GB)", maximum=MAX_SIZE_GB)
    vol = _volumes().create(name, size)
    return f"Created volume {vol.name} (volumeid {vol.id}, {vol.size} GB)."


@bp.route("/ui/volume/attach", methods=["POST"])
@action
def volume_attach() -> str:
    vol_id = _int_field("volumeid", "volumeid")
    vm_id = _int_field("vmid", "VM")
    dev = _volumes().attach(vm_id, vol_id)
    return f"Attached volumeid {vol_id} to vmid {vm_id} as /dev/{dev}."


@bp.route("/ui/volume/detach", methods=["POST"])
@action
def volume_detach() -> str:
    vol_id = _int_field("volumeid", "volumeid")
    _volumes().detach(vol_id)
    return f"Detached volumeid {vol_id}; its data is kept."


@bp.route("/ui/volume/destroy", methods=["POST"])
@action
def volume_destroy() -> str:
    vol_id = _int_field("volumeid", "volumeid")
    _volumes().destroy(vol_id)
    return f"Destroyed volumeid {vol_id}."


# -- forms: schedules ----------------------------------------------------------------


def _need_schedules() -> Any:
    if _schedules() is None:
        raise BadRequest("schedules are not enabled on this fabric")
    return _schedules()


@bp.route("/ui/schedule/create", methods=["POST"])
@action
def schedule_create() -> str:
    _need_schedules()
    fn = _schedule_method("create")
    if fn is None:
        raise BadRequest("the schedule service cannot create schedules")
    form = request.form

    def given(*keys: str) -> dict[str, str]:
        return {k: form.get(k, "").strip() for k in keys if form.get(k, "").strip()}

    fields: dict[str, Any] = given("name", "count")
    if form.get("pool", "").strip():
        fields.update(given("pool"))
    else:
        fields.update(given("instance_type", "image_id"))
    if form.get("cron", "").strip():
        fields.update(given("cron", "duration_minutes"))
    else:
        fields.update(given("start", "end"))
    got = fn(fields)  # the service validates and says what is wrong
    sid = _plain(got).get("id") if got is not None else None
    return f"Created schedule {sid}." if sid is not None else "Created the schedule."


@bp.route("/ui/schedule/delete", methods=["POST"])
@action
def schedule_delete() -> str:
    _need_schedules()
    fn = _schedule_method("delete", "remove", "delete_schedule")
    if fn is None:
        raise BadRequest("the schedule service cannot delete schedules")
    sid = _int_field("id", "schedule id")
    force = params.flag("force")
    try:
        takes_force = "force" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_force = False
    if takes_force:
        fn(sid, force=force)
    else:
        fn(sid)
    return f"Deleted schedule {sid}."
