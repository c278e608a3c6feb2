"""The dashboard's forms: ``POST /ui/...`` actions over the fabric's services.

Each action checks the session's CSRF token (and, with auth on, that someone is
signed in), calls a service, and comes back to ``/`` with a flash message: what
was done, or what was wrong.

A check-out's reservation id is shown once on the page after the redirect, and
never travels in the session cookie (signed, but readable by whoever holds it):
the registry keeps it, masked, for ``SECRET_TTL`` under a random one-time
handle, and only the handle is flashed; showing the page takes it from the
registry (whichever server renders the page).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from ...errors import BadRequest, FabricError
from ...model import is_name
from ...reservations import Reservations
from ...volumes import MAX_SIZE_GB, Volumes
from .. import presenters
from ..context import principal, services
from ..params import FORCE, IMAGE_ID, INSTANCE_TYPE, VM_NAME, VMID, VOLUMEID, Int, Text, takes
from .blueprint import bp, fabric, reservations, schedules, volumes
from .login import guard

log = logging.getLogger(__name__)

VM_TYPE = INSTANCE_TYPE.labelled("VM type")
IMAGE = IMAGE_ID.labelled("image")
ATTACH_TO = VMID.labelled("VM")
SIZE = Int(name="size", maximum=MAX_SIZE_GB, label="size (GB)")
SCHEDULE_ID = Int(name="id", label="schedule id")
SECRET_TTL = timedelta(minutes=10)  # how long a reservation id waits to be shown


def action(view: Callable[[], str | None]) -> Callable[[], ResponseReturnValue]:
    """A form handler: CSRF and auth checks, errors as flash messages, back to ``/``.

    The view returns a success message (or None); a FabricError becomes an error
    message; anything else is logged and reported without a traceback.
    """

    @functools.wraps(view)
    def inner() -> ResponseReturnValue:
        refused = guard()
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

    return inner


def _anchor() -> str:
    where = request.form.get("back", "")
    return f"#{where}" if where.isidentifier() else ""


# -- VMs ---------------------------------------------------------------------------


@bp.route("/ui/vm/create", methods=["POST"])
@action
@takes(VM_NAME, VM_TYPE, IMAGE)
def vm_create() -> str:
    name = VM_NAME.value()
    tid = VM_TYPE.value()
    image_id = IMAGE.value()
    fab = fabric()
    with fab.admitted():
        vm = fab.create_vm(name, tid, image_id, by=principal())
    where = f" on {fab.registry.hosts.get_any(vm.host_id).label}" if vm.host_id else ""
    return f"Created VM {vm.name} (vmid {vm.id}){where}."


@bp.route("/ui/vm/destroy", methods=["POST"])
@action
@takes(VMID, FORCE)
def vm_destroy() -> str:
    vm_id = VMID.value()
    fab = fabric()
    name = fab.registry.vms.get(vm_id).name
    fab.destroy_vm(vm_id, force=FORCE.value(), by=principal())
    return f"Destroyed VM {name} (vmid {vm_id})."


def _need_reservations() -> Reservations:
    res = reservations()
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
    if not is_name(pool):
        raise BadRequest("pool must be a pool name")
    c = res.checkout(pool=pool, by=principal())[0]
    d = presenters.checkout(c, services().config.guest.user, services().config.hostnames.domain)
    command = presenters.ssh_command(d.get("ssh"))
    reach = f"; {command}" if command else ""
    flash(services().registry.meta.put_once(c.reservation_id, SECRET_TTL), "secret")
    return (
        f"Checked out vmid {c.vm.id} from pool {c.pool} until {d['expires_at']}{reach}. "
        "Its reservation id is shown below ONCE: copy it now, you need it to check the VM in."
    )


@bp.app_template_global("one_time_secret")
def one_time_secret(handle: str) -> str | None:
    """The secret a flashed handle stands for, taken from the registry (so shown
    once); None if it was shown already or has expired."""
    return services().registry.meta.take_once(handle)


@bp.route("/ui/vm/checkin", methods=["POST"])
@action
@takes(VMID)
def vm_checkin() -> str:
    res = _need_reservations()
    vm_id = VMID.value()
    token = request.form.get("reservation_id", "").strip()
    if not token:
        raise BadRequest("the reservation id is required")
    res.checkin(vm_id=vm_id, ip=None, token=token, by=principal())
    return f"Checked in vmid {vm_id}; it is being cleaned for the next user."


# -- volumes -------------------------------------------------------------------------


@bp.route("/ui/volume/create", methods=["POST"])
@action
@takes(SIZE)
def volume_create() -> str:
    name = request.form.get("name", "").strip()
    if not name:
        raise BadRequest("the volume needs a name")
    Volumes.check_name(name)
    size = SIZE.value()
    vol = volumes().create(name, size, by=principal())
    return f"Created volume {vol.name} (volumeid {vol.id}, {vol.size} GB)."


@bp.route("/ui/volume/attach", methods=["POST"])
@action
@takes(VOLUMEID, ATTACH_TO)
def volume_attach() -> str:
    vol_id = VOLUMEID.value()
    vm_id = ATTACH_TO.value()
    dev = volumes().attach(vm_id, vol_id, by=principal())
    return f"Attached volumeid {vol_id} to vmid {vm_id} as /dev/{dev}."


@bp.route("/ui/volume/detach", methods=["POST"])
@action
@takes(VOLUMEID)
def volume_detach() -> str:
    vol_id = VOLUMEID.value()
    volumes().detach(vol_id, by=principal())
    return f"Detached volumeid {vol_id}; its data is kept."


@bp.route("/ui/volume/destroy", methods=["POST"])
@action
@takes(VOLUMEID)
def volume_destroy() -> str:
    vol_id = VOLUMEID.value()
    volumes().destroy(vol_id, by=principal())
    return f"Destroyed volumeid {vol_id}."


# -- schedules -----------------------------------------------------------------------


@bp.route("/ui/schedule/create", methods=["POST"])
@action
def schedule_create() -> str:
    svc = schedules()
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
    created = svc.create(fields, by=principal())  # the service validates and says what is wrong
    return f"Created schedule {created.row.id}."


@bp.route("/ui/schedule/delete", methods=["POST"])
@action
@takes(SCHEDULE_ID, FORCE)
def schedule_delete() -> str:
    svc = schedules()
    sid = SCHEDULE_ID.value()
    svc.delete(sid, force=FORCE.value(), by=principal())
    return f"Deleted schedule {sid}."


# -- on-demand requests ------------------------------------------------------------------

REQUEST = Text(name="id", label="request", max_length=64)


@bp.route("/ui/request/cancel", methods=["POST"])
@action
@takes(REQUEST)
def request_cancel() -> str:
    rid = REQUEST.value()
    if not isinstance(rid, str) or not rid:
        raise BadRequest("which request? (id)")
    row = services().ondemand.cancel(rid, principal())
    return f"Request {rid} is {row.state}."


# -- hosts (admins) --------------------------------------------------------------------

HOST = Int(name="pmid", label="host")


@bp.route("/ui/hosts/reload", methods=["POST"])
@action
def hosts_reload() -> str:
    got = services().reloader.reload(by=principal())

    def ids(values: list[int]) -> str:
        return ", ".join(map(str, values)) or "none"

    return (
        f"Reloaded the physical machines file: added pmids {ids(got['added'])}, changed "
        f"{ids(got['changed'])}, removed {ids(got['removed'])}."
    )


@bp.route("/ui/host/evacuate", methods=["POST"])
@action
@takes(HOST)
def host_evacuate() -> str:
    got = services().evacuator.evacuate(HOST.value(), by=principal())
    failed = f"; {len(got['failed'])} failed" if got["failed"] else ""
    return (
        f"Evacuated pmid {got['pmid']}: {len(got['rebuilt'])} VM(s) rebuilt elsewhere, "
        f"{len(got['replaced'])} pool VM(s) replaced, {len(got['volumes_lost'])} volume(s) "
        f"lost{failed}."
    )


# -- hosts (admins): maintenance, drain, migrate -----------------------------------------

HOST_ID = Int(name="pmid", label="host")
TARGET_HOST = Int(name="target", label="target host", required=False)


@bp.route("/ui/host/maintenance", methods=["POST"])
@action
@takes(HOST_ID)
def host_maintenance() -> str:
    pmid = HOST_ID.value()
    reason = request.form.get("reason", "")
    row = services().mover.set_maintenance(pmid, reason, by=principal())
    return f"Host {row.label} (pmid {pmid}) is in maintenance: {row.maintenance}."


@bp.route("/ui/host/resume", methods=["POST"])
@action
@takes(HOST_ID)
def host_resume() -> str:
    pmid = HOST_ID.value()
    row = services().mover.clear_maintenance(pmid, by=principal())
    return f"Host {row.label} (pmid {pmid}) is in service."


@bp.route("/ui/host/drain", methods=["POST"])
@action
@takes(HOST_ID)
def host_drain() -> str:
    pmid = HOST_ID.value()
    row = services().mover.drain(pmid, by=principal())
    return f"Draining pmid {pmid}: {row.total} VM{'' if row.total == 1 else 's'} to move."


@bp.route("/ui/host/drain/cancel", methods=["POST"])
@action
@takes(HOST_ID)
def host_drain_cancel() -> str:
    pmid = HOST_ID.value()
    services().mover.cancel_drain(pmid, by=principal())
    return f"The drain of pmid {pmid} stops after the move in flight."


@bp.route("/ui/vm/migrate", methods=["POST"])
@action
@takes(VMID, TARGET_HOST)
def vm_migrate() -> str:
    vm_id = VMID.value()
    mig = services().mover.migrate_vm(vm_id, TARGET_HOST.value(), by=principal())
    return f"Moved vmid {vm_id} from pmid {mig.source_id} to pmid {mig.target_id}."
