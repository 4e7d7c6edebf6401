"""``devtrust jamf status``, ``device asset-tag``/``collect``, ``devices diff`` and the
installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inventory.db import Database
from tests.cli import (
    TAG,
    Cli,
    add_device,
    both_ways,
    ok,
    table,
)

# --- the installed console script ---------------------------------------------------------


def test_console_script_reports_a_bad_argument_in_one_line_without_traceback(
    tmp_path: Path,
) -> None:
    script = Path(sys.executable).parent / "devtrust"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env["DEVTRUST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'devtrust.db'}"
    done = subprocess.run(
        [str(script), "devices", "add", "--os=plan9", "--asset-tag=X1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ")
    assert "unknown OS 'plan9'" in line
    assert done.stdout == ""


@both_ways
def test_jamf_status_shows_last_runs_and_the_alert(cli: Cli, db: Database) -> None:
    from inventory.services import source_sync as store

    assert "no sync has finished yet" in ok(cli("jamf", "status")).err
    full = store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
    store.finish_run(db.uow(), full, status=store.SUCCEEDED, actor="sync")
    for _ in range(2):
        run = store.start_run(db.uow(), source="jamf", inventory="default", kind="partial")
        store.finish_run(db.uow(), run, status=store.FAILED, actor="sync", error="Jamf said no")
    result = cli("jamf", "status")
    assert result.code == 3, result.err  # the alert is raised: a monitoring check can tell
    _, rows = table(result.out.split("\nALERT")[0])
    assert [(r["Kind"], r["Status"], r["Error"]) for r in rows] == [
        ("partial", "failed", "Jamf said no"),
        ("full", "succeeded", ""),
    ]
    assert "ALERT: the last two syncs of jamf/default failed" in result.out
    as_json = cli("jamf", "status", "--format", "json")
    assert as_json.code == 3
    [entry] = json.loads(as_json.out)
    assert entry["alert"] is True and entry["running"] is None
    assert entry["last_full"]["id"] == full and entry["last_partial"]["error"] == "Jamf said no"
    # One success ends the alert, and the status exits 0 again.
    run = store.start_run(db.uow(), source="jamf", inventory="default", kind="partial")
    store.finish_run(db.uow(), run, status=store.SUCCEEDED, actor="sync")
    assert "ALERT" not in ok(cli("jamf", "status")).out


def test_jamf_status_names_a_bad_inventory_setting(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DEVTRUST_JAMF_INVENTORY", '[{"sync_period_partial": "24h", "sync_period_full": "6h"}]'
    )
    result = cli("jamf", "status")
    assert result.code != 0
    assert "jamf_inventory[0]: sync_period_partial (24h) must be shorter" in result.error_line


def test_device_asset_tag_and_collect_read_the_dmi_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "chassis_asset_tag").write_text("To Be Filled By O.E.M.\n")
    (dmi / "product_serial").write_text("LNX-4C4C4544\n")
    (dmi / "product_name").write_text("ThinkPad X1\n")
    monkeypatch.setenv("DEVTRUST_DMI_DIR", str(dmi))
    assert ok(cli("device", "asset-tag")).out == "LNX-4C4C4544\n"
    data = json.loads(ok(cli("device", "collect", "--format", "json")).out)
    assert (data["serial_number"], data["os_type"], data["model_identifier"]) == (
        "LNX-4C4C4544",
        "linux",
        "ThinkPad X1",
    )
    assert data["reported_asset_tag"] is None
    (dmi / "product_serial").write_text("Default string\n")
    assert "reports no serial number" in cli("device", "asset-tag").error_line


def test_device_asset_tag_without_a_dmi_directory_names_it_and_the_setting(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM or a container has no /sys/class/dmi/id: not "empty or placeholders"."""
    missing = tmp_path / "no-dmi"
    monkeypatch.setenv("DEVTRUST_DMI_DIR", str(missing))
    for command in ("asset-tag", "collect"):
        line = cli("device", command).error_line
        assert f"the DMI directory {missing} does not exist" in line
        assert "set DEVTRUST_DMI_DIR" in line
        assert "placeholders" not in line


@pytest.mark.parametrize(
    ("user", "message"),
    [
        pytest.param("", "--user: user name is empty", id="empty"),
        pytest.param("   ", "--user: user name is empty", id="blank"),
        pytest.param("../../etc/x", "--user: invalid user name '../../etc/x'", id="a-path"),
        pytest.param("a" * 65, "use up to 64 letters", id="too-long"),
    ],
)
def test_device_login_checks_the_user_name_before_anything_else(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str, message: str
) -> None:
    """Nothing is collected or sent: the service's address does not even answer."""
    from tests.processes import free_port

    monkeypatch.setenv("DEVTRUST_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DEVTRUST_USER_TOKEN", "not-a-real-credential")
    monkeypatch.setenv("DEVTRUST_DMI_DIR", str(tmp_path / "no-dmi"))
    monkeypatch.setenv("DEVTRUST_AGENT_DIR", str(tmp_path / "agent"))
    refused = cli("device", "login", "--user", user)
    assert refused.code != 0
    assert message in refused.error_line
    assert not (tmp_path / "agent").exists()


# -- devices diff ------------------------------------------------------------------------


def _synced_mac_with_report(db: Database, **collected: str) -> None:
    from inventory.domain import CollectedData, OSType, Profile
    from inventory.services import devices as svc

    profile = Profile(
        model_identifier="MacBookPro18,3",
        os_version="14.2.1",
        os_build="23C71",
        os_usernames=("alice",),
        jamf_binary_version="11.1.0",
    )
    device = svc.register_device(
        db.uow(), os_type="macos", asset_tag=TAG, actor="jamf", profile=profile
    )
    report: dict[str, Any] = {
        "model_identifier": "MacBookPro18,3",
        "os_version": "14.2.1",
        "os_build": "23C71",
        "os_login_user": "alice",
        "jamf_binary_version": "11.1.0",
        **collected,
    }
    data = CollectedData(serial_number=TAG, os_type=OSType.MACOS, **report)
    uow = db.uow()
    with uow:
        svc.record_collected_data_within(uow, device.id, data, keep=10)
        uow.commit()


@both_ways
def test_devices_diff_marks_each_drifted_field_and_says_what_to_do(db: Database, cli: Cli) -> None:
    _synced_mac_with_report(db, os_version="14.3", os_login_user="mallory")
    result = cli("devices", "diff", TAG)
    assert result.code == 1 and result.err == ""
    first, *lines = result.out.splitlines()
    assert first.startswith(f"Device {TAG}/macOS: collected 2026-")
    _, rows = table("\n".join(lines[:9]))
    checks = {row["Field"]: (row["Collected"], row["MDM Profile"], row["Check"]) for row in rows}
    assert checks["os_version"] == ("14.3", "14.2.1", "FAIL: differs")
    assert checks["os_login_user"] == (
        "mallory", "alice", "FAIL: is not among the profile's usernames"
    )  # fmt: skip
    assert checks["model_identifier"] == ("MacBookPro18,3", "MacBookPro18,3", "ok")
    assert lines[9] == "2 field(s) would fail auto-enrollment:"
    assert "run `devtrust jamf sync`" in lines[10] and lines[10].startswith("- os_version: ")
    assert lines[11].startswith("- os_login_user: fix the device's profile in the MDM")

    as_json = json.loads(cli("devices", "diff", TAG, "--format", "json").out)
    failed = [f["field"] for f in as_json["fields"] if not f["ok"]]
    assert failed == ["os_version", "os_login_user"]


@both_ways
def test_devices_diff_of_a_matching_device_exits_0(db: Database, cli: Cli) -> None:
    _synced_mac_with_report(db)
    result = ok(cli("devices", "diff", TAG))
    assert result.out.splitlines()[-1] == (
        "Every field matches: auto-enrollment would accept this data."
    )


@both_ways
def test_devices_diff_without_collected_data_says_when_it_comes(cli: Cli) -> None:
    add_device(cli)
    line = cli("devices", "diff", TAG).error_line
    assert line == (
        f"error: device {TAG}/macOS has sent no collected data yet: it is recorded when the "
        "device enrolls or logs in (run `devtrust device collect` on the device to see it)"
    )
    assert cli("devices", "diff", "NOPE").error_line == "error: device 'NOPE' not found"
