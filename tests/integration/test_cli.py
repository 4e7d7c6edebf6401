"""``devtrust devices``, as the reference guide walks through it: its output for people
and for scripts, and its refusals (one line, non-zero, nothing changed)."""

from __future__ import annotations

import json
import re
import uuid
from typing import cast

import pytest
import yaml

from inventory.db import Database
from tests.cli import (
    ACTOR,
    ENROLL_LINE,
    TAG,
    UUID,
    Cli,
    add_device,
    both_ways,
    ok,
    remotely,
    table,
)

# --- the reference guide's walkthrough -------------------------------------------------


@both_ways
def test_guide_walkthrough_add_list_enroll_remove_is_printed_and_audited(cli: Cli) -> None:
    added = ok(cli("devices", "add", "--os=macos", f"--asset-tag={TAG}"))
    assert added.out == f"Device {TAG}/macOS added to the inventory\n"

    listed = ok(cli("devices", "ls"))
    header, rows = table(listed.out)
    assert header == "Asset Tag    OS    Enroll Status Trust Level Device ID"
    assert listed.out.splitlines()[1] == "------------ ----- ------------- ----------- " + "-" * 36
    [row] = rows
    assert row["Asset Tag"] == TAG
    assert row["OS"] == "macOS"
    assert row["Enroll Status"] == "not enrolled"
    assert row["Trust Level"] == "-"
    assert UUID.fullmatch(row["Device ID"])
    first_id = row["Device ID"]

    enrolled = ok(cli("devices", "enroll", f"--asset-tag={TAG}"))
    lines = enrolled.out.splitlines()
    assert lines[0] == f'Run the command below on device "{TAG}" to enroll it:'
    assert ENROLL_LINE.fullmatch(lines[1]), lines[1]
    assert len(lines) == 2
    assert "the token expires in 1h" in enrolled.err

    removed = ok(cli("devices", "rm", f"--asset-tag={TAG}"))
    assert removed.out == f'Device "{TAG}" removed\n'
    assert table(ok(cli("devices", "ls")).out)[1] == []

    second_id = add_device(cli, "5CD1234XYZ", "windows")
    removed_by_id = ok(cli("devices", "rm", f"--device-id={second_id}"))
    assert removed_by_id.out == f'Device "{second_id}" removed\n'
    assert table(ok(cli("devices", "ls")).out)[1] == []

    steps = [
        ("device.create", TAG),
        ("device.token.create", TAG),
        ("device.delete", TAG),
        ("device.create", "5CD1234XYZ"),
        ("device.delete", "5CD1234XYZ"),
    ]
    _, audit_rows = table(ok(cli("audit", "ls")).out)
    assert [(r["Type"], r["Asset Tag"]) for r in audit_rows] == steps
    assert {r["Result"] for r in audit_rows} == {"ok"}
    assert {r["Actor"] for r in audit_rows} == {ACTOR}
    assert f"device {TAG}/macOS added to the inventory" in audit_rows[0]["Message"]

    events = json.loads(ok(cli("audit", "ls", "--format", "json")).out)
    assert [(e["type"], e["asset_tag"]) for e in events] == steps
    assert [e["device_id"] for e in events] == [first_id] * 3 + [second_id] * 2
    assert all(e["success"] and e["actor"] == ACTOR for e in events)


@both_ways
def test_devices_ls_on_an_empty_inventory_prints_the_header_and_a_hint(cli: Cli) -> None:
    listed = ok(cli("devices", "ls"))
    header, rows = table(listed.out)
    assert header.split() == [
        "Asset",
        "Tag",
        "OS",
        "Enroll",
        "Status",
        "Trust",
        "Level",
        "Device",
        "ID",
    ]
    assert rows == []
    assert len(listed.out.splitlines()) == 2
    assert "No devices in the inventory" in listed.err
    assert "devtrust devices add" in listed.err


# --- machine-readable output -----------------------------------------------------------


@both_ways
def test_devices_ls_json_is_a_list_of_devices(cli: Cli) -> None:
    mac_id = add_device(cli, TAG, "macos")
    linux_id = add_device(cli, "LNX-0001", "linux")
    listed = json.loads(ok(cli("devices", "ls", "--format", "json")).out)
    assert isinstance(listed, list)
    by_tag = {d["asset_tag"]: d for d in listed}
    assert set(by_tag) == {TAG, "LNX-0001"}
    assert by_tag[TAG]["id"] == mac_id
    assert by_tag[TAG]["os_type"] == "macos"
    assert by_tag[TAG]["enroll_status"] == "not_enrolled"
    assert by_tag["LNX-0001"]["id"] == linux_id
    assert by_tag["LNX-0001"]["os_type"] == "linux"


@both_ways
def test_devices_ls_json_on_an_empty_inventory_is_an_empty_list(cli: Cli) -> None:
    assert json.loads(ok(cli("devices", "ls", "--format", "json")).out) == []


@both_ways
def test_devices_get_prints_json_or_a_yaml_resource_by_default(cli: Cli) -> None:
    device_id = add_device(cli)
    as_json = json.loads(ok(cli("devices", "get", TAG, "--format", "json")).out)
    assert as_json["id"] == device_id
    assert as_json["asset_tag"] == TAG
    assert as_json["os_type"] == "macos"
    assert as_json["enroll_status"] == "not_enrolled"
    assert as_json["credential"] is None

    as_yaml = yaml.safe_load(ok(cli("devices", "get", TAG)).out)
    assert as_yaml["kind"] == "device"
    assert as_yaml["spec"]["id"] == device_id
    assert as_yaml["spec"]["asset_tag"] == TAG
    assert as_yaml["spec"]["enroll_status"] == "not_enrolled"

    by_id = yaml.safe_load(ok(cli("devices", "get", device_id)).out)
    assert by_id == as_yaml


@both_ways
def test_devices_get_text_shows_one_field_per_line_and_dashes_for_nothing(
    cli: Cli, db: Database
) -> None:
    from inventory.domain import OSType, Profile, SourceRecord
    from inventory.services import source_sync as store

    add_device(cli)
    run = store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
    profile = Profile(model_identifier="Mac14,2", os_version="15.1", os_usernames=("alice", "bob"))
    record = SourceRecord(TAG, OSType.MACOS, "42", profile, "hash")
    store.apply_page(db.uow(), run, [record], source="jamf", inventory="default", track_seen=False)
    lines = dict(
        (key.strip(), value.strip())
        for key, _, value in (
            line.partition(":")
            for line in ok(cli("devices", "get", TAG, "--format", "text")).out.splitlines()
        )
    )
    assert lines["owner"] == "-" and lines["credential"] == "-"
    assert lines["profile.os_version"] == "15.1"
    assert lines["profile.os_usernames"] == "alice, bob"
    assert "None" not in lines.values()


@both_ways
def test_devices_enroll_json_carries_the_token_for_the_device(cli: Cli) -> None:
    device_id = add_device(cli)
    issued = json.loads(
        ok(cli("devices", "enroll", f"--device-id={device_id}", "--format", "json")).out
    )
    assert issued["device_id"] == device_id
    assert issued["asset_tag"] == TAG
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", issued["token"])


# --- errors: one line, non-zero, nothing changed -----------------------------------------

MISSING_ID = str(uuid.uuid4())

REFUSALS = [
    pytest.param(
        ["devices", "add", "--os=plan9", "--asset-tag=X1"], "unknown OS 'plan9'", id="unknown-os"
    ),
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag="], "asset tag is empty", id="empty-asset-tag"
    ),
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag=" + "A" * 200],
        "asset tag is 200 characters long, the limit is 128",
        id="long-asset-tag",
    ),
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag=bad\ttag"],
        "may only hold printable ASCII (no tabs or control characters)",
        id="asset-tag-with-tab",
    ),
    pytest.param(
        ["devices", "add", "--os=macos", f"--asset-tag={TAG}"],
        f"device {TAG}/macOS is already in the inventory",
        id="duplicate",
    ),
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag=NEW1", "--enroll", "--ttl", "x"],
        "invalid --ttl 'x'",
        id="add-enroll-bad-ttl",
    ),
    pytest.param(
        ["devices", "rm", "--asset-tag=NOPE123"],
        "device 'NOPE123' not found",
        id="rm-missing-tag",
    ),
    pytest.param(
        ["devices", "rm", f"--device-id={MISSING_ID}"],
        f"device {MISSING_ID!r} not found",
        id="rm-missing-id",
    ),
    pytest.param(
        ["devices", "rm", "--device-id=not-a-uuid"], "expected a UUID", id="rm-malformed-id"
    ),
    pytest.param(["devices", "rm"], "give exactly one of DEVICE", id="rm-neither-option"),
    pytest.param(
        ["devices", "rm", f"--asset-tag={TAG}", f"--device-id={MISSING_ID}"],
        "give exactly one of",
        id="rm-both-options",
    ),
    pytest.param(
        ["devices", "enroll", "--asset-tag=NOPE123"],
        "device 'NOPE123' not found",
        id="enroll-missing-device",
    ),
    pytest.param(
        ["devices", "enroll", f"--asset-tag={TAG}", "--ttl", "bogus"],
        "invalid --ttl 'bogus': use a number with a unit",
        id="enroll-bad-ttl",
    ),
    pytest.param(
        ["devices", "enroll", f"--asset-tag={TAG}", "--ttl", "0s"],
        "invalid --ttl '0s': must be at least 1m and at most 7d",
        id="enroll-zero-ttl",
    ),
    pytest.param(
        ["devices", "enroll"],
        "give exactly one of DEVICE (an asset tag or a device id), --asset-tag or --device-id",
        id="enroll-neither-option",
    ),
    pytest.param(
        ["devices", "get", "NOPE123"], "device 'NOPE123' not found", id="get-missing-device"
    ),
    pytest.param(
        ["audit", "ls", "--limit", "0"], "--limit must be at least 1", id="audit-limit-zero"
    ),
    pytest.param(
        ["audit", "ls", "--since", "yesterday"], "invalid --since 'yesterday'", id="audit-bad-since"
    ),
    # Durations are bounded as they are parsed: nothing is written before a value is
    # refused, and no value overflows later ("unexpected OverflowError").
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag=NEW1", "--enroll", "--ttl", "99999d"],
        "invalid --ttl '99999d': must be at least 1m and at most 7d",
        id="add-enroll-ttl-too-long-adds-no-device",
    ),
    pytest.param(
        ["devices", "add", "--os=macos", "--asset-tag=NEW1", "--enroll", "--ttl", "1ms"],
        "invalid --ttl '1ms': must be at least 1m and at most 7d",
        id="add-enroll-dead-token-ttl",
    ),
    pytest.param(
        ["devices", "enroll", f"--asset-tag={TAG}", "--ttl", "99999999999999999999d"],
        "invalid --ttl '99999999999999999999d': must be at least 1m and at most 7d",
        id="enroll-ttl-overflow",
    ),
    pytest.param(
        ["devices", "enroll", TAG, "--ttl", "59s"],
        "invalid --ttl '59s': must be at least 1m",
        id="enroll-ttl-under-a-minute",
    ),
    pytest.param(
        ["audit", "ls", "--since", "999999999d"],
        "invalid --since '999999999d': must be longer than zero and at most 36500d",
        id="audit-since-overflow",
    ),
    pytest.param(
        ["audit", "ls", "--limit", "1" + "0" * 30],
        "--limit must be at least 1 and at most 100,000",
        id="audit-limit-overflow",
    ),
    pytest.param(
        ["devices", "get", TAG, "--os", "linux"],
        f"device '{TAG}' on Linux not found",
        id="get-on-another-os",
    ),
    pytest.param(
        ["devices", "get", TAG, f"--device-id={MISSING_ID}"],
        "give exactly one of DEVICE",
        id="get-two-references",
    ),
    pytest.param(
        ["devices", "unenroll", "--device-id=not-a-uuid"],
        "invalid device id 'not-a-uuid': expected a UUID",
        id="unenroll-malformed-id",
    ),
    pytest.param(
        ["audit", "ls", "--type", "device.enrol"],
        "unknown event type 'device.enrol': use one of device.create,",
        id="audit-unknown-type",
    ),
]


@pytest.mark.parametrize(("argv", "message"), REFUSALS)
def test_refused_command_prints_one_error_line_and_changes_no_device(
    cli: Cli, argv: list[str], message: str
) -> None:
    add_device(cli)
    before = ok(cli("devices", "ls")).out

    refused = cli(*argv)

    assert refused.code != 0
    assert message in refused.error_line
    assert refused.out == ""
    assert ok(cli("devices", "ls")).out == before



@remotely
def test_every_refusal_is_the_same_line_through_the_admin_api(cli: Cli) -> None:
    """The refusals above, each on the same inventory one after the other (none changes
    it), with the CLI calling the API: the service refuses them in the same words."""
    add_device(cli)
    before = ok(cli("devices", "ls")).out
    for param in REFUSALS:
        argv, message = cast(tuple[list[str], str], param.values)
        refused = cli(*argv)
        assert refused.code == 1, (param.id, refused)
        assert message in refused.error_line, param.id
        assert refused.out == "", param.id
    assert ok(cli("devices", "ls")).out == before

USAGE_ERRORS = [
    pytest.param(
        ["devices", "add", f"--asset-tag={TAG}"],
        "Missing option '--os'",
        id="missing-required-option",
    ),
    pytest.param(["users", "add", "bob"], "Missing option '--roles'", id="missing-roles"),
    pytest.param(["devices", "frob"], "No such command 'frob'", id="unknown-command"),
    pytest.param(
        ["devices", "get", TAG, "--format", "xml"],
        "Invalid value for '--format': 'xml' is not one of 'text', 'json', 'yaml'",
        id="bad-choice",
    ),
    # Each command offers only the formats it prints: none falls back to text unasked.
    *(
        pytest.param(
            [*argv, "--format", "yaml"],
            "Invalid value for '--format': 'yaml' is not one of 'text', 'json'",
            id=f"{'-'.join(argv[:2])}-yaml",
        )
        for argv in (
            ["devices", "ls"],
            ["devices", "diff", TAG],
            ["devices", "enroll", f"--asset-tag={TAG}"],
            ["audit", "ls"],
            ["users", "ls"],
            ["users", "add", "bob", "--roles", "access"],
            ["jamf", "status"],
            ["device", "collect"],
        )
    ),
    pytest.param(
        ["config", "show", "--format", "text"],
        "Invalid value for '--format': 'text' is not one of 'yaml', 'json'",
        id="config-show-text",
    ),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_error_exits_2_naming_the_problem(cli: Cli, argv: list[str], message: str) -> None:
    before = ok(cli("devices", "ls")).out
    refused = cli(*argv)
    assert "Traceback" not in refused.err
    assert "unexpected" not in refused.err
    assert message in refused.err
    assert refused.code == 2
    assert ok(cli("devices", "ls")).out == before


def test_usage_error_is_refused_without_traceback_or_change(cli: Cli) -> None:
    """What holds today and must keep holding once usage errors exit 2."""
    before = ok(cli("devices", "ls")).out
    refused = cli("devices", "add", f"--asset-tag={TAG}")
    assert refused.code != 0
    assert "Traceback" not in refused.err
    assert "os" in refused.err
    assert refused.out == ""
    assert ok(cli("devices", "ls")).out == before


@both_ways
def test_refused_enrollment_is_audited_as_failed(cli: Cli) -> None:
    cli("devices", "enroll", "--asset-tag=NOPE123")
    _, rows = table(ok(cli("audit", "ls", "--failed")).out)
    [row] = rows
    assert row["Type"] == "device.token.create"
    assert row["Result"] == "FAILED"
    assert "NOPE123" in row["Message"]


@both_ways
def test_devices_add_user_assigns_the_device_and_get_shows_it_in_every_format(
    cli: Cli,
) -> None:
    ok(cli("users", "add", "alice", "--roles", "access"))
    added = ok(cli("devices", "add", "--os", "linux", "--asset-tag", "LNX-0042", "--user", "alice"))
    assert "LNX-0042" in added.out
    assert (
        json.loads(ok(cli("devices", "get", "LNX-0042", "--format", "json")).out)["assigned_user"]
        == "alice"
    )
    assert yaml.safe_load(ok(cli("devices", "get", "LNX-0042")).out)["spec"]["assigned_user"] == (
        "alice"
    )
    text = ok(cli("devices", "get", "LNX-0042", "--format", "text")).out
    assert any(
        line.split(":") == ["assigned_user", " alice"] for line in map(str.strip, text.splitlines())
    )


@both_ways
def test_devices_add_with_an_unknown_user_is_refused_and_adds_nothing(cli: Cli) -> None:
    refused = cli("devices", "add", "--os", "linux", "--asset-tag", "LNX-0043", "--user", "nobody")
    assert refused.code != 0
    assert "user 'nobody' not found: add them first (`devtrust users add`)" in refused.error_line
    assert json.loads(ok(cli("devices", "ls", "--format", "json")).out) == []
