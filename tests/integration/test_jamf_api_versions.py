"""The client on current Jamf Pro API versions, against the simulator over a real socket.

Probing v4 first, the detail route of the version in use with the client's sections,
OAuth at either token path, Jamf's 30-minute tokens renewed before they expire, Jamf's
own mobile device detail shape through the sync, and serials with spaces around them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from inventory.db import Database
from inventory.services import devices
from inventory.services import source_sync as store
from jamf.client import DEFAULT_SECTIONS, MOBILE_SECTIONS, JamfClient, RetryPolicy
from jamf.config import InventorySpec, OnMissing, SourceSpec
from jamf.mapping import MappedDevice, map_computer, map_mobile_device
from jamf.simulator import Simulator, SimulatorConfig, create_app, running_simulator
from jamf.simulator.computers import OTHER_SECTIONS
from jamf.sync import Kind, run_sync

REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
FAST_RETRY = RetryPolicy(attempts=6, initial_wait=0.005, max_wait=0.05, total_timeout=30)
MOBILE = SourceSpec(mobile_devices=True)


class Clock:
    """The client's monotonic clock, moved by hand: token expiry without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Jamf:
    sim: Simulator
    app: Starlette
    url: str

    def client(self, **options: Any) -> JamfClient:
        options.setdefault("retry", FAST_RETRY)
        return JamfClient(
            self.url, client_id="devtrust", client_secret="devtrust-secret", **options
        )

    def requests(self, endpoint: str) -> int:
        counts = self.sim.stats.snapshot()["by_endpoint"].get(endpoint, {})
        return int(sum(counts.values()))


@contextmanager
def simulator(
    devices: int = 50, *, without: tuple[str, ...] = (), **options: Any
) -> Iterator[Jamf]:
    """A simulator of its own; ``without`` drops routes, as an older or proxied server."""
    config = SimulatorConfig(devices=devices, reference_time=REFERENCE, **options)
    app = create_app(config)
    app.router.routes = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path in without)
    ]
    with running_simulator(config, app) as url:
        yield Jamf(app.state.simulator, app, url)


@pytest.fixture(scope="module")
def shared() -> Iterator[Jamf]:
    """One read-only simulator for the tests that change nothing."""
    with simulator(50, mobile_devices=20) as jamf:
        yield jamf


# -- versions and single records --------------------------------------------------------


def test_the_client_probes_v4_first_and_reads_a_computer_from_v4s_detail_route(
    shared: Jamf,
) -> None:
    with shared.client() as client:
        assert client.api_version == 4
        page = client.computers_page(page=0, page_size=10)
        record = client.computer("7")
    assert [r["id"] for r in page.results][:3] == ["1", "2", "3"]
    assert record is not None and record["id"] == "7"
    # The detail route honours the client's sections: exactly those, no others.
    assert record["localUserAccounts"] and record["operatingSystem"]["version"]
    assert not {key for key, _ in OTHER_SECTIONS.values()} & set(record)
    fleet_record = shared.sim.computers.get(7)
    assert fleet_record is not None
    assert map_computer(record) == map_computer(fleet_record)


def test_the_detail_route_sends_only_the_sections_the_client_asks_for(shared: Jamf) -> None:
    with shared.client(api_version=4) as client:
        general = client.computer("7", sections=("GENERAL",))
        full = client.computer("7")
    assert general is not None and full is not None
    assert general["general"] == full["general"]
    assert general["hardware"] is None and general["localUserAccounts"] == []
    assert set(DEFAULT_SECTIONS) >= {"GENERAL", "HARDWARE"}
    assert full["hardware"]["serialNumber"]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_version_lists_and_reads_single_records_alike(shared: Jamf, version: int) -> None:
    with shared.client(api_version=version) as client:
        listed = client.computers_page(page=0, page_size=5).results
        one = client.computer(listed[2]["id"])
        gone = client.computer("4040")
    assert one is not None and one["id"] == listed[2]["id"]
    assert gone is None


# -- OAuth token paths ------------------------------------------------------------------


def test_oauth_goes_to_the_guides_path_and_says_so(
    shared: Jamf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtrust.jamf")
    with shared.client(api_version=4) as client:
        client.computers_page(page=0, page_size=1)
    assert any(
        m.startswith("Jamf API client token from /api/oauth/token,") for m in caplog.messages
    )
    assert "devtrust-secret" not in caplog.text


def test_oauth_falls_back_to_the_v1_token_path_where_the_other_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtrust.jamf")
    with simulator(20, without=("/api/oauth/token",)) as jamf, jamf.client() as client:
        assert len(client.computers_page(page=0, page_size=20).results) == 20
        client.computer("3")
    assert "Jamf has no OAuth token endpoint at /api/oauth/token (404); trying " in caplog.text
    assert any(
        m.startswith("Jamf API client token from /api/v1/oauth/token,") for m in caplog.messages
    )
    # The 404 was met once; every later request used the path that worked.
    assert jamf.sim.tokens.issued == 1


def test_oauth_works_where_only_the_guides_path_exists() -> None:
    with simulator(20, without=("/api/v1/oauth/token",)) as jamf, jamf.client() as client:
        assert client.computers_page(page=0, page_size=5).total_count == 20


# -- token lifetime ---------------------------------------------------------------------


def test_jamfs_30_minute_tokens_are_renewed_before_they_expire(shared: Jamf) -> None:
    clock = Clock()
    before = shared.sim.tokens.issued
    with shared.client(api_version=4, clock=clock) as client:
        client.computers_page(page=0, page_size=1)
        clock.now = 20 * 60.0  # 10 of 30 minutes left: the token is kept
        client.computers_page(page=0, page_size=1)
        assert shared.sim.tokens.issued == before + 1
        clock.now = 25 * 60.0  # 5 minutes left: renewed before the server can refuse it
        client.computers_page(page=0, page_size=1)
        assert shared.sim.tokens.issued == before + 2
    assert shared.sim.tokens.ttl == 1800


def test_the_token_lifetime_is_configurable_and_the_client_renews_short_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtrust.jamf")
    clock = Clock()
    with simulator(5, token_ttl=90) as jamf, jamf.client(clock=clock) as client:
        client.computers_page(page=0, page_size=1)
        clock.now = 60.0  # 30 of 90 s left: kept (the margin is 20%, 18 s)
        client.computers_page(page=0, page_size=1)
        clock.now = 75.0  # 15 s left: renewed
        client.computers_page(page=0, page_size=1)
        assert jamf.sim.tokens.issued == 2
    assert "Jamf API client token from /api/oauth/token, valid for 90 s" in caplog.messages


# -- mobile devices in Jamf's detail shape ----------------------------------------------


def test_a_mobile_devices_detail_record_maps_like_its_list_item(shared: Jamf) -> None:
    with shared.client(api_version=4) as client:
        listed = client.mobile_devices_page(page=0, page_size=20).results
        for item in listed[:5]:
            detail = client.mobile_device(item["mobileDeviceId"])
            assert detail is not None and "mobileDeviceId" not in detail
            from_list, from_detail = map_mobile_device(item), map_mobile_device(detail)
            assert isinstance(from_detail, MappedDevice), from_detail
            assert from_detail == from_list  # same serial, profile, hash and report time
    assert list(MOBILE_SECTIONS) == ["GENERAL", "HARDWARE", "USER_AND_LOCATION"]


def _managed_mobile(jamf: Jamf, count: int) -> list[int]:
    fleet = jamf.sim.mobile_devices
    return [i for i in fleet.live_ids() if (fleet.get(i) or {})["general"]["managed"]][:count]


def _ios(db: Database, serial: str) -> str | None:
    device = devices.get_device(db.uow(), serial)
    return device.profile.external_id if device.profile else None


def test_a_second_live_ios_record_with_a_known_serial_is_a_duplicate_not_a_move(
    db: Database,
) -> None:
    # A partial sync reads only the new record, so it looks the known one up by id, in
    # Jamf's detail shape: unless that shape is mapped, the known record has "no serial
    # number", the device is taken to have moved, and it flips to the duplicate's id.
    with simulator(60, mobile_devices=120) as jamf, jamf.client() as client:
        entry = InventorySpec(page_size=50, on_missing=OnMissing.DELETE)
        assert run_sync(db, client, MOBILE, entry, kind=Kind.FULL).status == store.SUCCEEDED
        [twin] = _managed_mobile(jamf, 1)
        serial = jamf.sim.mobile_devices.get(twin)["hardware"]["serialNumber"]  # type: ignore[index]
        dup = jamf.sim.mobile_devices.add(
            {"hardware": {"serialNumber": serial}, "general": {"managed": True}}
        )
        run = run_sync(db, client, MOBILE, entry, kind=Kind.PARTIAL)
        assert run.status == store.SUCCEEDED, run.error
        assert run.fetched < 10  # the new record (and the overlap), not the fleet
        assert _ios(db, serial) == str(twin)
        assert run.details.get("replaced", 0) == 0 and run.updated == 0
        assert any(f"Jamf id {dup['mobileDeviceId']}" in s for s in run.details["skip_samples"])
        for kind in (Kind.PARTIAL, Kind.FULL):
            again = run_sync(db, client, MOBILE, entry, kind=kind)
            assert (again.created, again.updated, again.deleted) == (0, 0, 0)
            assert _ios(db, serial) == str(twin)


def test_an_ios_serial_that_moved_to_a_new_record_follows_it(db: Database) -> None:
    with simulator(60, mobile_devices=120) as jamf, jamf.client() as client:
        entry = InventorySpec(page_size=50, on_missing=OnMissing.DELETE)
        run_sync(db, client, MOBILE, entry, kind=Kind.FULL)
        [old] = _managed_mobile(jamf, 1)
        serial = jamf.sim.mobile_devices.get(old)["hardware"]["serialNumber"]  # type: ignore[index]
        device_id = devices.get_device(db.uow(), serial).id
        # The old record now carries another serial; a new record carries this one.
        jamf.sim.mobile_devices.change(old, {"hardware": {"serialNumber": "DMQMOVED0001"}})
        new = jamf.sim.mobile_devices.add(
            {"hardware": {"serialNumber": serial}, "general": {"managed": True}}
        )
        run = run_sync(db, client, MOBILE, entry, kind=Kind.FULL)
        assert run.status == store.SUCCEEDED, run.error
        assert devices.get_device(db.uow(), serial).id == device_id
        assert _ios(db, serial) == str(new["mobileDeviceId"])


# -- serials with spaces around and inside them ----------------------------------------------------


def test_serials_with_spaces_around_them_are_trimmed_not_skipped(db: Database) -> None:
    with simulator(30, mobile_devices=10) as jamf, jamf.client() as client:
        hand = devices.register_device(
            db.uow(), os_type="macos", asset_tag=" C02SPACED001 ", actor="admin"
        )
        assert hand.asset_tag == "C02SPACED001"
        managed = {"general": {"remoteManagement": {"managed": True}}}
        mac = jamf.sim.computers.add({"hardware": {"serialNumber": "  C02SPACED001 "}, **managed})
        vm = jamf.sim.computers.add(
            {"hardware": {"serialNumber": "\tVMSPACED0002\u00a0"}, **managed}
        )
        spaced = jamf.sim.computers.add(
            {"hardware": {"serialNumber": " VMware-56 4d 0e 9c 3f 5b "}, **managed}
        )
        phone = jamf.sim.mobile_devices.add(
            {"hardware": {"serialNumber": " DMQSPACED03  "}, "general": {"managed": True}}
        )
        run = run_sync(db, client, MOBILE, InventorySpec(page_size=20), kind=Kind.FULL)
        assert run.status == store.SUCCEEDED, run.error
        assert run.skipped == 0, run.details["skip_samples"]
        # The hand-registered Mac is the one Jamf reports, not a second device.
        assert devices.get_device(db.uow(), "C02SPACED001").id == hand.id
        assert _ios(db, "C02SPACED001") == str(mac["id"])
        assert _ios(db, "VMSPACED0002") == str(vm["id"])
        assert _ios(db, "VMware-56 4d 0e 9c 3f 5b") == str(spaced["id"])
        assert _ios(db, "DMQSPACED03") == str(phone["mobileDeviceId"])
        # The single-record read (Jamf's detail shape) trims the same way.
        detail = client.mobile_device(str(phone["mobileDeviceId"]))
        assert detail is not None and detail["serialNumber"] == " DMQSPACED03  "
        mapped = map_mobile_device(detail)
        assert isinstance(mapped, MappedDevice) and mapped.asset_tag == "DMQSPACED03"
        again = run_sync(db, client, MOBILE, InventorySpec(page_size=20), kind=Kind.FULL)
        assert (again.created, again.updated, again.skipped) == (0, 0, 0)
