"""The client's command line: arguments (secrets that start with "-" included) and main."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .api import DEFAULT_URL, Api, ClientError
from .commands import (
    cmd_checkin,
    cmd_checkout,
    cmd_console,
    cmd_create,
    cmd_destroy,
    cmd_evacuate,
    cmd_events,
    cmd_extend,
    cmd_host,
    cmd_hosts,
    cmd_images,
    cmd_keys,
    cmd_migrate,
    cmd_networks,
    cmd_pools,
    cmd_query,
    cmd_quota,
    cmd_reboot,
    cmd_reload_hosts,
    cmd_request,
    cmd_request_cancel,
    cmd_requests,
    cmd_resize,
    cmd_schedules,
    cmd_start,
    cmd_stop,
    cmd_tag,
    cmd_token,
    cmd_types,
    cmd_vms,
    cmd_volume,
)
from .render import Out


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
    add(
        "reload-hosts",
        cmd_reload_hosts,
        "have the server read its physical machines file again (admins)",
    )
    c = add("evacuate", cmd_evacuate, "rebuild a dead host's VMs on other hosts (admins)")
    c.add_argument("pmid", type=_positive)
    h = add("host", cmd_host, "day-two operations on a host (admins)")
    hs = h.add_subparsers(dest="host_action", metavar="ACTION", parser_class=_Parser)
    hs.required = True
    c = hs.add_parser("maintenance", help="put a host into maintenance: nothing is placed there")
    c.add_argument("pmid", type=_positive)
    c.add_argument("reason", help="why, e.g. 'kernel update'")
    hs.add_parser("resume", help="take a host out of maintenance").add_argument(
        "pmid", type=_positive
    )
    c = hs.add_parser("drain", help="move every VM off a host (live migration)")
    c.add_argument("pmid", type=_positive)
    c.add_argument("--cancel", action="store_true", help="stop the host's drain")
    hs.add_parser(
        "drain-status", help="a host's last drain: n of m moved, what stayed"
    ).add_argument("pmid", type=_positive)
    c = add("migrate", cmd_migrate, "move a VM to another host (admins)")
    c.add_argument("vmid", type=_positive)
    c.add_argument("--to", type=_positive, help="the target pmid (default: the scheduler's)")
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
    for name, func, help_ in (
        ("stop", cmd_stop, "stop a VM (ACPI shutdown, forced after --timeout-s)"),
        ("reboot", cmd_reboot, "reboot a VM (a graceful stop, then a start)"),
    ):
        c = add(name, func, help_)
        c.add_argument("vmid", type=_positive)
        c.add_argument("--force", action="store_true", help="pull the power at once")
        c.add_argument("--timeout-s", type=_positive, help="seconds for the guest to power off")
    c = add("start", cmd_start, "start a stopped VM")
    c.add_argument("vmid", type=_positive)
    c = add("resize", cmd_resize, "resize a VM to another VM type (stopped, changed, started)")
    c.add_argument("vmid", type=_positive)
    c.add_argument("type", type=_positive, help="instance type (tid)")
    c.add_argument("--force", action="store_true", help="pull the power at once")
    c.add_argument("--timeout-s", type=_positive, help="seconds for the guest to power off")
    c = add("console", cmd_console, "the tail of a VM's serial console")
    c.add_argument("vmid", type=_positive)
    c.add_argument("--kb", type=_positive, help="kilobytes (default 16)")
    c = add("vms", cmd_vms, "every VM (with its hostname and tags)")
    c.add_argument(
        "--tag",
        action="append",
        metavar="KEY:VALUE",
        help="only the VMs with this tag (repeatable: all of them)",
    )
    c = add("tag", cmd_tag, "set a VM's tags (KEY= removes KEY)")
    c.add_argument("vmid", type=_positive)
    c.add_argument("tags", nargs="+", metavar="KEY=VALUE")
    c = add("checkout", cmd_checkout, "check out ready VMs from a pool")
    c.add_argument("--pool")
    c.add_argument("--type", type=_positive, help="instance type (tid)")
    c.add_argument("--image", type=_positive, help="image id")
    c.add_argument("--count", type=_positive, help="how many (all or nothing)")
    c.add_argument("--hours", type=_hours, help="how long (the pool's lifetime by default)")
    c.add_argument(
        "--ssh-key",
        metavar="FILE",
        help="a public key file (e.g. ~/.ssh/id_ed25519.pub) to log into the guest with, "
        "besides your registered keys",
    )
    c = add("checkin", cmd_checkin, "give a checked-out VM back")
    c.add_argument("vmid", type=_positive)
    c.add_argument("reservation")
    c = add("extend", cmd_extend, "extend a reservation")
    c.add_argument("vmid", type=_positive)
    c.add_argument("reservation")
    c.add_argument("hours", type=_hours)
    add("pools", cmd_pools, "pools and their levels")
    c = add("networks", cmd_networks, "the hosts' networks and the addresses in use")
    c.add_argument("--pmid", type=_positive, help="one host only")

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

    c = add("request", cmd_request, "request VMs that wait for capacity (on demand)")
    c.add_argument("pools", nargs="+", metavar="POOL=COUNT", help="e.g. small=2 large=1")
    c.add_argument("--hours", type=_hours, help="the VMs' lifetime once it is ready")
    c.add_argument("--id", help="the request's id (made up when absent)")
    c.add_argument("--wait", action="store_true", help="until it is ready, failed or cancelled")
    c.add_argument("--poll", type=_positive, default=2, help="seconds between polls (--wait)")
    c = add("requests", cmd_requests, "your on-demand requests (an admin's: everyone's)")
    c.add_argument("id", nargs="?", help="describe this one")
    c.add_argument("--state", choices=["pending", "ready", "failed", "cancelled"])
    c = add("request-cancel", cmd_request_cancel, "cancel a request (its VMs go back)")
    c.add_argument("id")

    c = add("quota", cmd_quota, "your limits and what you use of them")
    c.add_argument("--user", help="another user's (admins)")
    k = add("keys", cmd_keys, "your SSH public keys, put into every guest you check out")
    ks = k.add_subparsers(dest="keys_action", metavar="ACTION", parser_class=_Parser)
    ks.required = True
    ks.add_parser("list", help="your keys")
    c = ks.add_parser("add", help="register a public key")
    c.add_argument("file", help="a public key file, e.g. ~/.ssh/id_ed25519.pub")
    c.add_argument("--name", help="a label for it")
    ks.add_parser("remove", help="remove a key").add_argument("id", type=_positive)

    c = add("events", cmd_events, "the audit trail: who did what, on what, and how it ended")
    c.add_argument("--vm", type=_positive, help="about this VM (vmid)")
    c.add_argument("--host", type=_positive, help="about this host (pmid)")
    c.add_argument("--volume", type=_positive, help="about this volume")
    c.add_argument("--object", help="about this object: TYPE or TYPE:ID (schedule:3, key:1)")
    c.add_argument("--user", help="done by this user (or system, anonymous)")
    c.add_argument("--kind", help="whose kind starts with this (vm., api.request)")
    c.add_argument("--op", help="API requests whose operation starts with this (POST /vm/)")
    c.add_argument("--outcome", choices=("ok", "refused", "failed"))
    c.add_argument("--since", help="at or after (ISO 8601, e.g. 2026-11-29T03:00:00Z)")
    c.add_argument("--until", help="before (ISO 8601)")
    c.add_argument("--limit", type=_positive, help="how many (default 100, at most 1000)")
    c.add_argument("--before", type=_positive, help="older than this event id (next page)")
    c.add_argument("--after", type=_positive, help="newer than this event id")

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
