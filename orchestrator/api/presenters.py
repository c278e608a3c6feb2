"""JSON shapes of the fabric's objects, as the API contract gives them."""

from __future__ import annotations

from typing import Any

from ..clock import iso
from ..registry import HostRow, VmRow
from ..reservations import Checkout


def vm_json(vm: VmRow, guest_user: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vmid": vm.id,
        "name": vm.name,
        "instance_type": vm.tid,
        "pmid": vm.host_id or 0,
        "status": vm.state,
        "image_id": vm.image_id,
        "ip": vm.ip,
        "domain": vm.domain_name,
    }
    if vm.ip and vm.ssh_port:
        out["ssh"] = {"host": vm.ip, "port": vm.ssh_port, "user": guest_user}
    if vm.pool:
        out["pool"] = vm.pool
    if vm.expires_at is not None:
        out["expires_at"] = iso(vm.expires_at)
    if vm.error:
        out["error_detail"] = vm.error
    return out


def host_json(h: HostRow, vms: int) -> dict[str, Any]:
    return {
        "pmid": h.id,
        "capacity": {"cpu": h.cpu_total, "ram": h.ram_total, "disk": h.disk_total},
        "free": {
            "cpu": h.cpu_total - h.cpu_used,
            "ram": h.ram_total - h.ram_used,
            "disk": h.disk_total - h.disk_used,
        },
        "vms": vms,
        "name": h.label,
        "uri": h.uri,
        "status": h.status,
        "reason": h.reason,
        "enabled": h.enabled,
        "arch": h.arch,
    }


def checkout_json(c: Checkout, guest_user: str) -> dict[str, Any]:
    vm = c.vm
    out: dict[str, Any] = {"vmid": vm.id, "ip": vm.ip}
    if vm.ip and vm.ssh_port:
        out["ssh"] = {"host": vm.ip, "port": vm.ssh_port, "user": guest_user}
    out["reservation_id"] = c.reservation_id
    out["expires_at"] = iso(vm.expires_at) if vm.expires_at else None
    out["pool"] = c.pool
    return out
