"""The three input files (physical machines, images, VM types) -> frozen dataclasses.

Each file may be written in its original text form (the assignment's) or in YAML;
``formats/*.md`` specifies them. Every problem is an :class:`InventoryError` whose
message is ``path:line: problem``. ``load_*`` stop at a file's first problem;
:func:`validate_files` collects all of them for the ``validate`` command.
"""

from .load import load_hosts, load_images, load_inventory, load_types, validate_files

__all__ = [
    "load_hosts",
    "load_images",
    "load_inventory",
    "load_types",
    "validate_files",
]
