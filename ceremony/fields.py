"""The ceremony's text, date-time and base64 fields: what each accepts, said in its JSON
Schema too.

The OpenAPI document promises what the service accepts, and schemathesis holds it to that
(``tests/integration/test_schemathesis.py``): each type here validates exactly what its
schema declares. Lengths are counted as sent, before surrounding whitespace is stripped.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ceremony.attestation import framing
from ceremony.attestation.ek_cert import MAX_CERTIFICATE
from ceremony.attestation.framing import MAX_STRUCTURE
from ceremony.attestation.macos import MAX_KEY_BYTES, MAX_SIGNATURE_BYTES
from inventory.domain import MAX_ASSET_TAG_LENGTH

# What no text field may hold: control characters (C0, DEL and C1; PostgreSQL text cannot
# hold NUL at all, and the rest would break the one-line messages and audit events that
# echo a field), the line and paragraph separators, and lone surrogates (no encoding can
# store them). Declared in the schema too, so what it calls valid is what is accepted.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def _plain_text(value: str) -> str:
    if found := _UNSTORABLE.search(value):
        if found.group() == "\x00":
            raise ValueError("contains a NUL character")
        raise ValueError(f"contains the control character U+{ord(found.group()):04X}")
    return value.strip()


def _text_schema(max_length: int, min_length: int = 0) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "pattern": TEXT_PATTERN}
    if min_length:
        schema["minLength"] = min_length
    return WithJsonSchema(schema)


# An RFC 3339 date-time (what JSON Schema's "date-time" format is), in the years 1000 to
# 2999 so that any offset converts to UTC: lax parsing would also take a number (Unix
# time), a date alone, or a time without seconds.
_DATE_TIME = re.compile(
    r"[12][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _date_time(value: object) -> object:
    if isinstance(value, datetime):  # built in Python (the service's own data), not sent
        return value
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-11-26T12:00:00Z")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


# Bounded as the inventory's columns are, so what is accepted here can be stored.
# Their length is counted as sent, then they are stripped of surrounding whitespace.
Text64 = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_plain_text), _text_schema(64)
]
Text128 = Annotated[
    str, StringConstraints(max_length=128), AfterValidator(_plain_text), _text_schema(128)
]
Token = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(_plain_text),
    _text_schema(256, min_length=1),
]
ChallengeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_plain_text),
    _text_schema(64, min_length=1),
]
UTCTime = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time),
    AfterValidator(_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": f"^{_DATE_TIME.pattern}$"}),
]


def _serial(value: str) -> str:
    tag = value.strip(" ")
    if not _SERIAL.fullmatch(tag):
        raise ValueError("must be printable ASCII without tabs or control characters")
    return tag


_SERIAL = re.compile(r"[!-~](?:[ -~]*[!-~])?")
# The asset tag the device reports: printable ASCII, spaces inside kept (virtual machines
# report such serials) and spaces around it forgiven.
SerialNumber = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ASSET_TAG_LENGTH),
    AfterValidator(_serial),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_ASSET_TAG_LENGTH,
         "pattern": "^ *[!-~](?:[ -~]*[!-~])? *$"}
    ),
]  # fmt: skip


# Binary fields: standard base64 of the exact bytes, each a Blob naming what it carries.

MAX_BLOB_BYTES = 16 * 1024  # decoded: the largest base64 field (a user's public key)
MAX_DIGEST = 64  # a SHA-512 digest, the largest a PCR or a credential holds
# Standard, padded base64 (what b64decode(validate=True) takes), so that the schema says
# what is accepted: contentEncoding alone is only an annotation.
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def base64_chars(size: int) -> int:
    """The length of ``size`` bytes' standard base64, padded."""
    return -(-size // 3) * 4


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Blob:
    """A base64 field: the structure it carries, how it is framed, and its size limit.

    ``tpm2b``: the TPM2B whose bare contents are accepted too (and size-prefixed here).
    Bytes given in Python (the agent building its request) are taken as they are.
    """

    structure: str
    framing: str
    max_bytes: int
    tpm2b: str | None = None

    def decode(self, value: object) -> bytes:
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise ValueError("must be a base64 string")
        if len(value) > base64_chars(self.max_bytes):
            raise ValueError(f"is more than {self.max_bytes} bytes")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        if len(data) > self.max_bytes:
            raise ValueError(f"is more than {self.max_bytes} bytes")
        return framing.reframed(self.tpm2b, data) if self.tpm2b else data

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        serializer = core_schema.plain_serializer_function_ser_schema(
            encode, return_schema=core_schema.str_schema()
        )
        return core_schema.no_info_plain_validator_function(self.decode, serialization=serializer)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "contentEncoding": "base64",
            "maxLength": base64_chars(self.max_bytes),
            "pattern": BASE64_PATTERN,
            "description": f"{self.structure}, {self.framing}; at most {self.max_bytes} bytes",
            "x-tpm-structure": self.structure,
            "x-framing": self.framing,
            "x-max-bytes": self.max_bytes,
        }


def _tpm2b(tpm2b: str, bare: str, note: str = "") -> Blob:
    framed = (
        f"size-prefixed ({tpm2b}, as TPM commands return it) "
        f"or bare ({bare}, as go-attestation sends it)"
    )
    return Blob(tpm2b, framed + note, MAX_STRUCTURE, tpm2b)


_NOT_FRAMED = "not size-prefixed"
_DER = "DER, not size-prefixed"
PublicArea = Annotated[bytes, _tpm2b("TPM2B_PUBLIC", "TPMT_PUBLIC")]
CreationData = Annotated[bytes, _tpm2b("TPM2B_CREATION_DATA", "TPMS_CREATION_DATA")]
CreationAttestation = Annotated[bytes, _tpm2b(
    "TPM2B_ATTEST", "TPMS_ATTEST", ", of type TPM_ST_ATTEST_CREATION (TPM2_CertifyCreation)"
)]  # fmt: skip
QuoteAttestation = Annotated[
    bytes, _tpm2b("TPM2B_ATTEST", "TPMS_ATTEST", ", of type TPM_ST_ATTEST_QUOTE (TPM2_Quote)")
]
Signature = Annotated[bytes, Blob(
    "TPMT_SIGNATURE", _NOT_FRAMED + " (RSASSA or ECDSA with SHA-256, by the AK)", MAX_STRUCTURE
)]  # fmt: skip
EKCertificate = Annotated[bytes, Blob(
    "EK certificate (X.509 DER)",
    "DER as read from the TPM's NV index: a TCG NV header (10 01 00 and a 2-byte length) "
    "before it and padding after it are allowed",
    MAX_CERTIFICATE,
)]  # fmt: skip
Certificate = Annotated[bytes, Blob("X.509 certificate", _DER, MAX_CERTIFICATE)]
IDObject = Annotated[bytes, Blob(
    "TPM2B_ID_OBJECT", "size-prefixed (TPM2_MakeCredential's credentialBlob)", MAX_STRUCTURE
)]  # fmt: skip
EncryptedSecret = Annotated[bytes, Blob(
    "TPM2B_ENCRYPTED_SECRET", "size-prefixed (TPM2_MakeCredential's secret)", MAX_STRUCTURE
)]  # fmt: skip
Digest = Annotated[bytes, Blob("TPM2B_DIGEST contents", _NOT_FRAMED, MAX_DIGEST)]
Nonce = Annotated[bytes, Blob(
    "TPM2B_DATA contents", "32 random bytes, not size-prefixed: TPM2_Quote's qualifyingData",
    MAX_DIGEST,
)]  # fmt: skip
SubjectPublicKeyInfo = Annotated[bytes, Blob("SubjectPublicKeyInfo", _DER, MAX_KEY_BYTES)]
UserPublicKey = Annotated[bytes, Blob("SubjectPublicKeyInfo", _DER, MAX_BLOB_BYTES)]
ECDSASignature = Annotated[bytes, Blob(
    "ECDSA-Sig-Value", _DER + " (ECDSA with SHA-256 over the challenge)", MAX_SIGNATURE_BYTES
)]  # fmt: skip
RandomChallenge = Annotated[bytes, Blob("random bytes", "32 of them, to sign", MAX_DIGEST)]
