"""Writing a source into the inventory: batched upserts, hashes, deletions, run records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inventory.db import Database
from inventory.domain import EnrollStatus, OSType, Posture, Profile, SourceRecord
from inventory.models import DeviceRow
from inventory.services import audit, devices
from inventory.services import source_sync as store
from jamf.mapping import record_text
from tests.conftest import Clock

SRC, INV = "jamf", "default"


def record(i: int, os_version: str = "14.4.1", external_id: str | None = None) -> SourceRecord:
    profile = Profile(model_identifier="MacBookPro18,3", os_version=os_version, external_id=str(i))
    return SourceRecord(
        asset_tag=f"C02{i:09d}",
        os_type=OSType.MACOS,
        external_id=external_id or str(i),
        profile=profile,
        content_hash=f"{i}-{os_version}-{external_id or i}",  # as jamf.mapping: the id counts
    )


def apply(db: Database, run: int, records: list[SourceRecord], **kw: Any) -> store.PageOutcome:
    return store.apply_page(
        db.uow(), run, records, source=SRC, inventory=INV, track_seen=True, **kw
    )


def test_new_changed_and_unchanged_devices(db: Database, clock: Clock) -> None:
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    first = apply(db, run, [record(i) for i in range(5)])
    assert (first.created, first.updated, first.unchanged) == (5, 0, 0)
    stamp = devices.get_device(db.uow(), "C02000000001").update_time
    clock.advance(minutes=5)
    run2 = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    second = apply(db, run2, [record(0, "14.5"), *[record(i) for i in range(1, 5)]])
    assert (second.created, second.updated, second.unchanged) == (0, 1, 4)
    assert devices.get_device(db.uow(), "C02000000000").profile.os_version == "14.5"  # type: ignore[union-attr]
    # Unchanged rows are not rewritten: their update time stays.
    assert devices.get_device(db.uow(), "C02000000001").update_time == stamp
    finished = store.finish_run(db.uow(), run2, status=store.SUCCEEDED, actor="sync")
    assert (finished.fetched, finished.updated, finished.unchanged) == (5, 1, 4)
    [event] = audit.list_events(db.uow(), type=audit.JAMF_SYNC)
    assert event.success and "updated 1, unchanged 4" in event.message


def test_sync_never_touches_enrollment_and_claims_no_hand_registered_device(db: Database) -> None:
    hand = devices.register_device(db.uow(), os_type="macos", asset_tag="C02000000007", actor="a")
    with db.uow() as uow:
        row = uow.session.get(DeviceRow, hand.id)
        assert row is not None
        row.enroll_status, row.owner, row.credential_id = "enrolled", "alice", "cred"
        uow.commit()
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    assert apply(db, run, [record(7)]).updated == 1
    after = devices.get_device(db.uow(), hand.id)
    assert after.profile is not None and after.profile.model_identifier == "MacBookPro18,3"
    assert after.enroll_status is EnrollStatus.ENROLLED and after.owner == "alice"
    assert after.credential is not None and after.source is None
    assert store.count_missing(db.uow(), run, source=SRC, inventory=INV) == (0, 0)


def test_duplicate_serials_are_skipped_and_new_ids_are_conflicts(db: Database) -> None:
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    outcome = apply(db, run, [record(1), record(1, external_id="99")])
    assert outcome.created == 1 and [reason for _, reason in outcome.skipped] == [
        "serial C02000000001 also on Jamf id 1"
    ]
    # Across pages of the same run, the later Jamf id is the duplicate.
    assert apply(db, run, [record(1, external_id="98")]).skipped
    # In a later run a new Jamf id for a known serial is left to the engine to confirm.
    run2 = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    conflict = apply(db, run2, [record(1, external_id="98")])
    assert [(r.external_id, old) for r, old in conflict.conflicts] == [("98", "1")]
    replaced = apply(db, run2, [record(1, external_id="98")], replace_ids=frozenset({"98"}))
    assert replaced.updated == 1
    assert devices.get_device(db.uow(), "C02000000001").profile.external_id == "98"  # type: ignore[union-attr]


def test_missing_devices_are_found_in_the_database_and_deleted_with_audit(db: Database) -> None:
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    apply(db, run, [record(i) for i in range(10)])
    run2 = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    apply(db, run2, [record(i) for i in range(8)])
    assert store.count_missing(db.uow(), run2, source=SRC, inventory=INV) == (2, 10)
    batch = store.missing_batch(db.uow(), run2, source=SRC, inventory=INV, after="")
    assert sorted(str(ext) for _, ext, _ in batch) == ["8", "9"]
    assert (
        store.delete_gone(db.uow(), run2, [d for d, _, _ in batch], source=SRC, actor="sync") == 2
    )
    assert devices.count_devices(db.uow()) == 8
    assert len(audit.list_events(db.uow(), type=audit.DEVICE_DELETE)) == 2


def test_two_failed_runs_in_a_row_raise_the_alert(db: Database, clock: Clock) -> None:
    for status in (store.SUCCEEDED, store.FAILED):
        run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="partial")
        store.finish_run(db.uow(), run, status=status, actor="sync", error="boom")
        clock.advance(seconds=1)
    assert not store.alert(store.recent_runs(db.uow(), INV))
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="partial")
    store.finish_run(db.uow(), run, status=store.FAILED, actor="sync", error="boom again")
    assert store.alert(store.recent_runs(db.uow(), INV))
    last = store.last_success(db.uow(), INV)
    assert last is not None and last.status == store.SUCCEEDED
    assert last.end_time is not None and last.end_time <= clock.now - timedelta(seconds=1)


def test_bulk_inserted_devices_read_back_exactly_as_written(db: Database, clock: Clock) -> None:
    # New devices go to the driver directly (COPY, multi-row INSERTs with the page's shared
    # columns bound once): every column must read back through the ORM as if SQLAlchemy
    # had written it, and the kept Jamf record must be the very text it was.
    clock.now = clock.now.replace(microsecond=123456)
    reported = datetime(2026, 11, 25, 23, 59, 58, 987654, tzinfo=UTC)
    posture = Posture(
        filevault=True,
        filevault_state="ENCRYPTED",
        sip=False,
        gatekeeper=None,
        firewall=True,
        secure_boot_level="FULL_SECURITY",
        activation_lock=False,
        lockdown_mode=None,
        last_contact_time=datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC),  # no microseconds
    )
    raw = record_text(
        {
            "id": "42",
            "general": {"name": 'Zoë\'s "Mac"\n\t\\', "emoji": "\U0001f4bb", "null": None},
            "numbers": [0, -1, 1.5, 1e-7, 12345678901234567890, True, False],
            "nested": {"empty": {}, "list": [[], [{}]], "sp ace": " x "},
        }
    )
    profile = Profile(
        model_identifier="Mac14,2",
        os_version="15.1",
        os_build="24B83",
        os_build_supplemental="24B83a",
        os_usernames=("alice", 'Ünïcode "quoted"'),
        jamf_binary_version="11.10.0",
        external_id="42",
        update_time=reported,
        posture=posture,
    )
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    rec = SourceRecord("C02BULK00001", OSType.MACOS, "42", profile, "hash-42", raw=raw)
    bare = SourceRecord("C02BULK00002", OSType.MACOS, "43", Profile(), "hash-43")
    assert apply(db, run, [rec, bare]).created == 2
    device = devices.get_device(db.uow(), "C02BULK00001")
    assert device.profile == profile
    assert devices.raw_record(db.uow(), "C02BULK00001")[1] == raw
    assert devices.get_device(db.uow(), "C02BULK00002").profile is None  # nothing reported
    assert devices.raw_record(db.uow(), "C02BULK00002")[1] is None
    assert device.create_time == device.update_time == clock.now
    assert device.enroll_status is EnrollStatus.NOT_ENROLLED and device.owner is None
    assert device.source is not None and device.source.name == SRC
    uuid.UUID(device.id)  # a well-formed id
    with db.uow().read() as uow:
        row = uow.session.get(DeviceRow, device.id)
        assert row is not None and (row.source_hash, row.sync_run_id) == ("hash-42", run)
    # And the next run finds it unchanged by its hash: nothing rewritten.
    run2 = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    assert apply(db, run2, [rec, bare]).unchanged == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_question_by_jamf_id_reads_the_index_once_the_table_has_grown(db: Database) -> None:
    """The ghost check of a partial sync asks about the thousand ids it read; after the
    sync's statistics refresh, SQLite answers from the index of Jamf ids, not by reading
    every device of the source, as it did without statistics. (PostgreSQL's planner has
    its statistics from the same refresh, and at this size rightly prefers a scan.)"""
    run = store.start_run(db.uow(), source=SRC, inventory=INV, kind="full")
    for start in range(0, 6000, 500):
        apply(db, run, [record(i) for i in range(start, start + 500)])
    store.refresh_statistics(db.uow())
    read = {str(i) for i in range(0, 6000, 6)}  # a partial sync's thousand ids
    statement = store.shared_ids_statement(SRC, INV, "macos", read, 1000)
    dialect = db.engine.dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_devices_profile_external_id_os_type" in plan, plan[:400]
    shared = store.shared_external_ids(
        db.uow(), source=SRC, inventory=INV, os_type="macos", among=read
    )
    assert shared == {}  # one device a Jamf id: nothing shared
