"""The server side of TPM enrollment against what a real swtpm produces through the agent."""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT  # type: ignore[import-untyped]

from ceremony.agent.tpm import (
    AttestationKey,
    DeviceTPM,
    Quote,
)
from ceremony.attestation import tpm_structures
from ceremony.attestation.credential import EKParameters, make_credential
from ceremony.attestation.tpm_verify import (
    EnrollmentRequest,
    SentQuote,
    attestation_type,
    challenge_ek,
    check_ak,
    ek_public_key,
    examine_ek,
    make_challenge,
    verify_activation,
    verify_quote,
    verify_quotes,
)
from ceremony.errors import (
    AKError,
    AttestationError,
    ChallengeError,
    EKCertificateError,
    QuoteError,
)
from tests.tpm import SwTPM, another_ca_pem, swtpm, with_attributes

pytestmark = pytest.mark.swtpm


@pytest.fixture(scope="module", params=["rsa", "ecc", "rsa3072"])
def tpm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwTPM]:
    with swtpm(tmp_path_factory.mktemp(request.param), ek=request.param) as running:
        yield running


@dataclass(frozen=True)
class Enrolling:
    tpm: SwTPM
    ak: AttestationKey
    other_ak: AttestationKey  # a second AK in the same TPM
    request: EnrollmentRequest


def request_for(device: DeviceTPM, ak: AttestationKey) -> EnrollmentRequest:
    return EnrollmentRequest(
        ek_cert=device.ek_certificate(),
        ek_public=device.ek_public(),
        ak_public=ak.public,
        creation_data=ak.creation_data,
        creation_attestation=ak.creation_attestation,
        creation_signature=ak.creation_signature,
    )


@pytest.fixture(scope="module")
def enrolling(tpm: SwTPM, tmp_path_factory: pytest.TempPathFactory) -> Enrolling:
    state = tmp_path_factory.mktemp("agent")
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(state / "ak")
        other = device.create_ak(state / "other")
        return Enrolling(tpm, ak, other, request_for(device, ak))


def full_round_trip(tcti: str, ek: str, ak: AttestationKey, request: EnrollmentRequest) -> None:
    """check_ak, then the challenge (for the EK as examine_ek read it, as the ceremony makes
    it) answered by the TPM, then a quote over the nonce."""
    info = check_ak(request)
    challenge = make_challenge(examine_ek(request, None), info.name)
    with DeviceTPM(tcti, ek=ek) as device:  # type: ignore[arg-type]
        secret = device.activate_credential(
            ak, challenge.credential_blob, challenge.encrypted_secret
        )
        quote = device.quote(ak, challenge.nonce)
    verify_activation(challenge, secret)
    verify_quote(info.public, challenge.nonce, quote.attestation, quote.signature, quote.pcr_values)


# The happy paths


@pytest.mark.parametrize("algorithm", ["rsa", "ecc"])
def test_an_enrollment_with_the_ek_ca_allowed_is_tpm_ekcert_trusted(
    tpm: SwTPM, tmp_path: Path, algorithm: str
) -> None:
    with DeviceTPM(tpm.tcti, ek=tpm.ek) as device:
        ak = device.create_ak(tmp_path / "agent", algorithm)  # type: ignore[arg-type]
        request = request_for(device, ak)
        # swtpm's ECC EK is the high-range P-384 template, its RSA-3072 one H-6 (AES-256)
        assert device.ek_template_name == tpm.ek_template
    assert request.ek_cert is not None
    assert attestation_type(request, tpm.ca_cert_pem) == "tpm_ekcert_trusted"
    full_round_trip(tpm.tcti, tpm.ek, ak, request)


def test_without_allowed_cas_an_ek_certificate_gives_tpm_ekcert(enrolling: Enrolling) -> None:
    assert attestation_type(enrolling.request, None) == "tpm_ekcert"
    assert attestation_type(enrolling.request, b"") == "tpm_ekcert"


def test_a_certificate_only_request_gets_a_challenge_its_tpm_can_activate(
    enrolling: Enrolling,
) -> None:
    request = replace(enrolling.request, ek_public=None)
    assert attestation_type(request, enrolling.tpm.ca_cert_pem) == "tpm_ekcert_trusted"
    full_round_trip(enrolling.tpm.tcti, enrolling.tpm.ek, enrolling.ak, request)


def test_an_ek_public_only_device_is_tpm_ekpub_and_refused_when_cas_are_configured(
    tmp_path: Path,
) -> None:
    with swtpm(tmp_path, with_ek_cert=False) as tpm:
        with DeviceTPM(tpm.tcti) as device:
            ak = device.create_ak(tmp_path / "agent")
            request = request_for(device, ak)
        assert request.ek_cert is None
        assert attestation_type(request, None) == "tpm_ekpub"
        with pytest.raises(
            EKCertificateError,
            match="^ekcert_allowed_cas is configured but the device sent no EK certificate$",
        ):
            attestation_type(request, another_ca_pem())
        full_round_trip(tpm.tcti, "rsa", ak, request)


# MakeCredential, as the TPM activates it


EK_KINDS = [
    # (EK kind, with EK certificates, the EK template, its name algorithm and AES key bits)
    ("rsa", True, "EK-RSA2048", TPM2_ALG.SHA256, 128),
    # swtpm certifies only its P-384 ECC EK: without certificates the agent uses P-256.
    ("ecc", False, "EK-ECC256", TPM2_ALG.SHA256, 128),
    ("ecc", True, "EK-HIGH-ECC384", TPM2_ALG.SHA384, 256),
    ("rsa3072", True, "EK-HIGH-RSA3072", TPM2_ALG.SHA384, 256),
]


@pytest.mark.parametrize(("ek", "with_ek_cert", "template", "name_alg", "aes_bits"), EK_KINDS)
def test_the_tpm_activates_what_make_credential_made_for_each_ek_kind(
    tmp_path: Path, ek: str, with_ek_cert: bool, template: str, name_alg: int, aes_bits: int
) -> None:
    with (
        swtpm(tmp_path, ek=ek, with_ek_cert=with_ek_cert) as tpm,  # type: ignore[arg-type]
        DeviceTPM(tpm.tcti, ek=tpm.ek) as device,
    ):
        assert device.ek_template_name == template
        ak = device.create_ak(tmp_path / "agent")
        ek_public = device.ek_public()
        area = tpm_structures.public_area(ek_public, "EK public area", ChallengeError)
        symmetric = (area.symmetric, area.symmetric_bits, area.symmetric_mode)
        assert (area.name_alg, *symmetric) == (name_alg, TPM2_ALG.AES, aes_bits, TPM2_ALG.CFB)
        parameters = EKParameters(ek_public_key(ek_public), area.name_alg, *symmetric)
        secret = secrets.token_bytes(32)
        blob, encrypted = make_credential(parameters, secret, ak.name)
        assert device.activate_credential(ak, blob, encrypted) == secret
        # And as the ceremony makes it, from the EK's public area and the checked AK's name.
        challenge = make_challenge(ek_public, check_ak(request_for(device, ak)).name)
        activated = device.activate_credential(
            ak, challenge.credential_blob, challenge.encrypted_secret
        )
    verify_activation(challenge, activated)


# The EK refused


def test_an_ek_certificate_from_another_ca_is_refused(enrolling: Enrolling) -> None:
    with pytest.raises(EKCertificateError, match="does not chain to any CA in ekcert_allowed_cas"):
        attestation_type(enrolling.request, another_ca_pem())


def test_an_ek_certificate_outside_its_validity_is_refused(enrolling: Enrolling) -> None:
    # swtpm's EK certificates never expire (notAfter 9999-12-31, as the TCG profile allows).
    before = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(EKCertificateError, match="the EK certificate is not valid before"):
        attestation_type(enrolling.request, enrolling.tpm.ca_cert_pem, now=before)


def test_an_ek_public_key_that_is_not_the_certificates_is_refused(enrolling: Enrolling) -> None:
    other_kind = "ecc" if enrolling.tpm.ek == "rsa" else "rsa"
    with DeviceTPM(enrolling.tpm.tcti, ek=other_kind) as device:  # type: ignore[arg-type]
        request = replace(enrolling.request, ek_public=device.ek_public())
    with pytest.raises(EKCertificateError, match="not the one in the EK certificate"):
        attestation_type(request, None)


def test_an_ek_certificate_with_its_nv_header_and_padding_is_read(enrolling: Enrolling) -> None:
    cert = enrolling.request.ek_cert
    assert cert is not None
    wrapped = b"\x10\x01\x00" + len(cert).to_bytes(2, "big") + cert + b"\xff" * 40
    request = replace(enrolling.request, ek_cert=wrapped)
    assert attestation_type(request, enrolling.tpm.ca_cert_pem) == "tpm_ekcert_trusted"


# The challenge refused


def test_a_wrong_activated_secret_is_refused(enrolling: Enrolling) -> None:
    challenge = make_challenge(challenge_ek(enrolling.request), check_ak(enrolling.request).name)
    with pytest.raises(ChallengeError, match="activated secret does not match the challenge"):
        verify_activation(challenge, bytes(32))


def test_a_challenge_for_another_ak_is_not_answered_with_its_secret(enrolling: Enrolling) -> None:
    other = check_ak(replace_ak(enrolling.request, enrolling.other_ak))
    challenge = make_challenge(challenge_ek(enrolling.request), other.name)
    with DeviceTPM(enrolling.tpm.tcti, ek=enrolling.tpm.ek) as device:
        secret = device.activate_credential(
            enrolling.other_ak, challenge.credential_blob, challenge.encrypted_secret
        )
    verify_activation(challenge, secret)
    with pytest.raises(ChallengeError, match="does not match"):
        verify_activation(make_challenge(challenge_ek(enrolling.request), other.name), secret)


# The AK refused


def replace_ak(request: EnrollmentRequest, ak: AttestationKey) -> EnrollmentRequest:
    return replace(
        request,
        ak_public=ak.public,
        creation_data=ak.creation_data,
        creation_attestation=ak.creation_attestation,
        creation_signature=ak.creation_signature,
    )


@pytest.mark.parametrize(
    ("clear", "add", "message"),
    [
        (TPMA_OBJECT.RESTRICTED, 0, "restricted not set"),
        (TPMA_OBJECT.SIGN_ENCRYPT, 0, "sign not set"),
        (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT, 0, "fixedTPM, fixedParent not set"),
        (0, TPMA_OBJECT.DECRYPT, "decrypt is set"),
    ],
)
def test_an_ak_that_is_not_a_restricted_signing_key_is_refused_before_its_signature(
    enrolling: Enrolling, clear: int, add: int, message: str
) -> None:
    request = replace(enrolling.request, ak_public=with_attributes(enrolling.ak.public, clear, add))
    with pytest.raises(AKError, match=f"^the AK is not a restricted signing key: {message}$"):
        check_ak(request)


def test_an_ak_whose_name_is_not_in_the_creation_attestation_is_refused(
    enrolling: Enrolling,
) -> None:
    request = replace(
        enrolling.request,
        creation_attestation=enrolling.other_ak.creation_attestation,
        creation_signature=enrolling.other_ak.creation_signature,
    )
    with pytest.raises(AKError, match="names another key than the AK sent"):
        check_ak(request)


def test_creation_data_other_than_the_certified_one_is_refused(enrolling: Enrolling) -> None:
    # The last byte of the parent's qualified name (before the empty outsideInfo).
    data = bytearray(enrolling.ak.creation_data)
    data[-3] ^= 0xFF
    request = replace(enrolling.request, creation_data=bytes(data))
    with pytest.raises(AKError, match="does not cover the creation data sent"):
        check_ak(request)


def test_a_creation_attestation_signed_by_another_key_is_refused(enrolling: Enrolling) -> None:
    request = replace(enrolling.request, creation_signature=enrolling.other_ak.creation_signature)
    with pytest.raises(AKError, match="creation attestation signature does not verify with the AK"):
        check_ak(request)


@pytest.mark.parametrize(
    ("field", "what"),
    [
        ("ak_public", "AK public area"),
        ("creation_data", "AK creation data"),
        ("creation_attestation", "AK creation attestation"),
        ("creation_signature", "AK creation attestation signature"),
    ],
)
def test_truncated_oversized_and_padded_ak_structures_are_refused(
    enrolling: Enrolling, field: str, what: str
) -> None:
    good: bytes = getattr(enrolling.request, field)
    cases = [
        (good[:-1], f"the {what} is (malformed or truncated|truncated)"),
        (good + b"\x00", f"the {what} has 1 trailing bytes"),
        (good + bytes(5000), f"the {what} is {len(good) + 5000} bytes, more than the 4096"),
    ]
    for data, message in cases:
        with pytest.raises(AKError, match=message):
            check_ak(replace(enrolling.request, **{field: data}))  # type: ignore[arg-type]


# The quote refused


@pytest.fixture
def quoted(enrolling: Enrolling) -> Iterator[tuple[bytes, Quote]]:
    nonce = hashlib.sha256(b"the server's nonce").digest()
    with DeviceTPM(enrolling.tpm.tcti, ek=enrolling.tpm.ek) as device:
        yield nonce, device.quote(enrolling.ak, nonce)


def test_a_quote_over_another_nonce_is_refused(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted
    verify_quote(enrolling.ak.public, nonce, quote.attestation, quote.signature, quote.pcr_values)
    with pytest.raises(QuoteError, match="^the quote is not over the challenge's nonce$"):
        verify_quote(
            enrolling.ak.public, nonce[:-1], quote.attestation, quote.signature, quote.pcr_values
        )


def test_a_quote_signed_by_another_ak_is_refused(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted
    with pytest.raises(QuoteError, match="^the quote signature does not verify with the AK$"):
        verify_quote(
            enrolling.other_ak.public, nonce, quote.attestation, quote.signature, quote.pcr_values
        )


def test_pcr_values_other_than_the_quoted_ones_are_refused(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted
    args = (enrolling.ak.public, nonce, quote.attestation, quote.signature)
    changed = {**quote.pcr_values, 0: b"\x01" * 32}
    with pytest.raises(QuoteError, match="do not match the quoted PCR digest"):
        verify_quote(*args, changed)
    with pytest.raises(QuoteError, match="are not the quoted PCRs"):
        verify_quote(*args, {**quote.pcr_values, 9: bytes(32)})
    with pytest.raises(QuoteError, match="are not the quoted PCRs"):
        verify_quote(*args, {i: v for i, v in quote.pcr_values.items() if i != 7})
    with pytest.raises(QuoteError, match="not a digest of the quoted bank"):
        verify_quote(*args, {**quote.pcr_values, 0: bytes(20)})


def test_a_quote_over_other_pcrs_than_asked_for_is_refused(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted  # PCRs 0-7
    args = (enrolling.ak.public, nonce, quote.attestation, quote.signature, quote.pcr_values)
    verify_quote(*args, expected_pcrs=range(8))
    with pytest.raises(
        QuoteError, match=r"^the quote covers PCRs \[0, 1, 2, 3, 4, 5, 6, 7\], not the PCRs asked"
    ):
        verify_quote(*args, expected_pcrs=range(24))


def test_an_answer_of_no_quote_is_refused(enrolling: Enrolling) -> None:
    with pytest.raises(QuoteError, match="^the answer carries no quote$"):
        verify_quotes(enrolling.ak.public, bytes(32), [])


def test_every_quote_of_an_answer_is_verified(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted
    good = SentQuote(quote.attestation, quote.signature, quote.pcr_values)
    with DeviceTPM(enrolling.tpm.tcti, ek=enrolling.tpm.ek) as device:
        other = device.quote(enrolling.ak, hashlib.sha256(b"another nonce").digest())
    stale = SentQuote(other.attestation, other.signature, other.pcr_values)
    verify_quotes(enrolling.ak.public, nonce, [good, good], expected_pcrs=range(8))
    with pytest.raises(QuoteError, match="^the quote is not over the challenge's nonce$"):
        verify_quotes(enrolling.ak.public, nonce, [good, stale])
    with pytest.raises(QuoteError, match="covers PCRs .* not the PCRs asked for"):
        verify_quotes(enrolling.ak.public, nonce, [good], expected_pcrs=range(24))


def test_a_creation_attestation_is_not_accepted_as_a_quote(enrolling: Enrolling) -> None:
    ak = enrolling.ak
    with pytest.raises(QuoteError, match="^the quote attestation is not a quote$"):
        verify_quote(ak.public, b"", ak.creation_attestation, ak.creation_signature, {})


def test_truncated_oversized_and_padded_quotes_are_refused(
    enrolling: Enrolling, quoted: tuple[bytes, Quote]
) -> None:
    nonce, quote = quoted
    public = enrolling.ak.public
    for attestation, signature, message in [
        (quote.attestation[:-1], quote.signature, "the quote is truncated"),
        (quote.attestation + b"\x00", quote.signature, "the quote has 1 trailing bytes"),
        (quote.attestation + bytes(5000), quote.signature, "more than the 4096 allowed"),
        (quote.attestation, quote.signature[:-1], "quote signature is malformed or truncated"),
        (quote.attestation, quote.signature + b"\x00", "quote signature has 1 trailing bytes"),
    ]:
        with pytest.raises(QuoteError, match=message):
            verify_quote(public, nonce, attestation, signature, quote.pcr_values)


def test_every_refusal_is_an_attestation_error() -> None:
    for error in (AKError, ChallengeError, EKCertificateError, QuoteError):
        assert issubclass(error, AttestationError)
