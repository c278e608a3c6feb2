"""addresses: each VM's network, address and who said so; hosts' declared network
and their libvirt networks; the address plan's allocations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("network_setting", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("networks", sa.JSON(), nullable=True))
    # Hosts synced before: what they had was declared (or the old default, user).
    op.execute("UPDATE hosts SET network_setting = network")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("network", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("ip_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("ip_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "addresses",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("network", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("vm_id", Id, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("network", "address", name="uq_address"),
        sa.UniqueConstraint("vm_id", name="uq_address_vm"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("addresses")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("ip_seen_at")
        batch_op.drop_column("ip_source")
        batch_op.drop_column("network")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("networks")
        batch_op.drop_column("network_setting")
