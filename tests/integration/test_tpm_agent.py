"""The device side of TPM enrollment against a real swtpm, checked with cryptography alone."""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tpm2_pytss import ESAPI  # type: ignore[import-untyped]
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_GENERATED, TPM2_ST, TPMA_OBJECT  # type: ignore[import-untyped]
from tpm2_pytss.types import (  # type: ignore[import-untyped]
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPMS_ATTEST,
    TPMT_HA,
    TPMT_SIGNATURE,
    TPMU_HA,
)
from tpm2_pytss.utils import make_credential  # type: ignore[import-untyped]

from ceremony.agent.errors import TPMError
from ceremony.agent.tpm import AttestationKey, DeviceTPM, load_ak
from tests.tpm import SwTPM, swtpm

pytestmark = pytest.mark.swtpm

REQUIRED_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)


# One manufactured swtpm per EK type for the whole module: manufacturing one (swtpm_setup
# makes both EKs and their certificates) is most of a test's time, and every test here
# leaves the TPM as it found it (DeviceTPM flushes what it loaded; the AKs live in each
# test's own state directory). Only the quote test extends a PCR, and no test needs one
# to be zero.
@pytest.fixture(scope="module", params=["rsa", "ecc"])
def tpm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwTPM]:
    with swtpm(tmp_path_factory.mktemp(f"swtpm-{request.param}"), ek=request.param) as running:
        yield running


def der_certificate(nv: bytes) -> bytes:
    """The DER certificate in an EK certificate NV index, as a lenient server must find it:
    an optional TCG PC Client header (10 01 00 + 2-byte length), then trailing padding."""
    if nv[:3] == b"\x10\x01\x00" and len(nv) > 5:
        (length,) = struct.unpack(">H", nv[3:5])
        nv = nv[5 : 5 + length]
    assert nv[0] == 0x30, "not a DER SEQUENCE"
    if nv[1] < 0x80:
        end = 2 + nv[1]
    else:
        size = nv[1] & 0x7F
        end = 2 + size + int.from_bytes(nv[2 : 2 + size], "big")
    return nv[:end]


def public_key(public: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    area, _ = TPM2B_PUBLIC.unmarshal(public)
    key = load_pem_public_key(area.to_pem())
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def attest(marshalled_tpm2b: bytes) -> tuple[TPMS_ATTEST, bytes]:
    """The TPMS_ATTEST and the exact bytes the AK signed (the TPM2B's contents)."""
    (size,) = struct.unpack(">H", marshalled_tpm2b[:2])
    body = marshalled_tpm2b[2:]
    assert len(body) == size
    parsed, used = TPMS_ATTEST.unmarshal(body)
    assert used == size
    return parsed, body


def verify_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Raises cryptography's InvalidSignature unless the AK signed ``message``."""
    sig, used = TPMT_SIGNATURE.unmarshal(signature)
    assert used == len(signature)
    key = public_key(public)
    if isinstance(key, rsa.RSAPublicKey):
        assert sig.sigAlg == TPM2_ALG.RSASSA
        assert sig.signature.rsassa.hash == TPM2_ALG.SHA256
        key.verify(bytes(sig.signature.rsassa.sig), message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert sig.sigAlg == TPM2_ALG.ECDSA
        assert sig.signature.ecdsa.hash == TPM2_ALG.SHA256
        der = encode_dss_signature(
            int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"),
        )
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))


def test_the_ek_certificate_is_issued_by_the_configured_ca_for_the_ek_in_use(
    tpm: SwTPM,
) -> None:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        nv = device.ek_certificate()
        ek_public = device.ek_public()
        assert device.ek_type == tpm.ek
    assert nv is not None
    certificate = x509.load_der_x509_certificate(der_certificate(nv))
    issuer, root = x509.load_pem_x509_certificates(tpm.ca_cert_pem)
    certificate.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    assert certificate.public_key() == public_key(ek_public)
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ObjectIdentifier("2.23.133.8.1") in eku


def test_without_ek_certificate_the_ek_public_key_is_still_there(tmp_path: Path) -> None:
    with swtpm(tmp_path, with_ek_cert=False) as tpm, DeviceTPM(tpm.tcti) as device:
        assert device.ek_certificate() is None
        assert device.ek_type == "rsa"
        key = public_key(device.ek_public())
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048


@pytest.mark.parametrize("algorithm", ["rsa", "ecc"])
def test_the_ak_is_a_restricted_signing_key_certified_over_its_own_creation(
    tpm: SwTPM, tmp_path: Path, algorithm: str
) -> None:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent", algorithm)  # type: ignore[arg-type]

    area, used = TPM2B_PUBLIC.unmarshal(ak.public)
    assert used == len(ak.public)
    public = area.publicArea
    assert public.objectAttributes & REQUIRED_AK_ATTRIBUTES == REQUIRED_AK_ATTRIBUTES
    assert not public.objectAttributes & TPMA_OBJECT.DECRYPT
    assert public.nameAlg == TPM2_ALG.SHA256
    if algorithm == "rsa":
        assert public.type == TPM2_ALG.RSA
        assert public.parameters.rsaDetail.keyBits == 2048
        assert public.parameters.rsaDetail.scheme.scheme == TPM2_ALG.RSASSA
    else:
        assert public.type == TPM2_ALG.ECC
        key = public_key(ak.public)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert public.parameters.eccDetail.scheme.scheme == TPM2_ALG.ECDSA

    creation, signed = attest(ak.creation_attestation)
    assert creation.magic == TPM2_GENERATED.VALUE
    assert creation.type == TPM2_ST.ATTEST_CREATION
    assert bytes(creation.attested.creation.objectName) == ak.name
    # The creation hash is the nameAlg digest of the TPMS_CREATION_DATA the device sends.
    assert (
        bytes(creation.attested.creation.creationHash)
        == hashlib.sha256(ak.creation_data[2:]).digest()
    )
    verify_signature(ak.public, signed, ak.creation_signature)


def test_a_credential_made_for_the_ek_and_ak_name_is_activated(tpm: SwTPM, tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent")
        ek_public, _ = TPM2B_PUBLIC.unmarshal(device.ek_public())
        blob, encrypted = make_credential(ek_public, secret, ak.name)
        activated = device.activate_credential(ak, blob.marshal(), encrypted.marshal())
    assert activated == secret


def test_a_credential_made_for_another_ak_name_is_not_activated(tpm: SwTPM, tmp_path: Path) -> None:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent")
        other = device.create_ak(tmp_path / "other")
        ek_public, _ = TPM2B_PUBLIC.unmarshal(device.ek_public())
        blob, encrypted = make_credential(ek_public, b"s" * 32, other.name)
        assert other.name != ak.name
        with pytest.raises(TPMError, match="could not activate the credential"):
            device.activate_credential(ak, blob.marshal(), encrypted.marshal())


def test_a_quote_carries_the_nonce_and_the_pcr_values_and_is_signed_by_the_ak(
    tpm: SwTPM, tmp_path: Path
) -> None:
    # Something in PCR 7, so the values the quote covers are not all zeros.
    with ESAPI(tpm.tcti) as esapi:
        measurement = TPMT_HA(
            hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=hashlib.sha256(b"boot").digest())
        )
        esapi.pcr_extend(ESYS_TR.PCR7, TPML_DIGEST_VALUES([measurement]))
    nonce = secrets.token_bytes(32)
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent")
        quote = device.quote(ak, nonce)

    quoted, signed = attest(quote.attestation)
    assert quoted.magic == TPM2_GENERATED.VALUE
    assert quoted.type == TPM2_ST.ATTEST_QUOTE
    assert bytes(quoted.extraData) == nonce
    verify_signature(ak.public, signed, quote.signature)
    assert sorted(quote.pcr_values) == list(range(8))
    assert quote.pcr_values[7] != b"\x00" * 32
    selection = quoted.attested.quote.pcrSelect[0]
    assert selection.hash == TPM2_ALG.SHA256
    assert bytes(selection.pcrSelect)[: selection.sizeofSelect] == b"\xff\x00\x00"
    digest = hashlib.sha256(b"".join(quote.pcr_values[i] for i in range(8))).digest()
    assert bytes(quoted.attested.quote.pcrDigest) == digest


def test_a_quote_signed_by_the_ak_does_not_verify_with_another_key(
    tpm: SwTPM, tmp_path: Path
) -> None:
    from cryptography.exceptions import InvalidSignature

    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent")
        other = device.create_ak(tmp_path / "other")
        quote = device.quote(ak, b"nonce")
    _, signed = attest(quote.attestation)
    with pytest.raises(InvalidSignature):
        verify_signature(other.public, signed, quote.signature)


def test_the_ak_is_kept_in_the_state_directory_and_works_after_reopening(
    tpm: SwTPM, tmp_path: Path
) -> None:
    state = tmp_path / "agent"
    assert load_ak(state) is None
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        created = device.create_ak(state)
    loaded = load_ak(state)
    assert loaded == created
    assert isinstance(loaded, AttestationKey)
    assert (state / "ak.json").stat().st_mode & 0o077 == 0

    secret = secrets.token_bytes(32)
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ek_public, _ = TPM2B_PUBLIC.unmarshal(device.ek_public())
        blob, encrypted = make_credential(ek_public, secret, loaded.name)
        assert device.activate_credential(loaded, blob.marshal(), encrypted.marshal()) == secret
        quote = device.quote(loaded, b"again")
    _, signed = attest(quote.attestation)
    verify_signature(created.public, signed, quote.signature)


def test_a_missing_swtpm_fails_the_test_and_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"make system"), swtpm(tmp_path):
        pass


def test_a_truncated_credential_is_refused_before_reaching_the_tpm(
    tpm: SwTPM, tmp_path: Path
) -> None:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent")
        ek_public, _ = TPM2B_PUBLIC.unmarshal(device.ek_public())
        blob, encrypted = make_credential(ek_public, b"s" * 32, ak.name)
        with pytest.raises(TPMError, match="malformed"):
            device.activate_credential(ak, blob.marshal()[:-1], encrypted.marshal())
        with pytest.raises(TPMError, match="trailing bytes"):
            device.activate_credential(ak, blob.marshal(), encrypted.marshal() + b"\x00")
