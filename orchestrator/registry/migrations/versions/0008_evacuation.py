"""evacuation: when a VM was rebuilt on another host because its host died, and
the host it came from

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rebuilt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rebuilt_from", Id, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("rebuilt_from")
        batch_op.drop_column("rebuilt_at")
