"""How a proxy's forwarded client certificate is read (``ceremony.gate.forwarded_der``)."""

from __future__ import annotations

import datetime
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.gate import MAX_CERT_HEADER, Unreadable, forwarded_der


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_nginx_escaped_pem(cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert forwarded_der("x-ssl-client-cert", quote(pem(cert))) == der
    # nginx's older $ssl_client_cert folds the newlines into spaces and tabs.
    folded = pem(cert).replace("\n", "\n\t")
    assert forwarded_der("x-ssl-client-cert", folded) == der


def test_traefik_base64_der_with_its_chain_after_it(cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    body = "".join(pem(cert).strip().splitlines()[1:-1])
    assert forwarded_der("x-forwarded-tls-client-cert", quote(f"{body},{body}")) == der


def test_envoy_xfcc_takes_the_nearest_proxys_element(cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    nearest = f'By=spiffe://b;Hash=1;Cert="{quote(pem(cert))}";Subject="CN=a,O=x;y"'
    earlier = 'By=spiffe://a;Cert="garbage"'
    assert forwarded_der("x-forwarded-client-cert", f"{earlier},{nearest}") == der
    with pytest.raises(Unreadable, match="no Cert"):
        forwarded_der("x-forwarded-client-cert", f'{nearest},By=spiffe://c;Hash=2')


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("%20", "empty"),
        ("not a certificate!", "neither a PEM certificate nor base64"),
        ("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----", "not base64"),
        ("A" * (MAX_CERT_HEADER + 1), "longer than"),
    ],
)
def test_what_is_not_a_certificate_says_why(value: str, message: str) -> None:
    with pytest.raises(Unreadable, match=message):
        forwarded_der("x-ssl-client-cert", value)
