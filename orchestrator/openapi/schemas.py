"""The OpenAPI document's data shapes: the components every response refers to.
Request parameters are not here: they come from the views' declarations (see
.operations)."""

from __future__ import annotations

from typing import Any

from ..api import schedules
from ..api.params import RESERVATION_ID, Int
from ..model import AddressSource, NetworkKind
from ..registry.quotas import Usage
from .operations import fields, obj, ref

ID = Int(name="id").type_schema()  # any id, as the parameters declare one
INT = {"type": "integer"}
STR = {"type": "string"}
NSTR = {"type": "string", "nullable": True}
TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}


def zero(key: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A legacy failure body: the endpoint's zero value and a message."""
    return obj(
        {key: {"type": "integer", "enum": [0]}, "error": STR, **(extra or {})},
        [key, "error"],
        description=f'`{{"{key}": 0, "error": "..."}}`',
    )


ADDRESS_SOURCE = {"type": "string", "enum": [str(a) for a in AddressSource]}
NETWORK_KIND = {"type": "string", "enum": [str(k) for k in NetworkKind]}
# A VM's own network keys (/vm/query, check-out).
VM_NETWORK = {
    "mac": {**STR, "example": "52:54:00:12:34:56"},
    "network": {
        **NSTR,
        "description": "its host's network mode when it was made: user, forward, "
        "network:NAME or bridge:NAME",
    },
}
SSH_DESCRIPTION = (
    "how to reach the guest, once it has an address and something reaches it: its "
    "forwarded port (forward), else port 22 at its own address (network:, bridge:); "
    "absent with user networking"
)

QUOTA_KEYS = tuple(Usage().as_dict())

RESOURCES = {"cpu": INT, "ram": {**INT, "description": "MB"}, "disk": {**INT, "description": "GB"}}

SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": STR}, ["error"], description="every failure carries a message"),
    "VmidFailure": zero("vmid"),
    "VmCreateFailure": zero(
        "vmid",
        {
            "filters": {
                "type": "array",
                "description": "per scheduler filter: what it removed and why",
                "items": {"type": "object"},
            },
            "pools": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    ),
    "StatusFailure": zero("status"),
    "PmidFailure": zero("pmid"),
    "VmidsFailure": zero("vmids"),
    "VolumeidFailure": zero("volumeid"),
    "PoolFailure": zero("pool"),
    "Ok": obj({"status": {"type": "integer", "enum": [1]}}, ["status"]),
    "Ssh": obj(
        {"host": STR, "port": INT, "user": STR},
        ["host", "port", "user"],
        description=SSH_DESCRIPTION,
    ),
    "Vm": obj(
        {
            "vmid": ID,
            "name": STR,
            "instance_type": INT,
            "pmid": {**INT, "description": "0 while the VM has no host"},
            "status": STR,
            "image_id": INT,
            "ip": NSTR,
            "domain": NSTR,
            "ssh": ref("Ssh"),
            "pool": STR,
            "expires_at": TIME,
            "error_detail": STR,
            **VM_NETWORK,
            "address_source": {
                **ADDRESS_SOURCE,
                "nullable": True,
                "description": "who said what its address is (null while unknown)",
            },
            "created_by": {
                **NSTR,
                "description": "its creator (null: the fabric, or anyone "
                "while authentication was off)",
            },
            "hostname": {
                **NSTR,
                "description": "its DNS name: unique, never given to another VM",
            },
            "fqdn": {**NSTR, "description": "hostname.domain (hostnames.domain in the config)"},
            "tags": {
                "type": "object",
                "additionalProperties": STR,
                "description": "labels set by users (vmpooler's tags)",
            },
            "held_by": {**STR, "description": "who has it checked out"},
            "rebuilt_at": {
                **TIME,
                "description": "when it was rebuilt from its image on this host because "
                "its host died (its disk is new)",
            },
            "rebuilt_from": {**ID, "description": "the pmid of the host that died"},
        },
        ["vmid", "name", "instance_type", "pmid"],
    ),
    "VmType": obj(
        {"tid": ID, **RESOURCES, "name": STR},
        ["tid", "cpu", "ram", "disk"],
        description="ram in MB, disk in GB",
    ),
    "Resources": obj(RESOURCES, ["cpu", "ram", "disk"]),
    "Host": obj(
        {
            "pmid": ID,
            "capacity": ref("Resources"),
            "free": ref("Resources"),
            "vms": INT,
            "name": STR,
            "uri": STR,
            "status": STR,
            "reason": NSTR,
            "enabled": {"type": "boolean"},
            "arch": NSTR,
            "maintenance": {
                **NSTR,
                "description": "why it is in maintenance (null: in service); nothing is "
                "placed on it",
            },
            "maintenance_since": {**NSTR, "format": "date-time"},
            "drain": {"oneOf": [ref("Drain"), {"type": "null"}]},
        },
        ["pmid", "capacity", "free", "vms"],
        description="capacity after overcommit and reserved amounts; free is capacity "
        "minus what placed VMs claim",
    ),
    "Drain": obj(
        {
            "id": ID,
            "pmid": ID,
            "state": {
                "type": "string",
                "enum": ["running", "cancelling", "done", "cancelled", "interrupted"],
            },
            "total": INT,
            "moved": INT,
            "failed": {
                "type": "array",
                "items": obj({"vmid": ID, "reason": STR}, ["vmid", "reason"]),
                "description": "the VMs that stayed on the host (running) and why",
            },
            "requested_by": NSTR,
            "started_at": {**NSTR, "format": "date-time"},
            "finished_at": {**NSTR, "format": "date-time"},
        },
        ["id", "pmid", "state", "total", "moved", "failed"],
        description="moving every VM off a host: `moved` of `total`",
    ),
    "Migration": obj(
        {
            "id": ID,
            "vmid": ID,
            "from": ID,
            "pmid": {**ID, "description": "where the VM runs now"},
            "target": ID,
            "phase": {"type": "string", "enum": ["migrating", "done", "failed"]},
            "error": NSTR,
        },
        ["id", "vmid", "from", "pmid", "target", "phase"],
    ),
    "Image": obj({"id": ID, "name": STR}, ["id", "name"]),
    "Volume": obj(
        {
            "volumeid": ID,
            "name": STR,
            "size": {**INT, "description": "GB"},
            "status": {"type": "string", "description": "available, attached, error, ..."},
            "vmid": {**INT, "description": "only while attached"},
            "pmid": {"type": "integer", "nullable": True},
            "device": {"type": "string", "example": "/dev/vdb"},
            "error_detail": STR,
            "created_by": NSTR,
        },
        ["volumeid", "name", "size", "status"],
    ),
    "Checkout": obj(
        {
            "vmid": ID,
            "ip": NSTR,
            "ssh": ref("Ssh"),
            "reservation_id": RESERVATION_ID.schema(),
            "expires_at": {**TIME, "nullable": True},
            "pool": STR,
            **VM_NETWORK,
            "ssh_keys": {
                "type": "array",
                "items": STR,
                "description": "fingerprints of the keys put into the guest for you",
            },
            "hostname": {**STR, "description": "its DNS name (unique, never reused)"},
            "fqdn": {**STR, "description": "hostname.domain (hostnames.domain in the config)"},
        },
        ["vmid", "ip", "reservation_id", "expires_at"],
    ),
    "CheckoutMany": obj(
        {"vms": {"type": "array", "items": ref("Checkout")}},
        ["vms"],
        description="when count > 1 (all or nothing)",
    ),
    "Pool": obj(
        {
            "name": STR,
            "instance_type": INT,
            "image_id": INT,
            "size": INT,
            "max": INT,
            "lifetime": {"type": "number"},
            "lifetime_max": {"type": "number"},
            "cleanup": {"type": "string", "enum": ["tmp", "reset"]},
            "ready_check": {"type": "string", "enum": ["ssh", "none"]},
            "users": {
                "type": "array",
                "items": STR,
                "nullable": True,
                "description": "who may check out (and admins); null: every user",
            },
            "ready": INT,
            "in_use": INT,
            "cleaning": INT,
            "building": INT,
            "failed": INT,
            "unreachable": INT,
            "total": INT,
        },
        ["name", "ready", "in_use", "cleaning", "building", "failed"],
    ),
    "PoolDetail": {
        "allOf": [
            ref("Pool"),
            obj(
                {
                    "recent_failures": {
                        "type": "array",
                        "items": obj({"vmid": INT, "at": TIME, "reason": STR}),
                    }
                },
                ["recent_failures"],
            ),
        ]
    },
    "SeedCheckout": obj(
        {
            "IP": NSTR,
            "LoginID": STR,
            "LoginPassword": STR,
            "ReservationID": STR,
            "Port": {
                "type": "integer",
                "nullable": True,
                "description": "the forwarded port, 22 on a LAN, null with user networking",
            },
            "VMID": INT,
        },
        ["IP", "LoginID", "LoginPassword", "ReservationID"],
    ),
    "AuthFailure": obj(
        {"ok": {"type": "boolean", "enum": [False]}, "error": STR},
        ["ok", "error"],
        description='`{"ok": false, "error": "..."}`',
    ),
    "TokenIssued": obj(
        {
            "ok": {"type": "boolean", "enum": [True]},
            "token": {"type": "string", "description": "shown once; stored hashed"},
        },
        ["ok", "token"],
    ),
    "TokenInfo": {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean", "enum": [True]}},
        "additionalProperties": obj(
            {"user": STR, "created": TIME, "expires": TIME, "last_used": {**TIME, "nullable": True}}
        ),
        "description": '`{"ok": true, "<token>": {"user", "created", "expires", "last_used"}}`',
    },
    "TokenRevoked": obj({"ok": {"type": "boolean", "enum": [True]}}, ["ok"]),
    "Status": obj(
        {
            "ok": {"type": "boolean", "description": "false when any pool is empty"},
            "message": {"type": "string", "description": "names the empty pools"},
            "capacity": obj(
                {"current": INT, "total": INT, "percent": {"type": "number"}},
                ["current", "total", "percent"],
                description="ready VMs over what the pools keep ready",
            ),
            "queue": {
                "type": "object",
                "description": "per pool: VMs building, ready, in use and cleaning",
                "additionalProperties": obj(
                    {"building": INT, "ready": INT, "in_use": INT, "cleaning": INT}
                ),
            },
            "hosts": obj(
                {
                    "up": {"type": "array", "items": STR},
                    "down": {
                        "type": "array",
                        "items": obj({"name": STR, "reason": STR}, ["name", "reason"]),
                    },
                },
                ["up", "down"],
            ),
            "empty": {"type": "array", "items": STR, "description": "pools with no ready VM"},
            "servers": obj(
                {
                    "alive": {**INT, "description": "fabric servers sharing the registry"},
                    "this": {**STR, "description": "the id of the server answering"},
                },
                ["alive", "this"],
            ),
            "networks": {
                "type": "object",
                "description": "per network mode the hosts give their VMs",
                "additionalProperties": obj(
                    {
                        "kind": NETWORK_KIND,
                        "hosts": {"type": "array", "items": STR, "description": "labels"},
                        "vms": {**INT, "description": "VMs on it with an address"},
                        "waiting": {
                            **INT,
                            "description": "VMs building on a LAN, their address not seen yet",
                        },
                        "plan": {
                            "nullable": True,
                            **obj(
                                {"size": INT, "free": INT},
                                ["size", "free"],
                                description="the addresses the fabric gives (null: no plan)",
                            ),
                        },
                    },
                    ["kind", "hosts", "vms", "waiting", "plan"],
                ),
            },
        },
        ["ok", "capacity", "queue", "hosts", "empty", "servers", "networks"],
        description="the fabric at a glance (vmpooler's /status is the model)",
    ),
    "Cluster": obj(
        {
            "server": {**STR, "description": "the id of the server answering"},
            "heartbeat": {"type": "number", "description": "seconds between heartbeats"},
            "dead_after": {
                "type": "number",
                "description": "a server silent this long is dead; its work moves",
            },
            "servers": {
                "type": "array",
                "items": obj(
                    {
                        "id": STR,
                        "host": STR,
                        "pid": INT,
                        "started_at": STR,
                        "heartbeat_at": STR,
                        "alive": {"type": "boolean"},
                        "me": {"type": "boolean"},
                    },
                    ["id", "host", "pid", "started_at", "heartbeat_at", "alive", "me"],
                ),
            },
            "leases": {
                "type": "array",
                "items": obj(
                    {
                        "name": {**STR, "description": "pool-worker, schedules or discovery"},
                        "holder": {**NSTR, "description": "server id; null when free or expired"},
                        "expires_at": STR,
                        "fence": {**INT, "description": "grows at every change of holder"},
                    },
                    ["name", "holder", "expires_at", "fence"],
                ),
            },
        },
        ["server", "servers", "leases"],
        description="fabric servers sharing one registry, and who runs background work",
    ),
    "Durations": obj(
        {k: {"type": "number"} for k in ("average", "min", "max", "total")},
        description="seconds",
    ),
    "SummaryKind": obj(
        {
            "duration": ref("Durations"),
            "count": obj({k: {"type": "number"} for k in ("average", "min", "max", "total")}),
        },
        ["duration", "count"],
    ),
    "Summary": obj(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            **{k: ref("SummaryKind") for k in ("clone", "boot", "cleanup")},
            "daily": {
                "type": "array",
                "items": obj(
                    {
                        "date": {"type": "string", "format": "date"},
                        **{k: ref("SummaryKind") for k in ("clone", "boot", "cleanup")},
                    },
                    ["date"],
                ),
            },
        },
        ["from", "to", "clone", "boot", "cleanup", "daily"],
        description="per day (UTC): clone (create), boot and cleanup durations and counts",
    ),
    "Event": obj(
        {
            "id": ID,
            "at": {"type": "string", "format": "date-time"},
            "kind": {**STR, "description": "api.request for the audit event of a request"},
            "actor": {**NSTR, "description": "a user, anonymous or system (null: before 0008)"},
            "operation": {**NSTR, "description": "an API request's METHOD /path (OpenAPI's)"},
            "object": {
                **obj({"type": STR, "id": NSTR}, ["type", "id"]),
                "nullable": True,
                "description": "what it was about: vm, volume, host, pool, schedule, key, "
                "token (never its value), reservation...",
            },
            "outcome": {**NSTR, "enum": ["ok", "refused", "failed", None]},
            "status": {**INT, "nullable": True, "description": "an API request's HTTP status"},
            "owner": {**NSTR, "description": "whose the object was then (who may read it)"},
            "vmid": {**INT, "nullable": True},
            "pmid": {**INT, "nullable": True},
            "duration": {"type": "number", "nullable": True, "description": "seconds"},
            "detail": {
                "type": "object",
                "nullable": True,
                "description": "what else: the error message of a refused or failed request",
            },
        },
        ["id", "at", "kind", "actor", "operation", "object", "outcome", "status"],
        description="one thing that happened: who did what, on which object, when, how it ended",
    ),
    "Events": obj(
        {
            "events": {"type": "array", "items": ref("Event"), "description": "newest first"},
            "before": {
                **INT,
                "nullable": True,
                "description": "pass as before= for the next older page (null: no more)",
            },
            "after": {
                **INT,
                "nullable": True,
                "description": "the newest id of this page: pass as after= for newer events",
            },
        },
        ["events", "before", "after"],
    ),
    "ScheduleInput": {
        **fields(schedules.create_schedule),
        "description": "what to add (instance_type and image_id, or pool) and when (start "
        "and end, or cron and duration_minutes); other fields are refused",
        "additionalProperties": False,
    },
    "Schedule": obj(
        {
            "id": ID,
            "name": STR,
            "instance_type": INT,
            "image_id": INT,
            "pool": STR,
            "count": INT,
            "start": {**TIME, "nullable": True},
            "end": {**TIME, "nullable": True},
            "cron": STR,
            "duration_minutes": INT,
            "state": {"type": "string", "enum": ["pending", "active", "done"]},
            "skipped": {"type": "boolean"},
            "cancelled": {"type": "boolean"},
            "next_start": {**TIME, "nullable": True},
            "progress": {
                "nullable": True,
                **obj(
                    {
                        "window_start": TIME,
                        "window_end": TIME,
                        "phase": STR,
                        "wanted": INT,
                        "made": INT,
                        "last_error": NSTR,
                        "vmids": {"type": "array", "items": INT},
                    }
                ),
            },
            "created_by": NSTR,
        },
        ["id", "name", "count", "state"],
    ),
    "IdFailure": zero("id"),
    "Quota": obj(
        {
            "user": {**NSTR, "description": "null when authentication is off"},
            "role": {"type": "string", "enum": ["admin", "user", "reader"]},
            "limits": obj(
                {k: {"type": "integer", "nullable": True} for k in QUOTA_KEYS},
                list(QUOTA_KEYS),
                description="null: no limit",
            ),
            "usage": {
                "nullable": True,
                **obj({k: INT for k in QUOTA_KEYS}, list(QUOTA_KEYS)),
                "description": "null when authentication is off (no one has a quota)",
            },
            "units": obj({"ram": STR, "disk": STR}),
        },
        ["user", "role", "limits", "usage"],
        description="vms: VMs you created; checked_out: pool VMs you hold; vcpu, ram and "
        "disk: of both together, disk with your volumes; volumes: volumes you created",
    ),
    "SshKey": obj(
        {
            "id": ID,
            "name": STR,
            "fingerprint": {**STR, "example": "SHA256:..."},
            "key": {**STR, "description": "TYPE BASE64, as put into guests"},
            "created": TIME,
        },
        ["id", "name", "fingerprint", "key"],
    ),
    "Network": obj(
        {
            "pmid": ID,
            "host": {**STR, "description": "the host's label"},
            "name": {**STR, "example": "bridge:br0", "description": "the network mode"},
            "kind": NETWORK_KIND,
            "bridge": {**NSTR, "description": "the host bridge its VMs are plugged into"},
            "network": {**NSTR, "description": "the libvirt network's name"},
            "subnet": {**NSTR, "example": "10.251.1.0/24"},
            "gateway": NSTR,
            "plan": {**NSTR, "example": "10.251.1.20-10.251.1.99"},
            "vms_use_it": {
                "type": "boolean",
                "description": "the mode the host gives its new VMs",
            },
            "addresses": {
                "type": "array",
                "items": obj(
                    {
                        "vmid": ID,
                        "mac": STR,
                        "ip": NSTR,
                        "source": {**ADDRESS_SOURCE, "nullable": True},
                        "planned": {
                            **NSTR,
                            "description": "the address the plan gave it",
                        },
                    },
                    ["vmid", "mac", "ip", "source", "planned"],
                ),
                "description": "the host's VMs on this network",
            },
        },
        [
            "pmid",
            "host",
            "name",
            "kind",
            "bridge",
            "network",
            "subnet",
            "gateway",
            "plan",
            "vms_use_it",
            "addresses",
        ],
        description="a network of a host: the mode it gives its VMs, a libvirt network "
        "discovered there, or one its VMs are still on",
    ),
    "Request": obj(
        {
            "request_id": STR,
            "number": {**INT, "description": "its place in arrival order"},
            "state": {"type": "string", "enum": ["pending", "ready", "failed", "cancelled"]},
            "requested_by": NSTR,
            "pools": {"type": "object", "additionalProperties": INT},
            "progress": {
                "type": "object",
                "additionalProperties": obj(
                    {"wanted": INT, "ready": INT, "pending": INT}, ["wanted", "ready", "pending"]
                ),
                "description": "per pool: VMs wanted, set aside for it (ready), still pending",
            },
            "hours": {"type": "number", "nullable": True},
            "created_at": TIME,
            "deadline": TIME,
            "finished_at": {**TIME, "nullable": True},
            "age": {**INT, "description": "seconds since it was made"},
            "message": {
                **NSTR,
                "description": "why it failed, who cancelled it, or what it waits for",
            },
            "vms": {
                "type": "array",
                "description": "when ready: the VMs it still holds",
                "items": obj(
                    {
                        "vmid": ID,
                        "pool": STR,
                        "hostname": STR,
                        "fqdn": NSTR,
                        "ip": NSTR,
                        "expires_at": {**TIME, "nullable": True},
                        "ssh": ref("Ssh"),
                    },
                    ["vmid", "pool", "hostname"],
                ),
            },
        },
        ["request_id", "number", "state", "pools", "progress", "deadline"],
    ),
}
