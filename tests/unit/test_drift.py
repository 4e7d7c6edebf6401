"""Auto-enrollment's checks, as pure functions: each refusal names its specific reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from inventory.domain import CollectedData, Device, EnrollStatus, OSType, Profile, Role, User
from inventory.drift import (
    AutoEnrollRefused,
    _version_key,
    audit_reason,
    check_auto_enroll,
    compare,
    drift,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_build_supplemental="23C71a",
    os_usernames=("alice", "admin"),
    jamf_binary_version="11.1.0-t1700000000",
    external_id="42",
)
DEVICE = Device(
    id="d-1",
    os_type=OSType.MACOS,
    asset_tag="C02XL0GJJGH5",
    enroll_status=EnrollStatus.NOT_ENROLLED,
    credential=None,
    source=None,
    profile=PROFILE,
    owner=None,
    create_time=NOW,
    update_time=NOW,
)
COLLECTED = CollectedData(
    serial_number="C02XL0GJJGH5",
    os_type=OSType.MACOS,
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_login_user="alice",
    jamf_binary_version="11.1.0-t1700000000",
)
ALICE = User("alice", (Role.ACCESS,), NOW, NOW)
# Every value of the profile a refusal could give away (the usernames but the caller's).
MDM_VALUES = ("MacBookPro18,3", "14.2.1", "23C71", "11.1.0", "alice, admin", "'admin")


def user(name: str, *logins: str) -> User:
    return User(name, (Role.ACCESS,), NOW, NOW, logins=logins)


def test_matching_data_passes_every_field() -> None:
    assert check_auto_enroll([DEVICE], COLLECTED, ALICE) is DEVICE
    assert all(f.ok for f in compare(DEVICE, COLLECTED))
    assert [f.name for f in compare(DEVICE, COLLECTED)] == [
        "os_type", "serial_number", "model_identifier", "os_version", "os_build",
        "jamf_binary_version", "os_login_user",
    ]  # fmt: skip


def test_no_device_and_more_than_one_device_are_refused() -> None:
    with pytest.raises(AutoEnrollRefused, match="^device not found$"):
        check_auto_enroll([], COLLECTED, ALICE)
    other_os = replace(DEVICE, id="d-2", os_type=OSType.LINUX)
    with pytest.raises(AutoEnrollRefused, match="^device not found$"):
        check_auto_enroll([other_os], COLLECTED, ALICE)
    twin = replace(DEVICE, id="d-3")
    with pytest.raises(AutoEnrollRefused, match="^collected data matches more than one device$"):
        check_auto_enroll([DEVICE, twin], COLLECTED, ALICE)


def test_an_enrolled_device_is_refused_whoever_enrolled_it() -> None:
    enrolled = replace(DEVICE, enroll_status=EnrollStatus.ENROLLED, owner="bob")
    with pytest.raises(AutoEnrollRefused, match="^device is already enrolled$"):
        check_auto_enroll([enrolled], COLLECTED, ALICE)


def test_a_device_without_a_profile_or_assigned_user_is_refused_with_what_to_do() -> None:
    with pytest.raises(AutoEnrollRefused) as refused:
        check_auto_enroll([replace(DEVICE, profile=None)], COLLECTED, ALICE)
    assert str(refused.value) == (
        "device C02XL0GJJGH5/macOS has no MDM profile and no assigned user: ask an admin "
        "to assign its user (register it with `devtrust devices add ... --user NAME`) or "
        "to enroll it by hand (`devtrust devices enroll`)"
    )


def test_a_device_registered_by_hand_auto_enrolls_only_for_its_assigned_user() -> None:
    manual = replace(DEVICE, profile=None, assigned_user="alice")
    assert check_auto_enroll([manual], COLLECTED, ALICE) is manual
    bob = replace(COLLECTED, os_login_user="bob")
    with pytest.raises(AutoEnrollRefused, match="^user bob is not a user of device C02XL0GJJGH5/"):
        check_auto_enroll([manual], bob, user("bob"))
    with pytest.raises(AutoEnrollRefused, match="^os_login_user is not alice nor one of"):
        check_auto_enroll([manual], bob, ALICE)


def test_the_caller_must_be_a_user_of_the_device_whatever_data_they_send() -> None:
    """The takeover: the right values and the owner's login user, sent by someone else."""
    with pytest.raises(AutoEnrollRefused) as refused:
        check_auto_enroll([DEVICE], COLLECTED, user("mallory"))
    assert str(refused.value).startswith("user mallory is not a user of device C02XL0GJJGH5/")
    assert not any(value in str(refused.value) for value in MDM_VALUES)
    assert "MDM usernames: alice, admin" in audit_reason(refused.value)


def test_declared_logins_make_a_user_a_user_of_the_device() -> None:
    asmith = user("asmith", "alice")
    assert check_auto_enroll([DEVICE], COLLECTED, asmith) is DEVICE
    as_admin = replace(COLLECTED, os_login_user="admin")  # a user of the device, not theirs
    with pytest.raises(AutoEnrollRefused, match="^os_login_user is not asmith nor one of"):
        check_auto_enroll([DEVICE], as_admin, asmith)


def test_a_profile_that_names_no_user_is_refused() -> None:
    nobody = replace(DEVICE, profile=replace(PROFILE, os_usernames=()))
    with pytest.raises(AutoEnrollRefused, match="MDM profile names no user"):
        check_auto_enroll([nobody], COLLECTED, ALICE)


def test_system_accounts_make_no_one_a_user_of_the_device() -> None:
    system = replace(DEVICE, profile=replace(PROFILE, os_usernames=("_mbsetupuser", "root")))
    for name in ("_mbsetupuser", "root"):
        claimed = replace(COLLECTED, os_login_user=name)
        with pytest.raises(AutoEnrollRefused, match="MDM profile names no user"):
            check_auto_enroll([system], claimed, user("mallory", name))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_identifier": "MacBookAir10,1"},
         "model_identifier differs: the device reports 'MacBookAir10,1', "
         "the MDM profile says 'MacBookPro18,3'"),
        ({"os_version": "14.3"},
         "os_version differs: the device reports '14.3', the MDM profile says '14.2.1'"),
        ({"os_version": "14.1"},
         "os_version is older than the profile's: the device reports '14.1', "
         "the MDM profile says '14.2.1'"),
        ({"os_version": None},
         "os_version is missing: the device reports nothing, the MDM profile says '14.2.1'"),
        ({"os_build": "23D56"},
         "os_build differs: the device reports '23D56', the MDM profile says '23C71 or 23C71a'"),
        ({"jamf_binary_version": "11.2.0"},
         "jamf_binary_version differs: the device reports '11.2.0', "
         "the MDM profile says '11.1.0-t1700000000'"),
        ({"os_login_user": "mallory"},
         "os_login_user is not among the profile's usernames: the device reports 'mallory', "
         "the MDM profile says 'alice, admin'"),
    ],
)  # fmt: skip
def test_each_drifted_field_is_named_with_both_values_for_admins_only(
    change: dict[str, str | None], message: str
) -> None:
    collected = replace(COLLECTED, **change)  # type: ignore[arg-type]
    [field] = drift(DEVICE, collected)
    assert str(field) == message
    assert field.advice
    mallory = user("mallory", "alice")  # a user of the device whichever login they report
    with pytest.raises(AutoEnrollRefused) as refused:
        check_auto_enroll([DEVICE], collected, mallory)
    told = str(refused.value)
    assert told == (
        f"device does not match its MDM profile: {field.refusal}: {field.advice}"
        if field.name != "os_login_user"
        else told
    )
    assert not any(value in told for value in MDM_VALUES), told
    if field.name != "os_login_user":
        assert audit_reason(refused.value) == f"device does not match its MDM profile: {message}"


def test_the_supplemental_build_passes_and_every_failure_is_listed() -> None:
    assert drift(DEVICE, replace(COLLECTED, os_build="23C71a")) == []
    both = replace(COLLECTED, os_version="15.0", os_login_user="eve")
    assert [f.name for f in drift(DEVICE, both)] == ["os_version", "os_login_user"]


def test_fields_the_profile_does_not_have_are_not_compared() -> None:
    bare = replace(DEVICE, profile=Profile(os_version="14.2.1"))
    assert drift(bare, replace(COLLECTED, os_login_user=None, model_identifier="x")) == []


def test_a_field_the_profile_does_not_have_is_not_checked_never_ok() -> None:
    # No OS build and no usernames in the MDM profile: nothing to compare the device with.
    bare = replace(DEVICE, profile=Profile(os_version="14.2.1", model_identifier="MacBookPro18,3"))

    verdicts = {f.name: (f.checked, f.verdict) for f in compare(bare, COLLECTED)}

    unchecked = (False, "not in the MDM profile: not checked")
    assert verdicts == {
        "os_type": (True, "ok"),
        "serial_number": (True, "ok"),
        "model_identifier": (True, "ok"),
        "os_version": (True, "ok"),
        "os_build": unchecked,
        "jamf_binary_version": unchecked,
        "os_login_user": unchecked,
    }
    assert all(f.checked for f in compare(DEVICE, COLLECTED))  # a full profile: all checked


def test_the_comparison_and_the_user_check_use_one_list_of_usernames() -> None:
    # A profile written before the sync left system accounts out: neither names them.
    old = replace(DEVICE, profile=replace(PROFILE, os_usernames=("_mbsetupuser", "root")))
    claimed = replace(COLLECTED, os_login_user="_mbsetupuser")

    [login] = [f for f in compare(old, claimed) if f.name == "os_login_user"]

    assert (login.checked, login.profile) == (False, None)
    with pytest.raises(AutoEnrollRefused, match="MDM profile names no user"):
        check_auto_enroll([old], claimed, user("mallory", "_mbsetupuser"))


def test_versions_compare_numerically() -> None:
    assert _version_key("14.10") > _version_key("14.9")
    assert _version_key("14.2") < _version_key("14.2.1")
    assert drift(DEVICE, replace(COLLECTED, os_version="14.10"))[0].problem == "differs"
