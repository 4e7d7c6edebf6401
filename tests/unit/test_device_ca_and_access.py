"""The device CA's certificates and the access rule built on them (pure: files and keys)."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.access import (
    REQUIRES_TRUSTED_DEVICE,
    check_access,
)
from ceremony.device_ca import (
    CERT_FILE,
    DEVICE_ID,
    KEY_FILE,
    DeviceCA,
    DeviceExtensions,
    device_extensions,
)
from ceremony.errors import DeviceCAError
from inventory.errors import AccessDenied

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
DEVICE = DeviceExtensions(
    device_id="628bfe1f-0d74-4922-8b0c-e297f01ec7cb",
    asset_tag="C02XL0GJJGH5",
    credential_id="1c3e5b7d-9f01-4a2b-8c3d-000000000001",
)


@pytest.fixture
def ca(tmp_path: Path) -> DeviceCA:
    return DeviceCA.load_or_create(tmp_path / "ca", now=NOW)


def user_cert(
    ca: DeviceCA, ttl: datetime.timedelta = datetime.timedelta(hours=1)
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return ca.issue(user="alice", public_key=key, device=DEVICE, ttl=ttl, now=NOW)


def test_the_ca_is_made_once_with_a_private_key_file(tmp_path: Path, ca: DeviceCA) -> None:
    key_file = tmp_path / "ca" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = DeviceCA.load_or_create(tmp_path / "ca")
    assert again.cert == ca.cert
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca


def test_a_ca_key_open_to_others_or_half_supplied_is_refused(tmp_path: Path, ca: DeviceCA) -> None:
    key_file = tmp_path / "ca" / KEY_FILE
    key_file.chmod(0o644)
    with pytest.raises(DeviceCAError, match=f"open to other users .*chmod 600 {key_file}"):
        DeviceCA.load_or_create(tmp_path / "ca")
    with pytest.raises(DeviceCAError, match="give both"):
        DeviceCA.load_or_create(tmp_path, key_file=key_file)


def test_a_supplied_ca_must_be_a_key_and_its_certificate(tmp_path: Path, ca: DeviceCA) -> None:
    other = DeviceCA.load_or_create(tmp_path / "other", now=NOW)
    with pytest.raises(DeviceCAError, match="is not the certificate of the key"):
        DeviceCA.load_or_create(
            tmp_path, key_file=tmp_path / "ca" / KEY_FILE, cert_file=tmp_path / "other" / CERT_FILE
        )
    supplied = DeviceCA.load_or_create(
        tmp_path, key_file=tmp_path / "other" / KEY_FILE, cert_file=tmp_path / "other" / CERT_FILE
    )
    assert supplied.cert == other.cert


def test_issued_certificates_carry_the_three_device_extensions(ca: DeviceCA) -> None:
    cert = user_cert(ca)
    assert device_extensions(cert) == DEVICE
    assert cert.not_valid_after_utc - NOW == datetime.timedelta(hours=1)
    cert.verify_directly_issued_by(ca.cert)
    assert cert.extensions.get_extension_for_oid(DEVICE_ID).critical is False
    with pytest.raises(ValueError, match="at most"):
        user_cert(ca, ttl=datetime.timedelta(days=2))


@pytest.mark.parametrize("mode", ["off", "optional"])
def test_off_and_optional_let_everyone_in(ca: DeviceCA, mode: str) -> None:
    assert check_access(None, mode, is_bot=False, ca=ca.cert) is None
    assert check_access(user_cert(ca), mode, is_bot=False, ca=ca.cert, now=NOW) == DEVICE


def test_required_needs_a_trusted_device_from_everyone(ca: DeviceCA) -> None:
    assert check_access(user_cert(ca), "required", is_bot=False, ca=ca.cert, now=NOW) == DEVICE
    for is_bot in (False, True):
        with pytest.raises(AccessDenied, match=f"^{REQUIRES_TRUSTED_DEVICE}$"):
            check_access(None, "required", is_bot=is_bot, ca=ca.cert)


def test_required_for_humans_exempts_bots(ca: DeviceCA) -> None:
    assert check_access(None, "required-for-humans", is_bot=True, ca=ca.cert) is None
    with pytest.raises(AccessDenied, match=f"^{REQUIRES_TRUSTED_DEVICE}$"):
        check_access(None, "required-for-humans", is_bot=False, ca=ca.cert)


def test_an_unknown_mode_refuses(ca: DeviceCA) -> None:
    with pytest.raises(AccessDenied, match="unknown device_trust.mode 'strict'"):
        check_access(user_cert(ca), "strict", is_bot=True, ca=ca.cert, now=NOW)


def test_certificates_from_another_ca_expired_or_without_extensions_are_not_trusted(
    tmp_path: Path, ca: DeviceCA
) -> None:
    stranger = DeviceCA.load_or_create(tmp_path / "stranger", now=NOW)
    later = NOW + datetime.timedelta(hours=2)
    for cert, now in ((user_cert(stranger), NOW), (user_cert(ca), later), (ca.cert, NOW)):
        with pytest.raises(AccessDenied, match=REQUIRES_TRUSTED_DEVICE):
            check_access(cert, "required", is_bot=False, ca=ca.cert, now=now)


def test_a_self_signed_certificate_with_copied_extensions_is_never_trusted(
    tmp_path: Path, ca: DeviceCA
) -> None:
    """What the README once showed (no CA given) accepted this; the CA is now required."""
    copycat = DeviceCA.load_or_create(tmp_path / "copycat", now=NOW)
    forged = user_cert(copycat)  # the same three extensions, signed by someone else
    assert device_extensions(forged) == DEVICE
    with pytest.raises(AccessDenied, match=REQUIRES_TRUSTED_DEVICE):
        check_access(forged, "required", is_bot=False, ca=ca.cert, now=NOW)
    with pytest.raises(TypeError):
        check_access(forged, "required", is_bot=False)  # type: ignore[call-arg]
