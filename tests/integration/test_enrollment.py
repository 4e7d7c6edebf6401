"""The last step of enrollment, on SQLite and PostgreSQL: all of it or nothing of it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inventory.db import Database
from inventory.domain import (
    AttestationType,
    CollectedData,
    Credential,
    EnrollStatus,
    OSType,
)
from inventory.errors import TokenInvalid
from inventory.services import audit, devices, enrollment, tokens
from tests.conftest import Clock

TAG = "LNX-4C4C4544"
CREDENTIAL = Credential(
    id="cred-1",
    public_key=b"\x00\x01ak-public-area",
    ek_cert_serial="1234",
    attestation_type=AttestationType.TPM_EKCERT_TRUSTED,
)


def collected(serial: str = TAG, os_type: OSType = OSType.LINUX) -> CollectedData:
    return CollectedData(serial_number=serial, os_type=os_type, os_login_user="alice")


@pytest.fixture
def token(db: Database) -> str:
    devices.register_device(db.uow(), os_type="linux", asset_tag=TAG, actor="admin")
    return tokens.create_token(db.uow(), TAG, actor="admin").token


def test_enrollment_records_credential_owner_data_and_audit(db: Database, token: str) -> None:
    device = enrollment.enroll_device(
        db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
    )
    assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == "alice"
    assert device.credential == CREDENTIAL
    assert devices.get_device(db.uow(), TAG) == device
    [history] = devices.collected_history(db.uow(), device.id)
    assert history.os_login_user == "alice"
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL)
    assert event.success and "enrolled by alice (tpm_ekcert_trusted)" in event.message
    with pytest.raises(TokenInvalid, match="already used"):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
        )


def test_a_token_for_another_device_changes_nothing_and_is_audited(
    db: Database, token: str
) -> None:
    with pytest.raises(
        TokenInvalid,
        match=r"is for device LNX-4C4C4544/Linux, but this device reports OTHER-1/linux",
    ):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected("OTHER-1"), user="bob"
        )
    device = devices.get_device(db.uow(), TAG)
    assert device.enroll_status is EnrollStatus.NOT_ENROLLED and device.credential is None
    assert devices.collected_history(db.uow(), device.id) == []
    [failure] = audit.list_events(db.uow(), type=audit.DEVICE_ENROLL, failed_only=True)
    assert "refused: the enrollment token is for device" in failure.message
    # The refused attempt did not spend the token: the right device still enrolls with it.
    enrollment.enroll_device(
        db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
    )


def test_expired_tokens_and_enrolled_devices_are_refused(
    db: Database, token: str, clock: Clock
) -> None:
    clock.advance(hours=2)
    with pytest.raises(TokenInvalid, match="expired"):
        enrollment.enroll_device(
            db.uow(), token=token, credential=CREDENTIAL, collected=collected(), user="alice"
        )
    fresh = tokens.create_token(db.uow(), TAG, actor="admin", ttl=timedelta(minutes=5)).token
    enrollment.enroll_device(
        db.uow(), token=fresh, credential=CREDENTIAL, collected=collected(), user="alice"
    )
    assert devices.get_device(db.uow(), TAG).owner == "alice"
