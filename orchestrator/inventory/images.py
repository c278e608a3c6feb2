"""The images file: ``[user@host:]/path key=value`` lines or a YAML list -> ImageSpec."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from typing import Any

from orchestrator.model import ImageSpec, Source

from . import checks
from .reading import Entry, Errors, Problem, each_entry, show, text_entry

IMAGE_KEYS = ("port", "name", "format", "arch")
IMAGE_YAML_KEYS = ("name", "path", "port", "format", "arch", "kernel", "initrd", "cmdline")
IMAGE_FORMATS = ("qcow2", "raw")


def _image_location(value: Any) -> tuple[str | None, str | None, str]:
    """``/path``, ``host:/path`` or ``user@host:/path`` -> (user, host, path), validated."""
    if not isinstance(value, str) or not value.strip():
        raise Problem(f"image path must be a non-empty string, not {show(value)}")
    if value.startswith("/"):
        return None, None, value
    m = re.fullmatch(r"(?:(?P<user>[^@:/]*)@)?(?P<host>[^@:/]*):(?P<path>.*)", value)
    if m is None:
        if "@" in value and ":" not in value:
            raise Problem(f"{value!r} has no ':/path' after the host")
        raise Problem(
            f"image path {value!r} is not absolute (write /abs/path or user@host:/abs/path)"
        )
    user, host, path = m["user"], m["host"], m["path"]
    if user == "":
        raise Problem(f"{value!r} has no user")
    if not host:
        raise Problem(f"{value!r} has no host")
    if user is not None:
        checks.check_user(user, repr(value))
    checks.check_address(host, repr(value))
    if not path.startswith("/"):
        raise Problem(f"image path {path!r} in {value!r} is not absolute")
    return user, host, path


def _build_image(location: Any, entry: Entry, path: str, yaml_form: bool) -> ImageSpec:
    user, host, image_path = _image_location(location)
    if image_path.endswith("/") or (host is None and os.path.isdir(image_path)):
        # a local path is on this machine: a directory there is no image either
        raise Problem(f"image path {image_path!r} names a directory, not an image file")
    name = entry.get("name", checks.name)
    if name is None:
        stem = posixpath.splitext(posixpath.basename(image_path))[0]
        if not checks.NAME.fullmatch(stem):
            hint = "name: ..." if yaml_form else "name=..."
            raise Problem(f"image name {stem!r} taken from the path is not valid; set {hint}")
        name = stem
    port = entry.get("port", checks.port)
    if port is not None and host is None:
        raise Problem("port only applies to a remote image (user@host:/path)")
    default_format = "qcow2" if image_path.lower().endswith(".qcow2") else "raw"
    return ImageSpec(
        name=name,
        path=image_path,
        user=user,
        host=host,
        port=port,
        format=entry.get("format", checks.choice("format", IMAGE_FORMATS)) or default_format,
        arch=entry.get("arch", checks.arch),
        kernel=entry.get("kernel", checks.abs_path("kernel")),
        initrd=entry.get("initrd", checks.abs_path("initrd")),
        cmdline=entry.get("cmdline", checks.string("cmdline")),
        source=Source(path, entry.line),
    )


def _image_from_text(tokens: list[str], line: int, path: str) -> ImageSpec:
    if re.match(r"[A-Za-z_]+=", tokens[0]):
        raise Problem("a line must start with the image path (/path or user@host:/path)")
    entry = text_entry(tokens[1:], line, IMAGE_KEYS, ("port",))
    return _build_image(tokens[0], entry, path, yaml_form=False)


def _image_from_yaml(entry: Entry, path: str) -> ImageSpec:
    entry.check_keys(IMAGE_YAML_KEYS)
    if not entry.has("path"):
        raise Problem("image has no 'path'")
    location, line = entry.fields["path"]
    try:
        return _build_image(location, entry, path, yaml_form=True)
    except Problem as p:
        raise Problem(p.problem, p.line or line) from None


def parse_images(path: str) -> tuple[tuple[ImageSpec, ...], Errors]:
    errors = Errors(path)
    images: list[ImageSpec] = []
    names: dict[str, int] = {}
    locations: dict[str, int] = {}

    def keep(make: Callable[[], ImageSpec], line: int) -> None:
        try:
            image = make()
            if image.location in locations:
                raise Problem(
                    f"duplicate image {image.location} (first on line {locations[image.location]})"
                )
            if image.name in names:
                raise Problem(
                    f"duplicate image name {image.name!r} (first on line {names[image.name]}); "
                    "give one of them another name"
                )
        except Problem as p:
            errors.add(p, line)
            return
        names[image.name] = locations[image.location] = line
        images.append(image)

    each_entry(path, "images", _image_from_yaml, _image_from_text, keep, errors)
    if not images and not errors:
        errors.add(Problem("no images"))
    return tuple(images), errors
