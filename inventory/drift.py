"""Auto-enrollment's checks: does the data a device collected match what the MDM says?

Pure functions over plain data. ``find_candidate`` picks the one device the collected data
names; ``compare`` lists every field that would fail the check (the drift), each naming
the field, the collected value and the profile's value; ``check_auto_enroll`` refuses with
the first specific reason. ``devtrust devices diff`` shows the same comparison field by
field, with what to do about each failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from inventory.domain import CollectedData, Device, EnrollStatus, Profile
from inventory.errors import DevtrustError

WAIT_FOR_SYNC = (
    "the device changed since the MDM last reported it: wait for the next MDM sync "
    "or run `devtrust jamf sync`"
)
FIX_PROFILE = "fix the device's profile in the MDM, or enroll it by hand with a token"
ENROLL_BY_HAND = "enroll the device by hand: `devtrust devices enroll --asset-tag ...`"


class AutoEnrollRefused(DevtrustError):
    """The device may not auto-enroll; the message gives the specific reason."""

    http_status = 403


@dataclass(frozen=True)
class Field:
    """One compared field: what the device said, what the MDM said, and whether it fails."""

    name: str
    collected: str | None
    profile: str | None
    problem: str | None = None  # None: the field passes
    advice: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        return (
            f"{self.name} {self.problem}: the device reports {_shown(self.collected)}, "
            f"the MDM profile says {_shown(self.profile)}"
        )


def _shown(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for dotted versions: numeric parts as numbers ("14.10" > "14.9")."""
    parts = re.split(r"[.\-_ ]", version.strip())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def _version(collected: str | None, profile: str | None) -> Field:
    name = "os_version"
    if profile is None:
        return Field(name, collected, profile)
    if collected is None:
        return Field(name, collected, profile, "is missing", WAIT_FOR_SYNC)
    if collected.strip() == profile.strip():
        return Field(name, collected, profile)
    if _version_key(collected) < _version_key(profile):
        return Field(name, collected, profile, "is older than the profile's", FIX_PROFILE)
    return Field(name, collected, profile, "differs", WAIT_FOR_SYNC)


def _equal(name: str, collected: str | None, profile: str | None, advice: str) -> Field:
    if profile is None or collected == profile:
        return Field(name, collected, profile)
    return Field(name, collected, profile, "differs", advice)


def compare(device: Device, collected: CollectedData) -> list[Field]:
    """Every field the check compares, in order; failing ones carry their problem."""
    profile = device.profile or Profile()
    fields = [
        _equal("os_type", collected.os_type.value, device.os_type.value, FIX_PROFILE),
        _equal("serial_number", collected.serial_number, device.asset_tag, FIX_PROFILE),
        _equal(
            "model_identifier", collected.model_identifier, profile.model_identifier, FIX_PROFILE
        ),
        _version(collected.os_version, profile.os_version),
    ]
    builds = [b for b in (profile.os_build, profile.os_build_supplemental) if b]
    shown_builds = " or ".join(builds) if builds else None
    if builds and collected.os_build not in builds:
        fields.append(Field("os_build", collected.os_build, shown_builds, "differs", WAIT_FOR_SYNC))
    else:
        fields.append(Field("os_build", collected.os_build, shown_builds))
    fields.append(
        _equal(
            "jamf_binary_version",
            collected.jamf_binary_version,
            profile.jamf_binary_version,
            WAIT_FOR_SYNC,
        )
    )
    users = ", ".join(profile.os_usernames) if profile.os_usernames else None
    if profile.os_usernames and collected.os_login_user not in profile.os_usernames:
        fields.append(
            Field(
                "os_login_user",
                collected.os_login_user,
                users,
                "is not among the profile's usernames",
                FIX_PROFILE,
            )
        )
    else:
        fields.append(Field("os_login_user", collected.os_login_user, users))
    return fields


def drift(device: Device, collected: CollectedData) -> list[Field]:
    """Only the fields that fail."""
    return [f for f in compare(device, collected) if not f.ok]


def find_candidate(devices: Sequence[Device], collected: CollectedData) -> Device:
    """The one device with the collected serial number and OS type."""
    matching = [
        d
        for d in devices
        if d.asset_tag == collected.serial_number and d.os_type is collected.os_type
    ]
    if not matching:
        raise AutoEnrollRefused("device not found")
    if len(matching) > 1:
        raise AutoEnrollRefused("collected data matches more than one device")
    return matching[0]


def check_auto_enroll(devices: Sequence[Device], collected: CollectedData) -> Device:
    """The device ``collected`` may auto-enroll, or AutoEnrollRefused with the reason."""
    device = find_candidate(devices, collected)
    if device.enroll_status is EnrollStatus.ENROLLED:
        raise AutoEnrollRefused("device is already enrolled")
    if device.profile is None:
        raise AutoEnrollRefused(
            f"device {device.label} has no MDM profile to compare with: {ENROLL_BY_HAND}"
        )
    failed = drift(device, collected)
    if failed:
        raise AutoEnrollRefused(mismatch(failed))
    return device


def mismatch(failed: Sequence[Field]) -> str:
    """The refusal for drifted fields, each named with both values."""
    return "device does not match its MDM profile: " + "; ".join(str(f) for f in failed)
