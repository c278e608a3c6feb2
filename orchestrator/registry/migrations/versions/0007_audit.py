"""audit: who did it (actor), the API operation, the object it was about and the
outcome of every event, and whose the object was

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("operation", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("object_type", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("object_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_events_owner"), ["owner"])
        batch_op.create_index(batch_op.f("ix_events_actor"), ["actor"])
        batch_op.create_index(batch_op.f("ix_events_vm_id"), ["vm_id"])
        batch_op.create_index("ix_events_object", ["object_type", "object_id"])


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_object")
        batch_op.drop_index(batch_op.f("ix_events_owner"))
        batch_op.drop_column("owner")
        batch_op.drop_index(batch_op.f("ix_events_vm_id"))
        batch_op.drop_index(batch_op.f("ix_events_actor"))
        batch_op.drop_column("status")
        batch_op.drop_column("outcome")
        batch_op.drop_column("object_id")
        batch_op.drop_column("object_type")
        batch_op.drop_column("operation")
        batch_op.drop_column("actor")
