"""Mapping Jamf Pro's own mobile device detail shape (``/api/v2/mobile-devices/{id}/detail``).

The record below follows Jamf's MobileDeviceDetailsV2 schema: identity and OS at the top
level, the user under ``location``, the model under the object ``type`` names (``ios``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from inventory.domain import OSType, normalize_asset_tag
from jamf.mapping import MappedDevice, Skipped, map_mobile_device


def detail_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "88",
        "name": "Ana's iPad",
        "enforceName": False,
        "assetTag": "A-1234",
        "lastInventoryUpdateTimestamp": "2026-11-20T08:15:30.123Z",
        "osVersion": "18.1",
        "osBuild": "22B83",
        "osSupplementalBuildVersion": "22B83",
        "osRapidSecurityResponse": "",
        "softwareUpdateDeviceId": "J307AP",
        "serialNumber": "DMQVGC0DHLF0",
        "udid": "0dad565fb40b010a9e490440188063a378721069",
        "ipAddress": "10.0.0.1",
        "wifiMacAddress": "ee:00:7c:f0:e5:ff",
        "managed": True,
        "timeZone": "Europe/Lisbon",
        "initialEntryTimestamp": "2025-01-15T16:39:56.307Z",
        "lastEnrollmentTimestamp": "2025-01-15T16:39:56.307Z",
        "deviceOwnershipLevel": "institutional",
        "enrollmentMethod": "Automated Device Enrollment",
        "site": {"id": "-1", "name": "None"},
        "extensionAttributes": [],
        "location": {
            "username": "ana.silva",
            "realName": "Ana Silva",
            "emailAddress": "ana.silva@example.com",
            "position": "Nurse",
        },
        "type": "ios",
        "ios": {"model": "iPad Air (M2)", "modelIdentifier": "iPad14,8", "supervised": True},
    }
    record.update(overrides)
    return record


def list_item() -> dict[str, Any]:
    """The same device as a ``/api/v2/mobile-devices/detail`` page lists it."""
    return {
        "mobileDeviceId": "88",
        "deviceType": "iOS",
        "hardware": {"serialNumber": "DMQVGC0DHLF0", "modelIdentifier": "iPad14,8"},
        "general": {
            "osVersion": "18.1",
            "osBuild": "22B83",
            "osSupplementalBuildVersion": "22B83",
            "lastInventoryUpdateDate": "2026-11-20T08:15:30.123Z",
        },
        "userAndLocation": {"username": "ana.silva"},
    }


def mapped(result: MappedDevice | Skipped) -> MappedDevice:
    assert isinstance(result, MappedDevice), result
    return result


def test_jamfs_detail_shape_maps_to_the_ios_profile() -> None:
    device = mapped(map_mobile_device(detail_record()))
    assert (device.asset_tag, device.os_type, device.external_id) == (
        "DMQVGC0DHLF0",
        OSType.IOS,
        "88",
    )
    profile = device.profile
    assert profile.model_identifier == "iPad14,8"
    assert (profile.os_version, profile.os_build, profile.os_build_supplemental) == (
        "18.1",
        "22B83",
        "22B83",
    )
    assert profile.os_usernames == ("ana.silva",)
    assert profile.external_id == "88"
    stamp = datetime(2026, 11, 20, 8, 15, 30, 123000, tzinfo=UTC)
    assert device.report_time == profile.update_time == stamp


def test_the_detail_and_the_list_item_of_one_device_are_the_same_device() -> None:
    # Same hash: a lookup by id recognises what a page wrote, and a record read on its
    # own (a webhook, a deletion check) rewrites nothing.
    assert map_mobile_device(detail_record()) == map_mobile_device(list_item())


def test_the_model_comes_from_the_object_the_type_names() -> None:
    tv = detail_record(type="tvos", ios=None, tvos={"modelIdentifier": "AppleTV14,1"})
    assert mapped(map_mobile_device(tv)).profile.model_identifier == "AppleTV14,1"
    untyped = detail_record(type=None)
    assert mapped(map_mobile_device(untyped)).profile.model_identifier == "iPad14,8"


@pytest.mark.parametrize("serial", [" DMQVGC0DHLF0 ", "\tDMQVGC0DHLF0\n", "\u00a0DMQVGC0DHLF0  "])
def test_serials_with_spaces_around_them_are_trimmed_not_skipped(serial: str) -> None:
    device = mapped(map_mobile_device(detail_record(serialNumber=serial)))
    assert device.asset_tag == "DMQVGC0DHLF0" == normalize_asset_tag(serial)
    assert device == mapped(map_mobile_device(detail_record()))
    item = list_item()
    item["hardware"]["serialNumber"] = serial
    assert mapped(map_mobile_device(item)).asset_tag == "DMQVGC0DHLF0"


@pytest.mark.parametrize("serial", [None, "", "   "])
def test_a_detail_record_without_a_serial_is_skipped_with_the_reason(serial: object) -> None:
    assert map_mobile_device(detail_record(serialNumber=serial)) == Skipped(
        "88", "no serial number"
    )


def test_a_detail_record_without_an_id_is_skipped() -> None:
    assert map_mobile_device(detail_record(id=None)) == Skipped(None, "no Jamf id")


def test_missing_detail_parts_leave_their_fields_empty() -> None:
    bare = mapped(map_mobile_device({"id": 5, "serialNumber": "DMQ5"}))
    assert bare.external_id == "5"
    assert bare.profile.model_identifier is None and bare.profile.os_version is None
    assert bare.profile.os_usernames == () and bare.report_time is None
    odd = mapped(map_mobile_device(detail_record(location="ana", ios=[1], osVersion=18)))
    assert odd.profile.os_usernames == () and odd.profile.os_version == "18"


def test_an_ignored_username_is_not_one_of_the_profiles() -> None:
    ignored = frozenset({"ana.silva"})
    assert mapped(map_mobile_device(detail_record(), ignored)).profile.os_usernames == ()
    assert mapped(map_mobile_device(list_item(), ignored)).profile.os_usernames == ()


def test_both_shapes_carry_their_record_for_devices_get_raw_and_hash_alike() -> None:
    detail, item = map_mobile_device(detail_record()), map_mobile_device(list_item())
    assert isinstance(detail, MappedDevice) and isinstance(item, MappedDevice)

    assert detail.raw is not None and json.loads(detail.raw) == detail_record()
    assert item.raw is not None and json.loads(item.raw) == list_item()
    assert detail.content_hash == item.content_hash


def test_the_ignored_usernames_are_compared_without_case() -> None:
    mapped = map_mobile_device(detail_record(), frozenset({"Ana.Silva"}))

    assert isinstance(mapped, MappedDevice)
    assert mapped.profile.os_usernames == ()
