"""TPM enrollment, the server's side: pure checks over the bytes the device agent sends.

The shapes follow go-attestation (ActivationParameters, EncryptedCredential, quote
verification), which the reference system uses: the device proves with its EK that its AK
lives in the same TPM (MakeCredential / ActivateCredential), the AK proves it was made by
that TPM with the right attributes (its creation attestation), and quotes carry the
server's nonce. Every structure arrives marshalled as the TPM produced it: the TPM2B forms
with their size prefix, or the bare structures inside them as go-attestation sends them
(``framing``; both read the same), signatures as TPMT_SIGNATURE. Every refusal is an
AttestationError whose message says what is wrong. tpm_structures reads the structures
(with tpm2-tss's unmarshalling), credential makes the challenge (MakeCredential, with
cryptography).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import (  # type: ignore[import-untyped]
    TPM2_ALG,
    TPM2_ECC,
    TPM2_GENERATED,
    TPM2_ST,
    TPMA_OBJECT,
)
from tpm2_pytss.types import TPM2B_PUBLIC  # type: ignore[import-untyped]

from ceremony.attestation import tpm_structures
from ceremony.attestation.credential import EKParameters, make_credential
from ceremony.attestation.ek_cert import (
    ek_public_from_certificate,
    parse_ek_certificate,
    verify_ek_chain,
)
from ceremony.attestation.framing import as_tpm2b
from ceremony.attestation.tpm_structures import MAX_STRUCTURE as MAX_STRUCTURE
from ceremony.attestation.tpm_structures import PARSE_ERRORS, Attestation, PublicArea
from ceremony.errors import (
    AKError,
    AttestationError,
    ChallengeError,
    EKCertificateError,
    QuoteError,
)

AttestationType = Literal["tpm_ekpub", "tpm_ekcert", "tpm_ekcert_trusted"]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_AK_REQUIRED = {
    TPMA_OBJECT.RESTRICTED: "restricted",
    TPMA_OBJECT.SIGN_ENCRYPT: "sign",
    TPMA_OBJECT.FIXEDTPM: "fixedTPM",
    TPMA_OBJECT.FIXEDPARENT: "fixedParent",
    TPMA_OBJECT.SENSITIVEDATAORIGIN: "sensitiveDataOrigin",
}
_AK_REQUIRED_MASK = sum(_AK_REQUIRED)
# The EK and AK curves, by TPM2_ECC_CURVE id.
CURVES: dict[int, type[ec.EllipticCurve]] = {
    TPM2_ECC.NIST_P256: ec.SECP256R1,
    TPM2_ECC.NIST_P384: ec.SECP384R1,
}
_NAME_HASHES: dict[int, Callable[[bytes], hashlib._Hash]] = {
    TPM2_ALG.SHA256: hashlib.sha256,
    TPM2_ALG.SHA384: hashlib.sha384,
    TPM2_ALG.SHA512: hashlib.sha512,
}
_NAME_SIZES = {alg: 2 + new(b"").digest_size for alg, new in _NAME_HASHES.items()}
_PCR_BANKS = {TPM2_ALG.SHA1: 20, TPM2_ALG.SHA256: 32, TPM2_ALG.SHA384: 48, TPM2_ALG.SHA512: 64}
# The pinned signature schemes (cryptography's padding and hash objects are immutable).
_PKCS1V15, _SHA256, _ECDSA_SHA256 = padding.PKCS1v15(), hashes.SHA256(), ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True)
class EnrollmentRequest:
    """What the device sends to enroll (go-attestation's EK and AttestationParameters)."""

    ek_cert: bytes | None  # as read from NV: may carry a TCG header or padding
    # The TPM2B forms, or the bare structures inside them (go-attestation's framing).
    ek_public: bytes | None  # TPM2B_PUBLIC or TPMT_PUBLIC
    ak_public: bytes  # TPM2B_PUBLIC or TPMT_PUBLIC
    creation_data: bytes  # TPM2B_CREATION_DATA or TPMS_CREATION_DATA
    creation_attestation: bytes  # TPM2B_ATTEST or TPMS_ATTEST
    creation_signature: bytes  # TPMT_SIGNATURE
    ek_intermediates: tuple[bytes, ...] = ()  # DER certificates between the EK cert and a CA


@dataclass(frozen=True)
class AKInfo:
    public: bytes  # the TPM2B_PUBLIC, to keep as the device's credential
    name: bytes  # nameAlg || digest of the public area, for MakeCredential
    key: PublicKey


@dataclass(frozen=True)
class Challenge:
    credential_blob: bytes  # TPM2B_ID_OBJECT, sent to the device
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET, sent to the device
    nonce: bytes  # for the quotes; kept server-side as well
    secret: bytes  # kept server-side only


# The public areas


def _public_key(area: PublicArea, what: str, error: type[AttestationError]) -> PublicKey:
    """The cryptography key of a TPMT_PUBLIC: RSA of 2048 to 4096 bits, or ECC P-256/P-384."""
    try:
        if area.type == TPM2_ALG.RSA:
            modulus = area.rsa_modulus
            if not 2048 <= area.rsa_bits <= 4096 or len(modulus) * 8 != area.rsa_bits:
                raise error(f"the {what} is RSA-{len(modulus) * 8}; RSA-2048 or larger is needed")
            numbers = rsa.RSAPublicNumbers(
                area.rsa_exponent or 65537, int.from_bytes(modulus, "big")
            )
            return numbers.public_key()
        if area.type == TPM2_ALG.ECC:
            curve = CURVES.get(area.curve)
            if curve is None:
                raise error(f"the {what} uses an ECC curve other than NIST P-256 or P-384")
            x = int.from_bytes(area.ecc_x, "big")
            y = int.from_bytes(area.ecc_y, "big")
            return ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
    except PARSE_ERRORS as exc:
        raise error(f"the {what} holds no valid public key ({exc})") from exc
    raise error(f"the {what} is neither an RSA nor an ECC key")


def _public_area(data: bytes, what: str, error: type[AttestationError]) -> PublicArea:
    """A TPM2B_PUBLIC's or a bare TPMT_PUBLIC's public area."""
    return tpm_structures.public_area(as_tpm2b("TPM2B_PUBLIC", data, what, error), what, error)


def _tpm2b(contents: bytes) -> bytes:
    """The TPM2B of a marshalled structure: what is kept, whichever framing was sent."""
    return len(contents).to_bytes(2, "big") + contents


def ek_public_key(tpm2b_public: bytes) -> PublicKey:
    """The EK's public key from its marshalled TPM2B_PUBLIC (or bare TPMT_PUBLIC)."""
    area = _public_area(tpm2b_public, "EK public area", EKCertificateError)
    return _public_key(area, "EK public area", EKCertificateError)


def _attestation(data: bytes, what: str, error: type[AttestationError]) -> Attestation:
    """A TPM2B_ATTEST's (or a bare TPMS_ATTEST's) TPMS_ATTEST, which a TPM generated."""
    parsed = tpm_structures.attestation(as_tpm2b("TPM2B_ATTEST", data, what, error), what, error)
    if parsed.magic != TPM2_GENERATED.VALUE:
        raise error(f"the {what} was not generated by a TPM (magic {parsed.magic:#x})")
    return parsed


# The attestation key


def _ak_area(ak_public: bytes) -> tuple[PublicArea, PublicKey]:
    area = _public_area(ak_public, "AK public area", AKError)
    attributes = area.attributes
    if attributes & _AK_REQUIRED_MASK != _AK_REQUIRED_MASK:
        missing = [name for bit, name in _AK_REQUIRED.items() if not attributes & bit]
        raise AKError(f"the AK is not a restricted signing key: {', '.join(missing)} not set")
    if attributes & TPMA_OBJECT.DECRYPT:
        raise AKError("the AK is not a restricted signing key: decrypt is set")
    if area.name_alg not in _NAME_HASHES:
        raise AKError("the AK's name algorithm is not SHA-256, SHA-384 or SHA-512")
    return area, _public_key(area, "AK", AKError)


def _verify_signature(
    key: PublicKey, message: bytes, signature: bytes, what: str, error: type[AttestationError]
) -> None:
    """The pinned schemes: RSASSA-SHA256 for RSA AKs, ECDSA-SHA256 for ECC ones."""
    sig = tpm_structures.signature(signature, f"{what} signature", error)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if sig.algorithm != TPM2_ALG.RSASSA or sig.hash != TPM2_ALG.SHA256:
                raise error(f"the {what} signature is not RSASSA with SHA-256")
            key.verify(sig.rsa, message, _PKCS1V15, _SHA256)
        else:
            if sig.algorithm != TPM2_ALG.ECDSA or sig.hash != TPM2_ALG.SHA256:
                raise error(f"the {what} signature is not ECDSA with SHA-256")
            der = encode_dss_signature(
                int.from_bytes(sig.ecdsa_r, "big"), int.from_bytes(sig.ecdsa_s, "big")
            )
            key.verify(der, message, _ECDSA_SHA256)
    except (InvalidSignature, *PARSE_ERRORS):
        raise error(f"the {what} signature does not verify with the AK") from None


def check_ak(req: EnrollmentRequest) -> AKInfo:
    """The AK is a restricted signing key that the TPM certified over its own creation."""
    area, key = _ak_area(req.ak_public)
    # The name is nameAlg || H(TPMT_PUBLIC), over the bytes sent: the TPM hashed the same
    # ones, and the creation attestation it signed must carry that name.
    digest = _NAME_HASHES[area.name_alg]
    name = area.name_alg.to_bytes(2, "big") + digest(area.contents).digest()
    creation_data = as_tpm2b("TPM2B_CREATION_DATA", req.creation_data, "AK creation data", AKError)
    tpm_structures.creation_data(creation_data, "AK creation data", AKError)
    creation = _attestation(req.creation_attestation, "AK creation attestation", AKError)
    if creation.type != TPM2_ST.ATTEST_CREATION:
        raise AKError("the AK creation attestation is not a creation certification")
    if creation.object_name != name:
        raise AKError("the AK creation attestation names another key than the AK sent")
    covered = digest(creation_data[2:]).digest()
    if not hmac.compare_digest(creation.creation_hash, covered):
        raise AKError("the AK creation attestation does not cover the creation data sent")
    signature = req.creation_signature
    _verify_signature(key, creation.signed, signature, "AK creation attestation", AKError)
    return AKInfo(public=_tpm2b(area.contents), name=name, key=key)


# The EK and the attestation type


def _request_ek(
    req: EnrollmentRequest,
) -> tuple[x509.Certificate | None, PublicKey, PublicArea | None]:
    """The EK certificate, the EK's key and its public area, each read once (the area is
    None when only the certificate was sent)."""
    area = None
    if req.ek_public is not None:
        area = _public_area(req.ek_public, "EK public area", EKCertificateError)
    if req.ek_cert is None:
        if area is None:
            raise EKCertificateError("the device sent neither an EK certificate nor an EK key")
        return None, _public_key(area, "EK public area", EKCertificateError), area
    cert = parse_ek_certificate(req.ek_cert)
    key = ek_public_from_certificate(cert)
    if area is not None and _public_key(area, "EK public area", EKCertificateError) != key:
        raise EKCertificateError("the EK public key sent is not the one in the EK certificate")
    return cert, key, area


@dataclass(frozen=True)
class EKInfo:
    """What the server learns from the device's EK, checked once."""

    attestation_type: AttestationType
    public: bytes  # the EK's TPM2B_PUBLIC (whichever framing was sent), for the challenge
    cert_serial: str | None  # the EK certificate's serial number, in hex
    # What MakeCredential takes of it, read once: make_challenge(EKInfo) parses nothing.
    parameters: EKParameters = field(repr=False, compare=False)


def examine_ek(
    req: EnrollmentRequest, allowed_cas_pem: bytes | None, now: datetime.datetime | None = None
) -> EKInfo:
    """The EK's certificate (parsed once), its chain when CAs are configured, the
    attestation type, and the public area to challenge."""
    if allowed_cas_pem and req.ek_cert is None:
        raise EKCertificateError(
            "ekcert_allowed_cas is configured but the device sent no EK certificate"
        )
    cert, key, area = _request_ek(req)
    kind: AttestationType = "tpm_ekpub"
    if cert is not None:
        kind = "tpm_ekcert"
        if allowed_cas_pem:
            intermediates = [parse_ek_certificate(raw) for raw in req.ek_intermediates]
            verify_ek_chain(cert, intermediates, allowed_cas_pem, now)
            kind = "tpm_ekcert_trusted"
    if area is None:
        public = _ek_template(key)
        area = tpm_structures.public_area(public, "EK public area", ChallengeError)
    else:
        public = _tpm2b(area.contents)
    serial = format(cert.serial_number, "x") if cert is not None else None
    return EKInfo(kind, public, serial, _ek_parameters(area, key))


def ek_cert_serial(ek_cert: bytes | None) -> str | None:
    """The EK certificate's serial number in hex, as ``examine_ek`` reads it; None when
    there is no certificate or it cannot be read (``examine_ek`` says why)."""
    if ek_cert is None:
        return None
    try:
        return format(parse_ek_certificate(ek_cert).serial_number, "x")
    except EKCertificateError:
        return None


def attestation_type(
    req: EnrollmentRequest, allowed_cas_pem: bytes | None, now: datetime.datetime | None = None
) -> AttestationType:
    """tpm_ekcert_trusted when the EK certificate chains to an allowed CA, tpm_ekcert when
    no CAs are configured, tpm_ekpub when the device has no EK certificate."""
    return examine_ek(req, allowed_cas_pem, now).attestation_type


def challenge_ek(req: EnrollmentRequest) -> bytes:
    """The EK TPM2B_PUBLIC to make the challenge for: the one sent (checked against the
    certificate), else one rebuilt from the certificate's key with the TCG EK template for
    its kind (MakeCredential uses only the key, the name algorithm and the symmetric cipher)."""
    return examine_ek(req, None).public


def _ek_template(key: PublicKey) -> bytes:
    if isinstance(key, rsa.RSAPublicKey):
        # RSA-2048 (low range L-1 or high range H-1): SHA-256 names, AES-128; the RSA-3072
        # EK exists only in the high range (H-6): SHA-384 names, AES-256.
        if key.key_size == 2048:
            template = TPM2B_PUBLIC.parse("rsa2048:aes128cfb")
        elif key.key_size == 3072:
            template = TPM2B_PUBLIC.parse("rsa3072:aes256cfb", nameAlg=TPM2_ALG.SHA384)
        else:
            raise ChallengeError(
                f"an RSA-{key.key_size} EK must be sent as its public area: only RSA-2048 "
                "and RSA-3072 EKs are rebuilt from their certificate"
            )
        template.publicArea.unique.rsa = key.public_numbers().n.to_bytes(key.key_size // 8, "big")
        return bytes(template.marshal())
    size = key.curve.key_size // 8
    # The P-384 EK exists only in the high range: SHA-384 names, AES-256.
    if size == 32:
        template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", nameAlg=TPM2_ALG.SHA256)
    else:
        template = TPM2B_PUBLIC.parse("ecc384:aes256cfb", nameAlg=TPM2_ALG.SHA384)
    template.publicArea.unique.ecc.x = key.public_numbers().x.to_bytes(size, "big")
    template.publicArea.unique.ecc.y = key.public_numbers().y.to_bytes(size, "big")
    return bytes(template.marshal())


# The challenge and the answers


def _ek_parameters(area: PublicArea, key: PublicKey) -> EKParameters:
    return EKParameters(
        key, area.name_alg, area.symmetric, area.symmetric_bits, area.symmetric_mode, area.ecc_x
    )


SECRET_SIZE = NONCE_SIZE = 32


def make_challenge(
    ek: bytes | EKInfo, ak_name: bytes, *, secret: bytes | None = None, nonce: bytes | None = None
) -> Challenge:
    """MakeCredential(EK, fresh 32-byte secret, AK name), and a fresh 32-byte nonce. The EK
    is its marshalled TPM2B_PUBLIC, or what ``examine_ek`` read of it (parsed once).

    ``secret`` and ``nonce``: fresh ones the caller drew (``secrets.token_bytes``) and
    stored before the device's keys were verified."""
    if isinstance(ek, EKInfo):
        parameters = ek.parameters
    else:
        area = _public_area(ek, "EK public area", ChallengeError)
        parameters = _ek_parameters(area, _public_key(area, "EK public area", ChallengeError))
    if not isinstance(ak_name, bytes) or len(ak_name) < 2:
        raise ChallengeError("the AK name is malformed")
    if len(ak_name) != _NAME_SIZES.get(int.from_bytes(ak_name[:2], "big")):
        raise ChallengeError("the AK name is not a SHA-256, SHA-384 or SHA-512 name")
    secret = secrets.token_bytes(SECRET_SIZE) if secret is None else secret
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    if len(secret) != SECRET_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError(f"a challenge's secret and nonce are {SECRET_SIZE} bytes each")
    try:
        blob, encrypted = make_credential(parameters, secret, ak_name)
    except PARSE_ERRORS as exc:
        raise ChallengeError(f"cannot make a credential for this EK ({exc})") from exc
    return Challenge(credential_blob=blob, encrypted_secret=encrypted, nonce=nonce, secret=secret)


def verify_activation(challenge: Challenge, activated_secret: bytes) -> None:
    if not isinstance(activated_secret, bytes) or not hmac.compare_digest(
        challenge.secret, activated_secret
    ):
        raise ChallengeError(
            "the activated secret does not match the challenge: the AK is not in the EK's TPM"
        )


def _selected_pcrs(quoted: Attestation) -> tuple[int, list[int]]:
    """The bank and PCR indices the quote signed, in selection order."""
    if quoted.pcr_banks != 1:
        raise QuoteError(f"the quote selects {quoted.pcr_banks} PCR banks, not exactly one")
    size = quoted.pcr_select_size
    if quoted.pcr_bank not in _PCR_BANKS or not 1 <= size <= 4:
        raise QuoteError("the quote's PCR selection is malformed")
    bitmap = quoted.pcr_select[:size]
    pcrs = [8 * i + bit for i, octet in enumerate(bitmap) for bit in range(8) if octet >> bit & 1]
    if not pcrs:
        raise QuoteError("the quote covers no PCRs")
    return quoted.pcr_bank, pcrs


def verify_quote(
    ak_public: bytes,
    nonce: bytes,
    quote_attestation: bytes,
    signature: bytes,
    pcr_values: dict[int, bytes],
    expected_pcrs: Collection[int] | None = None,
) -> None:
    """The quote is the AK's, over this nonce, and the PCR values are the ones it covers
    (with ``expected_pcrs``, exactly the PCRs the server asked for)."""
    _, key = _ak_area(ak_public)
    quoted = _attestation(quote_attestation, "quote", QuoteError)
    _verify_signature(key, quoted.signed, signature, "quote", QuoteError)
    if quoted.type != TPM2_ST.ATTEST_QUOTE:
        raise QuoteError("the quote attestation is not a quote")
    if not isinstance(nonce, bytes) or not hmac.compare_digest(quoted.extra_data, nonce):
        raise QuoteError("the quote is not over the challenge's nonce")
    bank, pcrs = _selected_pcrs(quoted)
    if expected_pcrs is not None and set(pcrs) != set(expected_pcrs):
        raise QuoteError(
            f"the quote covers PCRs {pcrs}, not the PCRs asked for ({sorted(expected_pcrs)})"
        )
    if set(pcr_values) != set(pcrs):
        raise QuoteError(
            f"the PCR values sent ({sorted(pcr_values)}) are not the quoted PCRs ({pcrs})"
        )
    size = _PCR_BANKS[bank]
    if any(not isinstance(pcr_values[i], bytes) or len(pcr_values[i]) != size for i in pcrs):
        raise QuoteError("a PCR value sent is not a digest of the quoted bank")
    digest = hashlib.sha256(b"".join(pcr_values[i] for i in pcrs)).digest()
    if not hmac.compare_digest(quoted.pcr_digest, digest):
        raise QuoteError("the PCR values sent do not match the quoted PCR digest")


@dataclass(frozen=True)
class SentQuote:
    """One quote as the device sent it: its TPM2B_ATTEST (or the bare TPMS_ATTEST inside
    it) and TPMT_SIGNATURE, marshalled, and the values of the PCRs it covers."""

    attestation: bytes  # TPM2B_ATTEST or TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcr_values: Mapping[int, bytes]


def verify_quotes(
    ak_public: bytes,
    nonce: bytes,
    quotes: Sequence[SentQuote],
    expected_pcrs: Collection[int] | None = None,
) -> None:
    """A platform attestation: every quote verified as ``verify_quote`` does. An answer
    of no quote proves nothing and is refused here, whatever let it through before."""
    if not quotes:
        raise QuoteError("the answer carries no quote")
    for quote in quotes:
        verify_quote(
            ak_public,
            nonce,
            quote.attestation,
            quote.signature,
            dict(quote.pcr_values),
            expected_pcrs=expected_pcrs,
        )
