"""Who a device belongs to, for auto-enrollment: users' declared logins, a hand-registered
device's assigned user, and the auto-enrollment checks under way (owner and sealing key).

Revision ID: 0004_auto_enroll_users
Revises: 0003_ceremony_challenges
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.models import UTCDateTime

revision: str = "0004_auto_enroll_users"
down_revision: str | None = "0003_ceremony_challenges"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("logins", sa.JSON(), nullable=True))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("assigned_user", sa.String(64), nullable=True))
    op.create_table(
        "auto_enroll_checks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_auto_enroll_checks"),
    )
    with op.batch_alter_table("auto_enroll_checks") as batch:
        batch.create_index("ix_auto_enroll_checks_expire_time", ["expire_time"])


def downgrade() -> None:
    op.drop_table("auto_enroll_checks")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("assigned_user")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("logins")
