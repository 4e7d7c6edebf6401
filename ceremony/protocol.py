"""The ceremony's wire format: what the device agent and ``devtrust serve`` exchange.

JSON bodies validated by pydantic; binary TPM structures travel as standard base64 of the
exact bytes the TPM produced. Each base64 field is a ``Blob`` (``ceremony.fields``): it
names the structure it carries, its framing and its marshalled size limit, in
``/openapi.json`` too (``x-tpm-structure``, ``x-framing``, ``x-max-bytes``), so an agent
can be written from the document alone. The TPM2B forms may also be sent bare, as
go-attestation does (``ceremony.attestation.framing``): they are size-prefixed on the way
in, so what the service keeps is the same either way. Every model refuses unknown fields,
so a misspelt field is an error rather than silently ignored. Sizes are bounded here as
well as in the verifiers: the service also refuses any body over ``MAX_BODY_BYTES``
before reading it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ceremony.fields import MAX_BLOB_BYTES as MAX_BLOB_BYTES
from ceremony.fields import MAX_DIGEST as MAX_DIGEST
from ceremony.fields import (
    Certificate,
    ChallengeId,
    CreationAttestation,
    CreationData,
    Digest,
    ECDSASignature,
    EKCertificate,
    EncryptedSecret,
    IDObject,
    Nonce,
    PublicArea,
    QuoteAttestation,
    RandomChallenge,
    SerialNumber,
    Signature,
    SubjectPublicKeyInfo,
    Text64,
    Text128,
    Token,
    UserPublicKey,
    UTCTime,
)
from ceremony.fields import base64_chars as base64_chars
from ceremony.fields import encode as encode
from inventory.domain import (
    MAX_USER_NAME_LENGTH,
    CollectedData,
    OSType,
    Role,
    normalize_asset_tag,
)
from inventory.preference import DeviceTrustMode

MAX_BODY_BYTES = 64 * 1024
PCR_BANK = "sha256"
QUOTED_PCRS = tuple(range(24))  # go-attestation's AttestPlatform quotes every PCR


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


# -- the admin API (``ceremony.admin``) ------------------------------------------------

USER_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._@+-]*$"
# A user's name as ``inventory.domain.normalize_user_name`` takes it (nothing to strip).
UserName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_USER_NAME_LENGTH, pattern=USER_NAME_PATTERN)
]
# Device listings page by the inventory's own keyset cursors (``Page.next_cursor``):
# opaque, URL-safe base64.
DEVICE_CURSOR_PATTERN = "^[A-Za-z0-9_-]{1,1024}$"
# The audit log pages by event id: the id of the last event of the page before.
EVENT_CURSOR_PATTERN = "^[1-9][0-9]{0,17}$"
MIN_TOKEN_SECONDS = 60  # inventory.services.tokens.MIN_TTL
MAX_TOKEN_SECONDS = 7 * 86400  # and MAX_TTL
MAX_ROLES = 8
MAX_LOGINS = 16  # inventory.services.users.MAX_LOGINS
MAX_CAS = 12
MAX_PEM_CHARS = 4096  # a CA certificate is 1 to 3 kB of PEM
MinAttestation = Literal["any", "software_key", "tpm_ekpub", "tpm_ekcert", "tpm_ekcert_trusted"]


def _admin_schema(
    *, not_null: tuple[str, ...] = (), any_of: list[dict[str, Any]] | None = None
) -> ConfigDict:
    """Optional fields that may be left out but not sent as null (``not_null``: their
    schema loses its null branch and its default), and a model-level ``anyOf``."""

    def edit(schema: dict[str, Any]) -> None:
        for name in not_null:
            prop = schema["properties"][name]
            (branch,) = [b for b in prop.pop("anyOf") if b != {"type": "null"}]
            prop.pop("default", None)
            prop.update(branch)
        if any_of is not None:
            schema["anyOf"] = any_of

    return ConfigDict(json_schema_extra=edit)


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


class DevicePage(Wire):
    """``GET /v1/admin/devices`` and ``/v1/me/devices``: one page; ``next`` fetches the
    one after (``?after=``), null on the last."""

    devices: list[dict[str, Any]]
    next: str | None


class DeviceAdd(Wire):
    """``devtrust devices add``: a device registered by hand, not enrolled."""

    os_type: OSType
    asset_tag: SerialNumber
    # The one user it auto-enrolls for when no MDM profile says who uses it.
    assigned_user: UserName | None = None


def _json_integer(value: object) -> object:
    """A JSON integer: a number with no fractional part (``600.0`` is one, as JSON Schema
    counts), never a string or a boolean as lax parsing would take them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


TokenSeconds = Annotated[
    int, Field(ge=MIN_TOKEN_SECONDS, le=MAX_TOKEN_SECONDS), BeforeValidator(_json_integer)
]
Revision = Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(_json_integer)]


class EnrollTokenRequest(Wire):
    """``devtrust devices enroll``: the token's lifetime (default: the service's
    ``DEVTRUST_ENROLLMENT_TOKEN_TTL``)."""

    ttl_seconds: TokenSeconds | None = None


class EnrollTokenIssued(Wire):
    """The token, shown this once; the rest as ``devices enroll --format json`` prints it."""

    token: str
    device_id: str
    asset_tag: str
    expire_time: str
    ttl_seconds: int


class Unenrolled(Wire):
    device: dict[str, Any]
    changed: bool  # false: it was not enrolled, nothing done


class DeviceDiff(Wire):
    """``devtrust devices diff --format json``: each field auto-enrollment checks."""

    device: dict[str, Any]
    collect_time: str | None
    fields: list[dict[str, Any]]


class RawRecord(Wire):
    """``devtrust devices get --raw``: the record the MDM sent when a sync last wrote the
    device, as it came (size-capped)."""

    device: dict[str, Any]
    record: Any


class UserList(Wire):
    users: list[dict[str, Any]]


class UserAdd(Wire):
    """``devtrust users add``; a device admin grants only roles it holds itself."""

    name: UserName
    roles: list[Role] = Field(min_length=1, max_length=MAX_ROLES)
    # The logins the user has on their devices (MDM usernames), besides their name.
    logins: list[UserName] = Field(default_factory=list, max_length=MAX_LOGINS)


class UserEdit(Wire):
    """``devtrust users edit``: replace the roles, the logins or both; the credential stays."""

    model_config = _admin_schema(
        not_null=("roles", "logins"), any_of=[{"required": ["roles"]}, {"required": ["logins"]}]
    )

    roles: list[Role] | None = Field(default=None, min_length=1, max_length=MAX_ROLES)
    logins: list[UserName] | None = Field(default=None, max_length=MAX_LOGINS)

    _present = field_validator("roles", "logins", mode="before")(_not_null)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.roles is None and self.logins is None:
            raise ValueError("nothing to change: give roles and/or logins")
        return self


class UserCredential(Wire):
    """A user's new credential, shown this once (``users add`` / ``reset-token --format json``)."""

    name: str
    roles: list[str]
    token: str


class UserResult(Wire):
    user: dict[str, Any]


class AuditPage(Wire):
    """``GET /v1/admin/audit``: matching events newest first; ``next`` (``?after=``)
    fetches the older ones, null when there are none."""

    events: list[dict[str, Any]]
    next: str | None


# A PEM certificate: ASCII text. So many of them, and one more, still fit in a body
# (MAX_BODY_BYTES): a longer list is refused as the schema says, not as too large.
PEMText = Annotated[str, StringConstraints(max_length=MAX_PEM_CHARS, pattern=r"^[ -~\r\n]*$")]


class DeviceTrustChange(Wire):
    """The fields of ``device_trust`` to change; the others keep their value."""

    model_config = _admin_schema(not_null=("mode", "auto_enroll", "ekcert_allowed_cas"))

    mode: DeviceTrustMode | None = None
    auto_enroll: StrictBool | None = None
    # PEM CA certificates, one per entry; each must parse and be a CA.
    ekcert_allowed_cas: list[PEMText] | None = Field(default=None, max_length=MAX_CAS)
    # null is "any", as in the resource.
    min_attestation: MinAttestation | None = None

    _present = field_validator("mode", "auto_enroll", "ekcert_allowed_cas", mode="before")(
        _not_null
    )


class PreferenceUpdate(Wire):
    """``devtrust config set`` / ``edit``: with ``revision`` (``metadata.revision`` as read),
    refused with 409 if someone changed the preference since."""

    device_trust: DeviceTrustChange
    revision: Revision | None = None


class PreferenceUpdated(Wire):
    changed: list[str]  # the device_trust fields that changed; none: unchanged
    preference: dict[str, Any]  # the cluster_auth_preference resource as stored now


class JamfSyncRequest(Wire):
    """``devtrust jamf sync``: a partial sync of the first inventory unless told."""

    model_config = _admin_schema(
        any_of=[
            {"properties": {"force": {"const": False}}},
            {"required": ["kind"], "properties": {"kind": {"const": "full"}}},
        ]
    )

    inventory: Text64 | None = None
    kind: Literal["partial", "full"] = "partial"
    force: StrictBool = False  # delete even above max_delete_share: full syncs only

    @model_validator(mode="after")
    def _force_is_full(self) -> Self:
        if self.force and self.kind != "full":
            raise ValueError("force only applies to a full sync: give kind full")
        return self


class JamfSyncQueued(Wire):
    task_id: str
    inventory: str
    kind: str
    force: bool


class JamfTask(Wire):
    """A queued sync as ``devtrust jamf sync --wait`` follows it: Celery's ``state``
    (PENDING too for an id it does not know), and once ``done`` the run's ``outcome`` or
    the task's ``error``."""

    state: str
    done: bool
    progress: dict[str, Any] | None  # pages_done, pages_expected, fetched, kind, inventory
    outcome: Any
    error: str | None


class JamfStatus(Wire):
    """``devtrust jamf status --format json``, under ``inventories``; ``alert`` is what
    makes the CLI exit 3, ``notes`` what it says on stderr."""

    inventories: list[dict[str, Any]]
    alert: bool
    notes: list[str]
