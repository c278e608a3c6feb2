"""STUB: tables for auth (they share Base with tables.py)."""

from __future__ import annotations

from .tables import Base  # noqa: F401
