"""Jamf records to asset tags and profiles: pure functions over plain dictionaries."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from inventory.domain import OSType, Posture, Profile, SourceRecord, is_placeholder_serial
from jamf.mapping import (
    VOLATILE,
    MappedDevice,
    Skipped,
    map_computer,
    map_mobile_device,
    parse_jamf_time,
    profile_hash,
    split_duplicates,
)


def computer_record(**overrides: Any) -> dict[str, Any]:
    """A v1 computers-inventory record as Jamf Pro 11 returns it, trimmed to our sections."""
    record: dict[str, Any] = {
        "id": "117",
        "udid": "6A1B8E52-0F6C-4C3E-9A57-3D6D6F1C8A11",
        "general": {
            "name": "Alice's MacBook Pro",
            "lastIpAddress": "10.1.2.3",
            "jamfBinaryVersion": "11.4.1-t1712591696",
            "platform": "Mac",
            "reportDate": "2026-11-25T08:14:03.512Z",
            "lastContactTime": "2026-11-26T07:59:41.000Z",
            "remoteManagement": {"managed": True, "managementUsername": "jamfadmin"},
            "supervised": True,
        },
        "hardware": {
            "make": "Apple",
            "model": "MacBook Pro (14-inch, 2023)",
            "modelIdentifier": "Mac14,5",
            "serialNumber": "C02ZX1YJMD6T",
            "processorType": "Apple M2 Max",
        },
        "operatingSystem": {
            "name": "macOS",
            "version": "14.4.1",
            "build": "23E224",
            "supplementalBuildVersion": "23E224a",
            "rapidSecurityResponse": "(a)",
        },
        "userAndLocation": {"username": "alice", "realname": "Alice Liddell"},
        "localUserAccounts": [
            {"uid": "501", "username": "alice", "fullName": "Alice Liddell", "admin": True},
            {"uid": "502", "username": "jamfadmin", "admin": True},
            {"uid": "503", "username": "", "admin": False},
        ],
        "security": {
            "sipStatus": "ENABLED",
            "gatekeeperStatus": "APP_STORE_AND_IDENTIFIED_DEVELOPERS",
            "xprotectVersion": "5297",
            "activationLockEnabled": False,
            "recoveryLockEnabled": True,
            "firewallEnabled": True,
            "secureBootLevel": "FULL_SECURITY",
            "externalBootLevel": "NOT_SUPPORTED",
            "bootstrapTokenEscrowedStatus": "ESCROWED",
        },
        "diskEncryption": {
            "bootPartitionEncryptionDetails": {
                "partitionName": "Macintosh HD (Boot Partition)",
                "partitionFileVault2State": "ENCRYPTED",
                "partitionFileVault2Percent": 100,
            },
            "fileVault2Enabled": True,
        },
    }
    record.update(overrides)
    return record


POSTURE = Posture(
    filevault=True,
    filevault_state="ENCRYPTED",
    sip=True,
    gatekeeper="APP_STORE_AND_IDENTIFIED_DEVELOPERS",
    firewall=True,
    secure_boot_level="FULL_SECURITY",
    activation_lock=False,
    lockdown_mode=None,  # Jamf's schema has no such field: not reported
    last_contact_time=datetime(2026, 11, 26, 7, 59, 41, tzinfo=UTC),
)


def mobile_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "mobileDeviceId": "88",
        "deviceType": "iOS",
        "general": {
            "displayName": "Bob's iPhone",
            "osVersion": "17.4.1",
            "osBuild": "21E236",
            "osSupplementalBuildVersion": "21E236",
            "lastInventoryUpdateDate": "2026-11-24T17:02:11Z",
            "managed": True,
        },
        "hardware": {"serialNumber": "F2LXK0ABHG7F", "modelIdentifier": "iPhone15,2"},
        "userAndLocation": {"username": "bob"},
    }
    record.update(overrides)
    return record


def mapped(result: MappedDevice | Skipped) -> MappedDevice:
    assert isinstance(result, MappedDevice), result
    return result


def test_a_realistic_computer_maps_to_its_profile() -> None:
    device = mapped(map_computer(computer_record()))

    report_time = datetime(2026, 11, 25, 8, 14, 3, 512000, tzinfo=UTC)
    assert device.asset_tag == "C02ZX1YJMD6T"
    assert device.os_type is OSType.MACOS
    assert device.external_id == "117"
    assert device.report_time == report_time
    assert device.profile == Profile(
        model_identifier="Mac14,5",
        os_version="14.4.1",
        os_build="23E224",
        os_build_supplemental="23E224a",
        os_usernames=("alice",),  # jamfadmin is the management account: no one's
        jamf_binary_version="11.4.1-t1712591696",
        external_id="117",
        update_time=report_time,
        posture=POSTURE,
    )
    assert device.raw is not None  # the record itself goes along, as JSON
    kept = computer_record()
    for telemetry in VOLATILE["general"].intersection(kept["general"]):
        del kept["general"][telemetry]
    assert kept != computer_record()
    assert json.loads(device.raw) == kept
    assert device.content_hash == profile_hash(
        device.asset_tag, OSType.MACOS, device.profile, record_text=device.raw
    )


def test_only_local_accounts_that_can_be_people_are_the_profiles_usernames() -> None:
    # Auto-enrollment lets a user enroll a Mac whose profile names them: an account every
    # Mac has (a service account, the management account) must name no one.
    record = computer_record(
        localUserAccounts=[
            {"uid": "0", "username": "root"},
            {"uid": "248", "username": "_mbsetupuser"},
            {"uid": "499", "username": "svc"},
            {"uid": "502", "username": "jamfadmin", "admin": True},
            {"uid": "503", "username": "_hidden"},
            {"uid": "504", "username": "itadmin", "admin": True},
            {"uid": "505", "username": "carol"},
            {"username": "dave"},  # no uid reported: kept
        ]
    )
    device = mapped(map_computer(record))
    assert device.profile.os_usernames == ("alice", "itadmin", "carol", "dave")


def test_a_mapped_device_is_the_inventorys_source_record() -> None:
    device = mapped(map_computer(computer_record()))

    record = device.to_source_record()
    assert isinstance(record, SourceRecord)
    assert (record.asset_tag, record.os_type, record.external_id) == (
        "C02ZX1YJMD6T",
        OSType.MACOS,
        "117",
    )
    assert (record.profile, record.content_hash) == (device.profile, device.content_hash)


def test_a_realistic_mobile_device_maps_to_an_ios_profile() -> None:
    device = mapped(map_mobile_device(mobile_record()))

    assert device.asset_tag == "F2LXK0ABHG7F"
    assert device.os_type is OSType.IOS
    assert device.external_id == "88"
    assert device.profile == Profile(
        model_identifier="iPhone15,2",
        os_version="17.4.1",
        os_build="21E236",
        os_build_supplemental="21E236",
        os_usernames=("bob",),
        jamf_binary_version=None,
        external_id="88",
        update_time=datetime(2026, 11, 24, 17, 2, 11, tzinfo=UTC),
    )


def test_a_computer_without_a_serial_number_is_skipped_with_the_reason() -> None:
    record = computer_record(hardware={"modelIdentifier": "Mac14,5", "serialNumber": "  "})

    assert map_computer(record) == Skipped("117", "no serial number")


def test_a_computer_without_hardware_is_skipped_as_having_no_serial() -> None:
    record = computer_record()
    del record["hardware"]

    assert map_computer(record) == Skipped("117", "no serial number")


def test_an_invalid_serial_number_is_skipped_with_the_reason() -> None:
    result = map_computer(computer_record(hardware={"serialNumber": "C02\x07BELL"}))

    assert isinstance(result, Skipped)
    assert result.external_id == "117"
    assert result.reason.startswith("invalid serial number: ")
    assert "printable ASCII (no tabs or control characters)" in result.reason


def test_jamfs_not_available_is_no_serial_number() -> None:
    result = map_computer(computer_record(hardware={"serialNumber": "Not Available"}))

    assert result == Skipped("117", "no serial number")


def test_a_virtual_machines_serial_with_spaces_inside_is_mapped() -> None:
    result = map_computer(computer_record(hardware={"serialNumber": " VMware-56 4d 0e 9c "}))

    assert isinstance(result, MappedDevice)
    assert result.asset_tag == "VMware-56 4d 0e 9c"


def test_a_record_without_an_id_is_skipped() -> None:
    assert map_computer(computer_record(id=None)) == Skipped(None, "no Jamf id")
    assert map_mobile_device(mobile_record(mobileDeviceId="")) == Skipped(None, "no Jamf id")


def test_serial_numbers_are_trimmed_and_numeric_ids_become_text() -> None:
    device = mapped(map_computer(computer_record(id=117, hardware={"serialNumber": " C02ZX "})))

    assert device.asset_tag == "C02ZX"
    assert device.external_id == "117"


def test_missing_sections_leave_their_fields_empty() -> None:
    record = {"id": "5", "hardware": {"serialNumber": "C02ABC"}}

    device = mapped(map_computer(record))

    assert device.profile == Profile(external_id="5")
    assert device.report_time is None


def test_sections_of_the_wrong_shape_are_tolerated() -> None:
    record = computer_record(
        general=None, operatingSystem="macOS", localUserAccounts={"username": "x"}
    )

    device = mapped(map_computer(record))

    assert device.profile.os_version is None
    assert device.profile.os_usernames == ("alice",)


def test_hash_ignores_report_date_changes() -> None:
    before = mapped(map_computer(computer_record()))
    record = computer_record()
    record["general"]["reportDate"] = "2026-11-26T09:00:00Z"

    after = mapped(map_computer(record))

    assert after.report_time != before.report_time
    assert after.content_hash == before.content_hash


def test_hash_changes_when_the_os_version_changes() -> None:
    before = mapped(map_computer(computer_record()))
    record = computer_record()
    record["operatingSystem"]["version"] = "14.5"

    assert mapped(map_computer(record)).content_hash != before.content_hash


def test_hash_distinguishes_a_computer_from_a_mobile_device_with_the_same_serial() -> None:
    profile = Profile(os_version="17.4")

    assert profile_hash("X1", OSType.MACOS, profile) != profile_hash("X1", OSType.IOS, profile)


_optional_text = st.none() | st.text(max_size=12)
_profiles = st.builds(
    Profile,
    model_identifier=_optional_text,
    os_version=_optional_text,
    os_build=_optional_text,
    os_build_supplemental=_optional_text,
    os_usernames=st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
    jamf_binary_version=_optional_text,
    external_id=_optional_text,
    update_time=st.none() | st.datetimes(timezones=st.just(UTC)),
)


@given(profile=_profiles, other=_profiles)
def test_hash_is_equal_exactly_when_the_hashed_fields_are(profile: Profile, other: Profile) -> None:
    # update_time is the one field left out: set it equal to compare the rest.
    other_same_time = Profile(**{**other.__dict__, "update_time": profile.update_time})
    same = profile == other_same_time
    assert (
        profile_hash("T", OSType.MACOS, profile) == profile_hash("T", OSType.MACOS, other)
    ) == same


@given(
    serial=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
    ),
    version=st.text(max_size=10),
)
def test_any_printable_serial_maps_and_the_hash_is_stable(serial: str, version: str) -> None:
    assume(not is_placeholder_serial(serial))  # "0", "N/A", "--": Jamf knows no serial
    record = computer_record(hardware={"serialNumber": serial})
    record["operatingSystem"]["version"] = version

    first = mapped(map_computer(record))
    again = mapped(map_computer(copy.deepcopy(record)))

    assert first.asset_tag == serial
    assert first.content_hash == again.content_hash


_keys = st.sampled_from(
    [
        "id",
        "mobileDeviceId",
        "general",
        "hardware",
        "operatingSystem",
        "userAndLocation",
        "localUserAccounts",
        "serialNumber",
        "version",
        "username",
        "reportDate",
        "remoteManagement",
        "managementUsername",
        "security",
        "sipStatus",
        "firewallEnabled",
        "diskEncryption",
        "bootPartitionEncryptionDetails",
        "partitionFileVault2State",
        "lastContactTime",
    ]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)


@given(record=st.dictionaries(_keys, _json, max_size=6))
def test_no_record_shape_makes_mapping_raise(record: dict[str, Any]) -> None:
    assert isinstance(map_computer(record), MappedDevice | Skipped)
    assert isinstance(map_mobile_device(record), MappedDevice | Skipped)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T08:14:03Z", datetime(2026, 11, 25, 8, 14, 3, tzinfo=UTC)),
        ("2026-11-25T08:14:03.512Z", datetime(2026, 11, 25, 8, 14, 3, 512000, tzinfo=UTC)),
        ("2026-11-25T09:14:03+01:00", datetime(2026, 11, 25, 8, 14, 3, tzinfo=UTC)),
        ("2026-11-25T08:14:03", datetime(2026, 11, 25, 8, 14, 3, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1732522443, None),
    ],
)
def test_jamf_times_parse_to_utc(text: object, expected: datetime | None) -> None:
    assert parse_jamf_time(text) == expected


def test_a_serial_seen_twice_in_a_page_keeps_the_first_and_skips_the_other() -> None:
    first = mapped(map_computer(computer_record(id="10")))
    second = mapped(map_computer(computer_record(id="11")))
    other = mapped(map_computer(computer_record(id="12", hardware={"serialNumber": "C0OTHER"})))

    kept, skipped = split_duplicates([first, other, second, first])

    assert kept == [first, other]
    assert skipped == [Skipped("11", "serial number C02ZX1YJMD6T is also on Jamf id 10")]


def test_the_same_serial_on_a_computer_and_a_mobile_device_is_not_a_duplicate() -> None:
    mac = mapped(map_computer(computer_record(hardware={"serialNumber": "SAME1"})))
    phone = mapped(map_mobile_device(mobile_record(hardware={"serialNumber": "SAME1"})))

    assert split_duplicates([mac, phone]) == ([mac, phone], [])


# -- who uses the Mac --------------------------------------------------------------------


def test_the_management_account_and_ignored_accounts_are_no_ones_whatever_their_case() -> None:
    record = computer_record(
        localUserAccounts=[
            {"uid": "501", "username": "alice"},
            {"uid": "502", "username": "casper"},  # the simulator's management account
            {"uid": "503", "username": "ITAdmin"},
            {"uid": "504", "username": "kiosk"},
            {"uid": "505", "username": "carol"},
        ]
    )
    record["general"]["remoteManagement"]["managementUsername"] = "Casper"

    device = mapped(map_computer(record, frozenset({"itadmin", " Kiosk "})))

    assert device.profile.os_usernames == ("alice", "carol")


def test_the_user_of_record_is_kept_unless_it_is_no_ones() -> None:
    # Jamf admins type the user of record; an ignored or management name is still no one.
    for name in ("kiosk", "jamfadmin", "_mbsetupuser"):
        record = computer_record(userAndLocation={"username": name}, localUserAccounts=[])
        assert mapped(map_computer(record, frozenset({"kiosk"}))).profile.os_usernames == ()
    record = computer_record(userAndLocation={"username": "bob@example.com"}, localUserAccounts=[])
    assert mapped(map_computer(record)).profile.os_usernames == ("bob@example.com",)


def test_ignored_usernames_change_the_hash_only_through_the_usernames() -> None:
    plain = mapped(map_computer(computer_record()))
    unrelated = mapped(map_computer(computer_record(), frozenset({"nobody-here"})))
    dropped = mapped(map_computer(computer_record(), frozenset({"alice"})))

    assert unrelated.content_hash == plain.content_hash
    assert dropped.profile.os_usernames == () and dropped.content_hash != plain.content_hash


# -- posture -------------------------------------------------------------------------------


def test_posture_values_jamf_did_not_collect_are_not_reported() -> None:
    record = computer_record(
        security={
            "sipStatus": "NOT_COLLECTED",
            "gatekeeperStatus": "NOT_COLLECTED",
            "secureBootLevel": "UNKNOWN",
            "firewallEnabled": None,
            "activationLockEnabled": "yes",  # not a boolean: not trusted
        },
        diskEncryption={"bootPartitionEncryptionDetails": {"partitionFileVault2State": "UNKNOWN"}},
    )

    posture = mapped(map_computer(record)).profile.posture

    assert posture == Posture(
        filevault_state="UNKNOWN", last_contact_time=POSTURE.last_contact_time
    )


@pytest.mark.parametrize(
    ("state", "filevault"),
    [
        ("ENCRYPTED", True),
        ("OPTIMIZING", True),
        ("ENCRYPTING", False),
        ("RESTART_NEEDED", False),
        ("UNENCRYPTED", False),
        ("DECRYPTED", False),
        ("INELIGIBLE", False),
        ("UNKNOWN", None),
    ],
)
def test_filevault_is_whether_the_boot_partition_is_encrypted(
    state: str, filevault: bool | None
) -> None:
    record = computer_record(
        diskEncryption={"bootPartitionEncryptionDetails": {"partitionFileVault2State": state}}
    )

    posture = mapped(map_computer(record)).profile.posture

    assert posture is not None
    assert (posture.filevault, posture.filevault_state) == (filevault, state)


def test_without_disk_encryption_filevault_comes_from_the_os_section() -> None:
    record = computer_record()
    del record["diskEncryption"]
    record["operatingSystem"]["fileVault2Status"] = "NOT_ENCRYPTED"

    posture = mapped(map_computer(record)).profile.posture

    assert posture is not None and (posture.filevault, posture.filevault_state) == (False, None)


def test_lockdown_mode_is_read_when_jamf_reports_it() -> None:
    record = computer_record()
    record["security"]["lockdownModeEnabled"] = True

    posture = mapped(map_computer(record)).profile.posture

    assert posture is not None and posture.lockdown_mode is True


def test_a_record_without_posture_sections_has_no_posture() -> None:
    record = computer_record()
    for key in ("security", "diskEncryption"):
        del record[key]
    del record["general"]["lastContactTime"]

    assert mapped(map_computer(record)).profile.posture is None


def test_hash_changes_when_a_posture_field_changes() -> None:
    before = mapped(map_computer(computer_record()))
    record = computer_record()
    record["security"]["firewallEnabled"] = False

    after = mapped(map_computer(record))

    assert after.profile.posture is not None and after.profile.posture.firewall is False
    assert after.content_hash != before.content_hash


def test_hash_changes_when_an_unmapped_field_of_the_record_changes() -> None:
    # The raw record is kept for admins: a new one (a new XProtect) must be written.
    before = mapped(map_computer(computer_record()))
    record = computer_record()
    record["security"]["xprotectVersion"] = "5301"

    assert mapped(map_computer(record)).content_hash != before.content_hash


def test_last_contact_counts_by_its_day_and_check_in_telemetry_not_at_all() -> None:
    before = mapped(map_computer(computer_record()))
    record = computer_record()
    record["general"] |= {
        "lastContactTime": "2026-11-26T23:59:59.000Z",  # later the same UTC day
        "reportDate": "2026-11-26T23:00:00.000Z",
        "lastIpAddress": "10.9.9.9",
        "lastReportedIp": "192.168.7.7",
    }
    record["localUserAccounts"][0]["homeDirectorySizeMb"] = 51234
    record["hardware"]["batteryCapacityPercent"] = 42
    same_day = mapped(map_computer(record))
    record["general"]["lastContactTime"] = "2026-11-27T00:00:01.000Z"
    next_day = mapped(map_computer(record))

    assert same_day.content_hash == before.content_hash
    assert next_day.content_hash != before.content_hash
    assert next_day.profile.posture is not None
    assert next_day.profile.posture.last_contact_time == datetime(2026, 11, 27, 0, 0, 1, tzinfo=UTC)


def test_the_mapping_never_changes_the_record_it_maps() -> None:
    record = computer_record()
    record["general"]["lastIpAddress"] = "10.1.1.1"
    record["localUserAccounts"][0]["homeDirectorySizeMb"] = 10
    kept = copy.deepcopy(record)

    mapped(map_computer(record))

    assert record == kept


def test_the_hash_does_not_depend_on_the_order_jamf_lists_keys_in() -> None:
    record = computer_record()
    reordered = {key: record[key] for key in reversed(record)}
    reordered["security"] = dict(reversed(list(record["security"].items())))

    assert mapped(map_computer(reordered)).content_hash == mapped(map_computer(record)).content_hash


def test_a_record_built_in_code_with_keys_that_do_not_sort_still_maps() -> None:
    record: dict[Any, Any] = computer_record()
    record["security"] = {1: "one", "two": 2}

    assert isinstance(map_computer(record), MappedDevice)
