"""Auto-enrollment's checks: is the caller a user of the device, and does the data it
collected match what the MDM says?

Pure functions over plain data. ``find_candidate`` picks the one device the collected data
names; ``compare`` lists every field that would fail the check (the drift), each naming
the field, the collected value and the profile's value; ``check_auto_enroll`` refuses with
the first specific reason. ``devtrust devices diff`` shows the same comparison field by
field, with what to do about each failure.

A refusal goes back to whoever sent the data, who may not be the device's user: it names
the failing fields and what to do, never the profile's values (they would tell a caller
what to send). Those go only to the audit event (``for_audit``), which admins read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from inventory.domain import CollectedData, Device, EnrollStatus, Profile, User
from inventory.errors import DevtrustError

WAIT_FOR_SYNC = (
    "the device changed since the MDM last reported it: wait for the next MDM sync "
    "or run `devtrust jamf sync`"
)
FIX_PROFILE = "fix the device's profile in the MDM, or enroll it by hand with a token"
ENROLL_BY_HAND = "enroll the device by hand: `devtrust devices enroll --asset-tag ...`"


class AutoEnrollRefused(DevtrustError):
    """The device may not auto-enroll; the message gives the specific reason, without
    the MDM's values; ``for_audit`` is the admins' version, with them."""

    http_status = 403

    def __init__(self, message: str, *, for_audit: str | None = None) -> None:
        super().__init__(message)
        self.for_audit = for_audit or message


def audit_reason(exc: BaseException) -> str:
    """What the audit event says of a refusal: the admins' version when it has one."""
    return str(getattr(exc, "for_audit", None) or exc)


@dataclass(frozen=True)
class Field:
    """One compared field: what the device said, what the MDM said, and whether it fails."""

    name: str
    collected: str | None
    profile: str | None
    problem: str | None = None  # None: the field passes
    advice: str | None = None
    # False: the MDM profile does not have the field, so nothing was compared. Such a
    # field fails nothing, but it passed no check either: never shown as ``ok``.
    checked: bool = True

    @property
    def ok(self) -> bool:
        """The field does not fail (checked and equal, or not checked)."""
        return self.problem is None

    @property
    def verdict(self) -> str:
        """The check column of ``devtrust devices diff``."""
        if not self.checked:
            return NOT_CHECKED
        return "ok" if self.ok else f"FAIL: {self.problem}"

    def __str__(self) -> str:
        """The field with both values: for admins (audit log, ``devices diff``) only."""
        return (
            f"{self.name} {self.problem}: the device reports {_shown(self.collected)}, "
            f"the MDM profile says {_shown(self.profile)}"
        )

    @property
    def refusal(self) -> str:
        """The field and its problem, without either value: what the device is told."""
        return f"{self.name} {self.problem}"


NOT_CHECKED = "not in the MDM profile: not checked"


def _unchecked(name: str, collected: str | None) -> Field:
    return Field(name, collected, None, checked=False)


def _shown(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for dotted versions: numeric parts as numbers ("14.10" > "14.9")."""
    parts = re.split(r"[.\-_ ]", version.strip())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def _version(collected: str | None, profile: str | None) -> Field:
    name = "os_version"
    if profile is None:
        return _unchecked(name, collected)
    if collected is None:
        return Field(name, collected, profile, "is missing", WAIT_FOR_SYNC)
    if collected.strip() == profile.strip():
        return Field(name, collected, profile)
    if _version_key(collected) < _version_key(profile):
        return Field(name, collected, profile, "is older than the profile's", FIX_PROFILE)
    return Field(name, collected, profile, "differs", WAIT_FOR_SYNC)


def _equal(name: str, collected: str | None, profile: str | None, advice: str) -> Field:
    if profile is None:
        return _unchecked(name, collected)
    if collected == profile:
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
    shown_builds = " or ".join(builds)
    if not builds:
        fields.append(_unchecked("os_build", collected.os_build))
    elif collected.os_build not in builds:
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
    usernames = profile_usernames(profile)
    users = ", ".join(usernames)
    if not usernames:
        fields.append(_unchecked("os_login_user", collected.os_login_user))
    elif collected.os_login_user not in usernames:
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


def check_auto_enroll(devices: Sequence[Device], collected: CollectedData, user: User) -> Device:
    """The device ``collected`` may auto-enroll for ``user``, or AutoEnrollRefused with
    the reason. ``user`` must be a user of the device (named by its MDM profile, or
    assigned by an admin when there is no profile) and the login user it reports."""
    device = find_candidate(devices, collected)
    if device.enroll_status is EnrollStatus.ENROLLED:
        raise AutoEnrollRefused("device is already enrolled")
    check_user_of_device(device, collected, user)
    if device.profile is None:
        return device  # registered by hand for this very user: nothing else to compare
    failed = drift(device, collected)
    if failed:
        raise AutoEnrollRefused(mismatch(failed), for_audit=mismatch_in_full(failed))
    return device


def check_user_of_device(device: Device, collected: CollectedData, user: User) -> None:
    """``user`` is a user of ``device`` and is the login user ``collected`` reports."""
    names = user.identities
    if device.profile is None:
        if device.assigned_user is None:
            raise AutoEnrollRefused(
                f"device {device.label} has no MDM profile and no assigned user: ask an "
                "admin to assign its user (register it with `devtrust devices add ... "
                "--user NAME`) or to enroll it by hand (`devtrust devices enroll`)"
            )
        if device.assigned_user != user.name:
            raise AutoEnrollRefused(
                f"user {user.name} is not a user of device {device.label}",
                for_audit=f"user {user.name} is not a user of device {device.label} "
                f"(assigned to {device.assigned_user})",
            )
    else:
        usernames = profile_usernames(device.profile)
        if not usernames:
            raise AutoEnrollRefused(
                f"device {device.label}'s MDM profile names no user: assign the device "
                f"a user in the MDM, or {ENROLL_BY_HAND}"
            )
        if names.isdisjoint(usernames):
            raise AutoEnrollRefused(
                f"user {user.name} is not a user of device {device.label}: "
                "an admin can declare the user's logins (`devtrust users edit "
                f"{user.name} --logins ...`)",
                for_audit=f"user {user.name} (logins: {', '.join(sorted(names))}) is not "
                f"a user of device {device.label} (MDM usernames: {', '.join(usernames)})",
            )
    if collected.os_login_user not in names:
        raise AutoEnrollRefused(
            f"os_login_user is not {user.name} nor one of their logins: log in to the "
            f"device as {user.name}, or ask an admin to declare that login "
            f"(`devtrust users edit {user.name} --logins ...`)",
            for_audit=f"os_login_user {_shown(collected.os_login_user)} is not {user.name} "
            f"nor one of their logins ({', '.join(sorted(names))})",
        )


# macOS's own accounts, never a person's: a user declaring one as a login (or named like
# one) would be a user of every Mac. (The profile's usernames are the user of record and
# the local accounts: see ``jamf.mapping.map_computer``.)
_SYSTEM_ACCOUNTS = frozenset({"root", "daemon", "nobody"})


def is_a_person(username: str) -> bool:
    """Whether a profile username can be a person's: not a system account."""
    return not username.startswith("_") and username not in _SYSTEM_ACCOUNTS


def profile_usernames(profile: Profile) -> tuple[str, ...]:
    """Who uses the device by its MDM profile: the one list both auto-enrollment's user
    check and the ``os_login_user`` field of the comparison use. The sync already left
    out the accounts that are no one's (``jamf.mapping.computer_usernames``); this
    also guards profiles written before it did."""
    return tuple(u for u in profile.os_usernames if is_a_person(u))


def mismatch(failed: Sequence[Field]) -> str:
    """The refusal for drifted fields: each named with its problem and what to do, no value."""
    advice = list(dict.fromkeys(f.advice for f in failed if f.advice))
    return (
        "device does not match its MDM profile: "
        + "; ".join(f.refusal for f in failed)
        + (": " + "; or ".join(advice) if advice else "")
    )


def mismatch_in_full(failed: Sequence[Field]) -> str:
    """The same for the audit log, each field with both values."""
    return "device does not match its MDM profile: " + "; ".join(str(f) for f in failed)


def no_collected_data(device: Device) -> str:
    """Why a device has nothing to compare (``devices diff`` before its first report)."""
    return (
        f"device {device.label} has sent no collected data yet: it is recorded when the "
        "device enrolls or logs in (run `devtrust device collect` on the device to see it)"
    )


def diff_report(device: Device, collected: CollectedData) -> dict[str, object]:
    """``devtrust devices diff --format json`` (and ``GET /v1/admin/devices/{ref}/diff``):
    the device, when its data was collected, and every field's comparison. A field the
    profile lacks is ``"checked": false, "ok": null``: it passed nothing."""
    from inventory.serialize import device_to_dict

    moment = collected.record_time or collected.collect_time
    return {
        "device": device_to_dict(device),
        "collect_time": moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else None,
        "fields": [
            {"field": f.name, "collected": f.collected, "profile": f.profile,
             "checked": f.checked, "ok": f.ok if f.checked else None,
             "check": f.verdict, "problem": f.problem, "advice": f.advice}
            for f in compare(device, collected)
        ],
    }  # fmt: skip
