"""A VM's tags: who may set them, what a key and a value look like, and the list
filter (``GET /vm/list?tag=k:v``).

Tags are ``key: value`` strings kept with the VM (registry ``vms.tags``). Setting
merges into what the VM has; an empty value removes the key. The VM's creator, the
holder of a checked-out VM, or an admin may set them (a pool VM nobody holds: an
admin); readers may not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .access import Principal
from .errors import BadRequest
from .power import raise_forbidden  # the one wording of "not yours" for VMs
from .registry import Registry, VmRow

KEY_PATTERN = r"[A-Za-z0-9_.-]{1,50}"
KEY_RULE = "1-50 characters of A-Z a-z 0-9 _ . -"
MAX_VALUE = 255
_KEY = re.compile(KEY_PATTERN)


def _shown(value: Any) -> str:
    """A value in a message: a string quoted (cut at 60), anything else as JSON."""
    if not isinstance(value, str):
        text = json.dumps(value, default=str)
        return text[:60] + ("..." if len(text) > 60 else "")
    return repr(value[:60] + ("..." if len(value) > 60 else ""))


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise BadRequest(f"tag key {_shown(key)} must be {KEY_RULE}")
    return key


def check_tags(tags: Any) -> dict[str, str]:
    """``tags`` as sent (a JSON object), checked: each key by KEY_RULE, each value a
    string of at most MAX_VALUE characters ("" removes the key). The 400 names the
    first bad key."""
    if not isinstance(tags, Mapping) or not tags:
        raise BadRequest('tags must be a non-empty object of "key": "value" strings')
    out: dict[str, str] = {}
    for key, value in tags.items():
        check_key(key)
        if not isinstance(value, str):
            raise BadRequest(f"tag {key!r}: the value must be a string, got {_shown(value)}")
        if len(value) > MAX_VALUE:
            raise BadRequest(f"tag {key!r}: the value is longer than {MAX_VALUE} characters")
        out[key] = value
    return out


def parse_filter(given: Iterable[str]) -> list[tuple[str, str]]:
    """``tag=KEY:VALUE`` parameters (repeatable; the value may hold ``:``) as pairs; a
    VM matches when it has every one of them."""
    out: list[tuple[str, str]] = []
    for text in given:
        key, colon, value = text.partition(":")
        if not colon:
            raise BadRequest(f"tag must be KEY:VALUE, got {_shown(text)}")
        check_key(key)
        if len(value) > MAX_VALUE:
            raise BadRequest(f"tag {key!r}: the value is longer than {MAX_VALUE} characters")
        out.append((key, value))
    return out


def matches(vm: VmRow, wanted: Iterable[tuple[str, str]]) -> bool:
    have = vm.tags or {}
    return all(k in have and have[k] == v for k, v in wanted)


def set_tags(registry: Registry, vm_id: int, tags: Any, *, by: Principal) -> dict[str, str]:
    """Merge ``tags`` into VM ``vm_id``'s (checked first); its tags after. Its creator,
    its holder (checked out) or an admin; 403 otherwise, 404 for no such VM."""
    checked = check_tags(tags)
    vm = registry.vms.get(vm_id)
    by.require_writer(f"tag vmid {vm_id}")
    if not (by.owns(vm.created_by) or (vm.held_by is not None and by.owns(vm.held_by))):
        raise_forbidden(by, f"tag vmid {vm_id}", vm)
    return registry.vms.set_tags(vm_id, checked)
