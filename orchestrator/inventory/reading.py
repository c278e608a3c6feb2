"""Reading an input file: text lines or a YAML list -> entries (a line per key); problems."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from orchestrator.bounded import MAX_DIGITS, BoundedSafeLoader, LimitExceeded, too_long
from orchestrator.errors import InventoryError

T = TypeVar("T")

_COMMENT = re.compile(r"(?:^|\s)#.*$")
_YAML_START = re.compile(r"---|-(?:\s|$)|[{\[]|[A-Za-z_][\w-]*:(?:\s|$)")
DIGITS = re.compile(r"[0-9]+")


class Problem(Exception):
    """A problem found while parsing; the caller attaches the file (and the line if absent)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


@dataclass(frozen=True)
class Entry:
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
        except Problem as p:
            raise Problem(p.problem, p.line or line) from None

    def check_keys(self, valid: tuple[str, ...]) -> None:
        for key, (_, line) in self.fields.items():
            if key not in valid:
                raise Problem(_unknown_key(key, valid), line)


class Errors(list[InventoryError]):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def add(self, problem: Problem, line: int | None = None) -> None:
        self.append(InventoryError(self.path, problem.line or line, problem.problem))


def _unknown_key(key: object, valid: tuple[str, ...]) -> str:
    return f"unknown key {key!r} (valid keys: {', '.join(valid)})"


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return f"{value!r} (a quoted string)"
    return repr(value)


def line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def read(path: str) -> str:
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


def text_entry(
    tokens: list[str], line: int, valid: tuple[str, ...], int_keys: tuple[str, ...]
) -> Entry:
    """The ``key=value`` settings of one text line; integer keys are converted when numeric."""
    fields: dict[str, tuple[Any, int]] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise Problem(f"expected key=value, not {token!r}")
        if key not in valid:
            raise Problem(_unknown_key(key, valid))
        if key in fields:
            raise Problem(f"{key}= is given twice")
        if not value:
            raise Problem(f"{key}= has no value")
        number = key in int_keys and DIGITS.fullmatch(value)
        if number and len(value) > MAX_DIGITS:
            raise Problem(f"{key}: {too_long(len(value))}")
        fields[key] = (int(value) if number else value, line)
    return Entry(line, fields)


# --------------------------------------------------------------------------- YAML


def _yaml_problem(e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    if isinstance(e, LimitExceeded):
        return Problem(problem, mark.line + 1 if mark else None)
    text = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return Problem(text, mark.line + 1 if mark else None)


def _yaml_value(node: yaml.Node) -> Any:
    try:
        return BoundedSafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise _yaml_problem(e) from None


def yaml_entries(text: str, key: str) -> list[Entry | Problem]:
    """The items of the file's ``key:`` list (or of a top-level list), with their lines."""
    try:
        root = yaml.compose(text, Loader=BoundedSafeLoader)
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
                raise Problem(
                    f"unknown top-level key {name!r} (expected '{key}:')",
                    key_node.start_mark.line + 1,
                )
            if seq is not None:
                raise Problem(f"'{key}:' is given twice", key_node.start_mark.line + 1)
            seq = value_node
        if seq is None:
            raise Problem(f"missing the '{key}:' list", root.start_mark.line + 1)
    if isinstance(seq, yaml.ScalarNode) and _yaml_value(seq) is None:
        return []
    if seq is root and not isinstance(root, yaml.SequenceNode):
        raise Problem(f"expected a '{key}:' list", root.start_mark.line + 1)
    if not isinstance(seq, yaml.SequenceNode):
        raise Problem(f"'{key}' must be a list of mappings", seq.start_mark.line + 1)
    entries: list[Entry | Problem] = []
    for item in seq.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            entries.append(Problem(f"each '{key}' entry must be a mapping (key: value)", line))
            continue
        try:
            fields: dict[str, tuple[Any, int]] = {}
            for key_node, value_node in item.value:
                name = _yaml_value(key_node)
                key_line = key_node.start_mark.line + 1
                if not isinstance(name, str):
                    raise Problem(f"key {name!r} is not a string", key_line)
                if name in fields:
                    raise Problem(f"{name!r} is given twice", key_line)
                fields[name] = (_yaml_value(value_node), value_node.start_mark.line + 1)
        except Problem as p:
            entries.append(p)
            continue
        entries.append(Entry(line, fields))
    return entries


def each_entry(
    path: str,
    key: str,
    from_yaml: Callable[[Entry, str], Any],
    from_text: Callable[[list[str], int, str], Any],
    keep: Callable[[Callable[[], Any], int], None],
    errors: Errors,
) -> None:
    """Feed every entry of a text or YAML list file to ``keep``, collecting problems."""
    try:
        text = read(path)
        if _looks_like_yaml(text):
            for item in yaml_entries(text, key):
                if isinstance(item, Problem):
                    errors.add(item)
                else:
                    keep(lambda item=item: from_yaml(item, path), item.line)
        else:
            for line, tokens in _text_lines(text):
                keep(lambda t=tokens, n=line: from_text(t, n, path), line)
    except InventoryError as e:
        errors.append(e)
    except Problem as p:
        errors.add(p)
