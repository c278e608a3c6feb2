"""Bounds on input, shared by the configuration, the input files and the API.

JSON or YAML nested deeper than ``MAX_DEPTH`` levels, and YAML whose aliases would
expand past ``MAX_NODES`` nodes, are refused before anything walks them: parsers,
pydantic and ``repr`` all recurse, and Python's recursion limit would end them with a
RecursionError (a traceback, or a 500) long before a useful message. Integers of more
than ``MAX_DIGITS`` digits are refused where they are read (Python will not even
convert one of more than 4300).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_DEPTH = 32  # levels of lists and mappings: no file or request of the fabric needs more
MAX_NODES = 100_000  # YAML nodes once every alias is expanded
MAX_DIGITS = 64  # in an integer: every number the fabric reads fits in 20


def too_long(digits: int) -> str:
    return f"a number of {digits} digits is too long (at most {MAX_DIGITS})"


def too_deep(limit: int = MAX_DEPTH) -> str:
    return f"nested deeper than {limit} levels (lists and mappings)"


# -- JSON ---------------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SAME_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_too_deep(text: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """True when JSON ``text`` opens more than ``limit`` arrays or objects inside one
    another. Exact for valid JSON; text that passes nests at most ``2 * limit`` deep
    (whatever it is), so a recursive parser may read it. Linear, in C."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    brackets = _STRING.sub(b"", data).translate(_SAME_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):  # each pass removes the innermost pairs
        fewer = brackets.replace(b"[]", b"")
        if fewer == brackets:
            break
        brackets = fewer
    else:
        if b"[]" in brackets:
            return True  # pairs nested deeper than the limit
    return brackets.count(b"[") > limit  # openers never closed


def json_depth_offset(text: str, limit: int = MAX_DEPTH) -> int:
    """Where in ``text`` (a str offset) the nesting first goes past ``limit``; 0 if
    it never does. For messages: call it once ``json_too_deep`` said so."""
    depth = 0
    for m in re.finditer(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]', text, re.S):
        c = m.group()[0]
        if c in "[{":
            depth += 1
            if depth > limit:
                return m.start()
        elif c in "]}":
            depth -= 1
    return 0


class TooDeep(ValueError):
    """JSON nested deeper than the limit."""


def json_loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses (TooDeep) more than ``limit`` levels before parsing."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
        except UnicodeDecodeError as e:
            raise ValueError(f"not text in a JSON encoding: {e.reason}") from None
    if json_too_deep(text, limit):
        raise TooDeep(too_deep(limit))
    return json.loads(text)


# -- YAML ---------------------------------------------------------------------------


class LimitExceeded(yaml.MarkedYAMLError):
    """YAML past one of the limits (nested too deeply, aliases that expand too far, a
    number too long); ``problem_mark`` is where. Its ``problem`` is the whole message:
    the document may well be valid YAML."""


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than ``MAX_DEPTH`` levels while composing
    (PyYAML's composer recurses per level), documents whose aliases would expand
    past ``MAX_NODES`` nodes (a few lines can otherwise stand for billions) and
    integers of more than ``MAX_DIGITS`` digits."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH and self.check_event(
                yaml.SequenceStartEvent, yaml.MappingStartEvent
            ):
                mark = self.peek_event().start_mark
                raise LimitExceeded(problem=too_deep(), problem_mark=mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_DIGITS:
            raise LimitExceeded(problem=too_long(digits), problem_mark=node.start_mark)
        return self.construct_yaml_int(node)  # type: ignore[no-any-return]


BoundedSafeLoader.add_constructor(
    "tag:yaml.org,2002:int",
    BoundedSafeLoader.construct_bounded_int,  # type: ignore[arg-type]
)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes under ``node`` with aliases expanded (recursion bounded by MAX_DEPTH)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise LimitExceeded(
            problem="an alias refers to a node that holds it", problem_mark=node.start_mark
        )
    open_.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, sizes, open_)
        if size > MAX_NODES:
            raise LimitExceeded(
                problem=f"its aliases expand to more than {MAX_NODES} values",
                problem_mark=node.start_mark,
            )
    open_.discard(key)
    sizes[key] = size
    return size
