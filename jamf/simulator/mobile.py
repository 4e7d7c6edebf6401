"""Simulated mobile devices (``/api/v2/mobile-devices/detail``): a smaller iOS fleet.

Filter and sort fields are the flat names Jamf Pro uses for this endpoint
(``serialNumber``, ``osVersion``, ``lastInventoryUpdateDate``, ``managed``...).

Records are kept in the list's shape (sections ``general``, ``hardware``,
``userAndLocation``); ``detail`` turns one into the other shape Jamf Pro answers
``/api/v2/mobile-devices/{id}/detail`` with (its MobileDeviceDetailsV2 schema): the
identity and OS at the top level, the user under ``location``, the model under ``ios``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from . import catalog
from .computers import DAY_MS, REPORT_WINDOW_MS
from .draws import (
    chance,
    epoch_ms,
    iso_ms,
    pick,
    pick_weighted,
    scaled,
    serial_offset,
    serial_suffix,
    uuid_from,
    words,
)
from .rsql import Field, FieldType

TEXT, INT, BOOL, DATE = FieldType.STRING, FieldType.INTEGER, FieldType.BOOLEAN, FieldType.DATETIME
FIELDS: dict[str, Field] = {
    "mobileDeviceId": Field.at("mobileDeviceId", INT),
    "deviceType": Field.at("deviceType"),
    "serialNumber": Field.at("hardware.serialNumber"),
    "modelIdentifier": Field.at("hardware.modelIdentifier"),
    "model": Field.at("hardware.model"),
    "udid": Field.at("general.udid"),
    "displayName": Field.at("general.displayName"),
    "osVersion": Field.at("general.osVersion"),
    "osBuild": Field.at("general.osBuild"),
    "osSupplementalBuildVersion": Field.at("general.osSupplementalBuildVersion"),
    "osRapidSecurityResponse": Field.at("general.osRapidSecurityResponse"),
    "lastInventoryUpdateDate": Field.at("general.lastInventoryUpdateDate", DATE),
    "lastEnrolledDate": Field.at("general.lastEnrolledDate", DATE),
    "managed": Field.at("general.managed", BOOL),
    "supervised": Field.at("general.supervised", BOOL),
    "username": Field.at("userAndLocation.username"),
    "emailAddress": Field.at("userAndLocation.emailAddress"),
}
CORE_FIELDS = frozenset(FIELDS) - {"udid", "lastEnrolledDate", "emailAddress", "supervised"}

SECTIONS: dict[str, str] = {
    "GENERAL": "general",
    "HARDWARE": "hardware",
    "USER_AND_LOCATION": "userAndLocation",
}
OTHER_SECTIONS = (
    "PURCHASING", "SECURITY", "APPLICATIONS", "EBOOKS", "NETWORK", "SERVICE_SUBSCRIPTIONS",
    "CERTIFICATES", "PROFILES", "USER_PROFILES", "MANAGED_APP_FEEDBACK",
    "EXTENSION_ATTRIBUTES", "SHARED_USERS",
)  # fmt: skip
ALL_SECTIONS = frozenset(SECTIONS) | frozenset(OTHER_SECTIONS)

_MODELS_CUM, _MODELS_TOTAL = catalog.cumulative(tuple(m.weight for m in catalog.IOS_MODELS))
_OS_CUM, _OS_TOTAL = catalog.cumulative(tuple(r.weight for r in catalog.IOS_RELEASES))
_OS_INDEX = {r.version: n for n, r in enumerate(catalog.IOS_RELEASES)}


class MobileDeviceGenerator:
    kind = "mobile-devices"
    os_type = "ios"
    id_key = "mobileDeviceId"
    default_sort = "mobileDeviceId:asc"
    fields = FIELDS
    core_fields = CORE_FIELDS
    sections = ALL_SECTIONS
    default_sections = frozenset({"GENERAL"})
    column_fields = ("lastInventoryUpdateDate", "managed")

    def __init__(self, seed: int, reference_time: datetime) -> None:
        self.seed = seed
        self.reference_ms = epoch_ms(reference_time)
        self._serial_offset = serial_offset(seed + 1)

    def column_values(self, ident: int) -> tuple[int, ...]:
        w = words(self.seed, ident, b"mobile")
        return (self._inventory_ms(w), chance(w[3], 0.97))

    def _inventory_ms(self, w: tuple[int, ...]) -> int:
        return self.reference_ms - 1 - scaled(w[4], REPORT_WINDOW_MS)

    def core(self, ident: int) -> dict[str, Any]:
        w = words(self.seed, ident, b"mobile")
        model = pick_weighted(catalog.IOS_MODELS, _MODELS_CUM, _MODELS_TOTAL, w[1])
        release = pick_weighted(catalog.IOS_RELEASES, _OS_CUM, _OS_TOTAL, w[2])
        first, last = pick(catalog.FIRST_NAMES, w[5]), pick(catalog.LAST_NAMES, w[6])
        serial = pick(catalog.IOS_SERIAL_PREFIXES, w[0]) + serial_suffix(self._serial_offset, ident)
        return {
            "mobileDeviceId": str(ident),
            "deviceType": "iOS",
            "hardware": {
                "model": model.name,
                "modelIdentifier": model.identifier,
                "serialNumber": serial,
            },
            "general": {
                "displayName": f"{first}'s {model.name.split(' ')[0]}",
                "osVersion": release.version,
                "osBuild": release.build,
                "osSupplementalBuildVersion": release.supplemental,
                "osRapidSecurityResponse": release.rsr,
                "lastInventoryUpdateDate": iso_ms(self._inventory_ms(w)),
                "managed": chance(w[3], 0.97),  # as in column_values
            },
            "userAndLocation": {"username": f"{first}.{last}".lower()},
        }

    def record(self, ident: int) -> dict[str, Any]:
        core = self.core(ident)
        w = words(self.seed, ident, b"mobile-more")
        general, user = core["general"], core["userAndLocation"]
        general.update(
            {
                "udid": uuid_from(w[0:4], upper=False).replace("-", ""),
                "supervised": general["managed"] and chance(w[4], 0.85),
                "lastEnrolledDate": iso_ms(self.reference_ms - DAY_MS * (31 + w[5] % 500)),
                "ipAddress": f"10.{w[6] & 0xFF}.{(w[6] >> 8) & 0xFF}.{(w[6] >> 16) % 254 + 1}",
                "assetTag": None,
            }
        )
        user.update(
            {
                "realName": user["username"].replace(".", " ").title(),
                "emailAddress": f"{user['username']}@example.com",
                "position": pick(catalog.POSITIONS, w[7]),
            }
        )
        core["hardware"]["capacityMb"] = (65536, 131072, 262144)[w[8] % 3]
        return core

    def added(self, ident: int, now: datetime) -> dict[str, Any]:
        stamp = iso_ms(epoch_ms(now))
        return {"general": {"lastInventoryUpdateDate": stamp, "lastEnrolledDate": stamp}}

    def changed(
        self, ident: int, revision: int, record: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        w = words(self.seed, ident, b"mrev%d" % revision)
        current = _OS_INDEX.get((record.get("general") or {}).get("osVersion", ""), -1)
        target = current + 1 + w[0] % 2
        if target >= len(catalog.IOS_RELEASES):
            others = [n for n in range(len(catalog.IOS_RELEASES)) if n != current]
            target = others[w[1] % len(others)]
        release = catalog.IOS_RELEASES[target]
        return {
            "general": {
                "lastInventoryUpdateDate": iso_ms(epoch_ms(now)),
                "osVersion": release.version,
                "osBuild": release.build,
                "osSupplementalBuildVersion": release.supplemental,
                "osRapidSecurityResponse": release.rsr,
            }
        }

    def summary(self, record: Mapping[str, Any]) -> dict[str, Any]:
        general = record.get("general") or {}
        return {
            "id": record["mobileDeviceId"],
            "serialNumber": (record.get("hardware") or {}).get("serialNumber"),
            "managed": general.get("managed"),
            "reportDate": general.get("lastInventoryUpdateDate"),
            "os_type": self.os_type,
        }

    def project(self, record: Mapping[str, Any], sections: Iterable[str]) -> dict[str, Any]:
        wanted = set(sections)
        out: dict[str, Any] = {
            "mobileDeviceId": record["mobileDeviceId"],
            "deviceType": record.get("deviceType", "iOS"),
        }
        for section, key in SECTIONS.items():
            out[key] = record.get(key) if section in wanted else None
        return out


def detail(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as ``/api/v2/mobile-devices/{id}/detail`` answers: Jamf's detail shape.

    Field names are Jamf Pro's (``serialNumber``, ``osVersion``, ``osBuild``,
    ``osSupplementalBuildVersion``, ``lastInventoryUpdateTimestamp``, ``location.username``,
    ``ios.modelIdentifier``...), not the list's; what the simulator does not model is null.
    """
    general = _part(record, "general")
    hardware = _part(record, "hardware")
    user = _part(record, "userAndLocation")
    enrolled = general.get("lastEnrolledDate")
    return {
        "id": record.get("mobileDeviceId"),
        "name": general.get("displayName"),
        "enforceName": False,
        "assetTag": general.get("assetTag"),
        "lastInventoryUpdateTimestamp": general.get("lastInventoryUpdateDate"),
        "osVersion": general.get("osVersion"),
        "osBuild": general.get("osBuild"),
        "osSupplementalBuildVersion": general.get("osSupplementalBuildVersion"),
        "osRapidSecurityResponse": general.get("osRapidSecurityResponse"),
        "softwareUpdateDeviceId": None,
        "serialNumber": hardware.get("serialNumber"),
        "udid": general.get("udid"),
        "ipAddress": general.get("ipAddress"),
        "wifiMacAddress": None,
        "bluetoothMacAddress": None,
        "managed": general.get("managed"),
        "timeZone": None,
        "initialEntryTimestamp": enrolled,
        "lastEnrollmentTimestamp": enrolled,
        "mdmProfileExpirationTimestamp": None,
        "deviceOwnershipLevel": "institutional",
        "enrollmentMethod": "Automated Device Enrollment" if general.get("supervised") else None,
        "enrollmentSessionTokenValid": False,
        "declarativeDeviceManagementEnabled": bool(general.get("managed")),
        "managementId": None,
        "site": {"id": "-1", "name": "None"},
        "extensionAttributes": [],
        "location": {
            "username": user.get("username"),
            "realName": user.get("realName"),
            "emailAddress": user.get("emailAddress"),
            "position": user.get("position"),
            "phoneNumber": None,
            "departmentId": None,
            "buildingId": None,
            "room": None,
        },
        "type": "ios",
        "ios": {
            "model": hardware.get("model"),
            "modelIdentifier": hardware.get("modelIdentifier"),
            "modelNumber": None,
            "supervised": general.get("supervised"),
            "capacityMb": hardware.get("capacityMb"),
            "shared": False,
        },
    }


def _part(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}
