"""Enrollment through ``devtrust serve``'s routes over a real socket, with a real swtpm.

The device side is the agent's own code (``ceremony.agent.enroll``) driving swtpm; the
inventory is SQLite and PostgreSQL. Each test checks what the device ends up as, what was
audited, and, for a refusal, that nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ceremony.agent.enroll import enroll_macos, enroll_tpm, self_token
from ceremony.agent.softkey import SoftwareEnclaveKey
from ceremony.agent.tpm import DeviceTPM, load_ak
from ceremony.attestation.ek_cert import parse_ek_certificate
from inventory.db import Database
from inventory.domain import AttestationType, AuditEvent, EnrollStatus, OSType, Role
from inventory.preference import DeviceTrust
from inventory.services import audit, devices, preference, tokens
from tests.ceremony import World, ceremony_service, world
from tests.conftest import _empty
from tests.services import drop_other_connections
from tests.tpm import SwTPM, swtpm

pytestmark = pytest.mark.swtpm


@pytest.fixture(scope="module", params=["rsa", "ecc", "rsa3072"])
def tpm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwTPM]:
    with swtpm(tmp_path_factory.mktemp(request.param), ek=request.param) as running:
        yield running


@pytest.fixture
def linux(db: Database) -> Iterator[World]:
    with ceremony_service(db) as url:
        yield world(db, url)


def allow_cas(db: Database, pem: bytes) -> None:
    trust = DeviceTrust(ekcert_allowed_cas=(pem.decode(),))
    preference.update_preference(db.uow(), trust, actor="admin")


def enrolled_events(db: Database) -> list[AuditEvent]:
    return audit.list_events(db.uow(), type=audit.DEVICE_ENROLL)


def test_a_tpm_device_enrolls_with_its_ek_certificate(
    linux: World, tpm: SwTPM, tmp_path: Path
) -> None:
    with linux.client() as client, DeviceTPM(tpm.tcti, ek=tpm.ek) as device_tpm:
        result = enroll_tpm(client, linux.token, linux.collected(), device_tpm, tmp_path)
        ek_cert = device_tpm.ek_certificate()
        assert device_tpm.ek_template_name == tpm.ek_template
    assert (result["asset_tag"], result["enroll_status"]) == (linux.asset_tag, "enrolled")
    device = devices.get_device(linux.db.uow(), linux.asset_tag)
    assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == "alice"
    assert device.credential is not None
    assert device.credential.attestation_type is AttestationType.TPM_EKCERT
    assert ek_cert is not None
    serial = parse_ek_certificate(ek_cert).serial_number
    assert device.credential.ek_cert_serial == format(serial, "x")
    ak = load_ak(tmp_path)
    assert ak is not None and device.credential.public_key == ak.public
    [event] = enrolled_events(linux.db)
    assert event.success and event.actor == "alice" and "tpm_ekcert" in event.message


def test_an_ek_certificate_from_an_allowed_ca_is_tpm_ekcert_trusted(
    linux: World, tpm: SwTPM, tmp_path: Path
) -> None:
    allow_cas(linux.db, tpm.ca_cert_pem)
    with linux.client() as client, DeviceTPM(tpm.tcti, ek=tpm.ek) as device_tpm:
        enroll_tpm(client, linux.token, linux.collected(), device_tpm, tmp_path)
    device = devices.get_device(linux.db.uow(), linux.asset_tag)
    assert device.credential is not None
    assert device.credential.attestation_type is AttestationType.TPM_EKCERT_TRUSTED


def test_a_macos_device_enrolls_with_its_key(db: Database, tmp_path: Path) -> None:
    with ceremony_service(db) as url:
        mac = world(db, url, asset_tag="C02XL0GJJGH5", os_type=OSType.MACOS)
        key = SoftwareEnclaveKey.load_or_create(tmp_path)
        with mac.client() as client:
            result = enroll_macos(client, mac.token, mac.collected(), key)
    assert result["enroll_status"] == "enrolled"
    device = devices.get_device(db.uow(), mac.asset_tag)
    assert device.credential is not None
    assert device.credential.public_key == key.public_key_der()
    assert device.credential.attestation_type is AttestationType.NONE


def test_an_editor_enrolls_the_current_device_in_one_step(
    linux: World, tpm: SwTPM, tmp_path: Path
) -> None:
    credential = linux.add_user("erin", Role.EDITOR)
    collected = linux.collected(serial="LNX-NEW-1")
    with linux.client(credential) as client, DeviceTPM(tpm.tcti, ek=tpm.ek) as device_tpm:
        issued = self_token(client, collected)
        enroll_tpm(client, issued.token, collected, device_tpm, tmp_path)
    device = devices.get_device(linux.db.uow(), "LNX-NEW-1")
    assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == "erin"


@pytest.mark.postgres
def test_an_enrollment_goes_through_after_the_database_dropped_the_pooled_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    """The ceremony's connections are not pinged before use: a dropped one is retried."""
    db = Database.connect(postgres_url)
    try:
        with ceremony_service(db) as url:
            first = world(db, url, asset_tag="C02DROPPED01", os_type=OSType.MACOS)
            key = SoftwareEnclaveKey.load_or_create(tmp_path)
            with first.client() as client:
                enroll_macos(client, first.token, first.collected(), key)
            devices.register_device(
                db.uow(), os_type=OSType.MACOS, asset_tag="C02DROPPED02", actor="admin"
            )
            token = tokens.create_token(db.uow(), "C02DROPPED02", actor="admin").token
            assert drop_other_connections(db.engine)  # the ceremony's pooled connection among them
            second = replace(first, asset_tag="C02DROPPED02", token=token)
            other_key = SoftwareEnclaveKey.load_or_create(tmp_path / "second")  # one key, one Mac
            with second.client() as client:
                result = enroll_macos(client, second.token, second.collected(), other_key)
        assert result["enroll_status"] == "enrolled"
    finally:
        _empty(db)
        db.close()
