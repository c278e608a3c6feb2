"""hostnames: each VM's unique hostname, the table of every hostname ever given (so
none is given twice), and VMs' tags

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from orchestrator.hostnames import new_hostname

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hostnames",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("vm_id", Id, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hostname", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("tags", sa.JSON(), nullable=True))
    # The VMs already there get theirs now.
    bind = op.get_bind()
    now = datetime.now(UTC)
    given: set[str] = set()
    for vm_id, name, pool in bind.execute(sa.text("SELECT id, name, pool FROM vms")).all():
        host = new_hostname(pool or name)
        while host in given:
            host = new_hostname(pool or name)
        given.add(host)
        bind.execute(sa.text("UPDATE vms SET hostname = :h WHERE id = :i"), {"h": host, "i": vm_id})
        bind.execute(
            sa.text("INSERT INTO hostnames (name, vm_id, issued_at) VALUES (:h, :i, :t)"),
            {"h": host, "i": vm_id, "t": now},
        )
    # A unique index (a constraint would make SQLite rebuild the table, and the
    # rebuilt table would lose AUTOINCREMENT: ids could be reused).
    op.create_index("uq_vm_hostname", "vms", ["hostname"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_vm_hostname", table_name="vms")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("tags")
        batch_op.drop_column("hostname")
    op.drop_table("hostnames")
