"""ondemand: requests that wait for capacity (table requests) and the request a VM
is set aside for (vms.request_id)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("pools", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("hours", sa.Double(), nullable=True),
        sa.Column("vms", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_requests_requested_by", "requests", ["requested_by"])
    op.create_index("ix_requests_state", "requests", ["state"])
    # A plain ADD COLUMN and an index: SQLite does not rebuild the table (a rebuilt
    # vms would lose AUTOINCREMENT, and ids could be reused).
    op.add_column("vms", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index("ix_vms_request_id", "vms", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_vms_request_id", table_name="vms")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("request_id")
    op.drop_index("ix_requests_state", table_name="requests")
    op.drop_index("ix_requests_requested_by", table_name="requests")
    op.drop_table("requests")
