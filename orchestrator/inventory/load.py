"""Loading the three files (stopping at the first problem) and validating them (every problem)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from orchestrator.model import HostSpec, ImageSpec, Inventory, VmType

from .hosts import parse_hosts
from .images import parse_images
from .reading import Errors
from .vm_types import parse_types

PathArg = str | os.PathLike[str]


def load_hosts(path: PathArg) -> tuple[HostSpec, ...]:
    """The physical machines file -> hosts in file order; InventoryError on the first problem."""
    hosts, errors = parse_hosts(os.fspath(path))
    if errors:
        raise errors[0]
    return hosts


def load_images(path: PathArg) -> tuple[ImageSpec, ...]:
    """The images file -> images in file order; InventoryError on the first problem."""
    images, errors = parse_images(os.fspath(path))
    if errors:
        raise errors[0]
    return images


def load_types(path: PathArg) -> tuple[VmType, ...]:
    """The VM types file -> types in file order (tids assigned); InventoryError on a problem."""
    types, errors = parse_types(os.fspath(path))
    if errors:
        raise errors[0]
    return types


def load_inventory(pm_path: PathArg, image_path: PathArg, types_path: PathArg) -> Inventory:
    """All three files; raises the first problem found (hosts, then images, then types)."""
    return Inventory(
        hosts=load_hosts(pm_path),
        images=load_images(image_path),
        types=load_types(types_path),
    )


def validate_files(pm_path: PathArg, image_path: PathArg, types_path: PathArg) -> list[str]:
    """Every problem of the three files as ``path:line: problem`` messages; empty when valid."""
    parsers: list[tuple[Callable[[str], tuple[tuple[Any, ...], Errors]], PathArg]] = [
        (parse_hosts, pm_path),
        (parse_images, image_path),
        (parse_types, types_path),
    ]
    problems: list[str] = []
    for parse, path in parsers:
        _, errors = parse(os.fspath(path))
        problems.extend(str(e) for e in errors)
    return problems
