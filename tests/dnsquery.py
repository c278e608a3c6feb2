"""A tiny DNS client for the tests: one type-A query over UDP, its answer parsed.

Enough to ask the local datacenter's dnsmasq (10.251.1.1:53) for a VM's name the
way any resolver would, without a resolver library or the machine's resolv.conf."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

NOERROR, NXDOMAIN, REFUSED = 0, 3, 5
TYPE_A, CLASS_IN = 1, 1


@dataclass(frozen=True)
class Answer:
    rcode: int  # 0 NOERROR, 3 NXDOMAIN, 5 REFUSED, ...
    addresses: list[str]  # the A records' IPv4 addresses
    authoritative: bool


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _skip_name(data: bytes, pos: int) -> int:
    """The offset after the (possibly compressed) name at ``pos``."""
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return pos + 2
        pos += 1 + length


def parse(data: bytes, qid: int) -> Answer:
    ident, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    if ident != qid or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4  # type, class
    addresses = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rtype, rclass, _ttl, size = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == TYPE_A and rclass == CLASS_IN and size == 4:
            addresses.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += size
    return Answer(flags & 0x000F, addresses, bool(flags & 0x0400))


def query(server: str, name: str, *, port: int = 53, timeout: float = 3.0) -> Answer:
    """Ask ``server`` for ``name``'s A records (recursion desired, as a stub resolver
    asks). Raises OSError (e.g. socket.timeout) when nothing answers."""
    qid = struct.unpack("!H", os.urandom(2))[0]
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    packet += encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((server, port))
        s.send(packet)
        while True:
            data = s.recv(4096)
            try:
                return parse(data, qid)
            except (ValueError, struct.error, IndexError):
                continue  # a stray or garbled datagram: keep waiting for ours
