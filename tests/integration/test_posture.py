"""Device posture and the raw Jamf record, synced from the simulator over a real socket and
shown by the CLI, on SQLite and PostgreSQL.

The oracle is the simulator's fleet mapped by ``jamf.mapping``: what Jamf serves is what
the inventory keeps, field by field, and what it changed is all a sync writes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer

from inventory.db import Database
from inventory.domain import OSType, Profile, SourceRecord, SyncRun
from inventory.models import DeviceRow
from inventory.serialize import RAW_RECORD_LIMIT, TRUNCATED, posture_to_dict
from inventory.services import auto_enroll, devices
from inventory.services import source_sync as store
from jamf.client import JamfClient
from jamf.config import InventorySpec, SourceSpec
from jamf.mapping import MappedDevice, map_computer, parse_jamf_time, record_text
from jamf.simulator import Simulator, SimulatorConfig, create_app, running_simulator
from jamf.simulator.computers import ComputerGenerator
from jamf.sync import Kind, run_sync
from tests.cli import Cli

REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
DEVICES = 60


@pytest.fixture(scope="module")
def jamf() -> Iterator[tuple[Simulator, JamfClient]]:
    """One simulator for the module: the tests that change it put back what they change."""
    config = SimulatorConfig(devices=DEVICES, reference_time=REFERENCE)
    app = create_app(config)
    with running_simulator(config, app) as url:
        client = JamfClient(url, client_id="devtrust", client_secret="devtrust-secret")
        try:
            yield app.state.simulator, client
        finally:
            client.close()


def full_sync(db: Database, client: JamfClient) -> SyncRun:
    run = run_sync(db, client, SourceSpec(), InventorySpec(page_size=25), kind=Kind.FULL)
    assert run.status == store.SUCCEEDED, run.error
    return run


def fleet_devices(sim: Simulator) -> dict[str, tuple[int, MappedDevice]]:
    """serial -> (Jamf id, mapped record) of every managed computer."""
    out = {}
    for ident in sim.computers.live_ids():
        record = sim.computers.get(ident)
        if record is None or not record["general"]["remoteManagement"]["managed"]:
            continue
        mapped = map_computer(record)
        assert isinstance(mapped, MappedDevice)
        out[mapped.asset_tag] = (ident, mapped)
    return out


def ok(result: Any) -> Any:
    assert result.code == 0, (result.out, result.err)
    return result


def test_a_synced_macs_posture_shows_in_devices_get_and_ls(
    db: Database, cli: Cli, jamf: tuple[Simulator, JamfClient]
) -> None:
    sim, client = jamf
    full_sync(db, client)
    fleet = fleet_devices(sim)

    listed = json.loads(ok(cli("devices", "ls", "--format", "json")).out)
    assert {d["asset_tag"]: d["posture"] for d in listed} == {
        tag: posture_to_dict(mapped.profile.posture) for tag, (_, mapped) in fleet.items()
    }
    tag, (ident, _) = sorted(fleet.items())[0]
    shown = json.loads(ok(cli("devices", "get", tag, "--format", "json")).out)["posture"]
    record = sim.computers.get(ident)
    assert record is not None
    security, disk = record["security"], record["diskEncryption"]
    assert shown == {
        "filevault": disk["bootPartitionEncryptionDetails"]["partitionFileVault2State"]
        == "ENCRYPTED",
        "filevault_state": disk["bootPartitionEncryptionDetails"]["partitionFileVault2State"],
        "sip": {"ENABLED": True, "DISABLED": False}.get(security["sipStatus"]),
        "gatekeeper": None
        if security["gatekeeperStatus"] == "NOT_COLLECTED"
        else security["gatekeeperStatus"],
        "firewall": security["firewallEnabled"],
        "secure_boot_level": security["secureBootLevel"],
        "activation_lock": security["activationLockEnabled"],
        "lockdown_mode": None,  # the simulator, like Jamf's schema, does not report it
        "last_contact_time": shown["last_contact_time"],
    }
    assert parse_jamf_time(shown["last_contact_time"]) == parse_jamf_time(
        record["general"]["lastContactTime"]
    )
    text = ok(cli("devices", "get", tag, "--format", "text")).out
    assert f"posture.firewall: {security['firewallEnabled']}" in text
    # The fleet is not all alike: the posture tells devices apart.
    assert len({json.dumps(p, sort_keys=True) for p in (d["posture"] for d in listed)}) > 1


def test_devices_get_raw_prints_the_record_jamf_served_as_pasteable_json(
    db: Database, cli: Cli, jamf: tuple[Simulator, JamfClient]
) -> None:
    sim, client = jamf
    full_sync(db, client)
    tag, (ident, _) = sorted(fleet_devices(sim).items())[1]

    result = ok(cli("devices", "get", tag, "--raw"))

    assert result.out.startswith('{\n  "')  # indented
    served = sim.computers.get(ident)
    assert served is not None
    # What Jamf served, less the telemetry that moves on every report (VOLATILE).
    assert json.loads(result.out) == json.loads(record_text(served))
    assert served["general"]["reportDate"] and "reportDate" not in json.loads(result.out)["general"]
    assert "when a sync last changed the device" in result.err
    assert json.loads(ok(cli("devices", "get", tag, "--raw", "--format", "json")).out)


def test_raw_refusals_are_one_line(db: Database, cli: Cli) -> None:
    ok(cli("devices", "add", "--os=macos", "--asset-tag=HAND0001"))

    assert cli("devices", "get", "HAND0001", "--raw").error_line == (
        "error: device HAND0001/macOS has no MDM record: none is kept until an MDM sync "
        "writes the device (`devtrust jamf sync`)"
    )
    assert cli("devices", "get", "HAND0001", "--raw", "--format", "text").error_line == (
        "error: --raw prints JSON: leave out --format text"
    )


def test_a_posture_change_is_written_and_a_second_sync_writes_nothing(
    db: Database, jamf: tuple[Simulator, JamfClient]
) -> None:
    sim, client = jamf
    full_sync(db, client)
    assert (again := full_sync(db, client)).updated == 0 and again.created == 0
    tag, (ident, mapped) = sorted(fleet_devices(sim).items())[2]
    assert mapped.profile.posture is not None
    firewall = not mapped.profile.posture.firewall
    record = sim.computers.get(ident)
    assert record is not None
    before = copy.deepcopy(record["security"])
    try:
        sim.computers.change(ident, {"security": {"firewallEnabled": firewall}})
        changed = full_sync(db, client)
    finally:
        sim.computers.change(ident, {"security": before})  # the module's fleet as it was

    assert changed.updated == 1
    device = devices.get_device(db.uow(), tag)
    assert device.profile is not None and device.profile.posture is not None
    assert device.profile.posture.firewall is firewall
    _, raw = devices.raw_record(db.uow(), tag)
    assert raw is not None and json.loads(raw)["security"]["firewallEnabled"] is firewall


def test_the_sync_leaves_the_ignored_and_management_accounts_out_of_every_profile(
    db: Database, jamf: tuple[Simulator, JamfClient]
) -> None:
    sim, client = jamf
    source = SourceSpec(ignored_usernames=frozenset({"ITADMIN"}))
    run = run_sync(db, client, source, InventorySpec(page_size=25), kind=Kind.FULL)
    assert run.status == store.SUCCEEDED, run.error

    with db.uow().read() as uow:
        query = select(DeviceRow.profile_external_id, DeviceRow.profile_os_usernames)
        profiles = {ext: names for ext, names in uow.session.execute(query)}
    accounts = {
        name
        for ident in sim.computers.live_ids()
        for name in (a["username"] for a in (sim.computers.get(ident) or {})["localUserAccounts"])
    }
    assert {"itadmin", "casper"} <= accounts  # the fleet has both, on some Macs
    for ident, names in profiles.items():
        record = sim.computers.get(int(ident or 0))
        assert record is not None
        assert names == [record["userAndLocation"]["username"]], (ident, names)


# -- the page writer, on records the simulator's generator draws ------------------------


def _apply(db: Database, *records: SourceRecord) -> store.PageOutcome:
    run = store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
    return store.apply_page(
        db.uow(), run, list(records), source="jamf", inventory="default", track_seen=True
    )


def _mac(record: dict[str, Any], ignored: frozenset[str] = frozenset()) -> MappedDevice:
    mapped = map_computer(record, ignored)
    assert isinstance(mapped, MappedDevice)
    return mapped


RECORD = ComputerGenerator(seed=3, reference_time=REFERENCE).record(7)


def _row(db: Database, tag: str) -> DeviceRow:
    with db.uow().read() as uow:
        query = select(DeviceRow).where(DeviceRow.asset_tag == tag)
        row = uow.session.scalars(query.options(undefer(DeviceRow.source_record))).one()
        uow.session.expunge(row)
        return row


def test_check_ins_the_same_day_write_nothing_and_a_new_day_writes_the_contact(
    db: Database,
) -> None:
    record = copy.deepcopy(RECORD)
    record["general"]["lastContactTime"] = "2026-10-30T08:00:00.000Z"
    assert _apply(db, _mac(record)).created == 1
    tag = _mac(record).asset_tag

    record["general"] |= {
        "lastContactTime": "2026-10-30T20:15:00.000Z",
        "lastIpAddress": "10.9.8.7",
    }
    assert (_apply(db, _mac(record)).updated, _row(db, tag).posture_last_contact_time) == (
        0,
        datetime(2026, 10, 30, 8, 0, tzinfo=UTC),
    )

    record["general"]["lastContactTime"] = "2026-10-31T07:00:00.000Z"
    assert _apply(db, _mac(record)).updated == 1
    row = _row(db, tag)
    assert row.posture_last_contact_time == datetime(2026, 10, 31, 7, 0, tzinfo=UTC)
    # The kept record leaves out what moves on every report: never a stale copy of it.
    kept = json.loads(row.source_record or "")["general"]
    assert "lastIpAddress" not in kept and "lastContactTime" not in kept

    # One posture field, nothing else: written.
    sip = record["security"]["sipStatus"]
    record["security"]["sipStatus"] = "DISABLED" if sip == "ENABLED" else "ENABLED"
    assert _apply(db, _mac(record)).updated == 1
    assert _row(db, tag).posture_sip is (sip != "ENABLED")
    assert _apply(db, _mac(record)).updated == 0


def test_an_oversized_record_is_kept_as_json_that_says_what_it_left_out(
    db: Database, cli: Cli
) -> None:
    record = copy.deepcopy(RECORD)
    # A lab Mac with a thousand accounts, one per student: far over the cap.
    record["localUserAccounts"] += [
        {"uid": str(1000 + n), "username": f"student{n:04d}", "homeDirectory": f"/Users/s{n}"}
        for n in range(1000)
    ]
    mapped = _mac(record)
    _apply(db, mapped)

    printed = ok(cli("devices", "get", mapped.asset_tag, "--raw")).out
    kept = json.loads(printed)
    assert len(json.dumps(kept, separators=(",", ":"), ensure_ascii=False)) <= RAW_RECORD_LIMIT
    assert kept[TRUNCATED]["sections_left_out"] == ["localUserAccounts"]
    assert kept[TRUNCATED]["bytes"] > RAW_RECORD_LIMIT
    assert kept["security"] == record["security"] and kept["id"] == record["id"]
    # The profile still has every person the full record names.
    assert len(devices.get_device(db.uow(), mapped.asset_tag).profile.os_usernames) > 1000  # type: ignore[union-attr]


def test_the_management_account_never_makes_its_user_a_user_of_the_mac(db: Database) -> None:
    # The simulator's Macs carry the management account (casper, jamfadmin, ...) as a
    # local account, uid 503: the sync must leave it out of who uses the Mac.
    ident = next(
        i
        for i in range(1, 400)
        if (r := ComputerGenerator(seed=3, reference_time=REFERENCE).record(i))["general"][
            "remoteManagement"
        ]["managementUsername"]
        == "casper"
        and any(a["username"] == "casper" for a in r["localUserAccounts"])
    )
    record = ComputerGenerator(seed=3, reference_time=REFERENCE).record(ident)
    mapped = _mac(record, frozenset({"itadmin"}))
    assert mapped.profile.os_usernames == (record["userAndLocation"]["username"],)
    _apply(db, mapped)

    from inventory.domain import CollectedData
    from inventory.drift import AutoEnrollRefused

    collected = CollectedData(
        serial_number=mapped.asset_tag,
        os_type=OSType.MACOS,
        model_identifier=mapped.profile.model_identifier,
        os_version=mapped.profile.os_version,
        os_build=mapped.profile.os_build,
        os_login_user="casper",
        jamf_binary_version=mapped.profile.jamf_binary_version,
    )
    with pytest.raises(AutoEnrollRefused, match="user casper is not a user of device"):
        auto_enroll.check_and_mint(db.uow(), user="casper", collected=collected)


def test_a_profile_without_builds_or_usernames_diffs_as_not_checked(db: Database, cli: Cli) -> None:
    from inventory.domain import CollectedData

    profile = Profile(model_identifier="Mac14,2", os_version="15.1", external_id="9")
    _apply(db, SourceRecord("C02NOBUILD01", OSType.MACOS, "9", profile, "h-9"))
    device = devices.get_device(db.uow(), "C02NOBUILD01")
    data = CollectedData(
        serial_number="C02NOBUILD01",
        os_type=OSType.MACOS,
        model_identifier="Mac14,2",
        os_version="15.1",
        os_build="24B83",
        os_login_user="alice",
    )
    uow = db.uow()
    with uow:
        devices.record_collected_data_within(uow, device.id, data, keep=10)
        uow.commit()

    result = ok(cli("devices", "diff", "C02NOBUILD01"))
    checks = {line.split()[0]: line for line in result.out.splitlines()[3:10] if line.strip()}
    not_checked = "not in the MDM profile: not checked"
    for name in ("os_build", "jamf_binary_version", "os_login_user"):
        assert checks[name].endswith(not_checked), checks[name]
    assert checks["os_version"].endswith(" ok")
    assert result.out.splitlines()[-1] == (
        "Every field the MDM profile has matches; not checked, as the profile does not have "
        "them: os_build, jamf_binary_version, os_login_user."
    )
    fields = json.loads(ok(cli("devices", "diff", "C02NOBUILD01", "--format", "json")).out)
    by_name = {f["field"]: f for f in fields["fields"]}
    assert (by_name["os_login_user"]["checked"], by_name["os_login_user"]["ok"]) == (False, None)
    assert by_name["os_login_user"]["check"] == not_checked
    assert (by_name["os_version"]["checked"], by_name["os_version"]["ok"]) == (True, True)
