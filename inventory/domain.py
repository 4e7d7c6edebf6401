"""The inventory's vocabulary as plain data: no database, no network, no clock.

Services return these records, never ORM objects, so callers cannot reach back into
a session that has already closed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from inventory.errors import InvalidArgument, quoted

MAX_ASSET_TAG_LENGTH = 128
MAX_USER_NAME_LENGTH = 64


class OSType(StrEnum):
    MACOS = "macos"
    WINDOWS = "windows"
    LINUX = "linux"
    IOS = "ios"

    @property
    def display(self) -> str:
        return _OS_DISPLAY[self]

    @classmethod
    def parse(cls, text: str) -> OSType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(o.value for o in cls)
            raise InvalidArgument(f"unknown OS {quoted(text)}: use one of {choices}") from None


_OS_DISPLAY = {
    OSType.MACOS: "macOS",
    OSType.WINDOWS: "Windows",
    OSType.LINUX: "Linux",
    OSType.IOS: "iOS",
}


class EnrollStatus(StrEnum):
    NOT_ENROLLED = "not_enrolled"
    ENROLLED = "enrolled"

    @property
    def display(self) -> str:
        return self.value.replace("_", " ")


class AttestationType(StrEnum):
    """What an enrollment proved, as stored. ``none`` (a macOS key, which no hardware
    vouches for) stays the stored value, as audit events and API clients already read it;
    it is shown as its trust level, ``software_key``."""

    NONE = "none"
    TPM_EKPUB = "tpm_ekpub"
    TPM_EKCERT = "tpm_ekcert"
    TPM_EKCERT_TRUSTED = "tpm_ekcert_trusted"

    @property
    def level(self) -> TrustLevel:
        return TrustLevel.SOFTWARE_KEY if self is AttestationType.NONE else TrustLevel(self.value)


class TrustLevel(StrEnum):
    """How much an enrolled device proved, weakest first: ``software_key`` (a key no
    hardware vouches for), ``tpm_ekpub`` (a TPM's EK, no certificate), ``tpm_ekcert``
    (its certificate, unchecked), ``tpm_ekcert_trusted`` (chained to an allowed CA)."""

    SOFTWARE_KEY = "software_key"
    TPM_EKPUB = "tpm_ekpub"
    TPM_EKCERT = "tpm_ekcert"
    TPM_EKCERT_TRUSTED = "tpm_ekcert_trusted"

    @property
    def rank(self) -> int:
        return list(TrustLevel).index(self)

    def at_least(self, other: TrustLevel) -> bool:
        return self.rank >= other.rank


class SourceOrigin(StrEnum):
    API = "api"
    JAMF = "jamf"


class TokenKind(StrEnum):
    """Who minted an enrollment token: an admin, the user for themselves, or auto-enrollment."""

    ADMIN = "admin"
    SELF = "self"
    AUTO = "auto"


class Role(StrEnum):
    DEVICE_ADMIN = "device-admin"
    EDITOR = "editor"
    ACCESS = "access"
    BOT = "bot"

    @classmethod
    def parse_many(cls, texts: list[str]) -> tuple[Role, ...]:
        roles: list[Role] = []
        for text in texts:
            for part in text.split(","):
                name = part.strip()
                if not name:
                    continue
                try:
                    role = cls(name)
                except ValueError:
                    choices = ", ".join(r.value for r in cls)
                    raise InvalidArgument(
                        f"unknown role {quoted(name)}: use one of {choices}"
                    ) from None
                if role not in roles:
                    roles.append(role)
        if not roles:
            raise InvalidArgument("at least one role is required (--roles access,editor,...)")
        return tuple(roles)


# Printable ASCII; spaces inside are kept (virtual machines report serials such as
# "VMware-56 4d 0e ..."), spaces around it are trimmed.
_ASSET_TAG = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


_PLACEHOLDERS = frozenset(
    s.casefold()
    for s in (
        "",
        "0",
        "00000000",
        "0123456789",
        "Default string",
        "To Be Filled By O.E.M.",
        "To be filled by O.E.M.",
        "System Serial Number",
        "Chassis Serial Number",
        "Base Board Serial Number",
        "Not Specified",
        "Not Applicable",
        "None",
        "N/A",
        "Not Available",
        "Unknown",
        "Asset Tag",
        "No Asset Tag",
        "No Asset Information",
        "Serial",
        "SerialNumber",
    )
)


def is_placeholder_serial(text: str) -> bool:
    """Whether ``text`` is what firmware or an MDM writes where it knows no serial number
    ("To Be Filled By O.E.M.", Jamf's "Not Available", zeros and dashes), not a serial."""
    value = text.strip().strip("\x00").strip()
    return value.casefold() in _PLACEHOLDERS or set(value) <= {"0", " ", "-", "."}


def normalize_asset_tag(text: str) -> str:
    """An asset tag is the device's serial number: printable ASCII, trimmed, bounded."""
    tag = text.strip()
    if not tag:
        raise InvalidArgument("asset tag is empty")
    if len(tag) > MAX_ASSET_TAG_LENGTH:
        raise InvalidArgument(
            f"asset tag is {len(tag)} characters long, the limit is {MAX_ASSET_TAG_LENGTH}"
        )
    if not _ASSET_TAG.fullmatch(tag):
        raise InvalidArgument(
            f"asset tag {quoted(tag)} may only hold printable ASCII (no tabs or control characters)"
        )
    return tag


def normalize_user_name(text: str) -> str:
    name = text.strip()
    if not name:
        raise InvalidArgument("user name is empty")
    if len(name) > MAX_USER_NAME_LENGTH or not _USER_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid user name {quoted(name)}: "
            f"use up to {MAX_USER_NAME_LENGTH} letters, digits and ._@+-"
        )
    return name


def device_label(asset_tag: str, os_type: OSType) -> str:
    """How every message, audit event and CLI line names a device: ``C02XL0GJJGH5/macOS``,
    the OS spelled as the ``devices ls`` table spells it (never the wire value ``macos``)."""
    return f"{asset_tag}/{os_type.display}"


@dataclass(frozen=True)
class Source:
    name: str
    origin: SourceOrigin


@dataclass(frozen=True)
class Posture:
    """The device's security state as the MDM last reported it; None: not reported.

    Booleans are the state itself (``filevault``: the boot volume is encrypted); the
    strings are the MDM's own values (Jamf: ``gatekeeper`` ``APP_STORE``, ``secure_boot_level``
    ``FULL_SECURITY``, ``filevault_state`` ``ENCRYPTING``), never translated.
    """

    filevault: bool | None = None
    filevault_state: str | None = None
    sip: bool | None = None
    gatekeeper: str | None = None
    firewall: bool | None = None
    secure_boot_level: str | None = None
    activation_lock: bool | None = None
    lockdown_mode: bool | None = None
    # When the device last checked in with the MDM (not its last inventory report).
    last_contact_time: datetime | None = None

    @property
    def reported(self) -> bool:
        """Whether the MDM reported anything at all."""
        return any(getattr(self, name) is not None for name in POSTURE_FIELDS)

    def values(self, time: Callable[[datetime], Any]) -> list[Any]:
        """The ``POSTURE_FIELDS`` in their order, a time through ``time``: the one order
        of the content hash (``jamf.mapping``) and of the device's ``posture_`` columns."""
        return [time(v) if isinstance(v, datetime) else v for v in _posture_values(self)]


POSTURE_FIELDS = (
    "filevault",
    "filevault_state",
    "sip",
    "gatekeeper",
    "firewall",
    "secure_boot_level",
    "activation_lock",
    "lockdown_mode",
    "last_contact_time",
)
_posture_values = operator.attrgetter(*POSTURE_FIELDS)


@dataclass(frozen=True)
class Profile:
    """What the MDM says about a device."""

    model_identifier: str | None = None
    os_version: str | None = None
    os_build: str | None = None
    os_build_supplemental: str | None = None
    os_usernames: tuple[str, ...] = ()
    jamf_binary_version: str | None = None
    external_id: str | None = None
    update_time: datetime | None = None
    posture: Posture | None = None


@dataclass(frozen=True)
class Credential:
    id: str
    public_key: bytes | None
    ek_cert_serial: str | None
    attestation_type: AttestationType


@dataclass(frozen=True)
class Device:
    id: str
    os_type: OSType
    asset_tag: str
    enroll_status: EnrollStatus
    credential: Credential | None
    source: Source | None
    profile: Profile | None
    owner: str | None
    create_time: datetime
    update_time: datetime
    # Set by an admin for a device registered by hand: the one user it auto-enrolls for.
    assigned_user: str | None = None

    @property
    def label(self) -> str:
        return device_label(self.asset_tag, self.os_type)


@dataclass(frozen=True)
class CollectedData:
    """What the device reported about itself when it last talked to us."""

    serial_number: str
    os_type: OSType
    model_identifier: str | None = None
    os_version: str | None = None
    os_build: str | None = None
    os_id: str | None = None
    os_login_user: str | None = None
    jamf_binary_version: str | None = None
    reported_asset_tag: str | None = None
    system_serial_number: str | None = None
    base_board_serial_number: str | None = None
    collect_time: datetime | None = None
    record_time: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    """An enrollment token as minted: the secret exists only here, never in storage."""

    token: str
    kind: TokenKind
    device: Device
    expire_time: datetime
    user: str | None


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[Role, ...]
    create_time: datetime
    update_time: datetime
    logins: tuple[str, ...] = ()

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def identities(self) -> frozenset[str]:
        """The names this user goes by on a device: their own and their declared logins."""
        return frozenset((self.name, *self.logins))


@dataclass(frozen=True)
class AuditEvent:
    id: int
    time: datetime
    type: str
    success: bool
    actor: str
    message: str
    device_id: str | None = None
    asset_tag: str | None = None
    os_type: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor that fetches the next one (None at the end)."""

    items: list[Device]
    next_cursor: str | None


@dataclass(frozen=True)
class SourceRecord:
    """A device as an MDM reports it, ready to be written to the inventory."""

    asset_tag: str
    os_type: OSType
    external_id: str
    profile: Profile
    content_hash: str
    # The MDM's record as it came, as compact JSON text, stored size-capped for ``devices
    # get --raw``; its content is in ``content_hash``. Not compared: it is the source of
    # the fields above, not a field of its own.
    raw: str | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class SyncRun:
    """One sync of one inventory entry: what it read, what it changed, how it ended."""

    id: int
    source: str
    inventory: str
    kind: str
    status: str
    start_time: datetime
    end_time: datetime | None = None
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    error: str | None = None
    watermark: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
