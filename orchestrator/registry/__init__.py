"""The registry: every fact the fabric knows, in SQLAlchemy tables."""

from . import tables_auth, tables_schedules  # noqa: F401 - their tables join Base
from .db import Registry, image_spec_from_row, image_spec_to_dict, make_engine
from .tables import (
    ClaimRow,
    EventRow,
    HostRow,
    ImageRow,
    StagedImageRow,
    TypeRow,
    VmRow,
    VolumeRow,
)

__all__ = [
    "ClaimRow",
    "EventRow",
    "HostRow",
    "ImageRow",
    "Registry",
    "StagedImageRow",
    "TypeRow",
    "VmRow",
    "VolumeRow",
    "image_spec_from_row",
    "image_spec_to_dict",
    "make_engine",
]
