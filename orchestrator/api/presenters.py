"""The shapes the API answers with, and the rows the dashboard shows.

Each presenter takes registry rows and plain values (the guest user from the
configuration, a count the caller read) and returns JSON-ready data; none calls
a service or the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..clock import as_utc, iso
from ..model import HostStatus, VmState, VolumeState

if TYPE_CHECKING:
    from ..registry import HostRow, ImageRow, TypeRow, VmRow, VolumeRow
    from ..reservations import Checkout
    from ..schedules import ScheduleStatus


# -- the API's answers -------------------------------------------------------------


def ssh(vm: VmRow, guest_user: str) -> dict[str, Any] | None:
    """How to reach a VM's guest, once it has an address and a port."""
    if vm.ip and vm.ssh_port:
        return {"host": vm.ip, "port": vm.ssh_port, "user": guest_user}
    return None


def vm(row: VmRow, guest_user: str) -> dict[str, Any]:
    """``GET /vm/query``: one VM."""
    out: dict[str, Any] = {
        "vmid": row.id,
        "name": row.name,
        "instance_type": row.tid,
        "pmid": row.host_id or 0,
        "status": row.state,
        "image_id": row.image_id,
        "ip": row.ip,
        "domain": row.domain_name,
    }
    reach = ssh(row, guest_user)
    if reach:
        out["ssh"] = reach
    if row.pool:
        out["pool"] = row.pool
    if row.expires_at is not None:
        out["expires_at"] = iso(row.expires_at)
    if row.error:
        out["error_detail"] = row.error
    return out


def vm_type(row: TypeRow) -> dict[str, Any]:
    """One entry of ``GET /vm/types`` (ram in MB, disk in GB)."""
    out: dict[str, Any] = {"tid": row.tid, "cpu": row.cpu, "ram": row.ram, "disk": row.disk}
    if row.name:
        out["name"] = row.name
    return out


def image(row: ImageRow) -> dict[str, Any]:
    """One entry of ``GET /image/list``."""
    return {"id": row.id, "name": row.name}


def host(row: HostRow, vms: int) -> dict[str, Any]:
    """``GET /pm/query``: a host with ``vms`` VMs placed on it."""
    return {
        "pmid": row.id,
        "capacity": {"cpu": row.cpu_total, "ram": row.ram_total, "disk": row.disk_total},
        "free": {
            "cpu": row.cpu_total - row.cpu_used,
            "ram": row.ram_total - row.ram_used,
            "disk": row.disk_total - row.disk_used,
        },
        "vms": vms,
        "name": row.label,
        "uri": row.uri,
        "status": row.status,
        "reason": row.reason,
        "enabled": row.enabled,
        "arch": row.arch,
    }


def volume(row: VolumeRow) -> dict[str, Any]:
    """``GET /volume/query``: one volume."""
    out: dict[str, Any] = {
        "volumeid": row.id,
        "name": row.name,
        "size": row.size,
        "status": row.status,
    }
    if row.status == VolumeState.ATTACHED:
        out["vmid"] = row.vm_id
    out["pmid"] = row.host_id
    if row.target:
        out["device"] = f"/dev/{row.target}"
    if row.error:
        out["error_detail"] = row.error
    return out


def checkout(c: Checkout, guest_user: str) -> dict[str, Any]:
    """One checked-out VM of ``POST /vm/checkout``, with its reservation id."""
    out: dict[str, Any] = {"vmid": c.vm.id, "ip": c.vm.ip}
    reach = ssh(c.vm, guest_user)
    if reach:
        out["ssh"] = reach
    out["reservation_id"] = c.reservation_id
    out["expires_at"] = iso(c.vm.expires_at) if c.vm.expires_at else None
    out["pool"] = c.pool
    return out


def seed_checkout(c: Checkout, guest_user: str) -> dict[str, Any]:
    """``GET /vms/api/v1.0/checkout``: the first seed's keys."""
    return {
        "IP": c.vm.ip,
        "LoginID": guest_user,
        "LoginPassword": "",  # guests take the operator's SSH key, not a password
        "ReservationID": c.reservation_id,
        "Port": c.vm.ssh_port,
        "VMID": c.vm.id,
    }


# -- the dashboard's rows ------------------------------------------------------------


def bar(used: float, total: float) -> dict[str, Any]:
    """A usage meter: how full, and how worried to be (low, mid, high)."""
    pct = 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * used / total))
    level = "high" if pct >= 90 else "mid" if pct >= 70 else "low"
    return {
        "used": used,
        "total": total,
        "free": total - used,
        "pct": round(pct, 1),
        "level": level,
    }


def host_card(row: HostRow, vms: int) -> dict[str, Any]:
    """A host as the overview draws it: the API's shape, meters and when it was seen."""
    info = host(row, vms)
    cap, free = info["capacity"], info["free"]
    return {
        **info,
        "bars": [
            ("CPU", bar(cap["cpu"] - free["cpu"], cap["cpu"]), "vCPU"),
            ("RAM", bar(cap["ram"] - free["ram"], cap["ram"]), "MB"),
            ("Disk", bar(cap["disk"] - free["disk"], cap["disk"]), "GB"),
        ],
        "last_seen": iso(row.last_seen) if row.last_seen else None,
    }


def type_option(row: TypeRow) -> dict[str, Any]:
    """A VM type in the forms' selects."""
    return {
        "tid": row.tid,
        "label": f"{row.tid}: {row.name + ' ' if row.name else ''}"
        f"({row.cpu} vCPU, {row.ram} MB, {row.disk} GB)",
        "name": row.name or f"type {row.tid}",
    }


def until(when: datetime, now: datetime) -> str:
    """Time left, as people read it: ``2 h 05 min``, ``12 min``, ``expired``."""
    secs = int((as_utc(when) - now).total_seconds())
    if secs <= 0:
        return "expired"
    h, rem = divmod(secs, 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min"


def vm_row(
    row: VmRow,
    guest_user: str,
    *,
    host_names: Mapping[int, str],
    type_names: Mapping[int, str],
    image_names: Mapping[int, str],
    now: datetime,
) -> dict[str, Any]:
    """A VM in the overview's tables: the API's shape with names instead of ids."""
    out = vm(row, guest_user)
    host_id = row.host_id or 0
    out["host"] = host_names.get(host_id, f"pmid {row.host_id}" if row.host_id else "-")
    out["type_name"] = type_names.get(row.tid, str(row.tid))
    out["image_name"] = image_names.get(row.image_id, str(row.image_id))
    out["reserved_at"] = iso(row.reserved_at) if row.reserved_at else None
    out["expires_in"] = until(row.expires_at, now) if row.expires_at else None
    return out


POOL_SEGMENTS = ("ready", "in_use", "cleaning", "building", "failed")


def pool_row(status: Mapping[str, Any]) -> dict[str, Any]:
    """A pool's levels (``PoolService.status()``) as a stacked bar."""
    cap = max(int(status.get("max") or 0), int(status.get("total") or 0), 1)
    segments = []
    for key in POOL_SEGMENTS:
        n = int(status.get(key) or 0)
        if n:
            segments.append({"key": key, "n": n, "pct": round(100.0 * n / cap, 2)})
    return {**status, "segments": segments, "empty": not status.get("ready")}


def volume_row(row: VolumeRow, host_names: Mapping[int, str]) -> dict[str, Any]:
    """A volume in the overview: the API's shape and its host's name."""
    out = volume(row)
    pmid = out.get("pmid")
    out["host"] = host_names.get(pmid or 0, f"pmid {pmid}" if pmid else "")
    return out


def schedule(st: ScheduleStatus) -> dict[str, Any]:
    """A schedule as ``/schedules`` gives it."""
    row, run = st.row, st.run
    out: dict[str, Any] = {"id": row.id, "name": row.name}
    if row.pool:
        out["pool"] = row.pool
    else:
        out["instance_type"] = row.tid
        out["image_id"] = row.image_id
    out["count"] = row.count
    if row.cron:
        out["cron"] = row.cron
        out["duration_minutes"] = row.duration_minutes
    else:
        out["start"] = iso(row.start_at) if row.start_at else None
        out["end"] = iso(row.end_at) if row.end_at else None
    if st.skipped:
        out["skipped"] = True
    out["state"] = st.state
    if row.cancelled:
        out["cancelled"] = True
    out["next_start"] = iso(st.next_start) if st.next_start is not None else None
    progress = None
    if run is not None:
        progress = {
            "window_start": iso(run.window_start),
            "window_end": iso(run.window_end),
            "phase": run.phase,
            "wanted": run.wanted,
            "made": run.made,
            "last_error": run.last_error,
        }
        if not row.pool:
            progress["vmids"] = st.vmids
    out["progress"] = progress
    return out


def schedule_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule (as ``ScheduleService.list()`` describes it) in the overview's table."""
    if d.get("pool"):
        what = f"pool {d['pool']}"
    else:
        what = f"type {d.get('instance_type', '?')}, image {d.get('image_id', '?')}"
    if d.get("cron"):
        window = f"cron '{d['cron']}' for {d.get('duration_minutes', '?')} min"
    else:
        window = f"{d.get('start') or '?'} to {d.get('end') or '?'}"
    progress = d.get("progress")
    shown = ""
    if progress is not None:
        shown = f"{progress.get('made', '?')}/{progress.get('wanted', '?')} made"
        if progress.get("phase"):
            shown += f" ({progress['phase']})"
        if progress.get("last_error"):
            shown += f"; {progress['last_error']}"
    state = str(d.get("state") or "")
    if d.get("cancelled"):
        state += " (cancelled)"
    if d.get("skipped"):
        state += " (skipped)"
    return {
        "id": d["id"],
        "name": d.get("name") or "",
        "what": what,
        "count": d.get("count", ""),
        "window": window,
        "state": state,
        "next_start": d.get("next_start") or "",
        "progress": shown,
    }


def server_rows(cluster: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fabric servers (``cluster.describe()``), each with the leases it holds."""
    runs: dict[str, list[str]] = {}
    for lease in cluster["leases"]:
        if lease["holder"]:
            runs.setdefault(lease["holder"], []).append(lease["name"])
    return [{**srv, "leases": runs.get(srv["id"], [])} for srv in cluster["servers"]]


def overview_summary(
    hosts: Iterable[Mapping[str, Any]],
    vms: Iterable[Mapping[str, Any]],
    pools: Mapping[str, Mapping[str, Any]] | None,
    volumes: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """The overview's headline numbers."""
    hosts, vms, volumes = list(hosts), list(vms), list(volumes)
    return {
        "hosts_up": sum(1 for h in hosts if h["status"] == HostStatus.UP),
        "hosts": len(hosts),
        "vms": len(vms),
        "in_use": sum(1 for v in vms if v["status"] == VmState.IN_USE),
        "ready": sum(p.get("ready", 0) for p in (pools or {}).values()),
        "volumes": len(volumes),
        "empty_pools": [n for n, p in (pools or {}).items() if p.get("empty")],
    }
