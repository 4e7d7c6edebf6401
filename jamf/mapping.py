"""From a Jamf Pro inventory record to the inventory's asset tag and profile.

Pure functions over plain data: no I/O, no clock. A record that cannot become a device
is returned as ``Skipped`` with the reason the sync run counts and logs, never raised,
so one odd record cannot stop a sync of a million.

Jamf leaves out whole sections it was not asked for and fields it does not know; every
missing piece maps to None rather than to an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inventory.domain import (
    OSType,
    Profile,
    SourceRecord,
    is_placeholder_serial,
    normalize_asset_tag,
)
from inventory.errors import InvalidArgument

# Bump when the hashed fields change, so every device is rewritten once, not compared
# against a hash computed from different fields.
HASH_VERSION = "1"

# One encoder for every hash: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

NO_ID = "no Jamf id"
NO_SERIAL = "no serial number"


@dataclass(frozen=True)
class MappedDevice(SourceRecord):
    """A record ready for the inventory (it is a ``SourceRecord``), plus its report time."""

    # When the device last sent Jamf an inventory report: the partial sync's watermark.
    report_time: datetime | None = None

    def to_source_record(self) -> SourceRecord:
        return self  # already one; a sync maps a million of these, so no copy


@dataclass(frozen=True)
class Skipped:
    external_id: str | None
    reason: str


def map_computer(
    record: Mapping[str, Any], ignored_usernames: frozenset[str] = frozenset()
) -> MappedDevice | Skipped:
    """A ``computers-inventory`` record (sections GENERAL, HARDWARE, OPERATING_SYSTEM,
    USER_AND_LOCATION, LOCAL_USER_ACCOUNTS) as a macOS device.

    ``ignored_usernames`` (the ``jamf_ignored_usernames`` setting) are accounts that are
    no one's: they never become one of the profile's usernames."""
    general = _section(record, "general")
    hardware = _section(record, "hardware")
    system = _section(record, "operatingSystem")
    user = _section(record, "userAndLocation")
    management = _text(_section(general, "remoteManagement"), "managementUsername")
    local_names = [_person(_mapping(a), management) for a in _list(record, "localUserAccounts")]
    report_time = parse_jamf_time(general.get("reportDate"))
    external_id = _text(record, "id")
    return _mapped(
        external_id=external_id,
        serial=_text(hardware, "serialNumber"),
        os_type=OSType.MACOS,
        profile=Profile(
            model_identifier=_text(hardware, "modelIdentifier"),
            os_version=_text(system, "version"),
            os_build=_text(system, "build"),
            os_build_supplemental=_text(system, "supplementalBuildVersion"),
            os_usernames=_unique([_text(user, "username"), *local_names]),
            jamf_binary_version=_text(general, "jamfBinaryVersion"),
            external_id=external_id,
            update_time=report_time,
        ),
        report_time=report_time,
    )


def map_mobile_device(
    record: Mapping[str, Any], ignored_usernames: frozenset[str] = frozenset()
) -> MappedDevice | Skipped:
    """A mobile device as iOS, in either shape Jamf Pro gives one.

    The list (``/api/v2/mobile-devices/detail``, sections GENERAL, HARDWARE,
    USER_AND_LOCATION) keys it ``mobileDeviceId`` with ``general``, ``hardware`` and
    ``userAndLocation``. One record (``/api/v2/mobile-devices/{id}/detail``) is Jamf's
    detail shape: ``id``, ``serialNumber``, ``osVersion``, ``osBuild``,
    ``osSupplementalBuildVersion`` and ``lastInventoryUpdateTimestamp`` at the top
    level, the user in ``location`` and the model in ``ios`` (``tvos``, ...). Both map
    to the same device with the same hash, so a lookup recognises what a page wrote."""
    general = _section(record, "general")
    hardware = _section(record, "hardware")
    user = _section(record, "userAndLocation") or _section(record, "location")
    # The detail shape keeps the model in the object named by ``type`` (ios, tvos...).
    kind = _text(record, "type")
    model = _section(record, kind.lower()) if kind else {}
    model = model or _section(record, "ios")

    def field(section: Mapping[str, Any], key: str, top: str | None = None) -> str | None:
        return _text(section, key) or _text(record, top or key)

    report_time = parse_jamf_time(general.get("lastInventoryUpdateDate"))
    if report_time is None:
        report_time = parse_jamf_time(record.get("lastInventoryUpdateTimestamp"))
    external_id = _text(record, "mobileDeviceId") or _text(record, "id")
    return _mapped(
        external_id=external_id,
        serial=field(hardware, "serialNumber"),
        os_type=OSType.IOS,
        profile=Profile(
            model_identifier=_text(hardware, "modelIdentifier") or _text(model, "modelIdentifier"),
            os_version=field(general, "osVersion"),
            os_build=field(general, "osBuild"),
            os_build_supplemental=field(general, "osSupplementalBuildVersion"),
            os_usernames=tuple(
                name for name in _unique([_text(user, "username")]) if name not in ignored_usernames
            ),
            external_id=external_id,
            update_time=report_time,
        ),
        report_time=report_time,
    )


def profile_hash(asset_tag: str, os_type: OSType, profile: Profile) -> str:
    """sha256 over what a sync writes, except ``update_time``.

    Every inventory report moves ``reportDate`` even when nothing else changed; leaving
    it out is what lets a no-change full sync write nothing.
    """
    fields = [
        HASH_VERSION,
        asset_tag,
        os_type.value,
        profile.model_identifier,
        profile.os_version,
        profile.os_build,
        profile.os_build_supplemental,
        list(profile.os_usernames),
        profile.jamf_binary_version,
        profile.external_id,
    ]
    # JSON, not a joined string: no choice of separator can make two profiles collide.
    canonical = _CANONICAL.encode(fields)
    return hashlib.sha256(canonical.encode()).hexdigest()


def split_duplicates(
    devices: Iterable[MappedDevice],
) -> tuple[list[MappedDevice], list[Skipped]]:
    """Keep the first device per serial and OS; skip later Jamf records with the same serial.

    Meant for one page at a time, so memory stays bounded by the page size. A serial that
    shows up on two different pages is caught by the inventory instead: the device row
    already carries the other Jamf id (``source_sync.apply_page`` reports it as a
    conflict for the engine to confirm). The same Jamf id listed twice is one device and
    is kept once, without a skip.
    """
    first: dict[tuple[str, OSType], MappedDevice] = {}
    kept: list[MappedDevice] = []
    skipped: list[Skipped] = []
    for device in devices:
        key = (device.asset_tag, device.os_type)
        seen = first.get(key)
        if seen is None:
            first[key] = device
            kept.append(device)
        elif seen.external_id != device.external_id:
            reason = f"serial number {device.asset_tag} is also on Jamf id {seen.external_id}"
            skipped.append(Skipped(device.external_id, reason))
    return kept, skipped


def parse_jamf_time(value: object) -> datetime | None:
    """Jamf's ISO times (``2024-05-01T10:20:30.123Z``) as aware UTC datetimes; junk is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Jamf writes UTC; a time without an offset is still UTC, not our local time.
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _mapped(
    *,
    external_id: str | None,
    serial: str | None,
    os_type: OSType,
    profile: Profile,
    report_time: datetime | None,
) -> MappedDevice | Skipped:
    if external_id is None:
        return Skipped(None, NO_ID)
    if serial is None or is_placeholder_serial(serial):
        return Skipped(external_id, NO_SERIAL)
    try:
        asset_tag = normalize_asset_tag(serial)
    except InvalidArgument as exc:
        return Skipped(external_id, f"invalid serial number: {exc}")
    return MappedDevice(
        asset_tag=asset_tag,
        os_type=os_type,
        external_id=external_id,
        profile=profile,
        report_time=report_time,
        content_hash=profile_hash(asset_tag, os_type, profile),
    )


def _section(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _mapping(record.get(key))


def _mapping(value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # what JSON gives; the ABC check below is slow
        return value
    return value if isinstance(value, Mapping) else {}


def _list(record: Mapping[str, Any], key: str) -> list[Any]:
    value = record.get(key)
    return value if isinstance(value, list) else []


def _text(section: Mapping[str, Any], key: str) -> str | None:
    """A field as stripped text; ids may come as numbers, blanks and other types as None."""
    value = section.get(key)
    if type(value) is str:  # the common case first: this runs ten times per record
        return value.strip() or None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):  # a str subclass
        return value.strip() or None
    return None


# macOS gives people uids from 501 and its own service accounts lower ones (and
# underscore names): those, and the account Jamf manages the Mac with, are no one's.
FIRST_PERSON_UID = 500


def _person(account: Mapping[str, Any], management: str | None) -> str | None:
    """A local account's username when it can be a person's, else None.

    Auto-enrollment lets a user enroll a Mac whose profile names them: a service or
    management account shared by every Mac must never make a user a user of all of them.
    """
    name = _text(account, "username")
    if name is None or name.startswith("_") or name == management:
        return None
    uid = _text(account, "uid")
    if uid is not None and uid.lstrip("-").isdigit() and int(uid) < FIRST_PERSON_UID:
        return None
    return name


def _unique(names: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for name in names if name))
