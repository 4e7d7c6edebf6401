"""The ``devtrust`` command line as an admin uses it, on SQLite and on the real PostgreSQL.

Every test runs the real CLI in-process (``worker.cli.run``) against the database the
``db`` fixture migrates and empties afterwards, and asserts only what a person at the
terminal sees: stdout, stderr and the exit status.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from inventory.db import HEAD_REVISION, Database
from worker.cli import run

TAG = "C00AA0AAAA0A"
ACTOR = "ops-admin"
CREDENTIAL = re.compile(r"[A-Za-z0-9_-]{43,}")
ENROLL_LINE = re.compile(r"devtrust device enroll --token=([A-Za-z0-9_-]{20,})")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a failed command prints; fails the test if it printed more."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.err!r}"
        assert lines[0].startswith("error: "), lines[0]
        assert "Traceback" not in self.err
        return lines[0]


class Cli(Protocol):
    def __call__(self, *argv: str) -> Result: ...


@pytest.fixture
def cli(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """``cli("devices", "ls")`` runs ``devtrust devices ls`` on the test's database."""
    for name in list(os.environ):
        if name.startswith("DEVTRUST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEVTRUST_DATABASE_URL", db_url)
    monkeypatch.setenv("LOGNAME", ACTOR)  # what the audit log names as the acting admin
    monkeypatch.delenv("VISUAL", raising=False)

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = run(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


def table(text: str) -> tuple[str, list[dict[str, str]]]:
    """A plain CLI table: the header line and one dict per row, columns cut at the dashes."""
    header, dashes, *rows = text.splitlines()
    spans = [m.span() for m in re.finditer(r"-+", dashes)]
    bounds = [(start, end) for start, end in spans[:-1]] + [(spans[-1][0], None)]
    names = [header[start:end].strip() for start, end in bounds]
    return header, [
        {name: row[start:end].strip() for name, (start, end) in zip(names, bounds, strict=True)}
        for row in rows
    ]


def add_device(cli: Cli, tag: str = TAG, os_type: str = "macos") -> str:
    """Add a device and return its id as ``devices get`` shows it."""
    ok(cli("devices", "add", f"--os={os_type}", f"--asset-tag={tag}"))
    device_id = json.loads(ok(cli("devices", "get", tag, "--format", "json")).out)["id"]
    assert isinstance(device_id, str)
    return device_id


def preference(cli: Cli) -> dict[str, Any]:
    shown = yaml.safe_load(ok(cli("config", "show")).out)
    assert isinstance(shown, dict)
    return shown


# --- the reference guide's walkthrough -------------------------------------------------


def test_guide_walkthrough_add_list_enroll_remove_is_printed_and_audited(cli: Cli) -> None:
    added = ok(cli("devices", "add", "--os=macos", f"--asset-tag={TAG}"))
    assert added.out == f"Device {TAG}/macos added to the inventory\n"

    listed = ok(cli("devices", "ls"))
    header, rows = table(listed.out)
    assert header == "Asset Tag    OS    Enroll Status Device ID"
    assert listed.out.splitlines()[1] == "------------ ----- ------------- " + "-" * 36
    [row] = rows
    assert row["Asset Tag"] == TAG
    assert row["OS"] == "macOS"
    assert row["Enroll Status"] == "not enrolled"
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


def test_devices_ls_on_an_empty_inventory_prints_the_header_and_a_hint(cli: Cli) -> None:
    listed = ok(cli("devices", "ls"))
    header, rows = table(listed.out)
    assert header.split() == ["Asset", "Tag", "OS", "Enroll", "Status", "Device", "ID"]
    assert rows == []
    assert len(listed.out.splitlines()) == 2
    assert "No devices in the inventory" in listed.err
    assert "devtrust devices add" in listed.err


# --- machine-readable output -----------------------------------------------------------


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


def test_devices_ls_json_on_an_empty_inventory_is_an_empty_list(cli: Cli) -> None:
    assert json.loads(ok(cli("devices", "ls", "--format", "json")).out) == []


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
        ["devices", "add", "--os=macos", "--asset-tag=bad tag"],
        "may only hold printable ASCII without spaces",
        id="asset-tag-with-space",
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
        "device with asset tag NOPE123 not found",
        id="rm-missing-tag",
    ),
    pytest.param(
        ["devices", "rm", f"--device-id={MISSING_ID}"],
        f"device with id {MISSING_ID} not found",
        id="rm-missing-id",
    ),
    pytest.param(
        ["devices", "rm", "--device-id=not-a-uuid"], "expected a UUID", id="rm-malformed-id"
    ),
    pytest.param(
        ["devices", "rm"], "give exactly one of --device-id or --asset-tag", id="rm-neither-option"
    ),
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
        "must be longer than zero",
        id="enroll-zero-ttl",
    ),
    pytest.param(
        ["devices", "enroll"],
        "give exactly one of --asset-tag or --device-id",
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


def test_refused_enrollment_is_audited_as_failed(cli: Cli) -> None:
    cli("devices", "enroll", "--asset-tag=NOPE123")
    _, rows = table(ok(cli("audit", "ls", "--failed")).out)
    [row] = rows
    assert row["Type"] == "device.token.create"
    assert row["Result"] == "FAILED"
    assert "NOPE123" in row["Message"]


# --- users --------------------------------------------------------------------------------


def credential_of(result: Result) -> str:
    """The credential line of ``users add`` / ``reset-token`` text output."""
    found = [line for line in result.out.splitlines() if CREDENTIAL.fullmatch(line)]
    assert len(found) == 1, result.out
    return found[0]


def test_users_add_prints_the_credential_once_and_ls_never_shows_it(cli: Cli) -> None:
    added = ok(cli("users", "add", "alice", "--roles", "access,editor"))
    assert 'User "alice" created (roles: access, editor).' in added.out
    assert "DEVTRUST_USER_TOKEN" in added.out
    token = credential_of(added)

    listed = ok(cli("users", "ls"))
    _, rows = table(listed.out)
    assert [(r["User"], r["Roles"]) for r in rows] == [("alice", "access, editor")]
    assert token not in listed.out
    as_json = ok(cli("users", "ls", "--format", "json")).out
    assert [(u["name"], u["roles"]) for u in json.loads(as_json)] == [
        ("alice", ["access", "editor"])
    ]
    assert token not in as_json


def test_users_add_json_includes_the_token(cli: Cli) -> None:
    added = json.loads(ok(cli("users", "add", "bot-1", "--roles", "bot", "--format", "json")).out)
    assert added["name"] == "bot-1"
    assert added["roles"] == ["bot"]
    assert CREDENTIAL.fullmatch(added["token"])


def test_users_add_twice_is_refused(cli: Cli) -> None:
    ok(cli("users", "add", "alice", "--roles", "access"))
    refused = cli("users", "add", "alice", "--roles", "editor")
    assert refused.code != 0
    assert "user 'alice' already exists" in refused.error_line
    _, rows = table(ok(cli("users", "ls")).out)
    assert [(r["User"], r["Roles"]) for r in rows] == [("alice", "access")]


def test_users_reset_token_prints_a_new_credential(cli: Cli) -> None:
    old = credential_of(ok(cli("users", "add", "alice", "--roles", "access")))
    reset = ok(cli("users", "reset-token", "alice"))
    assert 'User "alice" has a new credential' in reset.out
    new = credential_of(reset)
    assert new != old


def test_users_rm_removes_the_user_from_the_listing(cli: Cli) -> None:
    ok(cli("users", "add", "alice", "--roles", "access"))
    ok(cli("users", "add", "bob", "--roles", "bot"))
    assert ok(cli("users", "rm", "alice")).out == 'User "alice" removed\n'
    _, rows = table(ok(cli("users", "ls")).out)
    assert [r["User"] for r in rows] == ["bob"]
    refused = cli("users", "rm", "alice")
    assert refused.code != 0
    assert "user 'alice' not found" in refused.error_line


def test_users_ls_without_users_hints_how_to_add_one(cli: Cli) -> None:
    listed = ok(cli("users", "ls"))
    assert table(listed.out)[1] == []
    assert "devtrust users add" in listed.err


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        pytest.param("access,wizard", "unknown role 'wizard'", id="unknown-role"),
        pytest.param(",", "at least one role is required", id="no-role"),
    ],
)
def test_users_add_with_a_bad_role_is_refused(cli: Cli, roles: str, message: str) -> None:
    refused = cli("users", "add", "bob", "--roles", roles)
    assert refused.code != 0
    assert message in refused.error_line
    assert refused.out == ""
    assert table(ok(cli("users", "ls")).out)[1] == []


# --- config --------------------------------------------------------------------------------


def test_config_show_is_the_default_cluster_auth_preference(cli: Cli) -> None:
    shown = preference(cli)
    assert shown["kind"] == "cluster_auth_preference"
    assert shown["spec"]["device_trust"] == {
        "mode": "optional",
        "auto_enroll": False,
        "ekcert_allowed_cas": [],
    }
    as_json = json.loads(ok(cli("config", "show", "--format", "json")).out)
    assert as_json == shown


def test_config_set_changes_the_preference_and_is_audited(cli: Cli) -> None:
    changed = ok(cli("config", "set", "device_trust.auto_enroll", "true"))
    assert changed.out == "cluster_auth_preference updated: device_trust.auto_enroll\n"
    shown = preference(cli)
    assert shown["spec"]["device_trust"]["auto_enroll"] is True
    assert shown["spec"]["device_trust"]["mode"] == "optional"

    _, rows = table(ok(cli("audit", "ls", "--type", "config.update")).out)
    [row] = rows
    assert row["Result"] == "ok"
    assert row["Actor"] == ACTOR
    assert "device_trust.auto_enroll" in row["Message"]

    again = ok(cli("config", "set", "device_trust.auto_enroll", "true"))
    assert again.out == "cluster_auth_preference unchanged\n"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param(
            "device_trust.mode", "bogus", "invalid device_trust.mode: 'bogus'", id="unknown-mode"
        ),
        pytest.param(
            "device_trust.auto_enroll", "maybe", "invalid device_trust.auto_enroll", id="not-a-bool"
        ),
        pytest.param(
            "device_trust.colour", "blue", "unknown field device_trust.colour", id="unknown-field"
        ),
        pytest.param("mode", "required", "unknown setting 'mode'", id="unknown-setting"),
        pytest.param(
            "device_trust.ekcert_allowed_cas",
            "not a pem",
            "invalid device_trust.ekcert_allowed_cas[0]: not a PEM certificate",
            id="bad-ca",
        ),
    ],
)
def test_config_set_with_a_bad_value_names_the_field_and_changes_nothing(
    cli: Cli, key: str, value: str, message: str
) -> None:
    before = ok(cli("config", "show")).out
    refused = cli("config", "set", key, value)
    assert refused.code != 0
    assert message in refused.error_line
    assert ok(cli("config", "show")).out == before
    assert table(ok(cli("audit", "ls", "--type", "config.update")).out)[1] == []


def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Set $EDITOR to a Python script whose ``body`` edits ``path`` (a pathlib.Path)."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\npath = Path(sys.argv[1])\n" + body,
        encoding="utf-8",
    )
    monkeypatch.setenv("EDITOR", shlex.join([sys.executable, str(script)]))


def replace_in_file(old: str, new: str) -> str:
    return (
        "text = path.read_text()\n"
        f"assert {old!r} in text\n"
        f"path.write_text(text.replace({old!r}, {new!r}))\n"
    )


def test_config_edit_applies_the_edited_mode(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor(tmp_path, monkeypatch, replace_in_file("mode: optional", "mode: required"))
    edited = ok(cli("config", "edit"))
    assert edited.out == "cluster_auth_preference updated: device_trust.mode\n"
    assert preference(cli)["spec"]["device_trust"]["mode"] == "required"
    _, rows = table(ok(cli("audit", "ls", "--type", "config.update")).out)
    assert len(rows) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param("path.write_text('spec: [unclosed\\n')", "not valid YAML", id="invalid-yaml"),
        pytest.param(
            replace_in_file("mode: optional", "mode: sometimes"),
            "invalid spec.device_trust.mode: 'sometimes'",
            id="unknown-mode",
        ),
        pytest.param(
            replace_in_file("auto_enroll: false", "auto_enrol: true"),
            "unknown field spec.device_trust.auto_enrol",
            id="misspelt-field",
        ),
        pytest.param(
            replace_in_file("auto_enroll: false", "auto_enroll: yes please"),
            "invalid spec.device_trust.auto_enroll",
            id="not-a-bool",
        ),
        pytest.param(
            replace_in_file("kind: cluster_auth_preference", "kind: role"),
            "invalid kind",
            id="wrong-kind",
        ),
        pytest.param(
            "path.write_text('- a list\\n')", "must be a YAML mapping", id="not-a-mapping"
        ),
        pytest.param(
            replace_in_file("mode: optional", "mode: required") + "sys.exit(3)",
            "exited with status 3; nothing changed",
            id="editor-fails",
        ),
    ],
)
def test_config_edit_that_is_invalid_is_refused_and_changes_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    before = ok(cli("config", "show")).out
    editor(tmp_path, monkeypatch, body)
    refused = cli("config", "edit")
    assert refused.code != 0
    assert message in refused.error_line
    assert refused.out == ""
    assert ok(cli("config", "show")).out == before
    assert table(ok(cli("audit", "ls", "--type", "config.update")).out)[1] == []


def test_config_edit_without_changes_says_so(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ok(cli("config", "show")).out
    editor(tmp_path, monkeypatch, "pass\n")
    unchanged = ok(cli("config", "edit"))
    assert unchanged.err.strip() == "No changes."
    assert unchanged.out == ""
    assert ok(cli("config", "show")).out == before
    assert table(ok(cli("audit", "ls", "--type", "config.update")).out)[1] == []


def test_config_edit_with_a_missing_editor_says_to_set_editor(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", str(tmp_path / "no-such-editor"))
    refused = cli("config", "edit")
    assert refused.code != 0
    assert "set $EDITOR" in refused.error_line


# --- db -----------------------------------------------------------------------------------


def test_db_current_prints_the_newest_revision(cli: Cli) -> None:
    current = ok(cli("db", "current"))
    assert current.out == f"{HEAD_REVISION}\n"
    assert current.err == ""


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


def test_jamf_status_shows_last_runs_and_the_alert(cli: Cli, db: Database) -> None:
    from inventory.services import source_sync as store

    assert "no sync has finished yet" in ok(cli("jamf", "status")).err
    full = store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
    store.finish_run(db.uow(), full, status=store.SUCCEEDED, actor="sync")
    for _ in range(2):
        run = store.start_run(db.uow(), source="jamf", inventory="default", kind="partial")
        store.finish_run(db.uow(), run, status=store.FAILED, actor="sync", error="Jamf said no")
    result = ok(cli("jamf", "status"))
    _, rows = table(result.out.split("\nALERT")[0])
    assert [(r["Kind"], r["Status"], r["Error"]) for r in rows] == [
        ("partial", "failed", "Jamf said no"),
        ("full", "succeeded", ""),
    ]
    assert "ALERT: the last two syncs of jamf/default failed" in result.out
    [entry] = json.loads(ok(cli("jamf", "status", "--format", "json")).out)
    assert entry["alert"] is True and entry["running"] is None
    assert entry["last_full"]["id"] == full and entry["last_partial"]["error"] == "Jamf said no"


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


def test_devices_diff_of_a_matching_device_exits_0(db: Database, cli: Cli) -> None:
    _synced_mac_with_report(db)
    result = ok(cli("devices", "diff", TAG))
    assert result.out.splitlines()[-1] == (
        "Every field matches: auto-enrollment would accept this data."
    )


def test_devices_diff_without_collected_data_says_when_it_comes(cli: Cli) -> None:
    add_device(cli)
    line = cli("devices", "diff", TAG).error_line
    assert line == (
        f"error: device {TAG}/macOS has sent no collected data yet: it is recorded when the "
        "device enrolls or logs in (run `devtrust device collect` on the device to see it)"
    )
    assert cli("devices", "diff", "NOPE").error_line == "error: device 'NOPE' not found"
