"""The ceremony's wire format: what the device agent and ``devtrust serve`` exchange.

JSON bodies validated by pydantic; binary TPM structures travel as standard base64 of the
exact bytes the TPM produced. Each base64 field is a ``Blob``: it names the structure it
carries, its framing and its marshalled size limit, in ``/openapi.json`` too (``x-tpm-
structure``, ``x-framing``, ``x-max-bytes``), so an agent can be written from the document
alone. The TPM2B forms may also be sent bare, as go-attestation does (``framing``): they
are size-prefixed here, so what the service keeps is the same either way. Every model
refuses unknown fields, so a misspelt field is an error rather than silently ignored.
Sizes are bounded here as well as in the verifiers: the service also refuses any body
over ``MAX_BODY_BYTES`` before reading it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ceremony.attestation import framing
from ceremony.attestation.ek_cert import MAX_CERTIFICATE
from ceremony.attestation.framing import MAX_STRUCTURE
from ceremony.attestation.macos import MAX_KEY_BYTES, MAX_SIGNATURE_BYTES
from ceremony.fields import ChallengeId, SerialNumber, Text64, Text128, Token, UTCTime
from inventory.domain import CollectedData, OSType, normalize_asset_tag

MAX_BODY_BYTES = 64 * 1024
MAX_BLOB_BYTES = 16 * 1024  # decoded: the largest base64 field (a user's public key)
MAX_DIGEST = 64  # a SHA-512 digest, the largest a PCR or a credential holds
PCR_BANK = "sha256"
QUOTED_PCRS = tuple(range(24))  # go-attestation's AttestPlatform quotes every PCR
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


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Collected(Wire):
    """What the device collected about itself (``devtrust device collect``)."""

    serial_number: SerialNumber
    os_type: OSType
    model_identifier: Text128 | None = None
    os_version: Text64 | None = None
    os_build: Text64 | None = None
    os_id: Text64 | None = None
    os_login_user: Text128 | None = None
    jamf_binary_version: Text64 | None = None
    reported_asset_tag: Text128 | None = None
    system_serial_number: Text128 | None = None
    base_board_serial_number: Text128 | None = None
    collect_time: UTCTime | None = None

    def to_domain(self) -> CollectedData:
        return CollectedData(
            serial_number=normalize_asset_tag(self.serial_number),
            os_type=self.os_type,
            model_identifier=self.model_identifier,
            os_version=self.os_version,
            os_build=self.os_build,
            os_id=self.os_id,
            os_login_user=self.os_login_user,
            jamf_binary_version=self.jamf_binary_version,
            reported_asset_tag=self.reported_asset_tag,
            system_serial_number=self.system_serial_number,
            base_board_serial_number=self.base_board_serial_number,
            collect_time=self.collect_time,
        )

    @classmethod
    def from_domain(cls, data: CollectedData) -> Collected:
        fields = {name: getattr(data, name) for name in cls.model_fields}
        return cls(**fields)


class TPMAttestation(Wire):
    """The EK and the AK's parameters (go-attestation's EK and AttestationParameters)."""

    ek_cert: EKCertificate | None = None
    ek_public: PublicArea | None = None
    ek_intermediates: list[Certificate] = Field(default_factory=list, max_length=4)
    ak_public: PublicArea
    creation_data: CreationData
    creation_attestation: CreationAttestation
    creation_signature: Signature


class MacOSKey(Wire):
    public_key: SubjectPublicKeyInfo  # of the ECDSA P-256 key


def _exactly_one(model: Wire, first: str, second: str) -> None:
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(f"give exactly one of {first!r} and {second!r}")


def _one_of(first: str, second: str) -> ConfigDict:
    """``_exactly_one`` in the schema: one of the two is an object, the other null or absent."""

    def branch(given: str, other: str) -> dict[str, Any]:
        return {
            "required": [given],
            "properties": {given: {"type": "object"}, other: {"type": "null"}},
        }

    return ConfigDict(json_schema_extra={"oneOf": [branch(first, second), branch(second, first)]})


class EnrollInit(Wire):
    """The first round trip: the token, the collected data and the device's keys."""

    model_config = _one_of("tpm", "macos")

    token: Token
    collected: Collected
    tpm: TPMAttestation | None = None
    macos: MacOSKey | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        _exactly_one(self, "tpm", "macos")
        return self


class TPMChallenge(Wire):
    credential_blob: IDObject
    encrypted_secret: EncryptedSecret
    nonce: Nonce  # to quote over
    pcr_bank: str = PCR_BANK
    pcrs: list[int] = Field(default_factory=lambda: list(QUOTED_PCRS))


class MacOSChallenge(Wire):
    challenge: RandomChallenge  # to sign with ECDSA-SHA256


class EnrollChallenge(Wire):
    challenge_id: str
    expire_time: datetime
    tpm: TPMChallenge | None = None
    macos: MacOSChallenge | None = None


def _pcr_index(value: object) -> object:
    # JSON object keys are strings: only a plain decimal index is one (lax int parsing
    # would also take " 7", "07" or "7.0").
    if isinstance(value, str) and not _PCR_INDEX.fullmatch(value):
        raise ValueError(f"PCR index must be 0 to {len(QUOTED_PCRS) - 1}")
    return value


_PCR_INDEX = re.compile(r"[0-9]|1[0-9]|2[0-3]")
PCRIndex = Annotated[
    int,
    BeforeValidator(_pcr_index),
    WithJsonSchema({"type": "string", "pattern": f"^(?:{_PCR_INDEX.pattern})$"}),
]


class Quote(Wire):
    attestation: QuoteAttestation
    signature: Signature
    pcr_values: dict[PCRIndex, Digest] = Field(
        max_length=len(QUOTED_PCRS), json_schema_extra={"additionalProperties": False}
    )


class TPMResponse(Wire):
    activated_secret: Digest  # what TPM2_ActivateCredential returns (certInfo)
    quotes: list[Quote] = Field(min_length=1, max_length=4)


class MacOSResponse(Wire):
    signature: ECDSASignature


class EnrollComplete(Wire):
    """The second round trip: the answer to the challenge."""

    model_config = _one_of("tpm", "macos")

    challenge_id: ChallengeId
    tpm: TPMResponse | None = None
    macos: MacOSResponse | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        _exactly_one(self, "tpm", "macos")
        return self


class SelfTokenRequest(Wire):
    """``devtrust device enroll --current-device``: register this device if needed and mint
    a token for the calling user to enroll it."""

    collected: Collected


class DeviceResult(Wire):
    device: dict[str, Any]


class SelfToken(Wire):
    token: str
    expire_time: datetime
    device: dict[str, Any]


class ErrorBody(Wire):
    error: str


class AutoEnrollRequest(Wire):
    """A login on a registered device: what it collected, for the auto-enrollment check."""

    collected: Collected


class AutoEnrollToken(Wire):
    """The check passed: a token only this user can spend, on this device, soon."""

    token: str
    expire_time: datetime
    device: dict[str, Any]


# A check's id as the service issues it: a UUID in its canonical, lower-case form.
CHECK_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class AutoEnrollPending(Wire):
    """The check has not answered yet: poll ``location``."""

    check_id: str
    location: str


class AuthInit(Wire):
    """``devtrust device login``: the device's collected data and the key to certify."""

    collected: Collected
    user_public_key: UserPublicKey  # of the key the certificate is for


class QuoteChallenge(Wire):
    nonce: Nonce  # to quote over with the enrolled AK
    pcr_bank: str = PCR_BANK
    pcrs: list[int] = Field(default_factory=lambda: list(QUOTED_PCRS))


class AuthChallenge(Wire):
    challenge_id: str
    expire_time: datetime
    tpm: QuoteChallenge | None = None
    macos: MacOSChallenge | None = None  # challenge to sign with the enrolled key


class AuthTPMResponse(Wire):
    quotes: list[Quote] = Field(min_length=1, max_length=4)


class AuthComplete(Wire):
    model_config = _one_of("tpm", "macos")
    challenge_id: ChallengeId
    tpm: AuthTPMResponse | None = None
    macos: MacOSResponse | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        _exactly_one(self, "tpm", "macos")
        return self


class DeviceCertificate(Wire):
    certificate: str  # PEM
    expire_time: datetime
    device: dict[str, Any]
    extensions: list[str]  # the names of the device extensions it carries


class WhoAmI(Wire):
    user: str
    roles: list[str]


class Health(BaseModel):
    """``/healthz``: ``ok`` or ``unhealthy``, and each dependency's state: ``ok``, or
    ``unreachable: <why>``."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"additionalProperties": {"type": "string"}}
    )

    status: Literal["ok", "unhealthy"]
