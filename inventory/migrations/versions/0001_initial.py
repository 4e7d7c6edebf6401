"""Devices, collected data, enrollment tokens, audit events, the cluster preference, users.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.models import BigIntId, UTCDateTime

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("os_type", sa.String(16), nullable=False),
        sa.Column("asset_tag", sa.String(128), nullable=False),
        sa.Column("enroll_status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("credential_id", sa.String(64), nullable=True),
        sa.Column("credential_public_key", sa.LargeBinary(), nullable=True),
        sa.Column("credential_ek_cert_serial", sa.String(128), nullable=True),
        sa.Column("credential_attestation_type", sa.String(32), nullable=True),
        sa.Column("source_name", sa.String(64), nullable=True),
        sa.Column("source_origin", sa.String(16), nullable=True),
        sa.Column("profile_model_identifier", sa.String(128), nullable=True),
        sa.Column("profile_os_version", sa.String(64), nullable=True),
        sa.Column("profile_os_build", sa.String(64), nullable=True),
        sa.Column("profile_os_build_supplemental", sa.String(64), nullable=True),
        sa.Column("profile_os_usernames", sa.JSON(), nullable=True),
        sa.Column("profile_jamf_binary_version", sa.String(64), nullable=True),
        sa.Column("profile_external_id", sa.String(128), nullable=True),
        sa.Column("profile_update_time", UTCDateTime(), nullable=True),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("asset_tag", "os_type", name="uq_devices_asset_tag_os_type"),
    )
    op.create_table(
        "collected_data",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("serial_number", sa.String(128), nullable=False),
        sa.Column("os_type", sa.String(16), nullable=False),
        sa.Column("model_identifier", sa.String(128), nullable=True),
        sa.Column("os_version", sa.String(64), nullable=True),
        sa.Column("os_build", sa.String(64), nullable=True),
        sa.Column("os_id", sa.String(64), nullable=True),
        sa.Column("os_login_user", sa.String(128), nullable=True),
        sa.Column("jamf_binary_version", sa.String(64), nullable=True),
        sa.Column("reported_asset_tag", sa.String(128), nullable=True),
        sa.Column("system_serial_number", sa.String(128), nullable=True),
        sa.Column("base_board_serial_number", sa.String(128), nullable=True),
        sa.Column("collect_time", UTCDateTime(), nullable=True),
        sa.Column("record_time", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_collected_data_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_collected_data"),
    )
    op.create_index("ix_collected_data_device_id_id", "collected_data", ["device_id", "id"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=False),
        sa.Column("spent_time", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_enrollment_tokens_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_enrollment_tokens_token_hash"),
    )
    op.create_index("ix_enrollment_tokens_device_id", "enrollment_tokens", ["device_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=True),
        sa.Column("asset_tag", sa.String(128), nullable=True),
        sa.Column("os_type", sa.String(16), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.create_index("ix_audit_events_type_id", "audit_events", ["type", "id"])
    op.create_table(
        "cluster_preferences",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("auto_enroll", sa.Boolean(), nullable=False),
        sa.Column("ekcert_allowed_cas", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_preferences"),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
        sa.UniqueConstraint("token_hash", name="uq_users_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("cluster_preferences")
    op.drop_index("ix_audit_events_type_id", table_name="audit_events")
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_enrollment_tokens_device_id", table_name="enrollment_tokens")
    op.drop_table("enrollment_tokens")
    op.drop_index("ix_collected_data_device_id_id", table_name="collected_data")
    op.drop_table("collected_data")
    op.drop_table("devices")
