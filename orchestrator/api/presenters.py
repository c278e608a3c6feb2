"""The shapes the API answers with, and the rows the dashboard shows.

Each presenter takes registry rows and plain values (the guest user from the
configuration, a count the caller read) and returns JSON-ready data; none calls
a service or the registry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..clock import as_utc, iso
from ..guests import ssh_port
from ..hostnames import fqdn
from ..model import (
    HostStatus,
    MigrationPhase,
    NetworkKind,
    NetworkMode,
    VmState,
    VolumeState,
)

if TYPE_CHECKING:
    from ..config import NetworkSettings
    from ..registry import (
        DrainRow,
        HostRow,
        ImageRow,
        MigrationRow,
        TypeRow,
        VmRow,
        VolumeRow,
    )
    from ..reservations import Checkout
    from ..schedules import ScheduleStatus


# -- the API's answers -------------------------------------------------------------


def mode(text: str | None) -> NetworkMode | None:
    """A network mode as stored (a VM's or a host's), parsed; None if unknown."""
    try:
        return NetworkMode.parse(text) if text else None
    except ValueError:
        return None


def reach_port(vm: VmRow) -> int | None:
    """The port a VM's SSH answers on at its address: its forwarded port, else 22 for
    a VM on a LAN (``network:``/``bridge:``); None when nothing reaches it (``user``)."""
    on = mode(vm.network)
    if vm.ssh_port or (on is not None and on.on_lan):
        return ssh_port(vm)
    return None


def ssh(vm: VmRow, guest_user: str) -> dict[str, Any] | None:
    """How to reach a VM's guest, once it has an address and something reaches it."""
    port = reach_port(vm)
    if vm.ip and port:
        return {"host": vm.ip, "port": port, "user": guest_user}
    return None


def ssh_command(reach: Mapping[str, Any] | None) -> str | None:
    """An ``ssh`` block as people type it: ``ssh root@IP`` (``-p N`` when not 22)."""
    if not reach:
        return None
    port = "" if reach["port"] == 22 else f"-p {reach['port']} "
    return f"ssh {port}{reach['user']}@{reach['host']}"


def vm(row: VmRow, guest_user: str, domain: str | None = None) -> dict[str, Any]:
    """``GET /vm/query``: one VM (``domain``: the configured one, for its FQDN)."""
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
    out["mac"] = row.mac
    out["network"] = row.network
    out["address_source"] = row.ip_source if row.ip else None
    out["created_by"] = row.created_by
    out["hostname"] = row.hostname
    out["fqdn"] = fqdn(row.hostname, domain)
    out["tags"] = dict(row.tags or {})
    if row.held_by:
        out["held_by"] = row.held_by
    if row.rebuilt_at is not None:  # its host died: rebuilt from its image on this one
        out["rebuilt_at"] = iso(row.rebuilt_at)
        out["rebuilt_from"] = row.rebuilt_from
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


def iso_or_none(when: datetime | None) -> str | None:
    return iso(when) if when else None


_time = iso_or_none


def drain(row: DrainRow) -> dict[str, Any]:
    """A host's drain: its state, n of m moved, and the VMs that stayed and why."""
    return {
        "id": row.id,
        "pmid": row.host_id,
        "state": row.state,
        "total": row.total,
        "moved": row.moved,
        "failed": list(row.failed or []),
        "requested_by": row.requested_by,
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
    }


def migration(row: MigrationRow) -> dict[str, Any]:
    """One move of a VM between hosts."""
    return {
        "id": row.id,
        "vmid": row.vm_id,
        "from": row.source_id,
        "pmid": row.target_id if row.phase == MigrationPhase.DONE else row.source_id,
        "target": row.target_id,
        "phase": row.phase,
        "error": row.error,
    }


def host(row: HostRow, vms: int, drain_row: DrainRow | None = None) -> dict[str, Any]:
    """``GET /pm/query``: a host with ``vms`` VMs placed on it, its maintenance reason
    (None: in service) and its last drain."""
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
        "maintenance": row.maintenance,
        "maintenance_since": _time(row.maintenance_at),
        "drain": drain(drain_row) if drain_row is not None else None,
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
    out["created_by"] = row.created_by
    return out


def checkout(c: Checkout, guest_user: str, domain: str | None = None) -> dict[str, Any]:
    """One checked-out VM of ``POST /vm/checkout``, with its reservation id."""
    out: dict[str, Any] = {"vmid": c.vm.id, "ip": c.vm.ip}
    reach = ssh(c.vm, guest_user)
    if reach:
        out["ssh"] = reach
    out["reservation_id"] = c.reservation_id
    out["expires_at"] = iso(c.vm.expires_at) if c.vm.expires_at else None
    out["pool"] = c.pool
    out["mac"] = c.vm.mac
    out["network"] = c.vm.network
    out["ssh_keys"] = list(c.keys)
    out["hostname"] = c.vm.hostname
    out["fqdn"] = fqdn(c.vm.hostname, domain)
    return out


def seed_checkout(c: Checkout, guest_user: str) -> dict[str, Any]:
    """``GET /vms/api/v1.0/checkout``: the first seed's keys."""
    return {
        "IP": c.vm.ip,
        "LoginID": guest_user,
        "LoginPassword": "",  # guests take the borrower's SSH keys, not a password
        "ReservationID": c.reservation_id,
        "Port": reach_port(c.vm),
        "VMID": c.vm.id,
    }


# -- networks ------------------------------------------------------------------------


def plan_range(settings: NetworkSettings | None) -> tuple[int, int] | None:
    """A network's plan as integers (first, last), or None without one."""
    if settings is None or settings.plan is None:
        return None
    lo, hi = settings.plan
    return int(lo), int(hi)


def host_networks(
    host: HostRow,
    vms: Iterable[VmRow],
    settings: Mapping[str, NetworkSettings],
    planned: Mapping[int, str],
) -> list[dict[str, Any]]:
    """``GET /networks``: a host's networks. First the mode its VMs get (``vms_use_it``),
    then each libvirt network discovered there, then any other network its VMs are
    still on (made before its mode changed). ``vms``: the VMs on this host;
    ``settings``: the configuration's ``networks:``; ``planned``: VM id -> the address
    its network's plan gave it."""
    vms = list(vms)
    discovered = {n.get("name"): n for n in host.networks or [] if isinstance(n, dict)}
    names = [host.network]
    names += [f"{NetworkKind.NETWORK}:{name}" for name in discovered if name]
    names += [vm.network for vm in vms if vm.network]
    out = []
    for name in dict.fromkeys(names):  # each once, in that order
        parsed = mode(name)
        kind = parsed.kind if parsed is not None else None
        named = parsed.name if parsed is not None else None  # the bridge or libvirt network
        libvirt = (discovered.get(named) or {}) if kind == NetworkKind.NETWORK else {}
        bridge = named if kind == NetworkKind.BRIDGE else libvirt.get("bridge")
        conf = settings.get(name)
        plan = f"{conf.plan[0]}-{conf.plan[1]}" if conf and conf.plan else None
        subnet = str(conf.subnet) if conf is not None else libvirt.get("subnet")
        out.append(
            {
                "pmid": host.id,
                "host": host.label,
                "name": name,
                "kind": kind,
                "bridge": bridge,
                "network": named if kind == NetworkKind.NETWORK else None,
                "subnet": subnet,
                "gateway": str(conf.gateway) if conf and conf.gateway else None,
                "plan": plan,
                "vms_use_it": name == host.network,
                "addresses": [
                    {
                        "vmid": vm.id,
                        "mac": vm.mac,
                        "ip": vm.ip,
                        "source": vm.ip_source if vm.ip else None,
                        "planned": planned.get(vm.id),
                    }
                    for vm in vms
                    if vm.network == name
                ],
            }
        )
    return out


def network_status(
    hosts: Iterable[HostRow],
    vms: Iterable[VmRow],
    settings: Mapping[str, NetworkSettings],
    in_use: Mapping[str, Mapping[str, int]],
) -> dict[str, dict[str, Any]]:
    """``/status``'s ``networks``: per network mode the hosts give their VMs, its kind,
    those hosts, the VMs on it with an address, the VMs still waiting for theirs (on a
    LAN, while building) and how much of its plan is free. ``in_use``: network ->
    {address: VM id} of the plans' allocations."""
    vms = list(vms)
    labels: dict[str, list[str]] = {}
    for h in hosts:
        labels.setdefault(h.network, []).append(h.label)
    out = {}
    for name, on_hosts in labels.items():
        parsed = mode(name)
        on = [vm for vm in vms if vm.network == name]
        waiting = 0
        if parsed is not None and parsed.on_lan:
            waiting = sum(1 for vm in on if vm.state == VmState.BUILDING and not vm.ip)
        plan = None
        bounds = plan_range(settings.get(name))
        if bounds is not None:
            lo, hi = bounds
            given = sum(
                1 for a in in_use.get(name, {}) if lo <= int(ipaddress.IPv4Address(a)) <= hi
            )
            plan = {"size": hi - lo + 1, "free": hi - lo + 1 - given}
        out[name] = {
            "kind": parsed.kind if parsed is not None else None,
            "hosts": on_hosts,
            "vms": sum(1 for vm in on if vm.ip),
            "waiting": waiting,
            "plan": plan,
        }
    return out


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


def host_card(row: HostRow, vms: int, drain_row: DrainRow | None = None) -> dict[str, Any]:
    """A host as the overview draws it: the API's shape, meters and when it was seen."""
    info = host(row, vms, drain_row)
    cap, free = info["capacity"], info["free"]
    return {
        **info,
        "bars": [
            ("CPU", bar(cap["cpu"] - free["cpu"], cap["cpu"]), "vCPU"),
            ("RAM", bar(cap["ram"] - free["ram"], cap["ram"]), "MB"),
            ("Disk", bar(cap["disk"] - free["disk"], cap["disk"]), "GB"),
        ],
        "last_seen": iso(row.last_seen) if row.last_seen else None,
        "network": row.network,
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
    domain: str | None = None,
) -> dict[str, Any]:
    """A VM in the overview's tables: the API's shape with names instead of ids
    (``domain``: the configured one, for its FQDN)."""
    out = vm(row, guest_user, domain)
    host_id = row.host_id or 0
    out["host"] = host_names.get(host_id, f"pmid {row.host_id}" if row.host_id else "-")
    out["type_name"] = type_names.get(row.tid, str(row.tid))
    out["image_name"] = image_names.get(row.image_id, str(row.image_id))
    out["reserved_at"] = iso(row.reserved_at) if row.reserved_at else None
    out["expires_in"] = until(row.expires_at, now) if row.expires_at else None
    source = f" ({row.ip_source})" if row.ip_source else ""
    out["address"] = f"{row.ip}{source}" if row.ip else None
    out["ssh_command"] = ssh_command(out.get("ssh"))
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
    out["created_by"] = row.created_by
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
