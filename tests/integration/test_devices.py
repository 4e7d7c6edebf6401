"""The device service on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inventory.db import Database
from inventory.domain import (
    CollectedData,
    Device,
    EnrollStatus,
    OSType,
    Profile,
    Source,
    SourceOrigin,
)
from inventory.errors import AlreadyExists, InvalidArgument, NotFound
from inventory.models import DeviceRow
from inventory.services import audit
from inventory.services import devices as svc
from tests.conftest import Clock


def add(db: Database, tag: str, os_type: str = "macos") -> Device:
    return svc.register_device(db.uow(), os_type=os_type, asset_tag=tag, actor="admin")


def test_registered_device_is_not_enrolled_and_audited(db: Database) -> None:
    device = add(db, "C00AA0AAAA0A")
    assert device.enroll_status is EnrollStatus.NOT_ENROLLED
    assert device.os_type is OSType.MACOS
    assert device.source is None  # registered by hand, not by an MDM sync
    assert svc.get_device(db.uow(), "C00AA0AAAA0A") == device
    assert svc.get_device(db.uow(), device.id) == device
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_CREATE)
    assert event.success and event.device_id == device.id and event.actor == "admin"
    assert "C00AA0AAAA0A/macOS added" in event.message


def test_the_same_asset_tag_and_os_cannot_be_registered_twice(db: Database) -> None:
    first = add(db, "C00AA0AAAA0A")
    with pytest.raises(AlreadyExists, match=f"already in the inventory \\(device id {first.id}\\)"):
        add(db, "C00AA0AAAA0A", "macOS")
    # The same serial on another OS is another device.
    add(db, "C00AA0AAAA0A", "linux")
    assert svc.count_devices(db.uow()) == 2
    assert len(audit.list_events(db.uow(), type=audit.DEVICE_CREATE)) == 2


def test_bad_input_changes_nothing(db: Database) -> None:
    for os_type, tag in [("beos", "X1"), ("macos", ""), ("macos", "A" * 200)]:
        with pytest.raises(InvalidArgument):
            add(db, tag, os_type)
    assert svc.count_devices(db.uow()) == 0
    assert audit.list_events(db.uow()) == []


def test_profile_and_source_are_stored(db: Database, clock: Clock) -> None:
    profile = Profile(
        model_identifier="MacBookPro18,3",
        os_version="14.4.1",
        os_build="23E224",
        os_usernames=("alice", "admin"),
        jamf_binary_version="11.4.1",
        external_id="42",
        update_time=clock.now,
    )
    device = svc.register_device(
        db.uow(),
        os_type="macos",
        asset_tag="C02",
        actor="sync",
        source=Source("jamf", SourceOrigin.JAMF),
        profile=profile,
    )
    stored = svc.get_device(db.uow(), device.id)
    assert stored.profile == profile
    assert stored.source == Source("jamf", SourceOrigin.JAMF)


def test_listing_is_stable_and_pages_cover_every_device_once(db: Database) -> None:
    tags = [f"SN{i:04d}" for i in range(23)]
    for tag in reversed(tags):
        add(db, tag)
    add(db, "SN0005", "linux")
    pages = list(svc.iter_pages(db.uow(), page_size=5))
    seen = [(d.asset_tag, d.os_type.value) for p in pages for d in p.items]
    assert len(pages) == 5
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 24
    assert pages[-1].next_cursor is None


def test_a_bad_cursor_or_page_size_is_refused(db: Database) -> None:
    with pytest.raises(InvalidArgument, match="invalid page cursor"):
        svc.list_devices(db.uow(), cursor="!!!")
    with pytest.raises(InvalidArgument, match="page size must be between"):
        svc.list_devices(db.uow(), limit=0)


def test_remove_by_asset_tag_and_by_device_id(db: Database) -> None:
    a = add(db, "C00AA0AAAA0A")
    b = add(db, "C00BB0BBBB0B")
    assert svc.remove_device(db.uow(), actor="admin", asset_tag="C00AA0AAAA0A") == a
    assert svc.remove_device(db.uow(), actor="admin", device_id=b.id) == b
    assert svc.count_devices(db.uow()) == 0
    events = audit.list_events(db.uow(), type=audit.DEVICE_DELETE)
    assert [e.device_id for e in events] == [a.id, b.id]


def test_removing_a_missing_device_fails_and_changes_nothing(db: Database) -> None:
    add(db, "KEEP")
    with pytest.raises(NotFound, match="device 'NOPE' not found"):
        svc.remove_device(db.uow(), actor="admin", asset_tag="NOPE")
    with pytest.raises(NotFound, match="not found"):
        svc.remove_device(db.uow(), actor="admin", device_id="9cdfc0ad-64b7-4d9c-8a2e-000000000000")
    with pytest.raises(InvalidArgument, match="expected a UUID"):
        svc.remove_device(db.uow(), actor="admin", device_id="not-a-uuid")
    with pytest.raises(InvalidArgument, match="exactly one"):
        svc.remove_device(db.uow(), actor="admin")
    assert svc.count_devices(db.uow()) == 1
    assert audit.list_events(db.uow(), type=audit.DEVICE_DELETE) == []


def test_an_asset_tag_on_two_oses_must_be_removed_by_id(db: Database) -> None:
    add(db, "DUP", "macos")
    add(db, "DUP", "linux")
    with pytest.raises(InvalidArgument, match="more than one OS"):
        svc.remove_device(db.uow(), actor="admin", asset_tag="DUP")
    assert svc.get_device(db.uow(), "DUP", os_type=OSType.LINUX).os_type is OSType.LINUX


def test_unenroll_clears_owner_and_credential(db: Database) -> None:
    device = add(db, "C00AA0AAAA0A")
    with db.uow() as uow:  # what a finished enrollment ceremony leaves behind
        row = uow.session.get(DeviceRow, device.id)
        assert row is not None
        row.enroll_status = "enrolled"
        row.owner = "alice"
        row.credential_id = "cred-1"
        row.credential_public_key = b"\x04key"
        row.credential_attestation_type = "tpm_ekpub"
        uow.commit()
    unenrolled, changed = svc.unenroll_device(db.uow(), "C00AA0AAAA0A", actor="admin")
    assert changed
    assert unenrolled.enroll_status is EnrollStatus.NOT_ENROLLED
    assert unenrolled.owner is None and unenrolled.credential is None
    assert svc.get_device(db.uow(), device.id) == unenrolled
    [event] = audit.list_events(db.uow(), type=audit.DEVICE_UPDATE)
    assert "unenrolled (was owned by alice)" in event.message
    # A second unenroll has nothing to do and writes nothing.
    assert svc.unenroll_device(db.uow(), device.id, actor="admin")[1] is False
    assert len(audit.list_events(db.uow(), type=audit.DEVICE_UPDATE)) == 1


def test_collected_data_history_is_bounded_per_device(db: Database, clock: Clock) -> None:
    a = add(db, "A")
    b = add(db, "B")
    for i in range(7):
        with db.uow() as uow:
            data = CollectedData(serial_number="A", os_type=OSType.MACOS, os_version=f"14.{i}")
            svc.record_collected_data_within(uow, a.id, data, keep=3)
            svc.record_collected_data_within(uow, b.id, CollectedData("B", OSType.MACOS), keep=3)
            uow.commit()
        clock.advance(minutes=1)
    history = svc.collected_history(db.uow(), a.id)
    assert [h.os_version for h in history] == ["14.6", "14.5", "14.4"]
    assert history[0].record_time == clock.now - timedelta(minutes=1)
    assert len(svc.collected_history(db.uow(), b.id)) == 3


def test_removing_a_device_removes_its_history(db: Database) -> None:
    a = add(db, "A")
    with db.uow() as uow:
        svc.record_collected_data_within(uow, a.id, CollectedData("A", OSType.MACOS), keep=3)
        uow.commit()
    svc.remove_device(db.uow(), actor="admin", device_id=a.id)
    assert svc.collected_history(db.uow(), a.id) == []
