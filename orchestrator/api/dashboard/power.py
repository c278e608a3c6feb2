"""The dashboard's VM power, resize and console: ``POST /ui/vm/stop|start|reboot|resize``
(forms, like the other actions) and ``GET /ui/vm/console?vmid=`` (a page)."""

from __future__ import annotations

from flask import make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from ...errors import FabricError
from ...power import DEFAULT_CONSOLE_KB
from ..context import principal, services
from ..params import FORCE, INSTANCE_TYPE, VMID, takes
from ..power import KB
from .blueprint import bp, no_store
from .forms import action
from .login import current_user

NEW_TYPE = INSTANCE_TYPE.labelled("new VM type")


@bp.route("/ui/vm/stop", methods=["POST"])
@action
@takes(VMID, FORCE)
def vm_stop() -> str:
    vm_id = VMID.value()
    how = services().power.stop(vm_id, grace=0 if FORCE.value() else 60, by=principal())
    return f"Stopped vmid {vm_id} ({how}); it keeps its place on its host until destroyed."


@bp.route("/ui/vm/start", methods=["POST"])
@action
@takes(VMID)
def vm_start() -> str:
    vm_id = VMID.value()
    services().power.start(vm_id, by=principal())
    return f"Started vmid {vm_id}."


@bp.route("/ui/vm/reboot", methods=["POST"])
@action
@takes(VMID, FORCE)
def vm_reboot() -> str:
    vm_id = VMID.value()
    how = services().power.reboot(vm_id, grace=0 if FORCE.value() else 60, by=principal())
    return f"Rebooted vmid {vm_id} (it went off: {how})."


@bp.route("/ui/vm/resize", methods=["POST"])
@action
@takes(VMID, NEW_TYPE)
def vm_resize() -> str:
    vm_id = VMID.value()
    vm = services().power.resize(vm_id, NEW_TYPE.value(), by=principal())
    return (
        f"Resized vmid {vm_id} to type {vm.tid}: {vm.cpu} vCPUs, {vm.ram} MB RAM, "
        f"{vm.disk} GB disk."
    )


@bp.route("/ui/vm/console", methods=["GET"])
@takes(VMID, KB)
def vm_console() -> ResponseReturnValue:
    if current_user() is None:
        return redirect(url_for("dashboard.login"))
    error = console = None
    vm_id = None
    status = 200
    try:
        vm_id = VMID.value()
        console = services().power.console(vm_id, KB.value() or DEFAULT_CONSOLE_KB, by=principal())
    except FabricError as e:
        error, status = e.message, e.status
    page = render_template("dashboard/console.html", vmid=vm_id, console=console, error=error)
    resp = make_response(page, status)
    return no_store(resp)
