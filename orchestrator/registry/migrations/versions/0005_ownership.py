"""ownership: who made each VM, volume and schedule and who holds each checked-out
VM, and how many of its keys are in the guest; users (the rows quota checks
lock); users' SSH public keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("held_by", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("borrower_keys", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_index(batch_op.f("ix_vms_created_by"), ["created_by"])
        batch_op.create_index(batch_op.f("ix_vms_held_by"), ["held_by"])
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_volumes_created_by"), ["created_by"])
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ssh_keys",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user", "fingerprint", name="uq_ssh_key"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("ssh_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ssh_keys_user"), ["user"])


def downgrade() -> None:
    with op.batch_alter_table("ssh_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ssh_keys_user"))
    op.drop_table("ssh_keys")
    op.drop_table("users")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("created_by")
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_created_by"))
        batch_op.drop_column("created_by")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_held_by"))
        batch_op.drop_index(batch_op.f("ix_vms_created_by"))
        batch_op.drop_column("borrower_keys")
        batch_op.drop_column("held_by")
        batch_op.drop_column("created_by")
