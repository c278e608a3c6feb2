"""STUB: the command-line client (`./script client ...`)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    raise SystemExit("the client is not written yet")
