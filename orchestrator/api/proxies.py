"""The client's address and scheme behind trusted reverse proxies (``server.trusted_proxies``).

Only when the direct peer is in one of the trusted networks are its
``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed: the client's address is
then the right-most address of ``X-Forwarded-For`` that is not itself a trusted
proxy (what a client writes into the header itself is further left, and never
reached), and the scheme is the last ``X-Forwarded-Proto`` value. From any other
peer both headers are ignored: the peer's address is the client's. With no
trusted proxies (the default) nothing is changed.

The WSGI environ's ``REMOTE_ADDR`` and ``wsgi.url_scheme`` are set accordingly, so
``request.remote_addr`` (failed logins are logged with it) and
``request.is_secure`` (Secure cookies, ``server.secure_cookies: auto``) mean the
client; the peer's own address stays in ``fabric.peer_addr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PEER_KEY = "fabric.peer_addr"


def _address(text: str) -> IpAddress | None:
    """An address as X-Forwarded-For writes it: bare, ``[v6]`` or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: IpAddress | None, networks: Iterable[IpNetwork]) -> bool:
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)


def client_address(peer: str, forwarded_for: str | None, networks: tuple[IpNetwork, ...]) -> str:
    """The client's address: ``peer``'s, or from X-Forwarded-For if ``peer`` is trusted."""
    if not forwarded_for or not _trusted(_address(peer), networks):
        return peer
    hops = [h for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return peer  # a trusted proxy wrote something else: believe only the peer
        if not _trusted(addr, networks):
            return str(addr)
    first = _address(hops[0]) if hops else None
    return str(first) if first is not None else peer  # every hop is a proxy of ours


class TrustedProxies:
    """WSGI middleware: the client's address and scheme when the peer is a trusted proxy."""

    def __init__(self, app: Any, networks: tuple[IpNetwork, ...]) -> None:
        self.app = app
        self.networks = networks

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        peer = environ.get("REMOTE_ADDR") or ""
        environ[PEER_KEY] = peer
        if self.networks and _trusted(_address(peer), self.networks):
            environ["REMOTE_ADDR"] = client_address(
                peer, environ.get("HTTP_X_FORWARDED_FOR"), self.networks
            )
            proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
