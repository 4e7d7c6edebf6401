"""SQLAlchemy 2.x tables. The migrations under ``migrations/versions`` create exactly these;
``tests/integration/test_migrations.py`` compares the two so they cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, not BIGINT.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DeviceRow(Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("asset_tag", "os_type"),
        Index("ix_devices_source_name_source_inventory", "source_name", "source_inventory"),
        # A sync's questions by Jamf id: ghosts, a webhook's device, a re-enrolled serial.
        Index("ix_devices_profile_external_id_os_type", "profile_external_id", "os_type"),
        # One TPM (or one enclave key), one enrolled device: decided by the database.
        Index("ix_devices_credential_binding", "credential_binding", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    os_type: Mapped[str] = mapped_column(String(16))
    asset_tag: Mapped[str] = mapped_column(String(128))
    enroll_status: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(64))

    credential_id: Mapped[str | None] = mapped_column(String(64))
    credential_public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    credential_ek_cert_serial: Mapped[str | None] = mapped_column(String(128))
    credential_attestation_type: Mapped[str | None] = mapped_column(String(32))
    # While enrolled: a SHA-256 (hex) of the EK's public key (a TPM device) or of the
    # enclave key (macOS), over the key's numbers (``ceremony.enroll.key_binding``); NULL
    # otherwise, and for devices enrolled before migration 0006 (their EK was never
    # stored). Unique, NULLs apart: one TPM, one enrolled device.
    credential_binding: Mapped[str | None] = mapped_column(String(64))

    source_name: Mapped[str | None] = mapped_column(String(64))
    source_origin: Mapped[str | None] = mapped_column(String(16))
    # Which inventory entry of the source last wrote the device, the hash of what it
    # wrote (a no-change sync compares and writes nothing), and the last full sync
    # run that saw it (how on_missing finds what is gone without a set in memory).
    source_inventory: Mapped[str | None] = mapped_column(String(64))
    source_hash: Mapped[str | None] = mapped_column(String(64))
    sync_run_id: Mapped[int | None] = mapped_column(BigInteger)

    profile_model_identifier: Mapped[str | None] = mapped_column(String(128))
    profile_os_version: Mapped[str | None] = mapped_column(String(64))
    profile_os_build: Mapped[str | None] = mapped_column(String(64))
    profile_os_build_supplemental: Mapped[str | None] = mapped_column(String(64))
    profile_os_usernames: Mapped[list[str] | None] = mapped_column(JSON)
    profile_jamf_binary_version: Mapped[str | None] = mapped_column(String(64))
    profile_external_id: Mapped[str | None] = mapped_column(String(128))
    profile_update_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The device's security state as the MDM reports it (``domain.Posture``); null: not
    # reported. Columns, not a JSON document, so a query can find the unencrypted Macs.
    posture_filevault: Mapped[bool | None] = mapped_column(Boolean)
    posture_filevault_state: Mapped[str | None] = mapped_column(String(32))
    posture_sip: Mapped[bool | None] = mapped_column(Boolean)
    posture_gatekeeper: Mapped[str | None] = mapped_column(String(64))
    posture_firewall: Mapped[bool | None] = mapped_column(Boolean)
    posture_secure_boot_level: Mapped[str | None] = mapped_column(String(32))
    posture_activation_lock: Mapped[bool | None] = mapped_column(Boolean)
    posture_lockdown_mode: Mapped[bool | None] = mapped_column(Boolean)
    posture_last_contact_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The MDM's record as of the sync that last wrote the device: compact JSON, at most
    # ``serialize.RAW_RECORD_LIMIT`` bytes (a larger one is cut down to a marker that
    # says so, never broken JSON). Text, not JSON: it is shown as it came.
    # Deferred: listing devices never reads it.
    source_record: Mapped[str | None] = mapped_column(Text, deferred=True)
    # The user an admin assigned to a device registered by hand (no MDM profile): the
    # only user it auto-enrolls for. No foreign key: removing the user only stops that.
    assigned_user: Mapped[str | None] = mapped_column(String(64))

    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


class CollectedDataRow(Base):
    __tablename__ = "collected_data"
    __table_args__ = (Index("ix_collected_data_device_id_id", "device_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(36), ForeignKey("devices.id", ondelete="CASCADE"))
    serial_number: Mapped[str] = mapped_column(String(128))
    os_type: Mapped[str] = mapped_column(String(16))
    model_identifier: Mapped[str | None] = mapped_column(String(128))
    os_version: Mapped[str | None] = mapped_column(String(64))
    os_build: Mapped[str | None] = mapped_column(String(64))
    os_id: Mapped[str | None] = mapped_column(String(64))
    os_login_user: Mapped[str | None] = mapped_column(String(128))
    jamf_binary_version: Mapped[str | None] = mapped_column(String(64))
    reported_asset_tag: Mapped[str | None] = mapped_column(String(128))
    system_serial_number: Mapped[str | None] = mapped_column(String(128))
    base_board_serial_number: Mapped[str | None] = mapped_column(String(128))
    collect_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    record_time: Mapped[datetime] = mapped_column(UTCDateTime)


class EnrollmentTokenRow(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    user_name: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    expire_time: Mapped[datetime] = mapped_column(UTCDateTime)
    spent_time: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChallengeRow(Base):
    """Server-side state of a ceremony between its two round trips; single use."""

    __tablename__ = "ceremony_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    user_name: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    expire_time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_time: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AutoEnrollCheckRow(Base):
    """An auto-enrollment check a user submitted: who may poll it, and the key that seals
    its token in the result backend (which never sees the key). Deleted once its verdict
    is delivered; worthless once expired."""

    __tablename__ = "auto_enroll_checks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    expire_time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_type_id", "type", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    type: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    # No foreign key: the log outlives the devices it talks about.
    device_id: Mapped[str | None] = mapped_column(String(36))
    asset_tag: Mapped[str | None] = mapped_column(String(128))
    os_type: Mapped[str | None] = mapped_column(String(16))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ClusterPreferenceRow(Base):
    __tablename__ = "cluster_preferences"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(32))
    auto_enroll: Mapped[bool] = mapped_column(Boolean)
    ekcert_allowed_cas: Mapped[list[str]] = mapped_column(JSON)
    # A ``domain.TrustLevel``; NULL: any.
    min_attestation: Mapped[str | None] = mapped_column(String(32))
    revision: Mapped[int] = mapped_column(Integer)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


class AccessEpochRow(Base):
    """One row: how many times what the access check caches has changed (SQLite's
    triggers count; PostgreSQL's notify instead). See migration 0008."""

    __tablename__ = "access_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    # The OS logins an admin declared for the user (``users add --logins``): with the
    # name, what an MDM profile's usernames are matched against.
    logins: Mapped[list[str] | None] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncRunRow(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_inventory_id", "inventory", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    inventory: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
