"""Simulated Jamf Pro computer records, generated on demand from (seed, id).

``core`` draws the handful of fields that filters and sorts usually touch (from one
digest, a few microseconds); ``record`` adds everything else. Both give the same values
for the fields they share, so a filter may be evaluated on the core alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from . import catalog
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

DAY_MS = 86_400_000
REPORT_WINDOW_MS = 30 * DAY_MS

TEXT, INT, BOOL, DATE = FieldType.STRING, FieldType.INTEGER, FieldType.BOOLEAN, FieldType.DATETIME
_FIELD_TYPES: dict[str, FieldType] = {
    "id": INT,
    "udid": TEXT,
    "general.name": TEXT,
    "general.lastIpAddress": TEXT,
    "general.lastReportedIp": TEXT,
    "general.platform": TEXT,
    "general.reportDate": DATE,
    "general.lastContactTime": DATE,
    "general.lastEnrolledDate": DATE,
    "general.initialEntryDate": DATE,
    "general.remoteManagement.managed": BOOL,
    "general.remoteManagement.managementUsername": TEXT,
    "general.jamfBinaryVersion": TEXT,
    "general.assetTag": TEXT,
    "general.supervised": BOOL,
    "general.userApprovedMdm": BOOL,
    "general.enrolledViaAutomatedDeviceEnrollment": BOOL,
    "general.managementId": TEXT,
    "hardware.make": TEXT,
    "hardware.model": TEXT,
    "hardware.modelIdentifier": TEXT,
    "hardware.serialNumber": TEXT,
    "hardware.appleSilicon": BOOL,
    "hardware.processorArchitecture": TEXT,
    "hardware.macAddress": TEXT,
    "operatingSystem.name": TEXT,
    "operatingSystem.version": TEXT,
    "operatingSystem.build": TEXT,
    "operatingSystem.supplementalBuildVersion": TEXT,
    "operatingSystem.rapidSecurityResponse": TEXT,
    "operatingSystem.fileVault2Status": TEXT,
    "userAndLocation.username": TEXT,
    "userAndLocation.realname": TEXT,
    "userAndLocation.email": TEXT,
    "userAndLocation.position": TEXT,
    "security.activationLockEnabled": BOOL,
    "security.recoveryLockEnabled": BOOL,
    "security.firewallEnabled": BOOL,
    "diskEncryption.fileVault2Enabled": BOOL,
}
FIELDS: dict[str, Field] = {name: Field.at(name, kind) for name, kind in _FIELD_TYPES.items()}
CORE_FIELDS = frozenset(
    {
        "id",
        "general.name",
        "general.platform",
        "general.reportDate",
        "general.lastContactTime",
        "general.remoteManagement.managed",
        "hardware.model",
        "hardware.modelIdentifier",
        "hardware.serialNumber",
        "operatingSystem.name",
        "operatingSystem.version",
        "operatingSystem.build",
        "operatingSystem.supplementalBuildVersion",
        "operatingSystem.rapidSecurityResponse",
        "userAndLocation.username",
        "userAndLocation.realname",
    }
)

#: Sections this simulator fills in, by their ``section`` parameter name.
SECTIONS: dict[str, str] = {
    "GENERAL": "general",
    "HARDWARE": "hardware",
    "OPERATING_SYSTEM": "operatingSystem",
    "USER_AND_LOCATION": "userAndLocation",
    "LOCAL_USER_ACCOUNTS": "localUserAccounts",
    "SECURITY": "security",
    "DISK_ENCRYPTION": "diskEncryption",
}
#: Sections Jamf Pro also accepts; requested, they come back empty (null or []).
OTHER_SECTIONS: dict[str, tuple[str, Any]] = {
    "PURCHASING": ("purchasing", None),
    "APPLICATIONS": ("applications", []),
    "STORAGE": ("storage", None),
    "CONFIGURATION_PROFILES": ("configurationProfiles", []),
    "PRINTERS": ("printers", []),
    "SERVICES": ("services", []),
    "CERTIFICATES": ("certificates", []),
    "ATTACHMENTS": ("attachments", []),
    "PLUGINS": ("plugins", []),
    "PACKAGE_RECEIPTS": ("packageReceipts", None),
    "FONTS": ("fonts", []),
    "LICENSED_SOFTWARE": ("licensedSoftware", []),
    "IBEACONS": ("ibeacons", []),
    "SOFTWARE_UPDATES": ("softwareUpdates", []),
    "EXTENSION_ATTRIBUTES": ("extensionAttributes", []),
    "CONTENT_CACHING": ("contentCaching", None),
    "GROUP_MEMBERSHIPS": ("groupMemberships", []),
}
ALL_SECTIONS = frozenset(SECTIONS) | frozenset(OTHER_SECTIONS)

_MODELS_CUM, _MODELS_TOTAL = catalog.cumulative(tuple(m.weight for m in catalog.MAC_MODELS))
_OS_CUM, _OS_TOTAL = catalog.cumulative(tuple(r.weight for r in catalog.MACOS_RELEASES))
_OS_INDEX = {r.version: n for n, r in enumerate(catalog.MACOS_RELEASES)}
_SIP_CUM, _SIP_TOTAL = catalog.cumulative(tuple(w for _, w in catalog.SIP_STATUSES_WEIGHTED))
_GK_CUM, _GK_TOTAL = catalog.cumulative(tuple(w for _, w in catalog.GATEKEEPER_WEIGHTED))


class ComputerGenerator:
    """Computers: ids from 1, serials unique per seed, report dates in the last 30 days."""

    kind = "computers"
    os_type = "macos"
    id_key = "id"
    default_sort = "general.name:asc"
    fields = FIELDS
    core_fields = CORE_FIELDS
    sections = ALL_SECTIONS
    default_sections = frozenset({"GENERAL"})
    #: Fields whose base values ``column_values`` gives, for fast filters (see columns.py).
    column_fields = ("general.reportDate", "general.remoteManagement.managed")

    def __init__(self, seed: int, reference_time: datetime) -> None:
        self.seed = seed
        self.reference_ms = epoch_ms(reference_time)
        self._serial_offset = serial_offset(seed)

    def column_values(self, ident: int) -> tuple[int, ...]:
        w = words(self.seed, ident, b"core")
        return (self._report_ms(w), chance(w[3], 0.95))

    def _report_ms(self, w: tuple[int, ...]) -> int:
        return self.reference_ms - 1 - scaled(w[4], REPORT_WINDOW_MS)

    def core(self, ident: int) -> dict[str, Any]:
        w = words(self.seed, ident, b"core")
        model = pick_weighted(catalog.MAC_MODELS, _MODELS_CUM, _MODELS_TOTAL, w[1])
        release = pick_weighted(catalog.MACOS_RELEASES, _OS_CUM, _OS_TOTAL, w[2])
        report = self._report_ms(w)
        contact = min(report + scaled(w[9], 6 * 3_600_000), self.reference_ms - 1)
        first, last = pick(catalog.FIRST_NAMES, w[5]), pick(catalog.LAST_NAMES, w[6])
        serial = pick(catalog.MAC_SERIAL_PREFIXES, w[0]) + serial_suffix(self._serial_offset, ident)
        personal = w[7] % 10 < 7  # the rest are shared or lab machines
        name = f"{first}'s {model.name.split(' (')[0]}" if personal else f"MAC-{serial[-7:]}"
        return {
            "id": str(ident),
            "general": {
                "name": name,
                "platform": "Mac",
                "reportDate": iso_ms(report),
                "lastContactTime": iso_ms(contact),
                "remoteManagement": {"managed": chance(w[3], 0.95)},  # as in column_values
            },
            "hardware": {
                "model": model.name,
                "modelIdentifier": model.identifier,
                "serialNumber": serial,
            },
            "operatingSystem": {
                "name": "macOS",
                "version": release.version,
                "build": release.build,
                "supplementalBuildVersion": release.supplemental,
                "rapidSecurityResponse": release.rsr,
            },
            "userAndLocation": {
                "username": f"{first}.{last}".lower(),
                "realname": f"{first} {last}",
            },
        }

    def record(self, ident: int) -> dict[str, Any]:
        core = self.core(ident)
        w = words(self.seed, ident, b"more")
        ids = words(self.seed, ident, b"ids")
        general, hardware = core["general"], core["hardware"]
        managed = general["remoteManagement"]["managed"]
        user = core["userAndLocation"]
        username, realname = user["username"], user["realname"]
        apple_silicon = not hardware["modelIdentifier"].startswith(("MacBookPro16", "iMac20"))
        enrolled = self.reference_ms - DAY_MS * (31 + w[8] % 700) - scaled(w[9], DAY_MS)
        management_username = pick(catalog.MANAGEMENT_USERNAMES, w[10]) if managed else None
        ip = w[4]
        general.update(
            {
                "lastIpAddress": f"10.{ip & 0xFF}.{(ip >> 8) & 0xFF}.{(ip >> 16) % 254 + 1}",
                "lastReportedIp": f"192.168.{(ip >> 24) & 0xFF}.{ip % 253 + 2}",
                "jamfBinaryVersion": pick(catalog.JAMF_BINARY_VERSIONS, w[5]),
                "barcode1": None,
                "barcode2": None,
                "assetTag": f"A{100000 + w[6] % 900000}" if w[6] % 3 else None,
                "supervised": managed and chance(w[7], 0.8),
                "mdmCapable": {"capable": managed, "capableUsers": [username] if managed else []},
                "lastEnrolledDate": iso_ms(enrolled),
                "initialEntryDate": iso_ms(enrolled - DAY_MS * (w[11] % 5))[:10],
                "enrolledViaAutomatedDeviceEnrollment": chance(w[12], 0.7),
                "userApprovedMdm": managed,
                "site": {"id": "-1", "name": "None"},
                "managementId": uuid_from(ids[0:4], upper=False),
            }
        )
        general["remoteManagement"]["managementUsername"] = management_username
        mac = w[13]
        hardware.update(
            {
                "make": "Apple",
                "processorArchitecture": "arm64" if apple_silicon else "x86_64",
                "appleSilicon": apple_silicon,
                "coreCount": (8, 10, 12)[w[14] % 3],
                "totalRamMegabytes": (8192, 16384, 32768)[w[15] % 3],
                "macAddress": "%02X:%02X:%02X:%02X:%02X:%02X"  # noqa: UP031
                % (
                    mac & 0xFF,
                    mac >> 8 & 0xFF,
                    mac >> 16 & 0xFF,
                    mac >> 24,
                    w[14] & 0xFF,
                    w[15] & 0xFF,
                ),
            }
        )
        encrypted = chance(w[11], 0.9)
        core["operatingSystem"].update(
            {
                "activeDirectoryStatus": "Not Bound",
                "fileVault2Status": "ALL_ENCRYPTED" if encrypted else "NOT_ENCRYPTED",
            }
        )
        user.update(
            {
                "email": f"{username}@example.com",
                "position": pick(catalog.POSITIONS, w[12]),
                "phone": None,
                "departmentId": str(1 + w[13] % 8),
                "buildingId": str(1 + w[14] % 4),
                "room": None,
            }
        )
        core["udid"] = uuid_from(ids[4:8])
        core["localUserAccounts"] = _local_accounts(
            username, realname, management_username, w[15], ids[8:] + w[0:4]
        )
        posture = words(self.seed, ident, b"security")
        core["security"] = _security(posture, apple_silicon, managed)
        core["diskEncryption"] = _disk_encryption(posture, encrypted, username)
        return core

    def added(self, ident: int, now: datetime) -> dict[str, Any]:
        """What is new about a device enrolled just now."""
        stamp = iso_ms(epoch_ms(now))
        return {
            "general": {
                "reportDate": stamp,
                "lastContactTime": stamp,
                "lastEnrolledDate": stamp,
                "initialEntryDate": stamp[:10],
            }
        }

    def changed(
        self, ident: int, revision: int, record: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        """A fresh inventory report: newer report date, usually a newer macOS."""
        w = words(self.seed, ident, b"rev%d" % revision)
        current = _OS_INDEX.get((record.get("operatingSystem") or {}).get("version", ""), -1)
        target = current + 1 + w[0] % 2
        if target >= len(catalog.MACOS_RELEASES):
            others = [n for n in range(len(catalog.MACOS_RELEASES)) if n != current]
            target = others[w[1] % len(others)]
        release = catalog.MACOS_RELEASES[target]
        stamp = iso_ms(epoch_ms(now))
        return {
            "general": {"reportDate": stamp, "lastContactTime": stamp},
            "operatingSystem": {
                "version": release.version,
                "build": release.build,
                "supplementalBuildVersion": release.supplemental,
                "rapidSecurityResponse": release.rsr,
            },
        }

    def summary(self, record: Mapping[str, Any]) -> dict[str, Any]:
        general = record.get("general") or {}
        return {
            "id": record["id"],
            "serialNumber": (record.get("hardware") or {}).get("serialNumber"),
            "managed": (general.get("remoteManagement") or {}).get("managed"),
            "reportDate": general.get("reportDate"),
            "os_type": self.os_type,
        }

    def project(self, record: Mapping[str, Any], sections: Iterable[str]) -> dict[str, Any]:
        """The record as Jamf returns it for these sections: the rest null (lists empty)."""
        wanted = set(sections)
        out: dict[str, Any] = {"id": record["id"], "udid": record.get("udid")}
        for section, key in SECTIONS.items():
            if section in wanted:
                out[key] = record.get(key)
            else:
                out[key] = [] if key == "localUserAccounts" else None
        for section, (key, empty) in OTHER_SECTIONS.items():
            if section in wanted:
                out[key] = empty
        return out


def _security(w: tuple[int, ...], apple_silicon: bool, managed: bool) -> dict[str, Any]:
    """The SECURITY section: mostly a well-kept fleet, with the odd Mac that is not.

    Every Intel model in the catalog has a T2 chip, so every Mac has a secure boot level.
    """
    sip = pick_weighted(catalog.SIP_STATUSES, _SIP_CUM, _SIP_TOTAL, w[0])
    gatekeeper = pick_weighted(catalog.GATEKEEPER_STATUSES, _GK_CUM, _GK_TOTAL, w[1])
    return {
        "sipStatus": sip,
        "gatekeeperStatus": gatekeeper,
        "xprotectVersion": pick(catalog.XPROTECT_VERSIONS, w[2]),
        "autoLoginDisabled": chance(w[3], 0.95),
        "remoteDesktopEnabled": chance(w[4], 0.1),
        "activationLockEnabled": chance(w[5], 0.3),
        "recoveryLockEnabled": apple_silicon and chance(w[6], 0.4),
        "firewallEnabled": chance(w[7], 0.85),
        "secureBootLevel": "FULL_SECURITY" if chance(w[8], 0.95) else "MEDIUM_SECURITY",
        "externalBootLevel": (
            "NOT_SUPPORTED" if apple_silicon else "DISALLOW_BOOTING_FROM_EXTERNAL_MEDIA"
        ),
        "bootstrapTokenAllowed": apple_silicon,
        "bootstrapTokenEscrowedStatus": (
            "ESCROWED" if managed and chance(w[9], 0.85) else "NOT_ESCROWED"
        ),
    }


def _disk_encryption(w: tuple[int, ...], encrypted: bool, username: str) -> dict[str, Any]:
    """The DISK_ENCRYPTION section, agreeing with ``operatingSystem.fileVault2Status``:
    an unencrypted Mac is now and then part way through encrypting."""
    if encrypted:
        state, percent = "ENCRYPTED", 100
    elif chance(w[10], 0.2):
        state, percent = "ENCRYPTING", 5 + w[11] % 90
    else:
        state, percent = "UNENCRYPTED", 0
    return {
        "bootPartitionEncryptionDetails": {
            "partitionName": "Macintosh HD (Boot Partition)",
            "partitionFileVault2State": state,
            "partitionFileVault2Percent": percent,
        },
        "individualRecoveryKeyValidityStatus": "VALID" if encrypted else "NOT_APPLICABLE",
        "institutionalRecoveryKeyPresent": False,
        "diskEncryptionConfigurationName": "FileVault" if encrypted else None,
        "fileVault2Enabled": encrypted,
        "fileVault2EnabledUserNames": [username] if encrypted else [],
        "fileVault2EligibilityMessage": "Eligible",
    }


def _local_accounts(
    username: str, realname: str, management: str | None, word: int, guids: tuple[int, ...]
) -> list[dict[str, Any]]:
    """The primary user, and maybe an IT admin and the Jamf management account."""

    def account(uid: int, name: str, full: str, admin: bool) -> dict[str, Any]:
        n = 4 * (uid - 501)
        return {
            "uid": str(uid),
            "userGuid": uuid_from(guids[n : n + 4]),
            "username": name,
            "fullName": full,
            "admin": admin,
            "homeDirectory": f"/Users/{name}",
            "fileVault2Enabled": uid == 501,
            "userAccountType": "LOCAL",
        }

    accounts = [account(501, username, realname, word % 4 == 0)]
    if word % 3 >= 1:
        accounts.append(account(502, "itadmin", "IT Admin", True))
    if word % 3 == 2 and management:
        accounts.append(account(503, management, "Jamf Management", True))
    return accounts
