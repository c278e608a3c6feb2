"""The command-line client: ``./script client [--url URL] [--token T] [--json] COMMAND ...``.

Readable aligned tables by default; ``--json`` prints the server's JSON as is.
A failure prints the server's ``error`` message to stderr and exits 1 for a
4xx answer, 2 when the fabric is unreachable or answers 5xx. Never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:5000"
TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name, not a secret


class ClientError(Exception):
    """A failed call: ``message`` for stderr, ``code`` for the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Api:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers[TOKEN_HEADER] = token
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        body = None if data is None else {k: v for k, v in data.items() if v is not None}
        try:
            resp = self.session.request(
                method,
                self.url + path,
                params=params or None,
                json=body,
                auth=auth,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise ClientError(f"{self.url} did not answer within {self.timeout:g} s", 2) from None
        except requests.RequestException as e:
            raise ClientError(f"cannot reach the fabric at {self.url}: {_reason(e)}", 2) from None
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            if not message:
                message = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
            retry = resp.headers.get("Retry-After")
            if retry:
                message += f" (retry after {retry} s)"
            raise ClientError(message, 2 if resp.status_code >= 500 else 1)
        if payload is None:
            if resp.headers.get("Content-Type", "").startswith("text/"):
                return resp.text
            raise ClientError(f"{method} {path}: the answer is not JSON", 2)
        return payload

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, **data: Any) -> Any:
        return self.call("POST", path, data=data)


def _reason(e: Exception) -> str:
    """The useful part of a connection error ("Connection refused"), without urllib3's noise."""
    text = str(e)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    return text or type(e).__name__


# -- output --------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def fields(obj: dict[str, Any]) -> str:
    """One object as aligned ``key  value`` lines (nested objects flattened with dots)."""
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append((prefix, value))

    walk("", obj)
    width = max((len(k) for k, _ in flat), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}".rstrip() for k, v in flat)


class Out:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def show(self, raw: Any, render: Callable[[], str] | None = None) -> None:
        if self.as_json or render is None:
            print(json.dumps(raw, indent=2) if not isinstance(raw, str) else raw.rstrip("\n"))
        else:
            text = render()
            if text:
                print(text)


# -- commands ------------------------------------------------------------------


def _pair(res: dict[str, Any], key: str) -> str:
    free = (res.get("free") or {}).get(key)
    total = (res.get("capacity") or {}).get(key)
    return f"{_cell(free)}/{_cell(total)}"


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
                        h.get("status"),
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


def cmd_destroy(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post("/vm/destroy", vmid=args.vmid, force=1 if args.force else None)
    out.show(got, lambda: f"destroyed vmid {args.vmid}")


VM_COLUMNS = ["VMID", "NAME", "TYPE", "PMID", "STATUS", "IP", "POOL", "EXPIRES"]


def _vm_row(v: dict[str, Any]) -> list[Any]:
    return [
        v["vmid"],
        v.get("name"),
        v.get("instance_type"),
        v.get("pmid") or None,
        v.get("status"),
        v.get("ip"),
        v.get("pool"),
        v.get("expires_at"),
    ]


def cmd_vms(api: Api, out: Out, args: argparse.Namespace) -> None:
    vms = []
    for vmid in api.get("/vm/list")["vmids"]:
        try:
            vms.append(api.get("/vm/query", vmid=vmid))
        except ClientError as e:
            if e.code != 1:  # gone since the list: skip it; anything else is a failure
                raise
    out.show({"vms": vms}, lambda: table(VM_COLUMNS, [_vm_row(v) for v in vms]))


CHECKOUT_COLUMNS = ["VMID", "IP", "SSH", "POOL", "EXPIRES", "RESERVATION"]


def _checkout_row(c: dict[str, Any]) -> list[Any]:
    ssh = c.get("ssh")
    where = f"{ssh['user']}@{ssh['host']}:{ssh['port']}" if ssh else None
    return [c["vmid"], c.get("ip"), where, c.get("pool"), c.get("expires_at"), c["reservation_id"]]


def cmd_checkout(api: Api, out: Out, args: argparse.Namespace) -> None:
    got = api.post(
        "/vm/checkout",
        pool=args.pool,
        instance_type=args.type,
        image_id=args.image,
        count=args.count,
        lifetime=args.hours,
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
        vols = []
        for vid in api.get("/volume/list")["volumeids"]:
            try:
                vols.append(api.get("/volume/query", volumeid=vid))
            except ClientError as e:
                if e.code != 1:
                    raise
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
        when = f"{_cell(r.get('start'))} to {_cell(r.get('end'))}"
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


# -- arguments -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a ClientError (exit 2) rather than SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ClientError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}", 2)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of hours")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="script client",
        description="Talk to a running fabric. Tables by default, --json for the raw answers.",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("FABRIC_URL", DEFAULT_URL),
        help=f"the fabric's base URL (env FABRIC_URL; default {DEFAULT_URL})",
    )
    p.add_argument("--token", help="an API token for X-Auth-Token (env FABRIC_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the server's JSON as is")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.set_defaults(func=func)
        return c

    add("hosts", cmd_hosts, "physical machines with free/total capacity")
    add("types", cmd_types, "VM types")
    add("images", cmd_images, "images")
    c = add("create", cmd_create, "create a VM")
    c.add_argument("name")
    c.add_argument("type", type=_positive, help="instance type (tid)")
    c.add_argument("image", type=_positive, help="image id")
    c = add("query", cmd_query, "describe a VM")
    c.add_argument("vmid", type=_positive)
    c = add("destroy", cmd_destroy, "destroy a VM")
    c.add_argument("vmid", type=_positive)
    c.add_argument("--force", action="store_true", help="even if it is checked out")
    add("vms", cmd_vms, "every VM")
    c = add("checkout", cmd_checkout, "check out ready VMs from a pool")
    c.add_argument("--pool")
    c.add_argument("--type", type=_positive, help="instance type (tid)")
    c.add_argument("--image", type=_positive, help="image id")
    c.add_argument("--count", type=_positive, help="how many (all or nothing)")
    c.add_argument("--hours", type=_hours, help="how long (the pool's lifetime by default)")
    c = add("checkin", cmd_checkin, "give a checked-out VM back")
    c.add_argument("vmid", type=_positive)
    c.add_argument("reservation")
    c = add("extend", cmd_extend, "extend a reservation")
    c.add_argument("vmid", type=_positive)
    c.add_argument("reservation")
    c.add_argument("hours", type=_hours)
    add("pools", cmd_pools, "pools and their levels")

    v = add("volume", cmd_volume, "block storage volumes")
    vs = v.add_subparsers(dest="volume_action", metavar="ACTION", parser_class=_Parser)
    vs.required = True
    c = vs.add_parser("create", help="create a volume")
    c.add_argument("name")
    c.add_argument("size", type=_positive, help="GB")
    for action, help_ in (
        ("query", "describe a volume"),
        ("detach", "detach a volume"),
        ("destroy", "destroy a volume"),
    ):
        vs.add_parser(action, help=help_).add_argument("volumeid", type=_positive)
    c = vs.add_parser("attach", help="attach a volume to a VM")
    c.add_argument("volumeid", type=_positive)
    c.add_argument("vmid", type=_positive)
    vs.add_parser("list", help="every volume")

    s = add("schedules", cmd_schedules, "scheduled capacity")
    ss = s.add_subparsers(dest="schedules_action", metavar="ACTION", parser_class=_Parser)
    ss.required = True
    ss.add_parser("list", help="every schedule")
    c = ss.add_parser(
        "create",
        help="create a schedule",
        description="Extra VMs (--type and --image) or extra ready VMs in a pool (--pool), "
        "--count of them, in a one-off window (--start and --end, ISO 8601, UTC) or a "
        "recurring one (--cron, 5 fields in UTC, and --duration in minutes).",
    )
    c.add_argument("--name")
    c.add_argument("--type", type=_positive, help="instance type (tid)")
    c.add_argument("--image", type=_positive, help="image id")
    c.add_argument("--pool", help="a pool to grow instead")
    c.add_argument("--count", type=_positive, required=True, help="how many extra VMs")
    c.add_argument("--start", help="a one-off window's start, e.g. 2026-05-04T08:00:00Z")
    c.add_argument("--end", help="a one-off window's end")
    c.add_argument("--cron", help="a recurring window's start, e.g. '0 8 * * 1-5'")
    c.add_argument("--duration", type=_positive, help="a recurring window's length (minutes)")
    ss.add_parser("show", help="describe a schedule").add_argument("id", type=_positive)
    c = ss.add_parser("delete", help="delete a schedule")
    c.add_argument("id", type=_positive)
    c.add_argument("--force", action="store_true", help="even while it is active")

    t = add("token", cmd_token, "API tokens")
    ts = t.add_subparsers(dest="token_action", metavar="ACTION", parser_class=_Parser)
    ts.required = True
    ts.add_parser("create", help="issue a token (asks for the password)").add_argument("user")
    ts.add_parser("show", help="describe a token").add_argument("token")
    ts.add_parser("revoke", help="revoke a token").add_argument("token")
    return p


GLOBAL_VALUE_OPTIONS = ("--url", "--token", "--timeout")
# Commands whose arguments are all positional, and may be secrets that start with "-"
# (reservation ids and tokens are URL-safe base64): "-" there is not an option.
SECRET_COMMANDS = {"checkin": 0, "extend": 0, "token": 1}


def protect_secrets(argv: list[str]) -> list[str]:
    """Read a secret that starts with "-" as a value: ``--token -x`` becomes
    ``--token=-x``, and "--" goes before a reservation id or token argument."""
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            break
        if arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(argv):
            argv[i : i + 2] = [f"{arg}={argv[i + 1]}"]
        i += 1
    if i >= len(argv) or argv[i] not in SECRET_COMMANDS:
        return argv
    first = i + 1 + SECRET_COMMANDS[argv[i]]  # after the command (and its action)
    for j in range(first, len(argv)):
        if argv[j] == "--":
            return argv
        if argv[j].startswith("-") and argv[j] not in ("-h", "--help"):
            return [*argv[:j], "--", *argv[j:]]
    return argv


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(protect_secrets(argv))
    except ClientError as e:
        print(e.message, file=sys.stderr)
        return e.code
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    token = args.token or os.environ.get("FABRIC_TOKEN") or None
    api = Api(args.url, token, args.timeout)
    try:
        args.func(api, Out(args.json), args)
    except ClientError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (KeyError, TypeError, AttributeError) as e:
        print(f"error: the fabric's answer has an unexpected shape ({e!r})", file=sys.stderr)
        return 2
    return 0
