"""Ceremony challenges: the server-side state between a ceremony's two round trips.

Revision ID: 0003_ceremony_challenges
Revises: 0002_source_sync
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.models import UTCDateTime

revision: str = "0003_ceremony_challenges"
down_revision: str | None = "0002_source_sync"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ceremony_challenges",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=False),
        sa.Column("used_time", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_ceremony_challenges_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ceremony_challenges"),
    )
    with op.batch_alter_table("ceremony_challenges") as batch:
        batch.create_index("ix_ceremony_challenges_device_id", ["device_id"])
        batch.create_index("ix_ceremony_challenges_expire_time", ["expire_time"])


def downgrade() -> None:
    op.drop_table("ceremony_challenges")
