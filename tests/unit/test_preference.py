"""The cluster preference: every refusal names its field; valid edits round-trip."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from inventory.errors import InvalidPreference
from inventory.preference import (
    DeviceTrust,
    DeviceTrustMode,
    Preference,
    from_resource,
    to_resource,
    with_value,
)


def make_cert(common_name: str, *, ca: bool) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM).decode()


def resource(**device_trust: object) -> dict[str, object]:
    return {
        "kind": "cluster_auth_preference",
        "version": "v2",
        "metadata": {"name": "cluster-auth-preference"},
        "spec": {"device_trust": device_trust},
    }


def test_the_reference_edit_enabling_auto_enroll_is_accepted() -> None:
    edited = yaml.safe_load(
        """
kind: cluster_auth_preference
version: v2
metadata:
  name: cluster-auth-preference
spec:
  device_trust:
    mode: "required"
    auto_enroll: true
"""
    )
    assert from_resource(edited) == DeviceTrust(mode=DeviceTrustMode.REQUIRED, auto_enroll=True)


def test_resource_round_trips() -> None:
    pref = Preference(
        DeviceTrust(DeviceTrustMode.REQUIRED_FOR_HUMANS, True, (make_cert("Maker EK CA", ca=True),))
    )
    assert from_resource(to_resource(pref)) == pref.device_trust


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (resource(mode="sometimes"), "invalid spec.device_trust.mode: 'sometimes' is not one of"),
        (resource(auto_enroll="yes please"), "invalid spec.device_trust.auto_enroll"),
        (
            resource(ekcert_allowed_cas=["not a pem"]),
            r"spec.device_trust.ekcert_allowed_cas\[0\]: not a PEM",
        ),
        (
            resource(ekcert_allowed_cas={"a": 1}),
            "spec.device_trust.ekcert_allowed_cas: expected a list",
        ),
        (resource(colour="blue"), "unknown field spec.device_trust.colour"),
        ({"kind": "role", "spec": {}}, "invalid kind"),
        ({"kind": "cluster_auth_preference", "version": "v1", "spec": {}}, "invalid version"),
        ({"kind": "cluster_auth_preference"}, "invalid spec"),
        ("just a string", "must be a YAML mapping"),
    ],
)
def test_invalid_resources_are_refused_naming_the_field(doc: object, message: str) -> None:
    with pytest.raises(InvalidPreference, match=message):
        from_resource(doc)


def test_a_certificate_that_is_not_a_ca_is_refused() -> None:
    leaf = make_cert("laptop.example.com", ca=False)
    with pytest.raises(
        InvalidPreference,
        match=r"ekcert_allowed_cas\[1\]: certificate CN=laptop.example.com is not a CA",
    ):
        from_resource(resource(ekcert_allowed_cas=[make_cert("Good CA", ca=True), leaf]))


def test_a_pem_that_does_not_parse_is_refused() -> None:
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(
        InvalidPreference, match=r"ekcert_allowed_cas\[0\]: PEM certificate does not parse"
    ):
        from_resource(resource(ekcert_allowed_cas=[broken]))


def test_set_parses_values_as_yaml() -> None:
    base = DeviceTrust()
    assert with_value(base, "device_trust.auto_enroll", "true").auto_enroll is True
    assert with_value(base, "spec.device_trust.mode", "required").mode is DeviceTrustMode.REQUIRED
    with pytest.raises(InvalidPreference, match="unknown setting 'device_trust'"):
        with_value(base, "device_trust", "x")
    with pytest.raises(InvalidPreference, match="unknown field device_trust.colour"):
        with_value(base, "device_trust.colour", "blue")


def test_set_reads_cas_from_a_pem_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "cas.pem"
    bundle.write_text(make_cert("CA one", ca=True) + make_cert("CA two", ca=True))
    updated = with_value(DeviceTrust(), "device_trust.ekcert_allowed_cas", f"@{bundle}")
    assert len(updated.ekcert_allowed_cas) == 2
    assert with_value(updated, "device_trust.ekcert_allowed_cas", "[]").ekcert_allowed_cas == ()
    with pytest.raises(InvalidPreference, match="cannot read"):
        with_value(DeviceTrust(), "device_trust.ekcert_allowed_cas", f"@{tmp_path / 'missing.pem'}")
