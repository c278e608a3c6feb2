"""The shapes the API answers with.

Each presenter takes registry rows and plain values (the guest user from the
configuration, a count the caller read) and returns JSON-ready data; none calls
a service or the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import iso

if TYPE_CHECKING:
    from ..registry import HostRow, ImageRow, TypeRow, VmRow, VolumeRow
    from ..reservations import Checkout


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
    if row.status == "attached":
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
