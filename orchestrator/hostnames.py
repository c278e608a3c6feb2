"""Hostnames of VMs: unique, never reused, and the FQDN a configured domain makes.

A VM's hostname is a DNS label made of its pool's (or its own) name and eight
random characters, e.g. ``ci-debian-k3x9mq2a``. The registry keeps every
hostname it ever gave (table ``hostnames``, rows never deleted), so a name is
never given twice, whichever server gives it and however long ago its VM went.
This is what vmpooler's users rely on, without its failure mode of handing out
one name twice.
"""

from __future__ import annotations

import re
import secrets

# Lowercase letters and digits, without the ones people misread (0/o, 1/l).
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
_SUFFIX = 8  # 40 random bits: collisions are rare, and the registry refuses them anyway
_PREFIX_MAX = 40  # prefix + "-" + suffix stays well within a DNS label's 63
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A domain: labels joined by dots (checked by the configuration).
DOMAIN = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
DOMAIN_RULE = "DNS labels of lowercase letters, digits and '-', joined by '.'"


def prefix(name: str | None) -> str:
    """The DNS-safe start of a hostname made from a pool's or VM's name."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")
    slug = slug[:_PREFIX_MAX].rstrip("-")
    return slug or "vm"


def new_hostname(name: str | None) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(_SUFFIX))
    return f"{prefix(name)}-{suffix}"


def fqdn(hostname: str | None, domain: str | None) -> str | None:
    if hostname is None:
        return None
    return f"{hostname}.{domain}" if domain else hostname


def short(name: str, domain: str | None) -> str:
    """The short hostname of ``name``, given as a short name or as an FQDN (in the
    configured domain, or any domain: the first label is the hostname)."""
    name = name.strip().rstrip(".").lower()
    if domain and name.endswith("." + domain):
        return name[: -len(domain) - 1]
    return name.split(".", 1)[0]
