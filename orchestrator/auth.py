"""Authentication: users with password hashes in the config, tokens stored hashed.

STUB: filled in by the auth work. The interface below is what the API and the
dashboard use.
"""

from __future__ import annotations

from typing import Any

from .registry import Registry


class AuthService:
    """``enabled`` False (the default): every call is allowed."""

    def __init__(self, registry: Registry, raw: dict | None = None) -> None:
        self.registry = registry
        self.enabled = bool((raw or {}).get("enabled", False))
        self.open_reads = bool((raw or {}).get("open_reads", True))

    def login(self, user: str, password: str, remote: str | None = None) -> str:
        """Check the password; return a new token (shown once). Raises Unauthorized,
        TooManyRequests."""
        raise NotImplementedError

    def check(self, token: str | None) -> str:
        """The user a token belongs to. Raises Unauthorized (None) or Forbidden (bad)."""
        raise NotImplementedError

    def info(self, token: str) -> dict[str, Any]:
        raise NotImplementedError

    def revoke(self, token: str) -> None:
        raise NotImplementedError
