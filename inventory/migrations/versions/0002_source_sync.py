"""Source sync: per-device source bookkeeping and the record of every sync run.

Revision ID: 0002_source_sync
Revises: 0001_initial
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.models import BigIntId, UTCDateTime

revision: str = "0002_source_sync"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("source_inventory", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("sync_run_id", sa.BigInteger(), nullable=True))
        batch.create_index(
            "ix_devices_source_name_source_inventory", ["source_name", "source_inventory"]
        )
    op.create_table(
        "sync_runs",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("inventory", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("end_time", UTCDateTime(), nullable=True),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("watermark", UTCDateTime(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_inventory_id", "sync_runs", ["inventory", "id"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_inventory_id", table_name="sync_runs")
    op.drop_table("sync_runs")
    with op.batch_alter_table("devices") as batch:
        batch.drop_index("ix_devices_source_name_source_inventory")
        batch.drop_column("sync_run_id")
        batch.drop_column("source_hash")
        batch.drop_column("source_inventory")
