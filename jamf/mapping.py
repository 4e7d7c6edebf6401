"""From a Jamf Pro inventory record to the inventory's asset tag and profile.

Pure functions over plain data: no I/O, no clock. A record that cannot become a device
is returned as ``Skipped`` with the reason the sync run counts and logs, never raised,
so one odd record cannot stop a sync of a million.

Jamf leaves out whole sections it was not asked for and fields it does not know; every
missing piece maps to None rather than to an error.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from inventory.domain import (
    OSType,
    Posture,
    Profile,
    SourceRecord,
    is_placeholder_serial,
    normalize_asset_tag,
)
from inventory.errors import InvalidArgument

# Bump when the hashed fields change, so every device is rewritten once, not compared
# against a hash computed from different fields.
HASH_VERSION = "2"  # 2: posture, the raw record and the filtered usernames

# One encoder for every hash: json.dumps with options builds a new one per call. Keys
# sorted: the same record is the same hash whatever order a server (or a route) lists
# its keys in.
_CANONICAL = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=repr
)

_AS_GIVEN = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)

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
    USER_AND_LOCATION, LOCAL_USER_ACCOUNTS, SECURITY, DISK_ENCRYPTION) as a macOS device
    with its posture; the record itself goes along (``raw``, as compact JSON) and into
    the content hash.

    ``ignored_usernames`` (the ``jamf_ignored_usernames`` setting) are accounts that are
    no one's: they never become one of the profile's usernames."""
    general = _section(record, "general")
    hardware = _section(record, "hardware")
    system = _section(record, "operatingSystem")
    report_time = parse_jamf_time(general.get("reportDate"))
    external_id = _text(record, "id")
    profile = Profile(
        model_identifier=_text(hardware, "modelIdentifier"),
        os_version=_text(system, "version"),
        os_build=_text(system, "build"),
        os_build_supplemental=_text(system, "supplementalBuildVersion"),
        os_usernames=computer_usernames(record, ignored_usernames),
        jamf_binary_version=_text(general, "jamfBinaryVersion"),
        external_id=external_id,
        update_time=report_time,
        posture=computer_posture(record),
    )
    # One encoding of the record serves the hash and the kept copy (``raw``): as text,
    # not the parsed record, since a page in flight holds 500 of them (the text is a
    # fifth of the dict's memory) and the write needs the text anyway. It is the record
    # without its VOLATILE telemetry: what changes it is a change, and what is kept is
    # never a stale copy of what moves on every report (times are in the posture).
    return _mapped(
        external_id=external_id,
        serial=_text(hardware, "serialNumber"),
        os_type=OSType.MACOS,
        profile=profile,
        report_time=report_time,
        record_text=record_text(record),
    )


def record_text(record: Mapping[str, Any]) -> str:
    """The record without its ``VOLATILE`` fields as compact JSON, keys sorted: the same
    record is the same text whatever order a server (or a route) lists its keys in."""
    steady = _steady(record)
    try:
        return orjson.dumps(steady, option=orjson.OPT_SORT_KEYS, default=repr).decode()
    except TypeError:  # keys that are not text (never from JSON): the stdlib, as they come
        return _AS_GIVEN.encode(steady)


def computer_usernames(
    record: Mapping[str, Any], ignored_usernames: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """Who uses the Mac: the user of record (``userAndLocation.username``) and the local
    accounts that are people's, in that order, each once.

    Never a person's: system accounts (underscore names, uids below 500), the account
    Jamf manages the Mac with (``general.remoteManagement.managementUsername``; current
    Jamf Pro versions report it as null, so list it in ``jamf_ignored_usernames``), and
    the names in ``ignored_usernames``, compared without case (macOS logs ``Casper`` in
    as ``casper``). Auto-enrollment and ``devtrust devices diff`` check against this list.
    """
    general = _section(record, "general")
    management = _text(_section(general, "remoteManagement"), "managementUsername")
    nobody = _folded(ignored_usernames)
    manager = management.casefold() if management is not None else None
    user_of_record = _text(_section(record, "userAndLocation"), "username")
    names = [user_of_record]
    names += [_person(_mapping(a), management) for a in _list(record, "localUserAccounts")]
    return _unique(
        name
        for name in names
        if name is not None
        and not name.startswith("_")
        and (folded := name.casefold()) != manager
        and folded not in nobody
    )


@functools.lru_cache(maxsize=8)  # one set per source: the same frozenset every record
def _folded(names: frozenset[str]) -> frozenset[str]:
    return frozenset(n.strip().casefold() for n in names if n.strip())


# partitionFileVault2State values with the boot volume encrypted (OPTIMIZING comes after
# the encryption itself); UNKNOWN says nothing; every other value means not (yet).
_ENCRYPTED_STATES = frozenset({"ENCRYPTED", "OPTIMIZING"})
_UNKNOWN_STATES = frozenset({"UNKNOWN"})
# operatingSystem.fileVault2Status, read when the DISK_ENCRYPTION section is not there.
_OS_FILEVAULT = {"ALL_ENCRYPTED": True, "BOOT_ENCRYPTED": True, "NOT_ENCRYPTED": False}
_SIP = {"ENABLED": True, "DISABLED": False}  # NOT_COLLECTED, NOT_AVAILABLE: not reported


def computer_posture(record: Mapping[str, Any]) -> Posture | None:
    """The Mac's security state from the SECURITY, DISK_ENCRYPTION and GENERAL sections.

    A value Jamf did not collect (``NOT_COLLECTED``, ``UNKNOWN``, a missing section or
    field) is None, never a guess. ``lockdown_mode`` is read from
    ``security.lockdownModeEnabled`` when a server reports it (Jamf Pro's documented
    schema has no such field yet, so it is usually None).
    """
    security = _section(record, "security")
    disk = _section(_section(record, "diskEncryption"), "bootPartitionEncryptionDetails")
    state = _text(disk, "partitionFileVault2State")
    if state is not None:
        state = state.upper()
        filevault = None if state in _UNKNOWN_STATES else state in _ENCRYPTED_STATES
    else:
        status = _text(_section(record, "operatingSystem"), "fileVault2Status")
        filevault = _OS_FILEVAULT.get(status.upper()) if status else None
    sip = _text(security, "sipStatus")
    gatekeeper = _text(security, "gatekeeperStatus")
    boot_level = _text(security, "secureBootLevel")
    posture = Posture(
        filevault=filevault,
        filevault_state=state,
        sip=_SIP.get(sip.upper()) if sip else None,
        gatekeeper=None if gatekeeper in (None, "NOT_COLLECTED") else gatekeeper,
        firewall=_flag(security, "firewallEnabled"),
        secure_boot_level=None if boot_level in (None, "UNKNOWN") else boot_level,
        activation_lock=_flag(security, "activationLockEnabled"),
        lockdown_mode=_flag(security, "lockdownModeEnabled"),
        last_contact_time=parse_jamf_time(_section(record, "general").get("lastContactTime")),
    )
    return posture if posture.reported else None


def _flag(section: Mapping[str, Any], key: str) -> bool | None:
    value = section.get(key)
    return value if isinstance(value, bool) else None


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
    nobody = _folded(ignored_usernames)
    mapped = _mapped(
        external_id=external_id,
        serial=field(hardware, "serialNumber"),
        os_type=OSType.IOS,
        profile=Profile(
            model_identifier=_text(hardware, "modelIdentifier") or _text(model, "modelIdentifier"),
            os_version=field(general, "osVersion"),
            os_build=field(general, "osBuild"),
            os_build_supplemental=field(general, "osSupplementalBuildVersion"),
            os_usernames=tuple(
                name for name in _unique([_text(user, "username")]) if name.casefold() not in nobody
            ),
            external_id=external_id,
            update_time=report_time,
        ),
        report_time=report_time,
    )
    if isinstance(mapped, Skipped):
        return mapped
    # The record goes along for ``devices get --raw`` but stays out of the hash: the
    # list shape and the detail shape of one device must hash the same.
    return dataclasses.replace(mapped, raw=_AS_GIVEN.encode(record))


def profile_hash(
    asset_tag: str,
    os_type: OSType,
    profile: Profile,
    *,
    record_text: str | None = None,
) -> str:
    """sha256 over what a sync writes, except what moves without anything changing.

    Every inventory report moves ``reportDate`` (``update_time``) even when nothing else
    changed, and every check-in moves ``lastContactTime``: leaving them out is what lets
    a no-change full sync write nothing. The last contact counts by its UTC day, so a
    device that keeps checking in is rewritten once a day at most, and its stored last
    contact is never more than a day (and a sync) behind. ``record_text`` is the Jamf
    record without its ``VOLATILE`` telemetry (``record_text()``).
    """
    posture = profile.posture
    fields: list[Any] = [
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
        None if posture is None else posture.values(_day),
    ]
    # JSON, not a joined string: no choice of separator can make two profiles collide
    # (the record's text is JSON too, after a separator JSON cannot hold unescaped).
    digest = hashlib.sha256(_CANONICAL.encode(fields).encode())
    if record_text is not None:
        digest.update(b"\n")
        digest.update(record_text.encode())
    return digest.hexdigest()


def _day(time: datetime) -> str:
    return time.date().isoformat()


#: Fields of a computers-inventory record that move with every report or check-in
#: without any change of state: left out of the content hash and of the kept record
#: (``devices get --raw``). section -> keys; "localUserAccounts"
#: names keys of each account.
VOLATILE: dict[str, frozenset[str]] = {
    "general": frozenset(
        {
            "reportDate",
            "lastContactTime",
            "lastIpAddress",
            "lastReportedIp",
            "lastReportedIpV4",
            "lastReportedIpV6",
            "lastCloudBackupDate",
            "lastLoggedInUsernameSelfServiceTimestamp",
            "lastLoggedInUsernameBinaryTimestamp",
        }
    ),
    "hardware": frozenset({"batteryCapacityPercent"}),
    "localUserAccounts": frozenset({"homeDirectorySizeMb"}),
    "security": frozenset({"lastAttestationAttempt", "lastSuccessfulAttestation"}),
}


def _steady(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record without its ``VOLATILE`` fields (copies only what it trims)."""
    out = dict(record)
    for section, keys in VOLATILE.items():
        value = out.get(section)
        if type(value) is dict:
            out[section] = _without(value, keys)
        elif type(value) is list:
            out[section] = [_without(v, keys) if type(v) is dict else v for v in value]
    return out


def _without(values: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    present = keys.intersection(values)
    if not present:
        return values
    copy = values.copy()  # a C-level copy, then a few deletions: the cheap way
    for key in present:
        del copy[key]
    return copy


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
    record_text: str | None = None,
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
        content_hash=profile_hash(asset_tag, os_type, profile, record_text=record_text),
        raw=record_text,
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
