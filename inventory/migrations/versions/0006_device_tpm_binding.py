"""One TPM, one device: the enrolled device's EK (or macOS enclave key) digest, unique;
and the cluster preference's minimum trust level.

Devices enrolled before this revision keep ``credential_binding`` NULL: the EK was never
stored (only the AK and the EK certificate's serial), so it cannot be computed, and
leaving every existing row NULL means devices that already share an EK cannot make the
unique index fail. They are bound the next time they enroll.

Revision ID: 0006_device_tpm_binding
Revises: 0005_device_posture
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_device_tpm_binding"
down_revision: str | None = "0005_device_posture"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("credential_binding", sa.String(64), nullable=True))
    # NULLs are distinct on both databases: only enrolled devices take part.
    op.create_index("ix_devices_credential_binding", "devices", ["credential_binding"], unique=True)
    with op.batch_alter_table("cluster_preferences") as batch:
        batch.add_column(sa.Column("min_attestation", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cluster_preferences") as batch:
        batch.drop_column("min_attestation")
    op.drop_index("ix_devices_credential_binding", table_name="devices")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("credential_binding")
