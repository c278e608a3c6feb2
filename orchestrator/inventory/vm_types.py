"""The VM types file: relaxed JSON (comments, trailing commas) or YAML -> VmType."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from typing import Any

from orchestrator.bounded import MAX_DIGITS, json_depth_offset, json_too_deep, too_deep, too_long
from orchestrator.errors import InventoryError
from orchestrator.model import Source, VmType

from . import checks
from .reading import Entry, Errors, Problem, line_at, read, show, yaml_entries

TYPE_KEYS = ("tid", "name", "cpu", "ram", "disk")


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


class _TooLong(Exception):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _TooLong(text)
    return int(text)


def _json_decode(text: str) -> Any:
    """json.loads that records each object's and array's offsets (python scanner needed)."""
    decoder = json.JSONDecoder(object_pairs_hook=list, parse_int=_bounded_int)

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


def _offset_of_number(text: str, number: str) -> int:
    """Where ``number`` first stands outside a string in ``text`` (0 if nowhere)."""
    for m in re.finditer(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9]+', text, re.S):
        if m.group() == number:
            return m.start()
    return 0


def _json_key_line(text: str, obj: _JsonObject, key: str) -> int:
    m = re.compile(rf'"{re.escape(key)}"\s*:').search(text, obj.start, obj.end)
    return line_at(text, m.start() if m else obj.start)


def _json_entries(text: str) -> list[Entry | Problem]:
    relaxed = _relax_json(text)
    if json_too_deep(relaxed):  # the decoder recurses per level
        raise Problem(too_deep(), line_at(relaxed, json_depth_offset(relaxed)))
    try:
        root = _json_decode(relaxed)
    except _TooLong as e:
        digits, offset = len(str(e).lstrip("-")), _offset_of_number(relaxed, str(e))
        raise Problem(too_long(digits), line_at(relaxed, offset)) from None
    except json.JSONDecodeError as e:
        # the added braces shift line 1 by a column and may add a last line
        wrapped = relaxed.startswith("{") and not text.lstrip().startswith("{")
        column = e.colno - 1 if wrapped and e.lineno == 1 else e.colno
        line = min(e.lineno, max(text.count("\n") + (not text.endswith("\n")), 1))
        raise Problem(f"invalid JSON: {e.msg} (column {column})", line) from None
    if not isinstance(root, _JsonObject):
        raise Problem('expected {"types": [...]}', 1)
    for key in root:
        if key != "types":
            raise Problem(
                f"unknown top-level key {key!r} (expected 'types')",
                _json_key_line(relaxed, root, key),
            )
    if root.duplicates:
        raise Problem("'types' is given twice", line_at(relaxed, root.start))
    if "types" not in root:
        raise Problem("missing the 'types' list", line_at(relaxed, root.start))
    items = root["types"]
    list_line = _json_key_line(relaxed, root, "types")
    if not isinstance(items, _JsonArray):
        raise Problem("'types' must be a list of objects", list_line)
    entries: list[Entry | Problem] = []
    for item in items:
        if not isinstance(item, _JsonObject):
            entries.append(Problem(f"each type must be an object, not {show(item)}", list_line))
            continue
        line = line_at(relaxed, item.start)
        if item.duplicates:
            key = item.duplicates[0]
            entries.append(Problem(f"{key!r} is given twice", line))
            continue
        fields = {k: (v, _json_key_line(relaxed, item, k)) for k, v in item.items()}
        entries.append(Entry(line, fields))
    return entries


def _looks_like_json(text: str) -> bool:
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return stripped[0] in '{"'
    return False


def parse_types(path: str) -> tuple[tuple[VmType, ...], Errors]:
    errors = Errors(path)
    checked: list[tuple[int | None, int, int, int, str | None, int]] = []
    tids: dict[int, int] = {}
    names: dict[str, int] = {}
    try:
        text = read(path)
        entries = _json_entries(text) if _looks_like_json(text) else yaml_entries(text, "types")
    except InventoryError as e:
        errors.append(e)
        return (), errors
    except Problem as p:
        errors.add(p)
        return (), errors
    for entry in entries:
        if isinstance(entry, Problem):
            errors.add(entry)
            continue
        try:
            entry.check_keys(TYPE_KEYS)
            sizes = []
            for key in ("cpu", "ram", "disk"):
                if not entry.has(key):
                    raise Problem(f"type has no {key!r}")
                sizes.append(entry.get(key, checks.positive(key)))
            tid = entry.get("tid", checks.positive("tid", checks.MAX_TID))
            name = entry.get("name", checks.name)
            if tid is not None and tid in tids:
                raise Problem(
                    f"duplicate tid {tid} (first on line {tids[tid]})", entry.fields["tid"][1]
                )
            if name is not None and name in names:
                raise Problem(
                    f"duplicate type name {name!r} (first on line {names[name]})",
                    entry.fields["name"][1],
                )
        except Problem as p:
            errors.add(p, entry.line)
            continue
        if tid is not None:
            tids[tid] = entry.line
        if name is not None:
            names[name] = entry.line
        cpu, ram, disk = (int(s or 0) for s in sizes)
        checked.append((tid, cpu, ram, disk, name, entry.line))
    if not checked and not errors:
        errors.add(Problem("no VM types"))
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
