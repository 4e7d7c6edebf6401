"""Full and partial syncs while Jamf changes under them, against the simulator over a socket.

A computer that exists in Jamf for the whole of a run is read by it, whatever is added,
changed or deleted meanwhile; a Jamf id that now holds another serial no longer stands
for the old device; an older report never overwrites a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from inventory.db import Database
from inventory.models import DeviceRow
from inventory.services import devices
from inventory.services import source_sync as store
from jamf.client import JamfClient, RetryPolicy
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.simulator import Simulator, SimulatorConfig, create_app, running_simulator
from jamf.sync import Kind, Progress, run_sync
from tests.integration.test_sync import expected_fleet

FAST_RETRY = RetryPolicy(attempts=12, initial_wait=0.005, max_wait=0.1, total_timeout=60)
SOURCE = SourceSpec()


class CountingTransport(httpx.HTTPTransport):
    """A real transport that keeps the peak number of inventory pages asked at once."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        counted = request.url.path.endswith("/computers-inventory")
        if counted:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
        try:
            response = super().handle_request(request)
            response.read()
            return response
        finally:
            if counted:
                with self._lock:
                    self.now -= 1


@dataclass
class Jamf:
    sim: Simulator
    client: JamfClient
    transport: CountingTransport

    def expected(self) -> dict[str, tuple[str, str]]:
        return expected_fleet(self.sim)

    def serial(self, ident: int) -> str:
        record = self.sim.computers.get(ident) or self.sim.computers.generator.record(ident)
        return str(record["hardware"]["serialNumber"])

    def managed(self, ident: int) -> bool:
        record = self.sim.computers.generator.record(ident)
        return bool(record["general"]["remoteManagement"]["managed"])


@contextmanager
def jamf(devices: int, *, counting: bool = True, **options: Any) -> Iterator[Jamf]:
    """The simulator over a socket and a client for it. ``counting``: through a
    ``CountingTransport``, which keeps the read in the sync's own threads (a client
    with a transport of its own cannot be rebuilt in a reader process); without it, a
    whole listing of ``PROCESS_READ_MIN`` records or more is read in a child process."""
    config = SimulatorConfig(devices=devices, **options)
    app = create_app(config)
    transport = CountingTransport()
    with running_simulator(config, app) as url:
        client = JamfClient(
            url, client_id="devtrust", client_secret="devtrust-secret", retry=FAST_RETRY,
            transport=transport if counting else None,
        )  # fmt: skip
        try:
            yield Jamf(app.state.simulator, client, transport)
        finally:
            client.close()


# The read is the same whatever the database; the heavy runs take the production one.
POSTGRESQL_ONLY = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def synced(db: Database) -> dict[str, tuple[str | None, str | None]]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(DeviceRow.asset_tag, DeviceRow.profile_external_id, DeviceRow.source_hash)
            .where(DeviceRow.source_name == "jamf")
        )  # fmt: skip
        return {tag: (ext, digest) for tag, ext, digest in rows}


def row(db: Database, serial: str) -> SimpleNamespace | None:
    """The device's columns as they are now (a plain copy, usable after the session)."""
    with db.uow().read() as uow:
        found = uow.session.scalars(select(DeviceRow).where(DeviceRow.asset_tag == serial))
        device = found.one_or_none()
        if device is None:
            return None
        columns = DeviceRow.__table__.columns
        return SimpleNamespace(**{c.key: getattr(device, c.key) for c in columns})


@POSTGRESQL_ONLY
@pytest.mark.parametrize("reader", ["threads", "process"])
def test_deleting_the_lowest_ids_mid_sync_misses_no_live_computer(
    db: Database, reader: str
) -> None:
    """The issue's measure: 20,000 computers into an empty inventory, with latency; the
    300 lowest ids are deleted once the first pages are written. On offset paging
    (``page=N``) every later page shifts by the deleted and about 285 live computers
    are never read; keyset reads miss none, in the sync's threads as in the reader
    process a listing this large gets."""
    with jamf(20_000, counting=reader == "threads", latency_ms=2, seed=3) as j:
        entry = InventorySpec(page_size=1000)  # on_missing NOOP, the default
        deleted: list[int] = []

        def meddle(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 1:
                for ident in range(1, 301):
                    j.sim.computers.delete(ident)
                    deleted.append(ident)

        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL, progress=meddle)
        assert run.status == store.SUCCEEDED, run.error
        assert len(deleted) == 300
        now, inventory = j.expected(), synced(db)
        unread = {tag for tag in now if tag not in inventory}
        assert not unread, f"{len(unread)} computers in Jamf the whole run were not read"
        assert {tag: inventory[tag] for tag in now} == now  # with their current data
        # Those read before they were deleted stay (on_missing NOOP); nothing else is extra.
        assert set(inventory) - set(now) <= {j.serial(i) for i in deleted}
        listing = run.details["listings"]["computers"]
        assert listing["reported"] == len(now) + sum(1 for i in deleted if j.managed(i))
        assert listing["read"] == run.fetched and run.fetched >= len(now)
        assert listing["reader"] == reader
        if reader == "threads":
            # Four pages at once, as before (Jamf advises at most five connections).
            assert j.transport.peak == 4
        else:
            # Counted by the simulator: what the reader process had on the way at once.
            assert j.sim.stats.snapshot()["peak_concurrent"]["computers-inventory"] == 4


@POSTGRESQL_ONLY
def test_uneven_ranges_are_split_and_computers_enrolled_mid_run_are_read(
    db: Database,
) -> None:
    # The filter selects only the top of the id space: the reader's first ranges are
    # empty at once and the rest is split among the connections. No record is counted
    # twice, however the split falls on requests already on the way.
    with jamf(6000, latency_ms=2) as j:
        entry = InventorySpec(
            filter_rsql="general.remoteManagement.managed==true;id>4500", page_size=100
        )
        added: list[int] = []

        def meddle(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 2:
                for _ in range(5):  # above the top id the reader began with
                    added.append(int(j.sim.computers.add()["id"]))

        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL, progress=meddle)
        assert run.status == store.SUCCEEDED, run.error
        expected = {tag: v for tag, v in j.expected().items() if int(v[0]) > 4500}
        assert synced(db) == expected
        assert run.fetched == len(expected) and run.created == len(expected)
        assert {str(i) for i in added} <= {ext for ext, _ in expected.values()}
        assert j.transport.peak == 4


def test_a_partial_sync_reads_every_change_while_computers_are_deleted(db: Database) -> None:
    with jamf(3000, latency_ms=1) as j:
        entry = InventorySpec(page_size=100)
        assert run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL).status == store.SUCCEEDED
        managed = [i for i in range(1, 3001) if j.managed(i)]
        changed = managed[::10]
        for ident in changed:
            j.sim.computers.change(ident)
        low = changed[:20]

        def meddle(p: Progress) -> None:
            if p.phase == "fetch" and p.pages_done == 1:
                for ident in low:
                    j.sim.computers.delete(ident)

        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.PARTIAL, progress=meddle)
        assert run.status == store.SUCCEEDED, run.error
        now, inventory = j.expected(), synced(db)
        for ident in changed[20:]:
            tag = j.serial(ident)
            assert inventory[tag] == now[tag], f"the change to Jamf id {ident} was missed"


def test_a_jamf_id_that_now_holds_another_serial_is_no_longer_the_old_device(
    db: Database,
) -> None:
    with jamf(300) as j:
        noop = InventorySpec(page_size=100)
        delete = InventorySpec(page_size=100, on_missing=OnMissing.DELETE)
        assert run_sync(db, j.client, SOURCE, noop, kind=Kind.FULL).status == store.SUCCEEDED
        first, second = [i for i in range(1, 301) if j.managed(i)][:2]
        old_first, old_second = j.serial(first), j.serial(second)
        # The same Jamf record now describes another Mac (a logic board swap, a reused id).
        j.sim.computers.change(first, {"hardware": {"serialNumber": "C02NEWSERIAL1"}})
        j.sim.computers.change(second, {"hardware": {"serialNumber": "C02NEWSERIAL2"}})

        # Not deleting: the old device is detached from the source, kept with its data.
        run = run_sync(db, j.client, SOURCE, noop, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED, run.error
        assert run.details["detached"] == 2 and run.deleted == 0
        for old, new, ident in (
            (old_first, "C02NEWSERIAL1", first),
            (old_second, "C02NEWSERIAL2", second),
        ):
            ghost = row(db, old)
            assert ghost is not None and ghost.source_name is None
            assert ghost.profile_external_id is None and ghost.source_hash is None
            fresh = row(db, new)
            assert fresh is not None and fresh.profile_external_id == str(ident)
        assert synced(db) == j.expected()
        again = run_sync(db, j.client, SOURCE, noop, kind=Kind.FULL)
        assert (again.updated, again.created, again.details.get("detached", 0)) == (0, 0, 0)

        # A partial sync finds it too: the record with the new serial is one it reads.
        fourth = [i for i in range(1, 301) if j.managed(i)][3]
        old_fourth = j.serial(fourth)
        j.sim.computers.change(fourth, {"hardware": {"serialNumber": "C02NEWSERIAL4"}})
        partial = run_sync(db, j.client, SOURCE, noop, kind=Kind.PARTIAL)
        assert partial.status == store.SUCCEEDED, partial.error
        assert partial.details["detached"] == 1 and partial.fetched < 20
        ghost = row(db, old_fourth)
        assert ghost is not None and ghost.source_name is None
        assert synced(db) == j.expected()

        # Deleting: the old device is gone from Jamf, so it is deleted.
        third = [i for i in range(1, 301) if j.managed(i)][2]
        old_third = j.serial(third)
        j.sim.computers.change(third, {"hardware": {"serialNumber": "C02NEWSERIAL3"}})
        run = run_sync(db, j.client, SOURCE, delete, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED, run.error
        assert run.deleted == 1 and row(db, old_third) is None
        assert synced(db) == j.expected()


def test_a_hand_registered_serial_under_two_live_ids_is_not_rewritten_each_run(
    db: Database,
) -> None:
    with jamf(120) as j:
        entry = InventorySpec(page_size=50)
        hand = devices.register_device(
            db.uow(), os_type="macos", asset_tag="C02HANDMADE01", actor="admin"
        )
        low = j.sim.computers.change(3, {"hardware": {"serialNumber": "C02HANDMADE01"}})
        high = j.sim.computers.add({"hardware": {"serialNumber": "C02HANDMADE01"}})
        assert low is not None and j.managed(3)
        first = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert first.status == store.SUCCEEDED, first.error
        device = row(db, "C02HANDMADE01")
        assert device is not None and device.id == hand.id and device.source_name is None
        assert device.profile_external_id in (str(low["id"]), str(high["id"]))
        before = (device.profile_external_id, device.update_time)
        for _ in range(2):
            again = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
            assert again.status == store.SUCCEEDED, again.error
            assert (again.created, again.updated) == (0, 0)
            assert any("C02HANDMADE01 also on Jamf id" in s for s in again.details["skip_samples"])
            after = row(db, "C02HANDMADE01")
            assert after is not None and (after.profile_external_id, after.update_time) == before


def test_an_older_report_never_overwrites_a_newer_profile(db: Database) -> None:
    with jamf(100) as j:
        entry = InventorySpec(page_size=50)
        assert run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL).status == store.SUCCEEDED
        ident = next(i for i in range(1, 101) if j.managed(i))
        serial = j.serial(ident)
        j.sim.computers.change(ident)  # a new report: the inventory takes it
        assert run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL).updated == 1
        newer = row(db, serial)
        assert newer is not None and newer.profile_update_time is not None
        # Jamf now answers with a report older than the one the device has (a webhook's
        # read and a page's crossing): it is not written.
        older = "2020-01-01T00:00:00.000Z"
        j.sim.computers.change(
            ident, {"general": {"reportDate": older}, "operatingSystem": {"version": "13.0"}}
        )
        run = run_sync(db, j.client, SOURCE, entry, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED and run.updated == 0
        assert run.details["stale"] == 1
        kept = row(db, serial)
        assert kept is not None
        assert (kept.profile_os_version, kept.profile_update_time, kept.source_hash) == (
            newer.profile_os_version,
            newer.profile_update_time,
            newer.source_hash,
        )
