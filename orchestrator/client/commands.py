"""The client's commands: each calls the fabric and shows the answer as a table or a line."""

from __future__ import annotations

import argparse
import getpass
import time
from pathlib import Path
from typing import Any

from .api import Api, ClientError
from .render import Out, cell, fields, table


def _pair(res: dict[str, Any], key: str) -> str:
    free = (res.get("free") or {}).get(key)
    total = (res.get("capacity") or {}).get(key)
    return f"{cell(free)}/{cell(total)}"


def _query_each(
    api: Api, list_path: str, ids: str, query_path: str, id_name: str, **filters: Any
) -> list[Any]:
    """The answer to ``query_path`` for each id that ``list_path`` (with ``filters``)
    lists under ``ids``."""
    found = []
    for ident in api.get(list_path, **filters)[ids]:
        try:
            found.append(api.get(query_path, **{id_name: ident}))
        except ClientError as e:
            if e.code != 1:  # gone since the list: skip it; anything else is a failure
                raise
    return found


def cmd_hosts(api: Api, out: Out, args: argparse.Namespace) -> None:
    hosts = [api.get("/pm/query", pmid=pmid) for pmid in api.get("/pm/list")["pmids"]]
    out.show(
        {"hosts": hosts},
        lambda: (
            table(
                ["PMID", "NAME", "STATUS", "CPU", "RAM(MB)", "DISK(GB)", "VMS"],
                [
                    [
                        h["pmid"],
                        h.get("name"),
                        _host_status(h),
                        _pair(h, "cpu"),
                        _pair(h, "ram"),
                        _pair(h, "disk"),
                        h.get("vms"),
                    ]
                    for h in hosts
                ],
            )
            + "\n(free/total)"
        ),
    )


def _ids(values: list[int]) -> str:
    return ", ".join(map(str, values)) if values else "none"


def cmd_reload_hosts(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/pm/reload")
    out.show(
        got,
        lambda: (
            f"reloaded {got.get('file')}: added pmids {_ids(got['added'])}, changed "
            f"{_ids(got['changed'])}, removed {_ids(got['removed'])}"
        ),
    )


def cmd_evacuate(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post(f"/pm/{args.pmid}/evacuate")

    def text() -> str:
        lines = [
            f"evacuated pmid {args.pmid}: rebuilt vmids {_ids(got['rebuilt'])}, replaced "
            f"(pool) {_ids(got['replaced'])}, volumes lost {_ids(got['volumes_lost'])}"
        ]
        lines += [f"vmid {f['vmid']} failed: {f['error']}" for f in got.get("failed", [])]
        if got.get("busy"):
            lines.append(f"busy (try again): vmids {_ids(got['busy'])}")
        return "\n".join(lines)

    out.show(got, text)


def _drain_line(d: dict[str, Any]) -> str:
    """``draining: 1 of 3 moved`` / ``drain done: 3 of 3 moved, 1 stayed``."""
    head = "draining" if d["state"] == "running" else f"drain {d['state']}"
    line = f"{head}: {d['moved']} of {d['total']} moved"
    if d.get("failed"):
        line += f", {len(d['failed'])} stayed"
    return line


def _host_status(h: dict[str, Any]) -> str:
    text = str(h.get("status"))
    if h.get("maintenance"):
        text += f", maintenance: {h['maintenance']}"
    drain = h.get("drain")
    if drain and drain["state"] in ("running", "cancelling"):
        text += f", {_drain_line(drain)}"
    return text


def cmd_host(api: Api, out: Out, args: argparse.Namespace) -> None:
    """Day-two operations on one host (admins): maintenance, resume, drain."""
    action, pmid = args.host_action, args.pmid
    if action == "maintenance":
        got = api.post(f"/pm/{pmid}/maintenance", reason=args.reason)
        out.show(got, lambda: f"pmid {pmid} in maintenance: {got['maintenance']}")
    elif action == "resume":
        got = api.call("DELETE", f"/pm/{pmid}/maintenance")
        out.show(got, lambda: f"pmid {pmid} is in service")
    elif action == "drain" and args.cancel:
        got = api.call("DELETE", f"/pm/{pmid}/drain")
        out.show(got, lambda: f"pmid {pmid}: drain {got['id']} {got['state']}")
    elif action == "drain":
        got = api.post(f"/pm/{pmid}/drain")
        out.show(got, lambda: f"pmid {pmid}: drain {got['id']} started ({got['total']} VMs)")
    else:  # drain-status
        got = api.get(f"/pm/{pmid}/drain")

        def text() -> str:
            lines = [f"pmid {pmid}: {_drain_line(got)}"]
            lines += [f"  vmid {f['vmid']} stayed: {f['reason']}" for f in got["failed"]]
            return "\n".join(lines)

        out.show(got, text)


def cmd_migrate(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post(f"/vm/{args.vmid}/migrate", pmid=args.to)
    out.show(got, lambda: f"vmid {args.vmid} moved from pmid {got['from']} to pmid {got['pmid']}")


def cmd_types(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/vm/types")
    out.show(
        got,
        lambda: table(
            ["TID", "NAME", "CPU", "RAM(MB)", "DISK(GB)"],
            [[t["tid"], t.get("name"), t["cpu"], t["ram"], t["disk"]] for t in got["types"]],
        ),
    )


def cmd_images(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/image/list")
    out.show(got, lambda: table(["ID", "NAME"], [[i["id"], i["name"]] for i in got["images"]]))


def cmd_create(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/create", name=args.name, instance_type=args.type, image_id=args.image)
    out.show(got, lambda: f"created vmid {got['vmid']}")


def cmd_query(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/vm/query", vmid=args.vmid)
    out.show(got, lambda: fields(got))


def cmd_tag(api: Api, out: Out, args: argparse.Namespace) -> None:
    """``tag VMID k=v ...``: merge tags into the VM's (``k=`` removes k)."""
    tags: dict[str, str] = {}
    for given in args.tags:
        key, eq, value = given.partition("=")
        if not eq or not key:
            raise ClientError(f"a tag is KEY=VALUE (KEY= removes it), got {given!r}", 1)
        tags[key] = value
    got = api.post("/vm/tags", vmid=args.vmid, tags=tags)
    out.show(got, lambda: f"vmid {args.vmid} tags: {_tags(got.get('tags')) or '(none)'}")


def cmd_destroy(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/destroy", vmid=args.vmid, force=1 if args.force else None)
    out.show(got, lambda: f"destroyed vmid {args.vmid}")


def _power_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"force": 1 if getattr(args, "force", False) else None, "timeout": args.timeout_s}


def cmd_stop(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/stop", vmid=args.vmid, **_power_args(args))
    out.show(got, lambda: f"stopped vmid {args.vmid} ({got.get('how')})")


def cmd_start(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/start", vmid=args.vmid)
    out.show(got, lambda: f"started vmid {args.vmid}")


def cmd_reboot(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/reboot", vmid=args.vmid, **_power_args(args))
    out.show(got, lambda: f"rebooted vmid {args.vmid} (went off: {got.get('how')})")


def cmd_resize(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/resize", vmid=args.vmid, instance_type=args.type, **_power_args(args))
    out.show(
        got,
        lambda: (
            f"resized vmid {args.vmid} to instance_type {got['instance_type']} "
            f"({got['cpu']} vCPUs, {got['ram']} MB RAM, {got['disk']} GB disk)"
        ),
    )


def cmd_console(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/vm/console", vmid=args.vmid, kb=args.kb)
    empty = f"(no console output: {got.get('note') or 'empty'})"
    out.show(got, lambda: got.get("console") or empty)


VM_COLUMNS = [
    "VMID",
    "NAME",
    "HOSTNAME",
    "TYPE",
    "PMID",
    "STATUS",
    "IP",
    "MAC",
    "NETWORK",
    "POOL",
    "EXPIRES",
    "TAGS",
]


def _tags(tags: dict[str, str] | None) -> str | None:
    """``k=v,k2=v2`` (sorted by key); None for no tags."""
    return ",".join(f"{k}={v}" for k, v in sorted((tags or {}).items())) or None


def _vm_row(v: dict[str, Any]) -> list[Any]:
    return [
        v["vmid"],
        v.get("name"),
        v.get("hostname"),
        v.get("instance_type"),
        v.get("pmid") or None,
        v.get("status"),
        v.get("ip"),
        v.get("mac"),
        v.get("network"),
        v.get("pool"),
        v.get("expires_at"),
        _tags(v.get("tags")),
    ]


def cmd_vms(api: Api, out: Out, args: argparse.Namespace) -> None:
    wanted = getattr(args, "tag", None) or None
    vms = _query_each(api, "/vm/list", "vmids", "/vm/query", "vmid", tag=wanted)
    out.show({"vms": vms}, lambda: table(VM_COLUMNS, [_vm_row(v) for v in vms]))


CHECKOUT_COLUMNS = ["VMID", "IP", "MAC", "NETWORK", "POOL", "EXPIRES", "RESERVATION", "SSH"]


def ssh_command(ssh: dict[str, Any] | None) -> str | None:
    """``ssh root@IP``, with ``-p PORT`` only when the port is not 22."""
    if not ssh:
        return None
    port = "" if ssh.get("port") == 22 else f"-p {ssh['port']} "
    return f"ssh {port}{ssh['user']}@{ssh['host']}"


def _checkout_row(c: dict[str, Any]) -> list[Any]:
    return [
        c["vmid"],
        c.get("ip"),
        c.get("mac"),
        c.get("network"),
        c.get("pool"),
        c.get("expires_at"),
        c["reservation_id"],
        ssh_command(c.get("ssh")),
    ]


def cmd_checkout(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post(
        "/vm/checkout",
        pool=args.pool,
        instance_type=args.type,
        image_id=args.image,
        count=args.count,
        lifetime=args.hours,
        ssh_key=_read_key(args.ssh_key) if args.ssh_key else None,
    )
    rows = got["vms"] if "vms" in got else [got]
    out.show(
        got,
        lambda: (
            table(CHECKOUT_COLUMNS, [_checkout_row(c) for c in rows])
            + "\n(keep the reservation id: it is shown once and needed to check in or extend)"
        ),
    )


def cmd_checkin(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/checkin", vmid=args.vmid, reservation_id=args.reservation)
    out.show(got, lambda: f"checked in vmid {args.vmid}")


def cmd_extend(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/extend", vmid=args.vmid, reservation_id=args.reservation, hours=args.hours)
    out.show(got, lambda: f"vmid {args.vmid} is reserved until {got.get('expires_at')}")


NETWORK_COLUMNS = ["HOST", "NETWORK", "KIND", "SUBNET", "PLAN", "NEW VMS", "ADDRESSES IN USE"]


def _address(a: dict[str, Any]) -> str:
    """One VM's address on a network: ``IP (vm N)``; the plan's, if not seen yet."""
    if a.get("ip"):
        return f"{a['ip']} (vm {a['vmid']})"
    if a.get("planned"):
        return f"{a['planned']} (vm {a['vmid']}, planned)"
    return f"? (vm {a['vmid']})"


def _network_row(n: dict[str, Any]) -> list[Any]:
    used = ", ".join(_address(a) for a in n.get("addresses") or [])
    return [
        n.get("host"),
        n.get("name"),
        n.get("kind"),
        n.get("subnet"),
        n.get("plan"),
        n.get("vms_use_it"),
        used or None,
    ]


def cmd_networks(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/networks", pmid=args.pmid)
    rows = got["networks"]
    out.show(
        got,
        lambda: (
            table(NETWORK_COLUMNS, [_network_row(n) for n in rows])
            + "\n(NEW VMS: the network the host gives the VMs it makes)"
            if rows
            else "no networks"
        ),
    )


def cmd_pools(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/pool/list")
    cols = ["name", "instance_type", "image_id", "size", "max", "ready", "in_use", "cleaning"]
    cols += ["building", "failed"]
    out.show(
        got,
        lambda: table(
            [c.upper() if c != "instance_type" else "TYPE" for c in cols],
            [[p.get(c) for c in cols] for p in got["pools"]],
        ),
    )


VOLUME_COLUMNS = ["VOLUMEID", "NAME", "SIZE(GB)", "STATUS", "VMID", "PMID", "DEVICE"]


def _volume_row(v: dict[str, Any]) -> list[Any]:
    return [
        v["volumeid"],
        v.get("name"),
        v.get("size"),
        v.get("status"),
        v.get("vmid"),
        v.get("pmid"),
        v.get("device"),
    ]


def cmd_volume(api: Api, out: Out, args: argparse.Namespace) -> None:
    action = args.volume_action
    if action == "create":
        got = api.post("/volume/create", name=args.name, size=args.size)
        out.show(got, lambda: f"created volumeid {got['volumeid']}")
    elif action == "query":
        got = api.get("/volume/query", volumeid=args.volumeid)
        out.show(got, lambda: fields(got))
    elif action == "attach":
        got = api.post("/volume/attach", volumeid=args.volumeid, vmid=args.vmid)
        out.show(got, lambda: f"attached volumeid {args.volumeid} to vmid {args.vmid}")
    elif action == "detach":
        got = api.post("/volume/detach", volumeid=args.volumeid)
        out.show(got, lambda: f"detached volumeid {args.volumeid}")
    elif action == "destroy":
        got = api.post("/volume/destroy", volumeid=args.volumeid)
        out.show(got, lambda: f"destroyed volumeid {args.volumeid}")
    else:  # list
        vols = _query_each(api, "/volume/list", "volumeids", "/volume/query", "volumeid")
        out.show({"volumes": vols}, lambda: table(VOLUME_COLUMNS, [_volume_row(v) for v in vols]))


SCHEDULE_COLUMNS = ["ID", "NAME", "WHAT", "COUNT", "WHEN", "STATE", "NEXT START", "MADE"]


def _schedule_row(r: dict[str, Any]) -> list[Any]:
    if r.get("pool"):
        what = f"pool {r['pool']}"
    else:
        what = f"type {r.get('instance_type')} image {r.get('image_id')}"
    if r.get("cron"):
        when = f"cron '{r['cron']}' for {r.get('duration_minutes')} min"
    else:
        when = f"{cell(r.get('start'))} to {cell(r.get('end'))}"
    progress = r.get("progress") or {}
    made = f"{progress['made']}/{progress['wanted']}" if "made" in progress else None
    return [
        r.get("id"),
        r.get("name"),
        what,
        r.get("count"),
        when,
        r.get("state"),
        r.get("next_start"),
        made,
    ]


def cmd_schedules(api: Api, out: Out, args: argparse.Namespace) -> None:
    action = args.schedules_action
    if action == "create":
        got = api.post(
            "/schedules",
            name=args.name,
            instance_type=args.type,
            image_id=args.image,
            pool=args.pool,
            count=args.count,
            start=args.start,
            end=args.end,
            cron=args.cron,
            duration_minutes=args.duration,
        )
        out.show(got, lambda: f"created schedule {got.get('id')}")
    elif action == "show":
        got = api.get(f"/schedules/{args.id}")
        out.show(got, lambda: fields(got))
    elif action == "delete":
        got = api.call(
            "DELETE", f"/schedules/{args.id}", params={"force": 1 if args.force else None}
        )
        out.show(got, lambda: f"deleted schedule {args.id}")
    else:  # list
        got = api.get("/schedules")
        rows = got["schedules"]
        out.show(
            got,
            lambda: (
                table(SCHEDULE_COLUMNS, [_schedule_row(r) for r in rows])
                if rows
                else "no schedules"
            ),
        )


REQUEST_COLUMNS = ["REQUEST", "REQUESTER", "POOLS", "PROGRESS", "STATE", "AGE(S)", "MESSAGE"]


def _request_row(r: dict[str, Any]) -> list[Any]:
    pools = ", ".join(f"{n} {p}" for p, n in r.get("pools", {}).items())
    progress = ", ".join(
        f"{p}: {g['ready']}/{g['wanted']}" for p, g in (r.get("progress") or {}).items()
    )
    return [
        r.get("request_id"),
        r.get("requested_by"),
        pools,
        progress,
        r.get("state"),
        r.get("age"),
        r.get("message"),
    ]


def _request_text(r: dict[str, Any]) -> str:
    lines = [table(REQUEST_COLUMNS, [_request_row(r)])]
    vms = r.get("vms") or []
    if vms:
        lines.append(
            table(
                ["VMID", "POOL", "HOSTNAME", "IP", "EXPIRES"],
                [
                    [
                        v["vmid"],
                        v.get("pool"),
                        v.get("fqdn") or v.get("hostname"),
                        v.get("ip"),
                        v.get("expires_at"),
                    ]
                    for v in vms
                ],  # fmt: skip
            )
        )
    return "\n".join(lines)


def _wanted(specs: list[str]) -> dict[str, int]:
    """``POOL=COUNT`` (or ``POOL`` for one) arguments as ``{pool: count}``."""
    out: dict[str, int] = {}
    for spec in specs:
        name, _, count = spec.partition("=")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ClientError(f"{spec!r}: expected POOL=COUNT, e.g. small=2", 2) from None
        out[name] = out.get(name, 0) + n
    return out


def cmd_request(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/requests", pools=_wanted(args.pools), hours=args.hours, request_id=args.id)
    rid = got["request_id"]
    if args.wait:
        while got.get("state") == "pending":
            time.sleep(args.poll)
            got = api.get(f"/requests/{rid}")
    out.show(got, lambda: _request_text(got))
    if got.get("state") in ("failed", "cancelled"):
        raise ClientError(f"request {rid} {got['state']}: {got.get('message')}", 1)


def cmd_requests(api: Api, out: Out, args: argparse.Namespace) -> None:
    if args.id:
        got = api.get(f"/requests/{args.id}")
        out.show(got, lambda: _request_text(got))
        return
    got = api.get("/requests", state=args.state)
    rows = got["requests"]
    out.show(
        got,
        lambda: table(REQUEST_COLUMNS, [_request_row(r) for r in rows]) if rows else "no requests",
    )


def cmd_request_cancel(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.call("DELETE", f"/requests/{args.id}")
    out.show(got, lambda: f"request {args.id} is {got.get('state')}")


def _read_key(path: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ClientError(f"cannot read the key file {path}: {e}", 1) from None


QUOTA_COLUMNS = ["LIMIT", "IN USE", "OF"]


def cmd_quota(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get("/quota", user=args.user)
    usage, limits = got.get("usage") or {}, got.get("limits") or {}

    def render() -> str:
        if got.get("user") is None:
            return "authentication is off: no one has a quota"
        rows = [[k, usage.get(k), "no limit" if v is None else v] for k, v in limits.items()]
        return f"{got['user']} ({got['role']})\n" + table(QUOTA_COLUMNS, rows)

    out.show(got, render)


KEY_COLUMNS = ["ID", "NAME", "FINGERPRINT", "ADDED"]


def cmd_keys(api: Api, out: Out, args: argparse.Namespace) -> None:
    action = args.keys_action
    if action == "add":
        got = api.post("/keys", key=_read_key(args.file), name=args.name)
        out.show(got, lambda: f"added key {got['id']} ({got['fingerprint']})")
    elif action == "remove":
        got = api.call("DELETE", f"/keys/{args.id}")
        out.show(got, lambda: f"removed key {args.id}")
    else:  # list
        got = api.get("/keys")
        rows = [[k["id"], k["name"], k["fingerprint"], k.get("created")] for k in got["keys"]]
        out.show(got, lambda: table(KEY_COLUMNS, rows) if rows else "no keys")


def cmd_token(api: Api, out: Out, args: argparse.Namespace) -> None:
    action = args.token_action
    if action == "create":
        try:
            password = getpass.getpass(f"password for {args.user}: ")
        except (EOFError, KeyboardInterrupt):
            raise ClientError("no password given", 1) from None
        got = api.call("POST", "/token", auth=(args.user, password))
        out.show(got, lambda: got["token"])
    elif action == "show":
        got = api.get(f"/token/{args.token}")
        info = got.get(args.token, got) if isinstance(got, dict) else got
        out.show(got, lambda: fields(info))
    else:  # revoke
        got = api.call("DELETE", f"/token/{args.token}")
        out.show(got, lambda: "revoked")


EVENT_COLUMNS = ["ID", "AT", "WHO", "WHAT", "OBJECT", "OUTCOME", "DETAIL"]


def _event_row(e: dict[str, Any]) -> list[Any]:
    obj = e.get("object") or {}
    target = f"{obj.get('type')}:{obj['id']}" if obj.get("id") else obj.get("type")
    outcome = e.get("outcome")
    if outcome and e.get("status"):
        outcome = f"{outcome} {e['status']}"
    detail = e.get("detail") or {}
    said = detail.get("error") if isinstance(detail, dict) and "error" in detail else detail
    return [e["id"], e["at"], e.get("actor"), e.get("operation") or e["kind"], target, outcome,
            said or None]  # fmt: skip


def cmd_events(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.get(
        "/events",
        vmid=args.vm,
        pmid=args.host,
        volumeid=args.volume,
        object=args.object,
        user=args.user,
        kind=args.kind,
        op=args.op,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
        limit=args.limit,
        before=args.before,
        after=args.after,
    )
    rows = [_event_row(e) for e in got["events"]]

    def render() -> str:
        if not rows:
            return "no events"
        text = table(EVENT_COLUMNS, rows)
        if got.get("before") is not None:
            text += f"\n(older: --before {got['before']})"
        return text

    out.show(got, render)
