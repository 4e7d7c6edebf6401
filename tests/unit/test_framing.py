"""Each TPM structure read in both framings, a size-prefix mistake named as one, creation
attestations of the wrong magic or type refused, and EK certificates marked RSAES-OAEP read.

The structures are the real ones test_tpm_verify_fuzz recorded from swtpm; the bare forms
are them without their TPM2B size, as go-attestation sends them.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceremony.attestation import framing
from ceremony.attestation.ek_cert import (
    EK_CERTIFICATE_EKU,
    ek_public_from_certificate,
    parse_ek_certificate,
    verify_ek_chain,
)
from ceremony.attestation.tpm_verify import check_ak, ek_public_key, examine_ek, verify_quote
from ceremony.errors import AKError, AttestationError, EKCertificateError, QuoteError
from ceremony.protocol import Quote, TPMAttestation
from tests.tpm import self_signed_ca
from tests.unit.test_tpm_verify_fuzz import (
    AK_PUBLIC,
    CREATION_ATTESTATION,
    CREATION_DATA,
    EK_PUBLIC_ECC,
    EK_PUBLIC_RSA,
    NONCE,
    PCR_VALUES,
    QUOTE,
    QUOTE_SIGNATURE,
    REQUEST,
)

BARE = replace(
    REQUEST,
    ek_public=EK_PUBLIC_ECC[2:],
    ak_public=AK_PUBLIC[2:],
    creation_data=CREATION_DATA[2:],
    creation_attestation=CREATION_ATTESTATION[2:],
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- both framings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tpm2b", "framed"),
    [
        ("TPM2B_PUBLIC", AK_PUBLIC),
        ("TPM2B_PUBLIC", EK_PUBLIC_ECC),
        ("TPM2B_PUBLIC", EK_PUBLIC_RSA),
        ("TPM2B_CREATION_DATA", CREATION_DATA),
        ("TPM2B_ATTEST", CREATION_ATTESTATION),
        ("TPM2B_ATTEST", QUOTE),
    ],
)
def test_a_structure_reads_the_same_size_prefixed_or_bare(tpm2b: str, framed: bytes) -> None:
    assert framing.as_tpm2b(tpm2b, framed, "structure", AttestationError) == framed
    assert framing.as_tpm2b(tpm2b, framed[2:], "structure", AttestationError) == framed
    assert framing.reframed(tpm2b, framed[2:]) == framed
    assert framing.reframed(tpm2b, framed) == framed


def test_an_ak_sent_bare_verifies_as_the_size_prefixed_one_and_is_kept_size_prefixed() -> None:
    framed, bare = check_ak(REQUEST), check_ak(BARE)
    assert bare == framed
    assert bare.public == AK_PUBLIC


def test_an_ek_public_area_sent_bare_is_the_same_key_and_challenge() -> None:
    assert ek_public_key(EK_PUBLIC_RSA[2:]) == ek_public_key(EK_PUBLIC_RSA)
    assert examine_ek(BARE, None) == examine_ek(REQUEST, None)
    assert examine_ek(BARE, None).public == EK_PUBLIC_ECC


def test_a_bare_quote_verifies() -> None:
    verify_quote(AK_PUBLIC, NONCE, QUOTE[2:], QUOTE_SIGNATURE, PCR_VALUES)
    verify_quote(AK_PUBLIC[2:], NONCE, QUOTE[2:], QUOTE_SIGNATURE, PCR_VALUES)
    with pytest.raises(QuoteError, match="^the quote is not over the challenge's nonce$"):
        verify_quote(AK_PUBLIC, b"m" * 32, QUOTE[2:], QUOTE_SIGNATURE, PCR_VALUES)


def test_the_request_models_size_prefix_bare_structures() -> None:
    sent = TPMAttestation.model_validate({
        "ek_public": _b64(EK_PUBLIC_ECC[2:]),
        "ak_public": _b64(AK_PUBLIC[2:]),
        "creation_data": _b64(CREATION_DATA[2:]),
        "creation_attestation": _b64(CREATION_ATTESTATION[2:]),
        "creation_signature": _b64(REQUEST.creation_signature),
    })  # fmt: skip
    assert (sent.ek_public, sent.ak_public) == (EK_PUBLIC_ECC, AK_PUBLIC)
    assert (sent.creation_data, sent.creation_attestation) == (CREATION_DATA, CREATION_ATTESTATION)
    assert sent.creation_signature == REQUEST.creation_signature  # no TPM2B form: as sent
    quote = Quote.model_validate(
        {"attestation": _b64(QUOTE[2:]), "signature": _b64(QUOTE_SIGNATURE), "pcr_values": {}}
    )
    assert quote.attestation == QUOTE


def test_what_is_neither_framing_reaches_the_verifier_unchanged() -> None:
    little_endian = len(QUOTE[2:]).to_bytes(2, "little") + QUOTE[2:]
    assert framing.reframed("TPM2B_ATTEST", little_endian) == little_endian


# -- size-prefix mistakes --------------------------------------------------------------

_ATTEST = "expected a 2-byte size prefix \\(TPM2B_ATTEST\\) or a bare TPMS_ATTEST"


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        pytest.param(
            len(CREATION_ATTESTATION[2:]).to_bytes(2, "little") + CREATION_ATTESTATION[2:],
            f"is truncated or not size-prefixed: {_ATTEST}; its first 2 bytes say 35584 bytes "
            "follow, 139 do$",
            id="little-endian",
        ),
        pytest.param(
            len(CREATION_ATTESTATION[2:]).to_bytes(4, "big") + CREATION_ATTESTATION[2:],
            f"has 141 trailing bytes or is not size-prefixed: {_ATTEST}; its first 2 bytes say "
            "0 bytes follow, 141 do$",
            id="4-byte-size",
        ),
        pytest.param(
            CREATION_ATTESTATION[:-1],
            f"is truncated or not size-prefixed: {_ATTEST}; its first 2 bytes say 139 bytes "
            "follow, 138 do$",
            id="truncated",
        ),
        pytest.param(b"\x00", f"is truncated: {_ATTEST}, got 1 bytes$", id="one-byte"),
    ],
)
def test_a_size_prefix_mistake_says_a_size_prefix_was_expected(sent: bytes, message: str) -> None:
    with pytest.raises(AKError, match=f"^the AK creation attestation {message}"):
        check_ak(replace(REQUEST, creation_attestation=sent))


def test_public_areas_and_creation_data_name_their_framings_too() -> None:
    wrong = len(AK_PUBLIC[2:]).to_bytes(2, "little") + AK_PUBLIC[2:]
    with pytest.raises(
        AKError,
        match=r"^the AK public area is truncated or not size-prefixed: "
        r"expected a 2-byte size prefix \(TPM2B_PUBLIC\) or a bare TPMT_PUBLIC;",
    ):
        check_ak(replace(REQUEST, ak_public=wrong))
    wrong = CREATION_DATA + b"\x00"
    with pytest.raises(
        AKError,
        match=r"^the AK creation data has 1 trailing bytes or is not "
        r"size-prefixed: expected a 2-byte size prefix \(TPM2B_CREATION_DATA\) "
        r"or a bare TPMS_CREATION_DATA;",
    ):
        check_ak(replace(REQUEST, creation_data=wrong))  # fmt: skip


# -- creation attestations a TPM did not make, or not of a creation ---------------------


def test_a_creation_attestation_with_a_wrong_magic_is_refused() -> None:
    body = bytearray(CREATION_ATTESTATION)
    body[2:6] = b"\xff\x54\x43\x48"
    with pytest.raises(AKError, match="^the AK creation attestation was not generated by a TPM "
                       r"\(magic 0xff544348\)$"):  # fmt: skip
        check_ak(replace(REQUEST, creation_attestation=bytes(body)))
    # Bare, a wrong magic is no TPMS_ATTEST at all.
    with pytest.raises(AKError, match=f"not size-prefixed: {_ATTEST};"):
        check_ak(replace(REQUEST, creation_attestation=bytes(body[2:])))


def test_a_creation_attestation_of_another_type_is_refused() -> None:
    # TPM_ST_ATTEST_CERTIFY's TPMS_CERTIFY_INFO has the creation info's shape (two TPM2Bs),
    # so the structure reads and only its type is wrong.
    body = bytearray(CREATION_ATTESTATION)
    assert body[6:8] == b"\x80\x1a"  # TPM_ST_ATTEST_CREATION
    body[6:8] = b"\x80\x17"
    with pytest.raises(AKError, match="^the AK creation attestation is not a creation "
                       "certification$"):  # fmt: skip
        check_ak(replace(REQUEST, creation_attestation=bytes(body)))
    # A genuine quote by the AK, passed off as its creation certification.
    with pytest.raises(AKError, match="is not a creation certification$"):
        check_ak(replace(REQUEST, creation_attestation=QUOTE, creation_signature=QUOTE_SIGNATURE))


# -- EK certificates marked RSAES-OAEP --------------------------------------------------

RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")
RSAES_OAEP = bytes.fromhex("06092a864886f70d010107")


def _der(tag: int, contents: bytes) -> bytes:
    length = len(contents)
    if length < 0x80:
        return bytes([tag, length]) + contents
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + contents


def _elements(der: bytes) -> list[bytes]:
    """The elements inside the outer SEQUENCE of ``der`` (no length over 3 octets)."""
    first = der[1]
    at = 2 + (first & 0x7F if first & 0x80 else 0)
    found = []
    while at < len(der):
        head = der[at + 1]
        octets = head & 0x7F if head & 0x80 else 0
        length = int.from_bytes(der[at + 2 : at + 2 + octets], "big") if octets else head
        end = at + 2 + octets + length
        found.append(der[at:end])
        at = end
    return found


def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return self_signed_ca("Test EK CA")


def oaep_ek_certificate(
    ek: rsa.RSAPublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    *,
    oaep_parameters: bool = True,
) -> bytes:
    """An EK certificate for ``ek`` whose SubjectPublicKeyInfo names RSAES-OAEP, signed by
    ``issuer``: built for rsaEncryption, its key's algorithm edited, and signed again.

    With ``oaep_parameters`` the algorithm carries RSAES-OAEP-params as Infineon's do
    (SHA-1 defaults, pSourceFunc pSpecified "TCPA"); else none at all."""
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(ek)
        .serial_number(0x0EC0A3)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([EK_CERTIFICATE_EKU]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    tbs, signature_algorithm, _ = _elements(built.public_bytes(serialization.Encoding.DER))
    fields = _elements(tbs)
    spki = fields[6]  # after version, serial, signature, issuer, validity, subject
    algorithm, key = _elements(spki)
    assert _elements(algorithm)[0] == RSA_ENCRYPTION
    # RSAES-OAEP-params { pSourceAlgorithm [2] { id-pSpecified, OCTET STRING "TCPA" } }
    parameters = bytes.fromhex("3015a213301106092a864886f70d0101090404") + b"TCPA"
    oaep_algorithm = _der(0x30, RSAES_OAEP + (parameters if oaep_parameters else b""))
    fields[6] = _der(0x30, oaep_algorithm + key)
    tbs = _der(0x30, b"".join(fields))
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _der(0x30, tbs + signature_algorithm + _der(0x03, b"\x00" + signature))


@pytest.mark.parametrize("oaep_parameters", [True, False], ids=["infineon-params", "no-params"])
def test_an_ek_certificate_marked_rsaes_oaep_is_read_as_its_rsa_key(
    oaep_parameters: bool,
) -> None:
    issuer_key, issuer = ca()
    ek = rsa.generate_private_key(65537, 2048).public_key()
    der = oaep_ek_certificate(ek, issuer_key, issuer, oaep_parameters=oaep_parameters)
    cert = parse_ek_certificate(b"\x10\x01\x00" + len(der).to_bytes(2, "big") + der)
    assert cert.public_key_algorithm_oid.dotted_string == "1.2.840.113549.1.1.7"
    with pytest.raises((UnsupportedAlgorithm, ValueError)):
        cert.public_key()  # what cryptography says of it alone
    assert ek_public_from_certificate(cert) == ek
    verify_ek_chain(cert, [], issuer.public_bytes(serialization.Encoding.PEM))


def test_an_ek_certificate_of_an_unsupported_key_is_still_refused() -> None:
    issuer_key, issuer = ca()
    ek = rsa.generate_private_key(65537, 2048).public_key()
    der = oaep_ek_certificate(ek, issuer_key, issuer, oaep_parameters=False)
    # The same certificate, its key marked with an algorithm nobody reads (1.2.840.113549.1.1.99).
    unknown = der.replace(RSAES_OAEP, RSAES_OAEP[:-1] + b"\x63", 1)
    cert = parse_ek_certificate(unknown)
    with pytest.raises(EKCertificateError, match="^the EK certificate's public key is unsupported"):
        ek_public_from_certificate(cert)
