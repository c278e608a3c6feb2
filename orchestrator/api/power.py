"""VM power (stop, start, reboot), console and resize: POST calls in the style of
/vm/checkout and /vm/extend, a GET for the console (see orchestrator/power.py)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..power import DEFAULT_CONSOLE_KB, DEFAULT_GRACE, MAX_CONSOLE_KB, MAX_GRACE
from .context import principal, services
from .errors import legacy
from .params import INSTANCE_TYPE, VMID, Flag, Int, takes

bp = Blueprint("power", __name__)

TIMEOUT = Int(
    name="timeout",
    required=False,
    maximum=int(MAX_GRACE),
    description=f"seconds the guest is given to power off after the ACPI power button "
    f"before it is pulled off (default {DEFAULT_GRACE:g}; force=1 pulls it at once)",
)
KB = Int(
    name="kb",
    required=False,
    maximum=MAX_CONSOLE_KB,
    description=f"how many of the last kilobytes of the console (default "
    f"{DEFAULT_CONSOLE_KB}, at most {MAX_CONSOLE_KB})",
)
POWER_FORCE = Flag(
    name="force",
    description="yes/no: pull the power at once, with no graceful ACPI shutdown first",
)


def _grace() -> float:
    if POWER_FORCE.value():
        return 0.0
    given = TIMEOUT.value()
    return DEFAULT_GRACE if given is None else float(given)


@bp.route("/vm/stop", methods=["POST"])
@legacy({"status": 0})
@takes(VMID, TIMEOUT, POWER_FORCE)
def stop():
    vm_id = VMID.value()
    how = services().power.stop(vm_id, grace=_grace(), by=principal())
    return jsonify({"status": 1, "vmid": vm_id, "state": "stopped", "how": how})


@bp.route("/vm/start", methods=["POST"])
@legacy({"status": 0})
@takes(VMID)
def start():
    vm_id = VMID.value()
    services().power.start(vm_id, by=principal())
    return jsonify({"status": 1, "vmid": vm_id, "state": "active"})


@bp.route("/vm/reboot", methods=["POST"])
@legacy({"status": 0})
@takes(VMID, TIMEOUT, POWER_FORCE)
def reboot():
    vm_id = VMID.value()
    how = services().power.reboot(vm_id, grace=_grace(), by=principal())
    return jsonify({"status": 1, "vmid": vm_id, "how": how})


@bp.route("/vm/resize", methods=["POST"])
@legacy({"status": 0})
@takes(VMID, INSTANCE_TYPE, TIMEOUT, POWER_FORCE)
def resize():
    vm_id = VMID.value()
    tid = INSTANCE_TYPE.value()
    vm = services().power.resize(vm_id, tid, grace=_grace(), by=principal())
    return jsonify(
        {
            "status": 1,
            "vmid": vm_id,
            "instance_type": vm.tid,
            "cpu": vm.cpu,
            "ram": vm.ram,
            "disk": vm.disk,
        }
    )


@bp.route("/vm/console", methods=["GET"])
@takes(VMID, KB)
def console():
    vm_id = VMID.value()
    kb = KB.value() or DEFAULT_CONSOLE_KB
    return jsonify(services().power.console(vm_id, kb, by=principal()).as_dict())
