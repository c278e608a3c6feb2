"""Refusing state changes that a browser was made to send: from another site (CSRF),
or to this server under a name that is not its own (DNS rebinding). In every mode,
authentication on or off.

Every request that changes state (``changes_state``: any method but GET, HEAD and
OPTIONS, and the original API's GETs that act; the dashboard's forms too) is
refused with 403 and a message naming the problem when:

1. its ``Host`` is not one of the server's names. A browser on a page of
   ``evil.example`` whose DNS now points at the fabric sends ``Host:
   evil.example``; curl and scripts send the name they used, which is one of ours.
   An IP address is always accepted: a browser sends one only when it connected
   to that address itself, so it cannot be a name someone else controls.
2. else ``Sec-Fetch-Site`` is present and not ``same-origin`` or ``none`` (a
   user's own navigation): modern browsers send it with every request;
3. else ``Origin`` is present and is ``null`` or another site: not the request's
   own ``Host`` nor one of the server's names on a port it knows;
4. else ``Referer`` is present and from another site (older browsers' form posts).

A request with none of these headers (curl, the python client, scripts) is not a
browser's forged one and passes. With authentication on, a request carrying its
token in the ``X-Auth-Token`` header passes 2-4: a page cannot add that header to
a cross-site request without a CORS preflight, which the fabric never grants.

The server's names: those in ``server.names`` (``host`` means the host on the
standard port, as browsers write it through a proxy on 80 or 443;
``host:port`` that port), and always localhost, 127.0.0.1, [::1], the address
the server listens on and this machine's host name and FQDN, each on the
listening port (on any port when the app does not know it: an app served by a
WSGI server of the caller's choosing, or the tests' client).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue

from ..config.server import split_authority
from .auth import auth_service, changes_state
from .context import TOKEN_HEADER
from .errors import error_response

EXTENSION = "fabric.origin"
ANY_PORT = -1
SAFE_SITES = frozenset({"same-origin", "none"})
LOOPBACK = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - names of "every address", compared

Name = tuple[str, int | None]  # host, port (None: the standard one)


@functools.cache
def machine_names() -> tuple[str, ...]:
    """This machine's host name and FQDN (looked up once per process)."""
    names = []
    for fn in (socket.gethostname, socket.getfqdn):
        try:
            names.append(fn())
        except OSError:
            continue
    return tuple(n.lower().rstrip(".") for n in names if n)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class AllowedNames:
    """The names the server answers to as ``(host, port)``; port ANY_PORT: any."""

    configured: tuple[Name, ...] = ()
    listen_host: str | None = None
    listen_port: int | None = None
    names: frozenset[tuple[str, int | None]] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        self.listening(self.listen_host, self.listen_port)

    @classmethod
    def of(cls, configured: Iterable[str]) -> AllowedNames:
        parsed = (split_authority(n) for n in configured)
        return cls(configured=tuple(p for p in parsed if p is not None))

    def listening(self, host: str | None, port: int | None) -> None:
        """Where the server listens (the launcher says so once it knows the port)."""
        port = int(port) if port is not None else None  # waitress may give a string
        self.listen_host, self.listen_port = host, port
        on = ANY_PORT if port is None else (None if port in (80, 443) else port)
        defaults = {*LOOPBACK, *machine_names()}
        bare = (host or "").strip().strip("[]").lower()
        if bare not in WILDCARDS:
            parsed = split_authority(f"[{bare}]" if ":" in bare else bare)
            if parsed is not None:
                defaults.add(parsed[0])
        self.names = frozenset({*self.configured, *((h, on) for h in defaults)})

    def allows(self, name: Name, *, any_port: bool = True) -> bool:
        """Whether ``name`` is one of ours; ``any_port`` False: only a name whose port
        is known matches (an origin on another port of this host is another site)."""
        return name in self.names or (any_port and (name[0], ANY_PORT) in self.names)

    def host_ok(self, name: Name) -> bool:
        """Whether a Host header names us: one of our names, or an address."""
        return self.allows(name) or _is_ip(name[0])


def allowed_names(app: Flask | None = None) -> AllowedNames:
    return (app or current_app).extensions[EXTENSION]


def _origin_name(url: str) -> Name | None:
    """The ``(host, port)`` of an Origin or Referer URL; None if it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return split_authority(parts.netloc.rpartition("@")[2])


def _show(value: str) -> str:
    return value if len(value) <= 100 else value[:97] + "..."


def refusal() -> str | None:
    """Why this request may not change state, or None if it may."""
    names = allowed_names()
    host_header = request.headers.get("Host")
    host = split_authority(host_header) if host_header is not None else None
    if host_header is not None and (host is None or not names.host_ok(host)):
        return (
            f"refused: this server does not answer to the name {_show(host_header)!r} "
            "(Host header; its names are set by server.names)"
        )
    auth = auth_service()
    if auth.enabled and request.headers.get(TOKEN_HEADER):
        return None  # a token in a header: never a browser's cross-site request

    def same_site(name: Name | None) -> bool:
        return name is not None and (name == host or names.allows(name, any_port=False))

    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.strip().lower() in SAFE_SITES:
            return None
        return f"refused: a cross-site request may not change state (Sec-Fetch-Site: {_show(site)})"
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.strip() == "null":
            return "refused: a request from an opaque origin (Origin: null) may not change state"
        if not same_site(_origin_name(origin.strip())):
            return f"refused: a cross-site request may not change state (Origin: {_show(origin)})"
        return None
    referer = request.headers.get("Referer")
    if referer is not None and not same_site(_origin_name(referer.strip())):
        return "refused: a cross-site request may not change state (Referer from another site)"
    return None


def _on_dashboard(path: str) -> bool:
    return path == "/" or (path.startswith("/ui/") and not path.startswith("/ui/static/"))


def check() -> ResponseReturnValue | None:
    """The before-request hook: refuse a state change a browser was made to send."""
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    if not (changes_state(request.method, rule) or changes_state(request.method, request.path)):
        return None
    why = refusal()
    if why is None:
        return None
    if _on_dashboard(request.path):
        from .dashboard.login import refusal_page

        return refusal_page(why[:1].upper() + why[1:] + ".", 403)
    return error_response(403, {"error": why})


def install(app: Flask, names: Iterable[str], listen: tuple[str, int | None] | None) -> None:
    """Check every request of ``app`` (first of its before-request hooks)."""
    allowed = AllowedNames.of(names)
    if listen is not None:
        allowed.listening(*listen)
    app.extensions[EXTENSION] = allowed
    app.before_request(check)


def listening(app: Flask, host: str, port: int) -> None:
    """Tell ``app`` where it listens, once the server knows its port."""
    allowed_names(app).listening(host, port)
