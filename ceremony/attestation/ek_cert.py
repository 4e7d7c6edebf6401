"""EK certificates: read them as TPMs store them, and check their chain to the allowed CAs.

Leniency where the TCG's profile and real TPMs need it: an NV header and trailing
padding around the DER, critical directoryName SANs and no digitalSignature key usage
that generic X.509 path builders refuse, so the chain is walked by hand; and an RSA key
marked RSAES-OAEP (1.2.840.113549.1.1.7, as Infineon's EK certificates mark theirs),
which ``cryptography`` refuses and OpenSSL and AWS-LC read as an RSA key: its
SubjectPublicKeyInfo is read again as rsaEncryption. Every refusal is an
``EKCertificateError`` whose message says what is wrong.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ceremony.errors import EKCertificateError

MAX_CERTIFICATE = 8192
MAX_CHAIN_DEPTH = 5
EK_CERTIFICATE_EKU = x509.ObjectIdentifier("2.23.133.8.1")
EK_CURVES = (ec.SECP256R1, ec.SECP384R1)
RSAES_OAEP = x509.ObjectIdentifier("1.2.840.113549.1.1.7")
_RSAES_OAEP_OID = bytes.fromhex("06092a864886f70d010107")  # its DER, tag and length included
# AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }, DER.
_RSA_ENCRYPTION = bytes.fromhex("300d06092a864886f70d0101010500")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# cryptography parses certificates lazily: any attribute of a damaged one may raise these.
_X509_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _der_end(raw: bytes) -> int:
    """Where the DER SEQUENCE at the start of raw ends, so trailing padding can be cut."""
    if len(raw) < 2 or raw[0] != 0x30:
        raise EKCertificateError("the EK certificate is not DER (no SEQUENCE at its start)")
    if raw[1] < 0x80:
        return 2 + raw[1]
    octets = raw[1] & 0x7F
    if not 1 <= octets <= 3 or len(raw) < 2 + octets:
        raise EKCertificateError("the EK certificate has an invalid DER length")
    return 2 + octets + int.from_bytes(raw[2 : 2 + octets], "big")


def parse_ek_certificate(raw: bytes) -> x509.Certificate:
    """An EK certificate as TPMs store it: an optional TCG NV header (10 01 00, then a
    2-byte length), the DER certificate, then perhaps padding."""
    if not isinstance(raw, bytes | bytearray):
        raise EKCertificateError(f"the EK certificate must be bytes, not {type(raw).__name__}")
    if len(raw) > MAX_CERTIFICATE:
        raise EKCertificateError(
            f"the EK certificate is {len(raw)} bytes, more than the {MAX_CERTIFICATE} allowed"
        )
    raw = bytes(raw)
    if len(raw) > 5 and raw[:3] == b"\x10\x01\x00":
        (length,) = struct.unpack(">H", raw[3:5])
        if len(raw) < 5 + length:
            raise EKCertificateError(
                f"the EK certificate's NV header says {length} bytes but {len(raw) - 5} follow"
            )
        raw = raw[5 : 5 + length]
    end = _der_end(raw)
    if end > len(raw):
        raise EKCertificateError(f"the EK certificate is truncated: {len(raw)} of {end} bytes")
    try:
        cert = x509.load_der_x509_certificate(raw[:end])
        # What every enrollment reads, parsed now. The names, dates and extensions stay
        # lazy (leniency, and 15 µs an enrollment): only the chain's check reads them, and
        # it refuses what it cannot read.
        _ = cert.serial_number
        return cert
    except _X509_ERRORS as exc:
        raise EKCertificateError(
            f"the EK certificate is not a valid X.509 certificate ({exc})"
        ) from exc


def _element(der: bytes, at: int, end: int) -> tuple[int, int, int]:
    """The DER element at ``der[at]``, within ``der[:end]``: (tag, contents start, end)."""
    if at + 2 > end:
        raise ValueError("DER element truncated")
    tag, first = der[at], der[at + 1]
    start = at + 2
    if first < 0x80:
        length = first
    else:
        octets = first & 0x7F
        if not 1 <= octets <= 3 or start + octets > end:
            raise ValueError("invalid DER length")
        length = int.from_bytes(der[start : start + octets], "big")
        start += octets
    if start + length > end:
        raise ValueError("DER element truncated")
    return tag, start, start + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside a constructed one: (tag, element start, contents start, end)."""
    found = []
    while start < end:
        tag, contents, after = _element(der, start, end)
        found.append((tag, start, contents, after))
        start = after
    return found


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _rsaes_oaep_key(cert: x509.Certificate) -> rsa.RSAPublicKey | None:
    """The RSA key of a certificate whose SubjectPublicKeyInfo names RSAES-OAEP, read with
    rsaEncryption instead (RFC 4055: the key is the same RSAPublicKey); else None."""
    tbs = cert.tbs_certificate_bytes
    _, start, end = _element(tbs, 0, len(tbs))
    fields = _children(tbs, start, end)
    first = 1 if fields and fields[0][0] == 0xA0 else 0  # the [0] version, when present
    # version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    _, _, spki_start, spki_end = fields[first + 5]
    algorithm, key = _children(tbs, spki_start, spki_end)[:2]
    _, _, oid_start, algorithm_end = algorithm
    _, _, oid_end = _element(tbs, oid_start, algorithm_end)
    if tbs[oid_start:oid_end] != _RSAES_OAEP_OID:  # the OID's whole element, tag included
        return None
    contents = _RSA_ENCRYPTION + tbs[key[1] : key[3]]
    rebuilt = b"\x30" + _der_length(len(contents)) + contents
    read = load_der_public_key(rebuilt)
    return read if isinstance(read, rsa.RSAPublicKey) else None


def ek_public_from_certificate(cert: x509.Certificate) -> PublicKey:
    try:
        key = cert.public_key()
    except _X509_ERRORS as exc:
        try:
            oaep = _rsaes_oaep_key(cert)
        except (ValueError, IndexError, *_X509_ERRORS):
            oaep = None
        if oaep is None:
            raise EKCertificateError(
                f"the EK certificate's public key is unsupported ({exc})"
            ) from exc
        key = oaep
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, EK_CURVES):
        return key
    raise EKCertificateError("the EK certificate's key is neither RSA-2048+ nor ECC P-256/P-384")


def _check_dates(cert: x509.Certificate, what: str, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise EKCertificateError(f"the {what} is not valid before {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise EKCertificateError(f"the {what} expired on {cert.not_valid_after_utc}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, *_X509_ERRORS):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, *_X509_ERRORS):
        return False


def verify_ek_chain(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    allowed_cas_pem: bytes,
    now: datetime.datetime | None = None,
) -> None:
    """The EK certificate chains to one of the allowed CAs and carries the TCG EK EKU.

    The chain is walked by hand: generic path builders refuse EK certificates (critical
    directoryName SANs, no digitalSignature key usage, empty subjects).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        roots = x509.load_pem_x509_certificates(allowed_cas_pem)
    except ValueError as exc:
        raise EKCertificateError(
            f"ekcert_allowed_cas holds no valid PEM certificate ({exc})"
        ) from exc
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise EKCertificateError("the EK certificate has no extended key usage") from None
    except _X509_ERRORS as exc:
        raise EKCertificateError(f"the EK certificate's extensions are malformed ({exc})") from exc
    if EK_CERTIFICATE_EKU not in eku:
        raise EKCertificateError(
            "the EK certificate lacks the TCG EK extended key usage "
            f"{EK_CERTIFICATE_EKU.dotted_string}"
        )
    try:
        _check_dates(cert, "EK certificate", now)
        _walk_chain(cert, intermediates, roots, now)
    except _X509_ERRORS as exc:
        raise EKCertificateError(f"the EK certificate chain is malformed ({exc})") from exc


def _walk_chain(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime.datetime,
) -> None:
    current = cert
    for _ in range(MAX_CHAIN_DEPTH):
        for root in roots:
            if _issued_by(current, root):
                _check_dates(root, f"CA certificate {root.subject.rfc4514_string()!r}", now)
                return
        issuer = next((c for c in intermediates if _is_ca(c) and _issued_by(current, c)), None)
        if issuer is None:
            break
        _check_dates(issuer, f"intermediate {issuer.subject.rfc4514_string()!r}", now)
        current = issuer
    raise EKCertificateError(
        f"the EK certificate issued by {cert.issuer.rfc4514_string()!r} "
        "does not chain to any CA in ekcert_allowed_cas"
    )
