"""``server:``: what the HTTP server trusts (orchestrator.api.origin, .session, .proxies).

    server:
      names: [fabric.example.com]      # Host/Origin names besides the defaults
      secret_key: null                 # the session cookie's key; default: kept in the registry
      secure_cookies: auto             # auto (Secure when the request is HTTPS) | true | false
      trusted_proxies: [10.0.0.0/24]   # peers whose X-Forwarded-For / -Proto are believed

``exposure_warnings`` says at start (and in ``validate --host``) when a server that
anyone on the network can reach runs without authentication.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainValidator

from .base import Section, none_is_empty_list, problem, show

# A DNS name (labels of letters, digits, '-' and '_'), an IPv4 address, or an IPv6
# address in brackets; then an optional :port.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_AUTHORITY = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9a-f:.]+\])(?::(?P<port>\d{{1,5}}))?"
)

SecureCookies = bool | Literal["auto"]
MIN_SECRET = 32  # characters of server.secret_key


def split_authority(text: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (as a Host header, an Origin's or a configured name) ->
    (host in lower case, IPv6 without brackets, a trailing dot dropped; port or None).
    Ports 80 and 443 are None: browsers leave them out. None if it is not one."""
    m = _AUTHORITY.fullmatch(text.strip().lower())
    if m is None:
        return None
    host = m["host"]
    if host.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            return None
    host = host.rstrip(".")
    port = int(m["port"]) if m["port"] is not None else None
    if port is not None and not 1 <= port <= 65535:
        return None
    return host, None if port in (80, 443) else port


def _name(value: Any) -> str:
    if not isinstance(value, str) or split_authority(value) is None:
        raise problem(
            "must be a host name or address with an optional :port "
            f"(e.g. fabric.example.com or [::1]:5000), got {show(value)}"
        )
    return value.strip().lower()


def _network(value: Any) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise problem(
            f"must be an address or a network (e.g. 10.0.0.5 or 10.0.0.0/24), got {show(value)}"
        ) from None


def _secret_key(value: Any) -> str | None:
    # A secret: never quote it (nor a part of it) in a message.
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < MIN_SECRET:
        raise problem(
            f"must be a string of at least {MIN_SECRET} characters "
            "(e.g. from `python3 -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return value


def _secure_cookies(value: Any) -> SecureCookies:
    if isinstance(value, bool) or value == "auto":
        return value
    raise problem(f"must be auto, true or false, got {show(value)}")


class ServerSettings(Section):
    """``server:``: the names it answers to, its session key, cookies and proxies."""

    names: Annotated[
        list[Annotated[str, PlainValidator(_name)]], BeforeValidator(none_is_empty_list)
    ] = Field(default_factory=list, description="a list of host or host:port")
    secret_key: Annotated[str | None, PlainValidator(_secret_key)] = Field(None, repr=False)
    secure_cookies: Annotated[SecureCookies, PlainValidator(_secure_cookies)] = "auto"
    trusted_proxies: Annotated[
        list[Annotated[str, PlainValidator(_network)]], BeforeValidator(none_is_empty_list)
    ] = Field(default_factory=list, description="a list of addresses or networks (CIDR)")

    @property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n) for n in self.trusted_proxies)


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def exposure_warnings(auth_enabled: bool, host: str) -> list[str]:
    """A warning when a server listening on ``host`` is reachable from other machines
    and has authentication off (anyone who can reach it may change anything)."""
    if auth_enabled or is_loopback(host):
        return []
    return [
        f"warning: listening on {host} (reachable from other machines) with authentication "
        "off: anyone who can reach the server can create, destroy and check out VMs "
        "(browsers' cross-site requests are refused, other clients are not); turn it on "
        "with auth: {enabled: true, users: {...}} or listen on 127.0.0.1"
    ]
