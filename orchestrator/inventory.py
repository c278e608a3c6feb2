"""The three input files (physical machines, images, VM types) -> frozen dataclasses.

Each file may be written in its original text form (the assignment's) or in YAML;
``formats/*.md`` specifies them. Every problem is an :class:`InventoryError` whose
message is ``path:line: problem``. ``load_*`` stop at a file's first problem;
:func:`validate_files` collects all of them for the ``validate`` command.
"""

from __future__ import annotations

import ipaddress
import json
import json.decoder
import json.scanner
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from orchestrator.errors import InventoryError
from orchestrator.model import HostSpec, ImageSpec, Inventory, Source, VmType

__all__ = [
    "load_hosts",
    "load_images",
    "load_inventory",
    "load_types",
    "validate_files",
]

PathArg = str | os.PathLike[str]
T = TypeVar("T")

HOST_KEYS = ("port", "uri", "domain", "cpu", "ram", "disk", "arch", "network", "pool")
HOST_YAML_KEYS = ("user", "address", *HOST_KEYS)
IMAGE_KEYS = ("port", "name", "format", "arch")
IMAGE_YAML_KEYS = ("name", "path", "port", "format", "arch", "kernel", "initrd", "cmdline")
TYPE_KEYS = ("tid", "name", "cpu", "ram", "disk")

DOMAIN_TYPES = ("kvm", "qemu")
IMAGE_FORMATS = ("qcow2", "raw")
# libvirt drivers and remote transports; a URI is driver[+transport]://[user@][host][:port]/path
URI_DRIVERS = frozenset(
    "qemu test lxc xen libxl vbox vmwareplayer vmwarews vmwarefusion esx gsx vpx "
    "bhyve ch openvz vz parallels hyperv uml phyp".split()
)
URI_TRANSPORTS = frozenset("ssh libssh libssh2 tcp tls unix ext".split())
QEMU_URI_PATHS = ("/system", "/session", "/embed")
URI_EXAMPLES = "e.g. qemu+ssh://user@host/system, qemu:///system or test:///abs/path/node.xml"

_COMMENT = re.compile(r"(?:^|\s)#.*$")
_YAML_START = re.compile(r"---|-(?:\s|$)|[{\[]|[A-Za-z_][\w-]*:(?:\s|$)")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_ARCH = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_DIGITS = re.compile(r"[0-9]+")
_URI = re.compile(r"(?P<driver>[a-z][a-z0-9]*)(?:\+(?P<transport>[a-z][a-z0-9]*))?://(?P<rest>.*)")


# --------------------------------------------------------------------------- plumbing


class _Problem(Exception):
    """A problem found while parsing; the caller attaches the file (and the line if absent)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


@dataclass(frozen=True)
class _Entry:
    """One record (a text line, a YAML list item or a JSON object) with a line per key."""

    line: int
    fields: dict[str, tuple[Any, int]]

    def has(self, key: str) -> bool:
        return key in self.fields and self.fields[key][0] is not None

    def get(self, key: str, check: Callable[[Any], T]) -> T | None:
        """The checked value of ``key``, None when absent; problems carry the key's line."""
        if not self.has(key):
            return None
        value, line = self.fields[key]
        try:
            return check(value)
        except _Problem as p:
            raise _Problem(p.problem, p.line or line) from None

    def check_keys(self, valid: tuple[str, ...]) -> None:
        for key, (_, line) in self.fields.items():
            if key not in valid:
                raise _Problem(_unknown_key(key, valid), line)


class _Errors(list[InventoryError]):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def add(self, problem: _Problem, line: int | None = None) -> None:
        self.append(InventoryError(self.path, problem.line or line, problem.problem))


def _unknown_key(key: object, valid: tuple[str, ...]) -> str:
    return f"unknown key {key!r} (valid keys: {', '.join(valid)})"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return f"{value!r} (a quoted string)"
    return repr(value)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _read(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InventoryError(path, None, "no such file") from None
    except IsADirectoryError:
        raise InventoryError(path, None, "is a directory, not a file") from None
    except OSError as e:
        raise InventoryError(path, None, f"cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InventoryError(path, line, "not UTF-8 text") from None


def _looks_like_yaml(text: str) -> bool:
    """True when the first non-comment line starts a YAML document, list or mapping."""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return bool(_YAML_START.match(stripped))
    return False


def _text_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated tokens) of each non-blank line, comments removed."""
    for number, raw in enumerate(text.splitlines(), 1):
        tokens = _COMMENT.sub("", raw).split()
        if tokens:
            yield number, tokens


def _text_entry(
    tokens: list[str], line: int, valid: tuple[str, ...], int_keys: tuple[str, ...]
) -> _Entry:
    """The ``key=value`` settings of one text line; integer keys are converted when numeric."""
    fields: dict[str, tuple[Any, int]] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise _Problem(f"expected key=value, not {token!r}")
        if key not in valid:
            raise _Problem(_unknown_key(key, valid))
        if key in fields:
            raise _Problem(f"{key}= is given twice")
        if not value:
            raise _Problem(f"{key}= has no value")
        fields[key] = (int(value) if key in int_keys and _DIGITS.fullmatch(value) else value, line)
    return _Entry(line, fields)


# --------------------------------------------------------------------------- YAML


def _yaml_problem(e: yaml.YAMLError) -> _Problem:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return _Problem(text, mark.line + 1 if mark else None)


def _yaml_value(node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise _yaml_problem(e) from None


def _yaml_entries(text: str, key: str) -> list[_Entry | _Problem]:
    """The items of the file's ``key:`` list (or of a top-level list), with their lines."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_problem(e) from None
    if root is None:
        return []
    seq: yaml.Node | None = root
    if isinstance(root, yaml.MappingNode):
        seq = None
        for key_node, value_node in root.value:
            name = _yaml_value(key_node)
            if name != key:
                raise _Problem(
                    f"unknown top-level key {name!r} (expected '{key}:')",
                    key_node.start_mark.line + 1,
                )
            if seq is not None:
                raise _Problem(f"'{key}:' is given twice", key_node.start_mark.line + 1)
            seq = value_node
        if seq is None:
            raise _Problem(f"missing the '{key}:' list", root.start_mark.line + 1)
    if isinstance(seq, yaml.ScalarNode) and _yaml_value(seq) is None:
        return []
    if seq is root and not isinstance(root, yaml.SequenceNode):
        raise _Problem(f"expected a '{key}:' list", root.start_mark.line + 1)
    if not isinstance(seq, yaml.SequenceNode):
        raise _Problem(f"'{key}' must be a list of mappings", seq.start_mark.line + 1)
    entries: list[_Entry | _Problem] = []
    for item in seq.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            entries.append(_Problem(f"each '{key}' entry must be a mapping (key: value)", line))
            continue
        try:
            fields: dict[str, tuple[Any, int]] = {}
            for key_node, value_node in item.value:
                name = _yaml_value(key_node)
                key_line = key_node.start_mark.line + 1
                if not isinstance(name, str):
                    raise _Problem(f"key {name!r} is not a string", key_line)
                if name in fields:
                    raise _Problem(f"{name!r} is given twice", key_line)
                fields[name] = (_yaml_value(value_node), value_node.start_mark.line + 1)
        except _Problem as p:
            entries.append(p)
            continue
        entries.append(_Entry(line, fields))
    return entries


# --------------------------------------------------------------------------- field checks


def _positive(key: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _Problem(f"{key} must be a positive integer, not {_show(value)}")
        return value

    return check


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Problem(f"port must be an integer in 1..65535, not {_show(value)}")
    return value


def _string(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Problem(f"{key} must be a non-empty string, not {_show(value)}")
        return value

    return check


def _choice(key: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Problem(f"{key} must be one of {', '.join(choices)}, not {_show(value)}")
        return str(value)

    return check


def _abs_path(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        value = _string(key)(value)
        if not value.startswith("/"):
            raise _Problem(f"{key} {value!r} is not an absolute path")
        return value

    return check


def _arch(value: Any) -> str:
    if not isinstance(value, str) or not _ARCH.fullmatch(value):
        raise _Problem(f"arch must look like x86_64, aarch64 or i686, not {_show(value)}")
    return value


def _network(value: Any) -> str:
    if value in ("user", "forward"):
        return str(value)
    if isinstance(value, str):
        kind, sep, name = value.partition(":")
        if sep and kind in ("network", "bridge") and _NET_NAME.fullmatch(name):
            return value
    raise _Problem(
        f"network must be user, forward, network:NAME or bridge:NAME, not {_show(value)}"
    )


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _Problem(
            f"name {_show(value)} is not valid (letters, digits and . _ + -, "
            "starting with a letter or digit, at most 64 characters)"
        )
    return value


def _check_user(user: Any, where: str) -> str:
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise _Problem(f"{where}: {_show(user)} is not a valid user name")
    return user


def _is_hostname(address: str) -> bool:
    labels = address.rstrip(".").split(".") if len(address) <= 253 else []
    return bool(labels) and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _check_address(address: Any, where: str, allow_ipv6: bool = False) -> str:
    if not isinstance(address, str) or not address:
        raise _Problem(f"address must be a non-empty string, not {_show(address)}")
    if re.fullmatch(r"[0-9.]+", address):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise _Problem(f"{where}: {address!r} is not a valid IPv4 address") from None
        return address
    if allow_ipv6 and ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _Problem(f"{where}: {address!r} is not a valid IPv6 address") from None
        return address
    if not _is_hostname(address):
        raise _Problem(f"{where}: {address!r} is not a valid IPv4 address or hostname")
    return address


def _user_at_host(target: str) -> tuple[str | None, str]:
    """``user@address`` (or a bare address) -> (user, address), validated."""
    user: str | None = None
    address = target
    if "@" in target:
        user, _, address = target.partition("@")
        if not address:
            raise _Problem(f"{target!r} has no host")
        if not user:
            raise _Problem(f"{target!r} has no user")
        if "@" in address:
            raise _Problem(f"{target!r} has more than one '@'")
        _check_user(user, repr(target))
    head, colon, tail = address.rpartition(":")
    if colon and _DIGITS.fullmatch(tail):
        raise _Problem(f"{target!r}: write the SSH port as port={tail}, not after a ':'")
    return user, _check_address(address, repr(target))


@dataclass(frozen=True)
class _Uri:
    uri: str
    user: str | None
    address: str | None
    port: int | None


def _uri(value: Any) -> _Uri:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _Problem(f"uri must be a libvirt URI ({URI_EXAMPLES}), not {_show(value)}")
    m = _URI.fullmatch(value)
    if m is None:
        raise _Problem(f"uri {value!r} is not a libvirt URI ({URI_EXAMPLES})")
    driver, transport = m["driver"], m["transport"]
    scheme = f"{driver}+{transport}" if transport else driver
    if driver not in URI_DRIVERS or (transport and transport not in URI_TRANSPORTS):
        raise _Problem(
            f"uri {value!r} has unsupported scheme {scheme!r}: expected driver[+transport]:// "
            f"with driver one of {', '.join(sorted(URI_DRIVERS))} and transport one of "
            f"{', '.join(sorted(URI_TRANSPORTS))} ({URI_EXAMPLES})"
        )
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise _Problem(f"uri {value!r} has an invalid port") from None
    user, address = parts.username, parts.hostname
    where = f"uri {value!r}"
    if user is not None:
        _check_user(user, where)
    if parts.netloc and address is None:
        raise _Problem(f"{where} has no host")
    if address is not None:
        _check_address(address, where, allow_ipv6=True)
    if port is not None and not 1 <= port <= 65535:
        raise _Problem(f"{where} has an invalid port")
    if driver == "test" and not transport and (parts.netloc or len(parts.path) < 2):
        raise _Problem(f"{where}: write test:///default or test:///abs/path/node.xml")
    if driver == "qemu" and parts.path not in QEMU_URI_PATHS:
        raise _Problem(f"{where} must end in {' or '.join(QEMU_URI_PATHS)}")
    return _Uri(value, user, address, port)


# --------------------------------------------------------------------------- hosts


def _build_host(user: str | None, address: str | None, entry: _Entry, path: str) -> HostSpec:
    port = entry.get("port", _port)
    given = entry.get("uri", _uri)
    if given is not None:
        uri = given.uri
        if address is None:
            user, address = given.user, given.address
        elif user is None and given.address == address:
            user = given.user
        if port is None:
            port = given.port
    elif address is None:
        raise _Problem("a host needs user@address or uri=...")
    else:
        netloc = f"{user}@{address}" if user else address
        uri = f"qemu+ssh://{netloc}{f':{port}' if port else ''}/system"
    return HostSpec(
        user=user,
        address=address,
        port=port,
        uri=uri,
        domain_type=entry.get("domain", _choice("domain", DOMAIN_TYPES)) or "kvm",
        cpu=entry.get("cpu", _positive("cpu")),
        ram=entry.get("ram", _positive("ram")),
        disk=entry.get("disk", _positive("disk")),
        arch=entry.get("arch", _arch),
        network=entry.get("network", _network) or "user",
        pool_path=entry.get("pool", _abs_path("pool")),
        source=Source(path, entry.line),
    )


def _host_from_text(tokens: list[str], line: int, path: str) -> HostSpec:
    user = address = None
    if "=" not in tokens[0]:
        user, address = _user_at_host(tokens[0])
        tokens = tokens[1:]
    entry = _text_entry(tokens, line, HOST_KEYS, ("port", "cpu", "ram", "disk"))
    return _build_host(user, address, entry, path)


def _host_from_yaml(entry: _Entry, path: str) -> HostSpec:
    entry.check_keys(HOST_YAML_KEYS)
    address = entry.get("address", lambda v: _check_address(v, "address"))
    user = entry.get("user", lambda v: _check_user(v, "user"))
    if user is not None and address is None:
        raise _Problem("user is given without an address")
    return _build_host(user, address, entry, path)


def _parse_hosts(path: str) -> tuple[tuple[HostSpec, ...], _Errors]:
    errors = _Errors(path)
    hosts: list[HostSpec] = []
    seen: dict[str, int] = {}

    def keep(make: Callable[[], HostSpec], line: int) -> None:
        try:
            host = make()
            if host.key in seen:
                raise _Problem(f"duplicate host {host.key} (first on line {seen[host.key]})")
        except _Problem as p:
            errors.add(p, line)
            return
        seen[host.key] = line
        hosts.append(host)

    _each_entry(path, "hosts", _host_from_yaml, _host_from_text, keep, errors)
    if not hosts and not errors:
        errors.add(_Problem("no physical machines"))
    return tuple(hosts), errors


def _each_entry(
    path: Path,
    key: str,
    from_yaml: Callable[[Any, Path], Any],
    from_text: Callable[[Any, int, Path], Any],
    keep: Callable[[Callable[[], Any], int | None], None],
    errors: Any,
) -> None:
    """Feed every entry of a text or YAML list file to ``keep``, collecting problems."""
    try:
        text = _read(path)
        if _looks_like_yaml(text):
            for item in _yaml_entries(text, key):
                if isinstance(item, _Problem):
                    errors.add(item)
                else:
                    keep(lambda item=item: from_yaml(item, path), item.line)
        else:
            for line, tokens in _text_lines(text):
                keep(lambda t=tokens, n=line: from_text(t, n, path), line)
    except InventoryError as e:
        errors.append(e)
    except _Problem as p:
        errors.add(p)


# --------------------------------------------------------------------------- images


def _image_location(value: Any) -> tuple[str | None, str | None, str]:
    """``/path``, ``host:/path`` or ``user@host:/path`` -> (user, host, path), validated."""
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"image path must be a non-empty string, not {_show(value)}")
    if value.startswith("/"):
        return None, None, value
    m = re.fullmatch(r"(?:(?P<user>[^@:/]*)@)?(?P<host>[^@:/]*):(?P<path>.*)", value)
    if m is None:
        if "@" in value and ":" not in value:
            raise _Problem(f"{value!r} has no ':/path' after the host")
        raise _Problem(
            f"image path {value!r} is not absolute (write /abs/path or user@host:/abs/path)"
        )
    user, host, path = m["user"], m["host"], m["path"]
    if user == "":
        raise _Problem(f"{value!r} has no user")
    if not host:
        raise _Problem(f"{value!r} has no host")
    if user is not None:
        _check_user(user, repr(value))
    _check_address(host, repr(value))
    if not path.startswith("/"):
        raise _Problem(f"image path {path!r} in {value!r} is not absolute")
    return user, host, path


def _build_image(location: Any, entry: _Entry, path: str, yaml_form: bool) -> ImageSpec:
    user, host, image_path = _image_location(location)
    if image_path.endswith("/"):
        raise _Problem(f"image path {image_path!r} names a directory, not an image file")
    name = entry.get("name", _name)
    if name is None:
        stem = posixpath.splitext(posixpath.basename(image_path))[0]
        if not _NAME.fullmatch(stem):
            hint = "name: ..." if yaml_form else "name=..."
            raise _Problem(f"image name {stem!r} taken from the path is not valid; set {hint}")
        name = stem
    port = entry.get("port", _port)
    if port is not None and host is None:
        raise _Problem("port only applies to a remote image (user@host:/path)")
    default_format = "qcow2" if image_path.lower().endswith(".qcow2") else "raw"
    return ImageSpec(
        name=name,
        path=image_path,
        user=user,
        host=host,
        port=port,
        format=entry.get("format", _choice("format", IMAGE_FORMATS)) or default_format,
        arch=entry.get("arch", _arch),
        kernel=entry.get("kernel", _abs_path("kernel")),
        initrd=entry.get("initrd", _abs_path("initrd")),
        cmdline=entry.get("cmdline", _string("cmdline")),
        source=Source(path, entry.line),
    )


def _image_from_text(tokens: list[str], line: int, path: str) -> ImageSpec:
    if re.match(r"[A-Za-z_]+=", tokens[0]):
        raise _Problem("a line must start with the image path (/path or user@host:/path)")
    entry = _text_entry(tokens[1:], line, IMAGE_KEYS, ("port",))
    return _build_image(tokens[0], entry, path, yaml_form=False)


def _image_from_yaml(entry: _Entry, path: str) -> ImageSpec:
    entry.check_keys(IMAGE_YAML_KEYS)
    if not entry.has("path"):
        raise _Problem("image has no 'path'")
    location, line = entry.fields["path"]
    try:
        return _build_image(location, entry, path, yaml_form=True)
    except _Problem as p:
        raise _Problem(p.problem, p.line or line) from None


def _parse_images(path: str) -> tuple[tuple[ImageSpec, ...], _Errors]:
    errors = _Errors(path)
    images: list[ImageSpec] = []
    names: dict[str, int] = {}
    locations: dict[str, int] = {}

    def keep(make: Callable[[], ImageSpec], line: int) -> None:
        try:
            image = make()
            if image.location in locations:
                raise _Problem(
                    f"duplicate image {image.location} (first on line {locations[image.location]})"
                )
            if image.name in names:
                raise _Problem(
                    f"duplicate image name {image.name!r} (first on line {names[image.name]}); "
                    "give one of them another name"
                )
        except _Problem as p:
            errors.add(p, line)
            return
        names[image.name] = locations[image.location] = line
        images.append(image)

    _each_entry(path, "images", _image_from_yaml, _image_from_text, keep, errors)
    if not images and not errors:
        errors.add(_Problem("no images"))
    return tuple(images), errors


# --------------------------------------------------------------------------- VM types


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers where it was (offsets into the text)."""

    start = 0
    end = 0
    duplicates: tuple[str, ...] = ()


class _JsonArray(list[Any]):
    start = 0


def _relax_json(text: str) -> str:
    """Blank out ``#`` comments and trailing commas (outside strings), keeping every offset."""

    def scan(src: str, on_char: Callable[[str, int, list[str]], int | None]) -> str:
        out = list(src)
        i, in_string = 0, False
        while i < len(src):
            c = src[i]
            if in_string:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            else:
                skip_to = on_char(src, i, out)
                if skip_to is not None:
                    i = skip_to
                    continue
            i += 1
        return "".join(out)

    def comment(src: str, i: int, out: list[str]) -> int | None:
        if src[i] != "#":
            return None
        end = src.find("\n", i)
        end = len(src) if end < 0 else end
        out[i:end] = " " * (end - i)
        return end

    def trailing_comma(src: str, i: int, out: list[str]) -> int | None:
        if src[i] == ",":
            j = i + 1
            while j < len(src) and src[j] in " \t\r\n":
                j += 1
            if j < len(src) and src[j] in "]}":
                out[i] = " "
        return None

    text = scan(text, comment)
    if text.lstrip().startswith('"'):
        text = "{" + text + "\n}"  # the assignment's example has no outer braces
    return scan(text, trailing_comma)


def _json_decode(text: str) -> Any:
    """json.loads that records each object's and array's offsets (python scanner needed)."""
    decoder = json.JSONDecoder(object_pairs_hook=list)

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[_JsonObject, int]:
        pairs, end = json.decoder.JSONObject(s_and_end, *args)
        obj = _JsonObject(pairs)
        obj.start, obj.end = s_and_end[1] - 1, end
        keys = [k for k, _ in pairs]
        obj.duplicates = tuple(k for i, k in enumerate(keys) if k in keys[:i])
        return obj, end

    def parse_array(s_and_end: tuple[str, int], *args: Any) -> tuple[_JsonArray, int]:
        values, end = json.decoder.JSONArray(s_and_end, *args)
        array = _JsonArray(values)
        array.start = s_and_end[1] - 1
        return array, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.parse_array = parse_array  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


def _json_key_line(text: str, obj: _JsonObject, key: str) -> int:
    m = re.compile(rf'"{re.escape(key)}"\s*:').search(text, obj.start, obj.end)
    return _line_at(text, m.start() if m else obj.start)


def _json_entries(text: str) -> list[_Entry | _Problem]:
    relaxed = _relax_json(text)
    try:
        root = _json_decode(relaxed)
    except json.JSONDecodeError as e:
        # the added braces shift line 1 by a column and may add a last line
        wrapped = relaxed.startswith("{") and not text.lstrip().startswith("{")
        column = e.colno - 1 if wrapped and e.lineno == 1 else e.colno
        line = min(e.lineno, max(text.count("\n") + (not text.endswith("\n")), 1))
        raise _Problem(f"invalid JSON: {e.msg} (column {column})", line) from None
    if not isinstance(root, _JsonObject):
        raise _Problem('expected {"types": [...]}', 1)
    for key in root:
        if key != "types":
            raise _Problem(
                f"unknown top-level key {key!r} (expected 'types')",
                _json_key_line(relaxed, root, key),
            )
    if root.duplicates:
        raise _Problem("'types' is given twice", _line_at(relaxed, root.start))
    if "types" not in root:
        raise _Problem("missing the 'types' list", _line_at(relaxed, root.start))
    items = root["types"]
    list_line = _json_key_line(relaxed, root, "types")
    if not isinstance(items, _JsonArray):
        raise _Problem("'types' must be a list of objects", list_line)
    entries: list[_Entry | _Problem] = []
    for item in items:
        if not isinstance(item, _JsonObject):
            entries.append(_Problem(f"each type must be an object, not {_show(item)}", list_line))
            continue
        line = _line_at(relaxed, item.start)
        if item.duplicates:
            key = item.duplicates[0]
            entries.append(_Problem(f"{key!r} is given twice", line))
            continue
        fields = {k: (v, _json_key_line(relaxed, item, k)) for k, v in item.items()}
        entries.append(_Entry(line, fields))
    return entries


def _looks_like_json(text: str) -> bool:
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return stripped[0] in '{"'
    return False


def _parse_types(path: str) -> tuple[tuple[VmType, ...], _Errors]:
    errors = _Errors(path)
    checked: list[tuple[int | None, int, int, int, str | None, int]] = []
    tids: dict[int, int] = {}
    names: dict[str, int] = {}
    try:
        text = _read(path)
        entries = _json_entries(text) if _looks_like_json(text) else _yaml_entries(text, "types")
    except InventoryError as e:
        errors.append(e)
        return (), errors
    except _Problem as p:
        errors.add(p)
        return (), errors
    for entry in entries:
        if isinstance(entry, _Problem):
            errors.add(entry)
            continue
        try:
            entry.check_keys(TYPE_KEYS)
            sizes = []
            for key in ("cpu", "ram", "disk"):
                if not entry.has(key):
                    raise _Problem(f"type has no {key!r}")
                sizes.append(entry.get(key, _positive(key)))
            tid = entry.get("tid", _positive("tid"))
            name = entry.get("name", _name)
            if tid is not None and tid in tids:
                raise _Problem(
                    f"duplicate tid {tid} (first on line {tids[tid]})", entry.fields["tid"][1]
                )
            if name is not None and name in names:
                raise _Problem(
                    f"duplicate type name {name!r} (first on line {names[name]})",
                    entry.fields["name"][1],
                )
        except _Problem as p:
            errors.add(p, entry.line)
            continue
        if tid is not None:
            tids[tid] = entry.line
        if name is not None:
            names[name] = entry.line
        cpu, ram, disk = (int(s or 0) for s in sizes)
        checked.append((tid, cpu, ram, disk, name, entry.line))
    if not checked and not errors:
        errors.add(_Problem("no VM types"))
    types: list[VmType] = []
    next_tid = 1
    for tid, cpu, ram, disk, name, line in checked:
        if tid is None:
            while next_tid in tids:
                next_tid += 1
            tid = next_tid
            tids[tid] = line
        types.append(VmType(tid, cpu, ram, disk, name, source=Source(path, line)))
    return tuple(types), errors


# --------------------------------------------------------------------------- public


def load_hosts(path: PathArg) -> tuple[HostSpec, ...]:
    """The physical machines file -> hosts in file order; InventoryError on the first problem."""
    hosts, errors = _parse_hosts(os.fspath(path))
    if errors:
        raise errors[0]
    return hosts


def load_images(path: PathArg) -> tuple[ImageSpec, ...]:
    """The images file -> images in file order; InventoryError on the first problem."""
    images, errors = _parse_images(os.fspath(path))
    if errors:
        raise errors[0]
    return images


def load_types(path: PathArg) -> tuple[VmType, ...]:
    """The VM types file -> types in file order (tids assigned); InventoryError on a problem."""
    types, errors = _parse_types(os.fspath(path))
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
    parsers: list[tuple[Callable[[str], tuple[tuple[Any, ...], _Errors]], PathArg]] = [
        (_parse_hosts, pm_path),
        (_parse_images, image_path),
        (_parse_types, types_path),
    ]
    problems: list[str] = []
    for parse, path in parsers:
        _, errors = parse(os.fspath(path))
        problems.extend(str(e) for e in errors)
    return problems
