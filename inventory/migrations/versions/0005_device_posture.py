"""Device posture from the MDM (FileVault, SIP, Gatekeeper, firewall, secure boot,
activation lock, lockdown mode, last contact) and the MDM's raw record of the last write.

Revision ID: 0005_device_posture
Revises: 0004_auto_enroll_users
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.models import UTCDateTime

revision: str = "0005_device_posture"
down_revision: str | None = "0004_auto_enroll_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("posture_filevault", sa.Boolean),
    ("posture_filevault_state", lambda: sa.String(32)),
    ("posture_sip", sa.Boolean),
    ("posture_gatekeeper", lambda: sa.String(64)),
    ("posture_firewall", sa.Boolean),
    ("posture_secure_boot_level", lambda: sa.String(32)),
    ("posture_activation_lock", sa.Boolean),
    ("posture_lockdown_mode", sa.Boolean),
    ("posture_last_contact_time", UTCDateTime),
    ("source_record", sa.Text),
)


def upgrade() -> None:
    # Existing devices get their posture on the next sync: the content hash's version
    # moved, so every synced device is rewritten once.
    with op.batch_alter_table("devices") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Out of line and uncompressed: a Mac's record (2-3 KB) would otherwise be
        # compressed into the row, and every sync that only stamps the row as seen would
        # copy it into a new row version; out of line, an update copies a pointer. No
        # compression also spares the server's CPU, which a sync shares.
        op.execute("ALTER TABLE devices ALTER COLUMN source_record SET STORAGE EXTERNAL")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
