"""Every path the API serves, described: summary, tag, what it answers and when
it fails. What each takes comes from its view (see .operations)."""

from __future__ import annotations

from typing import Any

from ..api import (
    access,
    auth,
    events,
    hosts,
    networks,
    power,
    requests,
    reservations,
    schedules,
    status,
    vms,
    volumes,
)
from .operations import (
    BASIC,
    BASIC_OR_TOKEN,
    HOST_FAILURES,
    NO_AUTH,
    RETRY_AFTER,
    WHY,
    json_body,
    legacy,
    obj,
    op,
    ref,
    responses,
)
from .schemas import ID, STR, TIME


def paths() -> dict[str, Any]:
    vmids = obj({"vmids": {"type": "array", "items": ID}}, ["vmids"])
    p: dict[str, Any] = {}
    # VM API (original)
    p["/vm/create"] = legacy(
        "Create a VM",
        "vms",
        vms.create,
        obj({"vmid": ID}, ["vmid"]),
        "VmCreateFailure",
        (400, 404, 409, 503, *HOST_FAILURES),
        description="The scheduler places it; a refusal explains itself per filter "
        "(503 with Retry-After when no host can fit it).",
    )
    p["/vm/query"] = legacy(
        "Describe a VM", "vms", vms.query, "Vm", "VmidFailure", (400, 404), post=False
    )
    p["/vm/destroy"] = legacy(
        "Destroy a VM",
        "vms",
        vms.destroy,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
        description="`force=1` destroys a checked-out VM (operators).",
    )
    p["/vm/types"] = {
        "get": op(
            "List VM types",
            "vms",
            responses(
                obj({"types": {"type": "array", "items": ref("VmType")}}, ["types"]), codes=()
            ),
        )
    }
    p["/vm/list"] = {
        "get": op(
            "List VM ids",
            "vms",
            responses(vmids, "Error", (400,)),
            takes=vms.list_vms,
            description="Every VM's id; with `tag=KEY:VALUE` (repeatable), the VMs that "
            "have all of those tags.",
        )
    }
    p["/vm/tags"] = {
        "post": op(
            "Set a VM's tags",
            "vms",
            responses(
                obj(
                    {
                        "status": {"type": "integer", "enum": [1]},
                        "vmid": ID,
                        "tags": {"type": "object", "additionalProperties": STR},
                    },
                    ["status", "vmid", "tags"],
                ),
                "StatusFailure",
                (400, 403, 404),
            ),
            takes=vms.set_tags,
            body=True,
            description="Merges `tags` into the VM's (an empty value removes a key); "
            "answers all its tags. Its creator, the holder of a checked-out VM, or an "
            "admin. A bad key or value is a 400 that names it.",
        )
    }
    p.update(power_paths())
    # Resource API (original)
    p["/pm/list"] = {
        "get": op(
            "List physical machines",
            "hosts",
            responses(obj({"pmids": {"type": "array", "items": ID}}, ["pmids"]), codes=()),
        )
    }
    p["/pm/listvms"] = legacy(
        "VMs on a physical machine",
        "hosts",
        hosts.pm_listvms,
        vmids,
        "VmidsFailure",
        (400, 404),
        post=False,
    )
    p["/pm/query"] = legacy(
        "Describe a physical machine",
        "hosts",
        hosts.pm_query,
        "Host",
        "PmidFailure",
        (400, 404),
        post=False,
    )
    ids = {"type": "array", "items": ID}
    p["/pm/reload"] = {
        "post": op(
            "Read the physical machines file again (admins)",
            "hosts",
            responses(
                obj(
                    {
                        "file": STR,
                        "added": ids,
                        "changed": ids,
                        "removed": ids,
                        "unchanged": {"type": "integer"},
                        "discovered": {"type": "array", "items": {"type": "object"}},
                    },
                    ["added", "changed", "removed"],
                ),
                "Error",
                (400, 401, 403, 409),
            ),
            takes=hosts.pm_reload,
            description="The file the server was started with, read by the loader used at "
            "start: a problem changes nothing and is answered as `path:line: problem` (400). "
            "A host leaving the file must have no VMs and no volumes, or nothing changes "
            "(409, naming each such host and what is on it). New and changed hosts are "
            "discovered at once. The same as sending the server SIGHUP.",
        )
    }
    p["/pm/{pmid}/evacuate"] = {
        "post": op(
            "Rebuild a dead host's VMs on other hosts (admins)",
            "hosts",
            responses(
                obj(
                    {
                        "pmid": ID,
                        "host": STR,
                        "replaced": ids,
                        "rebuilt": ids,
                        "failed": {"type": "array", "items": {"type": "object"}},
                        "busy": ids,
                        "left": ids,
                        "volumes_lost": ids,
                    },
                    ["pmid", "replaced", "rebuilt", "failed", "volumes_lost"],
                ),
                "Error",
                (400, 401, 403, 404, 409),
            ),
            takes=hosts.pm_evacuate,
            description="Only a host that is down (looked at once more first; 409 if it "
            "answers). Its pool VMs nobody holds are removed (the pools refill); checked-out "
            "and plain VMs are rebuilt from their image elsewhere, keeping id, name, "
            "reservation and holder (`rebuilt_at`, `rebuilt_from`); its host-local volumes "
            "are marked `lost`. When it comes back, its stale domains are removed, never "
            "started.",
        )
    }
    # Day-two operations on hosts (admins)
    p["/pm/{pmid}/maintenance"] = {
        "post": op(
            "Put a host into maintenance",
            "hosts",
            responses("Host", "Error", (400, 401, 403, 404)),
            takes=hosts.maintenance_on,
            body=True,
            description="Admins only. With a `reason`: the scheduler never places on it "
            "(a refusal names it: `pm2 in maintenance: kernel update`); its VMs keep "
            "running.",
        ),
        "delete": op(
            "Take a host out of maintenance",
            "hosts",
            responses("Host", "Error", (400, 401, 403, 404, 409)),
            takes=hosts.maintenance_off,
            description="Admins only. 409 while a drain of it runs.",
        ),
    }
    p["/pm/{pmid}/drain"] = {
        "post": op(
            "Drain a host: move every VM off it",
            "hosts",
            {
                "202": json_body(ref("Drain"), "the drain, started in the background"),
                **{
                    k: v
                    for k, v in responses("Drain", "Error", (400, 401, 403, 404, 409)).items()
                    if k != "200"
                },
            },
            takes=hosts.drain_start,
            description="Admins only. Puts the host into maintenance (if it was not) and "
            "live-migrates each VM to a host the scheduler chooses, capacity claimed there "
            "first. A VM that cannot move stays, running, listed in `failed` with why. "
            "Follow it with GET (or `/pm/query`).",
        ),
        "get": op(
            "A host's last drain",
            "hosts",
            responses("Drain", "Error", (400, 404)),
            takes=hosts.drain_get,
        ),
        "delete": op(
            "Cancel a host's drain",
            "hosts",
            responses("Drain", "Error", (400, 401, 403, 404, 409)),
            takes=hosts.drain_cancel,
            description="Admins only. The move in flight finishes; no other starts. "
            "409 when no drain runs.",
        ),
    }
    p["/vm/{vmid}/migrate"] = {
        "post": op(
            "Move a VM to another host",
            "vms",
            responses("Migration", "Error", (400, 401, 403, 404, 409, 503, *HOST_FAILURES)),
            takes=hosts.migrate,
            body=True,
            description="Admins only. Live migration to `pmid` (absent: the scheduler's "
            "choice, never its own host); it keeps its id, name, address, reservation and "
            "volumes. 503 when no host can take it; the VM stays where it was.",
        ),
    }
    p["/networks"] = {
        "get": op(
            "Networks of the hosts and the addresses in use",
            "networks",
            responses(
                obj({"networks": {"type": "array", "items": ref("Network")}}, ["networks"]),
                "Error",
                (400, 404),
            ),
            takes=networks.networks,
            description="One entry per host and network: the mode the host gives its VMs "
            "(`vms_use_it`), each libvirt network discovered there, and any other network "
            "its VMs are still on. The subnet is the configuration's (`networks:`), else "
            "libvirt's. `pmid` keeps one host (404 if unknown).",
        )
    }
    p["/healthz"] = {
        "get": op(
            "Liveness",
            "meta",
            responses(obj({"ok": {"type": "boolean"}}, ["ok"]), codes=()),
            security=NO_AUTH,
        )
    }
    # Image API (original)
    p["/image/list"] = {
        "get": op(
            "List images",
            "images",
            responses(
                obj({"images": {"type": "array", "items": ref("Image")}}, ["images"]), codes=()
            ),
        )
    }
    # Block storage (original, phase 2)
    p["/volume/create"] = legacy(
        "Create a volume",
        "volumes",
        volumes.create,
        obj({"volumeid": ID}, ["volumeid"]),
        "VolumeidFailure",
        (400, 409, 503, *HOST_FAILURES),
    )
    p["/volume/query"] = legacy(
        "Describe a volume",
        "volumes",
        volumes.query,
        "Volume",
        "Error",
        (400, 404),
        post=False,
        description='An unknown id answers 404 `{"error": "volumeid : N does not exist"}`.',
    )
    p["/volume/destroy"] = legacy(
        "Destroy a volume",
        "volumes",
        volumes.destroy,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
        description="409 while attached.",
    )
    p["/volume/attach"] = legacy(
        "Attach a volume to a VM",
        "volumes",
        volumes.attach,
        "Ok",
        "StatusFailure",
        (400, 404, 409, 503, *HOST_FAILURES),
        description="Hot-plugs the next free virtio disk; a host-local volume moves first.",
    )
    p["/volume/detach"] = legacy(
        "Detach a volume",
        "volumes",
        volumes.detach,
        "Ok",
        "StatusFailure",
        (400, 404, 409, *HOST_FAILURES),
    )
    p["/volume/list"] = {
        "get": op(
            "List volume ids",
            "volumes",
            responses(obj({"volumeids": {"type": "array", "items": ID}}, ["volumeids"]), codes=()),
        )
    }
    # Reservations
    p["/vm/checkout"] = {
        "post": op(
            "Check out ready VMs",
            "reservations",
            responses(
                {"oneOf": [ref("Checkout"), ref("CheckoutMany")]},
                "VmCreateFailure",
                (400, 404, 503),
            ),
            takes=reservations.checkout,
            body=True,
            description="`count` is all or nothing; when nothing is ready the answer is "
            "immediate (503 with Retry-After) and the refill is triggered.",
        )
    }
    p["/vm/checkin"] = {
        "post": op(
            "Check a VM in",
            "reservations",
            responses("Ok", "StatusFailure", (400, 403, 404, 409)),
            takes=reservations.checkin,
            body=True,
            description="`vmid` (or `ip`) and the reservation id; the VM is cleaned, then "
            "served again. The VM's holder (authenticated, with their own token) and an "
            "admin may leave `reservation_id` out (with `vmid`); anyone else gets 400. "
            "403 wrong reservation, 409 not checked out.",
        )
    }
    p["/vm/extend"] = {
        "post": op(
            "Extend a reservation",
            "reservations",
            responses(
                obj(
                    {"status": {"type": "integer", "enum": [1]}, "expires_at": TIME},
                    ["status", "expires_at"],
                ),
                "StatusFailure",
                (400, 403, 404, 409),
            ),
            takes=reservations.extend,
            body=True,
        )
    }
    p["/pool/list"] = {
        "get": op(
            "List pools",
            "reservations",
            responses(obj({"pools": {"type": "array", "items": ref("Pool")}}, ["pools"]), codes=()),
        )
    }
    p["/pool/query"] = legacy(
        "Describe a pool",
        "reservations",
        reservations.pool_query,
        "PoolDetail",
        "PoolFailure",
        (400, 404),
        post=False,
    )
    p["/vms/api/v1.0/checkout"] = {
        "get": op(
            "Check out a VM (first seed)",
            "reservations",
            responses(
                "SeedCheckout",
                "Error",
                (400,),
                {"404": json_body(ref("Error"), "no VM is available; retry later", RETRY_AFTER)},
            ),
        )
    }
    p["/vms/api/v1.0/checkin"] = {
        "post": op(
            "Check a VM in (first seed)",
            "reservations",
            responses(obj({"status": STR}, ["status"]), "Error", (400, 403, 404, 409)),
            takes=reservations.seed_checkin,
            body=True,
        )
    }
    # Authentication (vmpooler's shapes)
    not_found_why = "404 when authentication is off, or the token is unknown, revoked or not yours."
    p["/token"] = {
        "post": op(
            "Issue a token",
            "auth",
            responses("TokenIssued", "AuthFailure", (401, 403, 404, 429)),
            security=BASIC,
            description="HTTP basic auth with a user from the configuration; the token is "
            "shown once. Failed logins slow the account down, and each server checks a "
            "limited number of passwords a second (429 with Retry-After). " + not_found_why,
        )
    }
    p["/token/{token}"] = {
        "get": op(
            "Describe a token",
            "auth",
            responses("TokenInfo", "AuthFailure", (401, 403, 404)),
            takes=auth.show,
            security=BASIC_OR_TOKEN,
            description="Basic credentials of its user, or a token of theirs. " + not_found_why,
        ),
        "delete": op(
            "Revoke a token",
            "auth",
            responses("TokenRevoked", "AuthFailure", (401, 403, 404)),
            takes=auth.revoke,
            security=BASIC_OR_TOKEN,
            description="Takes effect at once. " + not_found_why,
        ),
    }
    # Who owns what
    p["/quota"] = {
        "get": op(
            "Your quota: limits and use",
            "auth",
            responses("Quota", "Error", (400, 401, 403, 404)),
            takes=access.quota,
            description="An admin may ask for any `user`'s. With authentication off no one "
            "has a quota: every limit is null.",
        )
    }
    p["/keys"] = {
        "get": op(
            "Your SSH public keys",
            "auth",
            responses(
                obj({"keys": {"type": "array", "items": ref("SshKey")}}, ["keys"]), "Error", (401,)
            ),
        ),
        "post": op(
            "Register an SSH public key",
            "auth",
            {
                "201": json_body(ref("SshKey"), "registered"),
                **{str(c): json_body(ref("Error"), WHY[c]) for c in (400, 401, 403, 409)},
            },
            takes=access.add_key,
            body=True,
            description="It is put into every guest you check out, and taken out at check-in.",
        ),
    }
    p["/keys/{id}"] = {
        "delete": op(
            "Remove an SSH public key",
            "auth",
            responses("Ok", "Error", (400, 401, 403, 404)),
            takes=access.remove_key,
        )
    }
    # Status and metrics
    p["/status"] = {"get": op("Fabric status", "status", responses("Status", codes=()))}
    p["/cluster"] = {
        "get": op(
            "Servers sharing the registry and the leases of background work",
            "status",
            responses("Cluster", codes=()),
        )
    }
    p["/summary"] = {
        "get": op(
            "Clone, boot and cleanup durations per day",
            "status",
            responses("Summary", "Error", (400,)),
            takes=status.summary,
            description="`from` defaults to `to` (or today), `to` to today; at most 366 days.",
        )
    }
    p["/events"] = {
        "get": op(
            "The audit trail and history, newest first",
            "status",
            responses("Events", "Error", (400, 401)),
            takes=events.list_events,
            description="Every state-changing request is an `api.request` event (who, "
            "`operation`, `object`, `status`, `outcome`: ok, refused or failed, with the "
            "error); services add theirs (`vm.claim`, `vm.checkout`...). Filters combine; "
            "page back with `before`, forward with `after`. Admins see every event, other "
            "users those of their own actions and of what is theirs. Needs a token when "
            "authentication is on.",
        )
    }
    p["/metrics"] = {
        "get": op(
            "Prometheus metrics",
            "status",
            {
                "200": {
                    "description": "Prometheus text format: requests, placements, durations, "
                    "pool levels, host states",
                    "content": {"text/plain": {"schema": STR}},
                }
            },
            security=NO_AUTH,
        )
    }
    # Scheduled capacity
    p["/schedules"] = {
        "get": op(
            "List schedules",
            "schedules",
            responses(
                obj({"schedules": {"type": "array", "items": ref("Schedule")}}, ["schedules"]),
                codes=(),
            ),
        ),
        "post": op(
            "Create a schedule",
            "schedules",
            {
                "201": json_body(ref("Schedule"), "created"),
                "400": json_body(ref("IdFailure"), WHY[400]),
                "404": json_body(ref("IdFailure"), "unknown instance_type, image or pool"),
            },
            takes=schedules.create_schedule,
            body=True,
            body_schema=ref("ScheduleInput"),
            description="At the start the fabric creates the extra VMs (or raises the "
            "pool's size); at the end it destroys them (or lowers it back).",
        ),
    }
    p["/schedules/{id}"] = {
        "get": op(
            "Describe a schedule",
            "schedules",
            responses("Schedule", "IdFailure", (400, 404)),
            takes=schedules.get_schedule,
        ),
        "delete": op(
            "Delete a schedule",
            "schedules",
            responses("Ok", "StatusFailure", (400, 404, 409)),
            takes=schedules.delete_schedule,
            description="409 while the schedule is active, unless `force`.",
        ),
    }
    # Requests that wait for capacity (orchestrator/ondemand.py)
    p["/requests"] = {
        "get": op(
            "List requests",
            "reservations",
            responses(
                obj({"requests": {"type": "array", "items": ref("Request")}}, ["requests"]),
                codes=(400,),
            ),
            takes=requests.list_requests,
            description="The caller's requests (an admin's: everyone's), newest first.",
        ),
        "post": op(
            "Request VMs that wait for capacity",
            "reservations",
            {
                "201": json_body(ref("Request"), "accepted: pending"),
                "400": json_body(ref("Error"), WHY[400] + ", or more VMs than a pool's max"),
                "403": json_body(
                    ref("Error"),
                    "more than ondemand.max_per_request VMs, or a pool not open to the caller",
                ),  # fmt: skip
                "404": json_body(ref("Error"), "an unknown pool"),
                "409": json_body(ref("Error"), "the request_id is already used"),
            },
            takes=requests.create_request,
            body=True,
            description='A JSON body `{"pools": {"small": 2}, "hours": 2, '
            '"request_id": "..."}`. The pool worker sets ready VMs aside for it in '
            "fair order, whole request first, and builds what is missing within each pool's "
            "max; not met within ondemand.timeout, it fails with a message saying why.",
        ),
    }
    p["/requests/{id}"] = {
        "get": op(
            "Describe a request",
            "reservations",
            {
                "200": json_body(ref("Request"), "ready (with its VMs), failed or cancelled"),
                "202": json_body(ref("Request"), "pending, with its progress"),
                "404": json_body(ref("Error"), WHY[404]),
            },
            takes=requests.get_request,
        ),
        "delete": op(
            "Cancel a request",
            "reservations",
            responses("Request", "Error", (403, 404)),
            takes=requests.cancel_request,
            description="Its requester or an admin. VMs set aside go back to ready at once; "
            "a ready request's VMs are checked in. A request already ended stays as it is.",
        ),
    }
    # This description
    p["/openapi.json"] = {
        "get": op(
            "This OpenAPI description",
            "meta",
            {"200": json_body({"type": "object"}, "the OpenAPI document")},
            security=NO_AUTH,
        )
    }
    return p


def power_paths() -> dict[str, Any]:
    """VM power, console and resize (orchestrator/power.py)."""
    status_one = {"type": "integer", "enum": [1]}
    how = {
        "type": "string",
        "enum": ["graceful", "forced", "off"],
        "description": "how the guest went off: it powered off after the ACPI power "
        "button, it was pulled off after the timeout (or force=1), or it was off",
    }
    who = (
        " Its creator or an admin; a pool VM: admins (and, for a reboot, the holder "
        "of a checked-out one)."
    )
    p: dict[str, Any] = {}
    p["/vm/stop"] = {
        "post": op(
            "Stop a VM",
            "vms",
            responses(
                obj({"status": status_one, "vmid": ID, "state": STR, "how": how}, ["status"]),
                "StatusFailure",
                (400, 403, 404, 409, *HOST_FAILURES),
            ),
            takes=power.stop,
            body=True,
            description="ACPI shutdown, forced after `timeout` seconds; the VM becomes "
            "`stopped` and keeps its claim on its host until it is destroyed. Pool VMs "
            "are not stopped (409)." + who,
        )
    }
    p["/vm/start"] = {
        "post": op(
            "Start a stopped VM",
            "vms",
            responses(
                obj({"status": status_one, "vmid": ID, "state": STR}, ["status"]),
                "StatusFailure",
                (400, 403, 404, 409, *HOST_FAILURES),
            ),
            takes=power.start,
            body=True,
            description="On the host it stays on, with the claim it kept." + who,
        )
    }
    p["/vm/reboot"] = {
        "post": op(
            "Reboot a running VM",
            "vms",
            responses(
                obj({"status": status_one, "vmid": ID, "how": how}, ["status"]),
                "StatusFailure",
                (400, 403, 404, 409, *HOST_FAILURES),
            ),
            takes=power.reboot,
            body=True,
            description="A power cycle: a graceful stop (forced after `timeout`), then a "
            "start; its state is unchanged." + who,
        )
    }
    p["/vm/resize"] = {
        "post": op(
            "Resize a VM to another VM type",
            "vms",
            responses(
                obj(
                    {
                        "status": status_one,
                        "vmid": ID,
                        "instance_type": ID,
                        "cpu": ID,
                        "ram": {**ID, "description": "MB"},
                        "disk": {**ID, "description": "GB"},
                    },
                    ["status"],
                ),
                "StatusFailure",
                (400, 403, 404, 409, *HOST_FAILURES),
            ),
            takes=power.resize,
            body=True,
            description="Cold: stopped (graceful, then forced), vCPUs and memory changed, "
            "started again if it ran. Its claim on its host grows first, within its "
            "creator's quota: 409 naming what does not fit, with nothing changed. The "
            "disk grows to a larger type's and never shrinks. Not for pool VMs."
            " Its creator or an admin.",
        )
    }
    p["/vm/console"] = {
        "get": op(
            "The tail of a VM's serial console",
            "vms",
            responses(
                obj(
                    {
                        "vmid": ID,
                        "kb": ID,
                        "size": {"type": "integer", "description": "bytes in the whole log"},
                        "console": {"type": "string", "description": "the last kb kilobytes"},
                        "truncated": {"type": "boolean"},
                        "note": {"type": "string", "description": "why there is no console"},
                    },
                    ["vmid", "console"],
                ),
                "Error",
                (400, 403, 404, *HOST_FAILURES),
            ),
            takes=power.console,
            description="Its creator, its holder or an admin. A test:// host has no "
            "console log: an empty console with a note.",
        )
    }
    return p
