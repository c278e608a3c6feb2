"""Key paths of the configuration (``pools[0].size``) and the YAML lines they come
from, read from the marks PyYAML's composer leaves on every node."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import yaml

from ..bounded import BoundedSafeLoader

Loc = tuple[str | int, ...]
KEY = "[key]"  # pydantic's marker for an error in a mapping's key rather than its value


def dotted(loc: Sequence[str | int]) -> str:
    """``("pools", 0, "size")`` -> ``pools[0].size``."""
    out = ""
    for part in loc:
        if part == KEY:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def compose(text: str) -> tuple[object, yaml.Node | None]:
    """The document's data (as ``yaml.safe_load`` gives it) and its node tree; too
    deep a document raises ``bounded.LimitExceeded`` (a YAMLError)."""
    loader = BoundedSafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def _entries(node: yaml.MappingNode) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            yield key.value, key, value


def line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The line (1-based) of the deepest key or item of ``loc`` the document has:
    the key itself when it is there, else the nearest enclosing one."""
    line = None
    for part in loc:
        if part == KEY or node is None:
            continue
        if isinstance(node, yaml.MappingNode):
            # the last of a key given twice: the one YAML keeps
            found = next((e for e in reversed(list(_entries(node))) if e[0] == str(part)), None)
            if found is None:
                break
            line, node = found[1].start_mark.line + 1, found[2]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
