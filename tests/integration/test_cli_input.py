"""What the CLI makes of what it is given: settings named as the user set them, input
quoted only in part (in errors and in the audit log), the acting admin checked before any
write, and one way to name a device in every command that takes one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inventory.db import Database
from tests.cli import ENROLL_LINE, TAG, Cli, add_device, ok, table


def test_a_bad_token_ttl_setting_is_named_as_the_setting_not_as_a_flag(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_device(cli)
    monkeypatch.setenv("DEVTRUST_ENROLLMENT_TOKEN_TTL", "bogus")
    for argv in (
        ("devices", "enroll", TAG),
        ("devices", "add", "--os=linux", f"--asset-tag={TAG}", "--enroll"),
    ):
        refused = cli(*argv)
        assert refused.code != 0
        line = refused.error_line
        assert "invalid setting DEVTRUST_ENROLLMENT_TOKEN_TTL 'bogus'" in line
        assert "--ttl" not in line
    assert len(table(ok(cli("devices", "ls")).out)[1]) == 1
    monkeypatch.setenv("DEVTRUST_ENROLLMENT_TOKEN_TTL", "8d")
    assert "at most 7d" in cli("devices", "enroll", TAG).error_line
    assert ok(cli("devices", "enroll", TAG, "--ttl", "1m")).code == 0  # the flag wins


LONG = "A" * 10_000


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["devices", "get", LONG], id="get"),
        pytest.param(["devices", "enroll", LONG], id="enroll"),
        pytest.param(["devices", "unenroll", LONG], id="unenroll"),
        pytest.param(["devices", "rm", LONG], id="rm"),
        pytest.param(["devices", "add", f"--os={LONG}", f"--asset-tag={TAG}"], id="add-os"),
        pytest.param(["devices", "add", "--os=macos", f"--asset-tag=a {LONG}"], id="add-tag"),
        pytest.param(["devices", "enroll", f"--asset-tag={TAG}", "--ttl", LONG], id="ttl"),
        pytest.param(["audit", "ls", "--type", LONG], id="audit-type"),
        pytest.param(["config", "set", LONG, "x"], id="config-key"),
        pytest.param(["config", "set", "device_trust.mode", LONG], id="config-value"),
        pytest.param(["users", "add", LONG, "--roles", "access"], id="user-name"),
        pytest.param(["users", "rm", LONG], id="users-rm"),
        pytest.param(["devices", "ls", "--format", LONG], id="click-choice"),
        pytest.param(["devices", "get", TAG, LONG], id="click-extra-argument"),
    ],
)
def test_a_huge_argument_is_quoted_only_in_part(cli: Cli, argv: list[str]) -> None:
    add_device(cli)
    refused = cli(*argv)
    assert refused.code != 0
    line = refused.error_line
    assert len(line) <= 510, len(line)
    assert "A" * 100 not in line


def test_a_huge_argument_is_stored_in_the_audit_log_only_in_part(cli: Cli) -> None:
    refused = cli("devices", "enroll", LONG)
    assert "(10,000 characters) not found" in refused.error_line
    [event] = json.loads(ok(cli("audit", "ls", "--failed", "--format", "json")).out)
    assert event["type"] == "device.token.create"
    assert len(event["message"]) < 300
    assert "A" * 100 not in event["message"]


def test_a_huge_audit_message_is_stored_bounded(db: Database) -> None:
    from inventory.services import audit

    audit.record_failure(db.uow(), audit.JAMF_SYNC, actor="x" * 500, message="m" * 50_000)
    [event] = audit.list_events(db.uow())
    assert len(event.message) == audit.MAX_MESSAGE_LENGTH
    assert len(event.actor) == audit.MAX_ACTOR_LENGTH


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a" * 200, id="200-characters"),
        pytest.param("ops\x1b[2Jadmin", id="escape"),
        pytest.param("ops\nadmin", id="newline"),
    ],
)
def test_an_admin_name_the_audit_log_cannot_hold_is_refused_before_any_write(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """$LOGNAME names the admin; on PostgreSQL 200 characters failed every admin write."""
    device_id = add_device(cli)
    monkeypatch.setenv("LOGNAME", name)
    for argv in (
        ("devices", "add", "--os=linux", f"--asset-tag={TAG}"),
        ("devices", "enroll", TAG),
        ("devices", "rm", TAG),
        ("config", "set", "device_trust.mode", "required"),
        ("users", "add", "bob", "--roles", "access"),
    ):
        refused = cli(*argv)
        assert refused.code != 0, argv
        assert "the acting admin's name from $LOGNAME/$USER" in refused.error_line
        assert "at most 128 printable characters" in refused.error_line
    assert [d["id"] for d in json.loads(ok(cli("devices", "ls", "--format", "json")).out)] == [
        device_id
    ]
    assert [e["type"] for e in json.loads(ok(cli("audit", "ls", "--format", "json")).out)] == [
        "device.create"
    ]
    monkeypatch.setenv("LOGNAME", "a" * 128)  # the column's width is fine on both databases
    ok(cli("devices", "rm", TAG))


# --- one way to name a device, in every command that takes one --------------------------


@pytest.mark.parametrize("how", ["argument", "--asset-tag", "--device-id", "argument-id"])
def test_every_device_command_takes_an_asset_tag_or_a_device_id_the_same_ways(
    cli: Cli, db: Database, how: str
) -> None:
    device_id = add_device(cli)
    name = {
        "argument": [TAG],
        "--asset-tag": [f"--asset-tag={TAG}"],
        "--device-id": [f"--device-id={device_id}"],
        "argument-id": [device_id],
    }[how]
    assert json.loads(ok(cli("devices", "get", *name, "--format", "json")).out)["id"] == device_id
    assert ENROLL_LINE.search(ok(cli("devices", "enroll", *name)).out)
    assert "not enrolled; nothing to do" in ok(cli("devices", "unenroll", *name)).out
    assert "has sent no collected data yet" in cli("devices", "diff", *name).error_line
    ok(cli("devices", "rm", *name))
    assert table(ok(cli("devices", "ls")).out)[1] == []


def test_two_devices_sharing_an_asset_tag_are_told_apart_by_os_in_every_command(
    cli: Cli,
) -> None:
    """The hint says `give --os or the device id`: every command takes both."""
    mac = add_device(cli, TAG, "macos")
    ok(cli("devices", "add", "--os=linux", f"--asset-tag={TAG}"))
    shown = ok(cli("devices", "get", TAG, "--os", "linux", "--format", "json")).out
    linux_id = json.loads(shown)["id"]
    for command in ("get", "enroll", "unenroll", "diff", "rm"):
        hint = cli("devices", command, TAG).error_line
        assert (
            f"asset tag '{TAG}' names devices of more than one OS: give --os or the device id"
            in hint
        )
        hint = cli("devices", command, f"--asset-tag={TAG}").error_line
        assert "give --os or the device id" in hint
    got = json.loads(ok(cli("devices", "get", TAG, "--os", "linux", "--format", "json")).out)
    assert got["id"] == linux_id
    assert '"C00AA0AAAA0A"' in ok(cli("devices", "enroll", f"--asset-tag={TAG}", "--os=macos")).out
    unenrolled = ok(cli("devices", "unenroll", TAG, "--os", "linux")).out
    assert unenrolled == f"Device {TAG}/Linux is not enrolled; nothing to do\n"
    assert "no collected data" in cli("devices", "diff", TAG, "--os", "linux").error_line
    ok(cli("devices", "rm", f"--asset-tag={TAG}", "--os=linux"))
    [left] = json.loads(ok(cli("devices", "ls", "--format", "json")).out)
    assert left["id"] == mac


def test_version_prints_the_installed_version_and_touches_no_database(bare_cli: Cli) -> None:
    from importlib.metadata import version

    result = ok(bare_cli("--version"))
    assert result.out == f"devtrust {version('devtrust')}\n" and result.err == ""
    # Eager: it answers before a command would be parsed or a setting read.
    assert ok(bare_cli("--version", "devices", "ls")).out == result.out
    bare = bare_cli()  # no arguments: the help, which names the option
    assert bare.code == 2 and "Usage: devtrust" in bare.out and "--version" in bare.out


def test_devices_ls_loads_the_postgresql_driver_only_for_postgresql(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """A command on SQLite (the embedded default) does not pay psycopg's import."""
    probe = (
        "import sys\n"
        "from worker.cli import run\n"
        "code = run(['devices', 'ls', '--format', 'json'])\n"
        "print(code, any(m.split('.')[0] in ('psycopg', 'psycopg_binary') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env |= {"DEVTRUST_DATABASE_URL": db_url, "DEVTRUST_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"0 {db_url.startswith('postgresql')}", done.stdout
