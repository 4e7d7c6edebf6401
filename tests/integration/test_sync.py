"""The sync engine against the Jamf simulator over a real socket, on SQLite and PostgreSQL.

The oracle is the simulator's own fleet: after a sync, the inventory's devices from the
source must be exactly the managed computers Jamf has (serial, Jamf id, content hash).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import select

from inventory.db import Database
from inventory.domain import EnrollStatus
from inventory.models import DeviceRow
from inventory.services import audit, devices
from inventory.services import source_sync as store
from jamf.client import JamfClient, RetryPolicy
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.mapping import MappedDevice, map_computer
from jamf.simulator import Simulator, SimulatorConfig, create_app, running_simulator
from jamf.sync import Kind, Progress, partial_filter, run_sync
from worker.locks import RedisLocks

REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
FAST_RETRY = RetryPolicy(attempts=12, initial_wait=0.005, max_wait=0.1, total_timeout=60)


def expected_fleet(sim: Simulator) -> dict[str, tuple[str, str]]:
    """serial -> (Jamf id, content hash) of every managed computer the fleet has now."""
    fleet = sim.computers
    out: dict[str, tuple[str, str]] = {}
    for ident in list(fleet.live_ids()):
        record = fleet.get(ident)
        if record is None or not record["general"]["remoteManagement"]["managed"]:
            continue
        mapped = map_computer(record)
        assert isinstance(mapped, MappedDevice)
        out[mapped.asset_tag] = (mapped.external_id, mapped.content_hash)
    return out


@dataclass
class Jamf:
    sim: Simulator
    client: JamfClient

    def expected(self) -> dict[str, tuple[str, str]]:
        return expected_fleet(self.sim)


@contextmanager
def jamf(devices: int, retry: RetryPolicy = FAST_RETRY, **options: Any) -> Iterator[Jamf]:
    config = SimulatorConfig(devices=devices, reference_time=REFERENCE, **options)
    app = create_app(config)
    with running_simulator(config, app) as url:
        client = JamfClient(url, client_id="devtrust", client_secret="devtrust-secret",
                            retry=retry)  # fmt: skip
        try:
            yield Jamf(app.state.simulator, client)
        finally:
            client.close()


def synced(db: Database, source: str = "jamf") -> dict[str, tuple[str | None, str | None]]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(DeviceRow.asset_tag, DeviceRow.profile_external_id, DeviceRow.source_hash)
            .where(DeviceRow.source_name == source)
        )  # fmt: skip
        return {tag: (ext, digest) for tag, ext, digest in rows}


def spec(**options: Any) -> InventorySpec:
    return InventorySpec(**options)


SOURCE = SourceSpec()


def test_full_then_partial_sync_under_faults_matches_the_fleet(db: Database) -> None:
    # 10% of requests fail in every way the simulator knows; tokens last 1 second.
    with jamf(5000, fault_rate=0.1, token_ttl=1, seed=7, latency_ms=5) as j:
        entry = spec(page_size=100)
        full = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert full.status == store.SUCCEEDED, full.error
        expected = j.expected()
        assert synced(db) == expected
        assert full.created == len(expected) and full.fetched == len(expected)
        assert j.sim.stats.snapshot()["faults_injected"] >= 3  # the faults did happen

        # 1% of the fleet reports a newer macOS, 10 devices join, 5 leave.
        fleet = j.sim.computers
        for ident in range(1, 5001, 100):
            fleet.change(ident)
        for _ in range(10):
            fleet.add()
        for ident in range(2, 12, 2):
            fleet.delete(ident)
        partial = run_sync(db, j.client, SOURCE, entry, kind=Kind.PARTIAL)
        assert partial.status == store.SUCCEEDED, partial.error
        assert full.watermark is not None
        assert partial.details["since"] == (full.watermark - entry.partial_overlap).isoformat()
        # It read the changes (and what reported in the overlap), not the fleet.
        assert partial.fetched < 200 and partial.deleted == 0
        now, inventory = j.expected(), synced(db)
        gone = set(inventory) - set(now)
        assert {tag: inventory[tag] for tag in now} == now
        assert len(gone) <= 5  # partial syncs never delete: the next full one does
        assert j.sim.tokens.issued >= 2  # the token expired and was renewed on the way


def test_no_change_full_sync_writes_nothing(db: Database) -> None:
    with jamf(1200) as j:
        entry = spec(page_size=500)
        assert run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL).created > 1000
        before = _update_times(db)
        again = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert (again.created, again.updated, again.deleted) == (0, 0, 0)
        assert again.unchanged == again.fetched == len(before)
        assert _update_times(db) == before


def _update_times(db: Database) -> dict[str, Any]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(DeviceRow.id, DeviceRow.update_time, DeviceRow.sync_run_id)
        )
        return {device_id: (stamp, run) for device_id, stamp, run in rows}


def test_devices_added_and_deleted_during_a_full_sync_are_never_wrongly_deleted(
    db: Database,
) -> None:
    with jamf(3000) as j:
        entry = spec(page_size=100, on_missing=OnMissing.DELETE)
        assert run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL).status == store.SUCCEEDED
        fleet = j.sim.computers
        deleted_early = list(range(1, 40, 3))  # already read when deleted: shifts the pages
        deleted_late = [2950, 2960, 2970]  # not read yet: really gone by the end

        def meddle(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 5:
                for ident in deleted_early + deleted_late:
                    fleet.delete(ident)
                for _ in range(7):
                    fleet.add()

        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL, progress=meddle)
        assert run.status == store.SUCCEEDED, run.error
        # Keyset reads: the deletions moved nothing, so the listing read every device
        # Jamf still has (the ones added during the run too, above the old top id) and
        # no live device was left for the deletion phase to look up and keep.
        assert "kept_unseen" not in run.details
        now = j.expected()
        inventory = synced(db)
        early = {_serial(j, i) for i in deleted_early if _managed(j, i)}
        # Read before they were deleted: still there, until the next full sync.
        assert {tag: inventory[tag] for tag in now} == now and set(inventory) - set(now) == early
        late = {_serial(j, i) for i in deleted_late} & set(inventory)
        assert not late, "devices gone before the listing reached them are deleted"
        assert run.deleted == sum(1 for i in deleted_late if _managed(j, i))
        listing = run.details["listings"]["computers"]
        assert listing["read"] == len(now) + len(early)
        # The next full sync deletes those, and has nothing else to do.
        settle = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert settle.status == store.SUCCEEDED and synced(db) == now
        assert (settle.created, settle.updated, settle.deleted) == (0, 0, len(early))


def _serial(j: Jamf, ident: int) -> str:
    record = j.sim.computers.generator.record(ident)
    return str(record["hardware"]["serialNumber"])


def test_deletion_cap_stops_the_run_and_force_overrides_it(db: Database) -> None:
    with jamf(500) as j:
        entry = spec(page_size=200, on_missing=OnMissing.DELETE, max_delete_share=0.2)
        run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        before = synced(db)
        for ident in range(1, 151):  # 30% of the fleet leaves Jamf
            j.sim.computers.delete(ident)
        refused = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert refused.status == store.FAILED and refused.deleted == 0
        assert refused.error is not None and "more than max_delete_share (20%" in refused.error
        assert "nothing was deleted" in refused.error
        assert synced(db).keys() == before.keys()
        forced = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL, force=True)
        assert forced.status == store.SUCCEEDED and forced.deleted == len(before) - len(
            j.expected()
        )
        assert synced(db) == j.expected()
        deletions = audit.list_events(db.uow(), type=audit.DEVICE_DELETE, limit=1000)
        assert len(deletions) == forced.deleted


@pytest.mark.redis
def test_a_lost_sync_lock_stops_the_run_at_the_next_page_and_deletes_nothing(
    db: Database, redis_url: str
) -> None:
    prefix = f"devtrust:test:{uuid.uuid4().hex[:12]}:lock:"
    name = "jamf-sync:jamf:default"
    ours, theirs = RedisLocks(redis_url, prefix=prefix), RedisLocks(redis_url, prefix=prefix)
    redis = Redis.from_url(redis_url)
    try:
        with jamf(600) as j:
            entry = spec(page_size=100, on_missing=OnMissing.DELETE)
            run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
            before = synced(db)
            for ident in range(1, 31):  # gone from Jamf: a run that ends deletes them
                j.sim.computers.delete(ident)
            lease = ours.acquire(name, 30, "worker-1")
            assert lease is not None

            def progress(p: Progress) -> None:
                if p.phase == "fetch" and p.pages_done == 2:
                    # The key expired (a worker paused past its ttl) and another took it;
                    # the renewal that comes next finds out.
                    redis.delete(prefix + name)
                    assert theirs.acquire(name, 30, "worker-2") is not None
                    assert lease.renew() is False

            run = run_sync(
                db, j.client, SOURCE, entry, kind=Kind.FULL, progress=progress,
                still_held=lease.ensure_held,
            )  # fmt: skip
            assert run.status == store.FAILED
            assert run.error is not None and run.error.startswith("stopped after 2 pages")
            assert f"the lock {name} was lost" in run.error
            assert run.deleted == 0 and synced(db) == before
            assert run.fetched < 600 - 30
            lease.release()
            assert theirs.holder(name) == "worker-2"
    finally:
        for key in redis.scan_iter(match=prefix + "*"):
            redis.delete(key)
        redis.close()
        ours.close()
        theirs.close()


def test_only_devices_confirmed_gone_are_deleted_and_enrollment_is_kept(db: Database) -> None:
    with jamf(300) as j:
        entry = spec(page_size=100, on_missing=OnMissing.DELETE)
        run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        enrolled = _serial(j, 10)
        with db.uow() as uow:
            row = uow.session.scalars(
                select(DeviceRow).where(DeviceRow.asset_tag == enrolled)
            ).one()
            row.enroll_status, row.owner, row.credential_id = "enrolled", "alice", "cred-1"
            uow.commit()
        hand = devices.register_device(db.uow(), os_type="macos", asset_tag="HANDMADE01", actor="a")
        j.sim.computers.change(10)  # Jamf has news about the enrolled device
        j.sim.computers.delete(11)
        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED and run.deleted == (1 if _managed(j, 11) else 0)
        device = devices.get_device(db.uow(), enrolled)
        assert device.enroll_status is EnrollStatus.ENROLLED and device.owner == "alice"
        assert device.credential is not None and device.credential.id == "cred-1"
        assert device.profile is not None and device.profile.external_id == "10"
        assert devices.get_device(db.uow(), hand.id).asset_tag == "HANDMADE01"


def _managed(j: Jamf, ident: int) -> bool:
    return bool(j.sim.computers.generator.record(ident)["general"]["remoteManagement"]["managed"])


def test_re_enrolled_device_follows_its_new_jamf_id_and_duplicate_serials_are_skipped(
    db: Database,
) -> None:
    with jamf(200) as j:
        entry = spec(page_size=50, on_missing=OnMissing.DELETE)
        run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        managed = [i for i in range(1, 201) if _managed(j, i)]
        moved, twin = managed[0], managed[1]
        moved_serial, twin_serial = _serial(j, moved), _serial(j, twin)
        device_id = devices.get_device(db.uow(), moved_serial).id
        # Wiped and re-enrolled: Jamf drops the old record and makes a new one.
        j.sim.computers.delete(moved)
        new = j.sim.computers.add({"hardware": {"serialNumber": moved_serial}})
        # A second live record claiming another device's serial.
        dup = j.sim.computers.add({"hardware": {"serialNumber": twin_serial}})
        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED, run.error
        device = devices.get_device(db.uow(), moved_serial)
        assert device.id == device_id and device.profile is not None
        assert device.profile.external_id == str(new["id"])
        assert run.deleted == 0 and run.details["replaced"] == 1
        twin_device = devices.get_device(db.uow(), twin_serial)
        assert twin_device.profile is not None and twin_device.profile.external_id == str(twin)
        assert run.skipped >= 1
        assert any(f"Jamf id {dup['id']}" in line for line in run.details["skip_samples"])


def test_records_without_serial_are_counted_and_explained(db: Database) -> None:
    with jamf(100) as j:
        bare = j.sim.computers.add({"hardware": {"serialNumber": None}})
        run = run_sync(db, j.client, SOURCE, spec(filter_rsql="", page_size=30), kind=Kind.FULL)
        assert run.status == store.SUCCEEDED
        assert run.skipped == 1 and run.fetched == 101 and run.created == 100
        assert run.details["skip_samples"] == [f"Jamf id {bare['id']}: no serial number"]


def test_a_partial_sync_with_no_earlier_sync_reads_everything(db: Database) -> None:
    with jamf(400) as j:
        run = run_sync(db, j.client, SOURCE, spec(page_size=100), kind=Kind.PARTIAL)
        assert run.status == store.SUCCEEDED and run.created == len(j.expected())
        assert run.details["mode"].startswith("partial read everything")
        assert run.watermark is not None and run.watermark <= REFERENCE


def test_failed_runs_are_recorded_and_two_in_a_row_raise_the_alert(db: Database) -> None:
    with jamf(50, RetryPolicy(attempts=2, initial_wait=0, max_wait=0), fault_rate=1.0) as j:
        first = run_sync(db, j.client, SOURCE, spec(), kind=Kind.FULL)
        assert first.status == store.FAILED and first.error
        assert "after 2 attempts" in first.error or "attempt" in first.error
        assert not store.alert(store.recent_runs(db.uow(), "default"))
        run_sync(db, j.client, SOURCE, spec(), kind=Kind.PARTIAL)
        assert store.alert(store.recent_runs(db.uow(), "default"))
        [event, *_] = audit.list_events(db.uow(), type=audit.JAMF_SYNC, failed_only=True)
        assert not event.success and "failed" in event.message


def test_partial_filter_narrows_the_entry_filter() -> None:
    since = datetime(2026, 11, 26, 8, 50, tzinfo=UTC) + timedelta(microseconds=123456)
    assert partial_filter("general.remoteManagement.managed==true", since) == (
        '(general.remoteManagement.managed==true);general.reportDate>="2026-11-26T08:50:00.123Z"'
    )
    assert partial_filter("", since) == 'general.reportDate>="2026-11-26T08:50:00.123Z"'


@pytest.mark.parametrize("page_size", [1, 7, 64])
def test_page_edges(db: Database, page_size: int) -> None:
    with jamf(64) as j:
        run = run_sync(
            db, j.client, SOURCE, spec(filter_rsql="", page_size=page_size), kind=Kind.FULL
        )
        assert run.status == store.SUCCEEDED and run.created == 64 and len(synced(db)) == 64


def _mobile_expected(j: Jamf) -> dict[str, tuple[str, str]]:
    from jamf.mapping import map_mobile_device

    fleet = j.sim.mobile_devices
    out: dict[str, tuple[str, str]] = {}
    for ident in list(fleet.live_ids()):
        record = fleet.get(ident)
        if record is None or not record["general"]["managed"]:
            continue
        mapped = map_mobile_device(record)
        assert isinstance(mapped, MappedDevice)
        out[mapped.asset_tag] = (mapped.external_id, mapped.content_hash)
    return out


def _synced_by_os(db: Database, os_type: str) -> dict[str, tuple[str | None, str | None]]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(DeviceRow.asset_tag, DeviceRow.profile_external_id, DeviceRow.source_hash)
            .where(DeviceRow.source_name == "jamf", DeviceRow.os_type == os_type)
        )  # fmt: skip
        return {tag: (ext, digest) for tag, ext, digest in rows}


def test_mobile_devices_sync_behind_the_setting(db: Database) -> None:
    with jamf(600, mobile_devices=300) as j:
        entry = spec(page_size=100, on_missing=OnMissing.DELETE)
        # Off by default: only computers.
        run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert _synced_by_os(db, "ios") == {}
        with_mobile = SourceSpec(mobile_devices=True)
        full = run_sync(db, j.client, with_mobile, entry, kind=Kind.FULL)
        assert full.status == store.SUCCEEDED, full.error
        assert _synced_by_os(db, "ios") == _mobile_expected(j)
        assert set(full.details["watermarks"]) == {"computers", "mobile devices"}
        # A changed iPhone is found by a partial sync on its own report date field.
        managed = [i for i in range(1, 301) if j.sim.mobile_devices.get(i)["general"]["managed"]]  # type: ignore[index]
        j.sim.mobile_devices.change(managed[0])
        partial = run_sync(db, j.client, with_mobile, entry, kind=Kind.PARTIAL)
        assert partial.status == store.SUCCEEDED and partial.updated >= 1
        assert "mobile_since" in partial.details and partial.fetched < 50
        assert _synced_by_os(db, "ios") == _mobile_expected(j)
        # A deleted iPhone is confirmed gone with the mobile lookup, then deleted.
        j.sim.mobile_devices.delete(managed[1])
        again = run_sync(db, j.client, with_mobile, entry, kind=Kind.FULL)
        assert again.status == store.SUCCEEDED and again.deleted == 1
        assert _synced_by_os(db, "ios") == _mobile_expected(j)
        assert synced(db).keys() >= j.expected().keys()
