"""moves: hosts in maintenance (a reason) and their migrate_address, VMs moved
between hosts (``migrations``, with a claim on the target while they move) and
drains of hosts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("maintenance", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("maintenance_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("migrate_address", sa.String(length=256), nullable=True))
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("migration_id", Id, nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_claims_migration_id"), ["migration_id"])
    op.create_table(
        "migrations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("vm_id", Id, nullable=False),
        sa.Column("source_id", Id, nullable=False),
        sa.Column("target_id", Id, nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("drain_id", Id, nullable=True),
        sa.Column("server", sa.String(length=32), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["source_id"], ["hosts.id"]),
        sa.ForeignKeyConstraint(["target_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_migrations_vm_id"), ["vm_id"])
        batch_op.create_index(batch_op.f("ix_migrations_phase"), ["phase"])
        batch_op.create_index(batch_op.f("ix_migrations_drain_id"), ["drain_id"])
    op.create_table(
        "drains",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("host_id", Id, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("moved", sa.Integer(), nullable=False),
        sa.Column("failed", sa.JSON(), nullable=True),
        sa.Column("server", sa.String(length=32), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("drains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drains_host_id"), ["host_id"])
        batch_op.create_index(batch_op.f("ix_drains_state"), ["state"])


def downgrade() -> None:
    with op.batch_alter_table("drains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drains_state"))
        batch_op.drop_index(batch_op.f("ix_drains_host_id"))
    op.drop_table("drains")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_migrations_drain_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_phase"))
        batch_op.drop_index(batch_op.f("ix_migrations_vm_id"))
    op.drop_table("migrations")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_claims_migration_id"), type_="unique")
        batch_op.drop_column("migration_id")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("migrate_address")
        batch_op.drop_column("maintenance_at")
        batch_op.drop_column("maintenance")
