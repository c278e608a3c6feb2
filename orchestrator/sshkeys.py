"""Users' SSH public keys: checked, stored, and put into the guests they borrow.

A key is accepted as OpenSSH writes it (``TYPE BASE64 [COMMENT]``), with no
options (``command=``, ``from=``...): the fabric decodes the blob, checks that it
is the type it says, and keeps only ``TYPE BASE64``. In a guest each such line
ends with the marker comment ``fabric-borrower``, which is how check-in finds
and removes them. Nothing else of a user's text reaches a guest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from .access import Principal
from .errors import BadRequest, Forbidden
from .model import NAME_RULE, is_name
from .registry.keys import KeyStore
from .registry.tables_access import SshKeyRow

MARKER = "fabric-borrower"  # the comment of every borrower key line in a guest
MAX_KEY_TEXT = 16 * 1024
MIN_RSA_BITS = 2048
KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str  # base64, as in the key line

    @property
    def line(self) -> str:
        return f"{self.type} {self.blob}"

    @property
    def guest_line(self) -> str:
        return f"{self.type} {self.blob} {MARKER}"

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` shows it: ``SHA256:...``."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _strings(blob: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[i : i + 4])
        i += 4
        if i + n > len(blob):
            raise ValueError("truncated")
        out.append(blob[i : i + n])
        i += n
    return out


def parse_key(text: Any, what: str = "ssh_key") -> PublicKey:
    """An OpenSSH public key line -> PublicKey; BadRequest naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} must be an OpenSSH public key (TYPE BASE64 [COMMENT])")
    if len(text) > MAX_KEY_TEXT:
        raise BadRequest(f"{what} is longer than {MAX_KEY_TEXT} characters")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise BadRequest(f"{what} must be one key on one line")
    parts = lines[0].split()
    if parts[0] not in KEY_TYPES:
        raise BadRequest(
            f"{what} must start with a key type ({', '.join(sorted(KEY_TYPES))}); "
            "options such as command= are not accepted"
        )
    if len(parts) < 2:
        raise BadRequest(f"{what} has no key data after {parts[0]}")
    kind, data = parts[0], parts[1]
    try:
        blob = base64.b64decode(data, validate=True)
        fields = _strings(blob)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what}'s key data is not valid base64 of an SSH key") from None
    if not fields or fields[0].decode(errors="replace") != kind:
        raise BadRequest(f"{what}'s key data is not a {kind} key")
    if kind == "ssh-rsa":
        n = fields[2] if len(fields) > 2 else b""
        bits = int.from_bytes(n, "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise BadRequest(f"{what} is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits")
    return PublicKey(kind, base64.b64encode(blob).decode())


class Keys:
    """Registering, listing and removing users' public keys."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    @staticmethod
    def owner(by: Principal) -> str:
        """Whose keys a caller manages: their own ("" for the anonymous caller of a
        fabric without authentication)."""
        return by.name or ""

    def add(self, by: Principal, name: Any, text: Any) -> SshKeyRow:
        by.require_writer("register an SSH key")
        if name is None or name == "":
            name = "key"
        if not is_name(name):
            raise BadRequest(f"name must be {NAME_RULE}")
        key = parse_key(text, "key")
        return self.store.add(self.owner(by), name, key.line, key.fingerprint)

    def list(self, by: Principal) -> list[SshKeyRow]:
        return self.store.list(self.owner(by))

    def remove(self, by: Principal, key_id: int) -> None:
        row = self.store.get(key_id)
        if row.user != self.owner(by) and not by.admin:
            raise Forbidden(f"keyid {key_id} is not yours")
        self.store.remove(key_id)

    def for_user(self, user: str | None) -> list[PublicKey]:
        """The keys a user registered (None: the anonymous caller's)."""
        return [parse_key(r.key) for r in self.store.list(user or "")]
