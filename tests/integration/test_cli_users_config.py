"""``devtrust users``, ``config`` and ``db``, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from inventory.db import HEAD_REVISION
from tests.cli import (
    ACTOR,
    CREDENTIAL,
    Cli,
    Result,
    both_ways,
    ok,
    preference,
    table,
    without_admin,
)

# --- users --------------------------------------------------------------------------------


def credential_of(result: Result) -> str:
    """The credential line of ``users add`` / ``reset-token`` text output."""
    found = [line for line in result.out.splitlines() if CREDENTIAL.fullmatch(line)]
    assert len(found) == 1, result.out
    return found[0]


@both_ways
def test_users_add_prints_the_credential_once_and_ls_never_shows_it(cli: Cli) -> None:
    added = ok(cli("users", "add", "alice", "--roles", "access,editor"))
    assert 'User "alice" created (roles: access, editor).' in added.out
    assert "DEVTRUST_USER_TOKEN" in added.out
    token = credential_of(added)

    listed = ok(cli("users", "ls"))
    rows = without_admin(table(listed.out)[1])
    assert [(r["User"], r["Roles"]) for r in rows] == [("alice", "access, editor")]
    assert token not in listed.out
    as_json = ok(cli("users", "ls", "--format", "json")).out
    assert [(u["name"], u["roles"]) for u in without_admin(json.loads(as_json))] == [
        ("alice", ["access", "editor"])
    ]
    assert token not in as_json


def test_users_add_json_includes_the_token(cli: Cli) -> None:
    added = json.loads(ok(cli("users", "add", "bot-1", "--roles", "bot", "--format", "json")).out)
    assert added["name"] == "bot-1"
    assert added["roles"] == ["bot"]
    assert CREDENTIAL.fullmatch(added["token"])


@both_ways
def test_users_add_twice_is_refused(cli: Cli) -> None:
    ok(cli("users", "add", "alice", "--roles", "access"))
    refused = cli("users", "add", "alice", "--roles", "editor")
    assert refused.code != 0
    assert "user 'alice' already exists" in refused.error_line
    rows = without_admin(table(ok(cli("users", "ls")).out)[1])
    assert [(r["User"], r["Roles"]) for r in rows] == [("alice", "access")]


@both_ways
def test_users_reset_token_prints_a_new_credential(cli: Cli) -> None:
    old = credential_of(ok(cli("users", "add", "alice", "--roles", "access")))
    reset = ok(cli("users", "reset-token", "alice"))
    assert 'User "alice" has a new credential' in reset.out
    new = credential_of(reset)
    assert new != old


@both_ways
def test_users_rm_removes_the_user_from_the_listing(cli: Cli) -> None:
    ok(cli("users", "add", "alice", "--roles", "access"))
    ok(cli("users", "add", "bob", "--roles", "bot"))
    assert ok(cli("users", "rm", "alice")).out == 'User "alice" removed\n'
    rows = without_admin(table(ok(cli("users", "ls")).out)[1])
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


@both_ways
def test_users_add_and_edit_declare_the_logins_a_user_has_on_devices(cli: Cli) -> None:
    ok(
        cli(
            "users",
            "add",
            "alice",
            "--roles",
            "access",
            "--logins",
            "alice,alice.smith@corp.example",
        )
    )
    rows = without_admin(table(ok(cli("users", "ls")).out)[1])
    assert [(r["User"], r["Logins"]) for r in rows] == [
        ("alice", "alice, alice.smith@corp.example")
    ]
    edited = ok(cli("users", "edit", "alice", "--logins", "asmith", "--roles", "access,editor"))
    assert edited.out == 'User "alice" updated (roles: access, editor; logins: asmith).\n'
    [user] = without_admin(json.loads(ok(cli("users", "ls", "--format", "json")).out))
    assert (user["roles"], user["logins"]) == (["access", "editor"], ["asmith"])
    _, events = table(ok(cli("audit", "ls", "--type", "user.update")).out)
    assert "user alice now has roles access, editor and logins asmith" in events[-1]["Message"]
    assert ok(cli("users", "edit", "alice", "--logins", "")).out.endswith("logins: -).\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("edit", "alice"), "nothing to change: give --roles and/or --logins",
                     id="nothing"),
        pytest.param(("edit", "alice", "--logins", "al ice"), "--logins: invalid user name",
                     id="bad-login"),
        pytest.param(("edit", "alice", "--roles", "wizard"), "unknown role 'wizard'",
                     id="bad-role"),
        pytest.param(("edit", "nobody", "--roles", "access"), "user 'nobody' not found",
                     id="no-user"),
        pytest.param(("add", "bob", "--roles", "access", "--logins", "b;ob"),
                     "--logins: invalid user name 'b;ob'", id="add-bad-login"),
    ],
)  # fmt: skip
def test_users_edit_refuses_bad_input_in_one_line_and_changes_nothing(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    ok(cli("users", "add", "alice", "--roles", "access", "--logins", "alice"))
    refused = cli("users", *args)
    assert refused.code != 0
    assert message in refused.error_line
    rows = without_admin(table(ok(cli("users", "ls")).out)[1])
    assert [(r["User"], r["Roles"], r["Logins"]) for r in rows] == [("alice", "access", "alice")]


# --- config --------------------------------------------------------------------------------


@both_ways
def test_config_show_is_the_default_cluster_auth_preference(cli: Cli) -> None:
    shown = preference(cli)
    assert shown["kind"] == "cluster_auth_preference"
    assert shown["spec"]["device_trust"] == {
        "mode": "optional",
        "auto_enroll": False,
        "ekcert_allowed_cas": [],
        "min_attestation": "any",
    }
    as_json = json.loads(ok(cli("config", "show", "--format", "json")).out)
    assert as_json == shown


@both_ways
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


@both_ways
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
@both_ways
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


@pytest.mark.parametrize("command", ["downgrade", "upgrade"])
@pytest.mark.parametrize("revision", ["nonsense", "0001:0002", "A" * 10_000])
def test_db_to_an_unknown_revision_is_one_line_and_changes_nothing(
    cli: Cli, command: str, revision: str
) -> None:
    refused = cli("db", command, revision, *(["--yes"] if command == "downgrade" else []))
    assert refused.code != 0
    line = refused.error_line
    assert line.startswith(f"error: cannot {command} to revision '")
    assert "CommandError" not in line and "unexpected" not in line
    assert len(line) < 500
    assert ok(cli("db", "current")).out == f"{HEAD_REVISION}\n"


# --- config set @FILE ---------------------------------------------------------------------


def test_config_set_from_an_endless_file_reads_at_most_a_mebibyte(cli: Cli) -> None:
    import time

    before = ok(cli("config", "show")).out
    started = time.monotonic()
    refused = cli("config", "set", "device_trust.ekcert_allowed_cas", "@/dev/zero")
    assert time.monotonic() - started < 10
    assert refused.code != 0
    assert "'/dev/zero' is larger than 1024 KiB, the most a CA bundle file may hold" in (
        refused.error_line
    )
    assert ok(cli("config", "show")).out == before


def test_config_set_from_a_binary_file_says_it_is_not_pem_text(cli: Cli, tmp_path: Path) -> None:
    binary = tmp_path / "ca.der"
    binary.write_bytes(b"\x30\x82\xff\xfe" * 100)
    refused = cli("config", "set", "device_trust.ekcert_allowed_cas", f"@{binary}")
    assert "is not UTF-8 text (PEM certificates are)" in refused.error_line


# --- where the inventory is ---------------------------------------------------------------


def test_a_sqlite_database_in_a_missing_directory_is_refused_not_created(
    bare_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    monkeypatch.setenv("DEVTRUST_DATABASE_URL", f"sqlite:///{missing / 'x.db'}")
    for argv in (("devices", "ls"), ("devices", "add", "--os=macos", "--asset-tag=X1")):
        refused = bare_cli(*argv)
        assert refused.code != 0
        assert f"the SQLite database {missing / 'x.db'} is in a directory that does not exist" in (
            refused.error_line
        )
        assert "`devtrust db upgrade`" in refused.error_line
    assert not (tmp_path / "nonexistent").exists()
    # `db upgrade` is how a new inventory is made there on purpose.
    assert ok(bare_cli("db", "upgrade")).out == f"database at revision {HEAD_REVISION}\n"
    assert (missing / "x.db").is_file()
    ok(bare_cli("devices", "add", "--os=macos", "--asset-tag=X1"))


def test_the_default_database_is_made_under_the_data_directory(
    bare_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVTRUST_DATA_DIR", str(tmp_path / "fresh" / "data"))
    ok(bare_cli("devices", "add", "--os=macos", "--asset-tag=X1"))
    assert (tmp_path / "fresh" / "data" / "devtrust.db").is_file()


@pytest.mark.parametrize("query", ["?mode=ro", "?mode=ro&uri=true", "?cache=shared"])
def test_a_sqlite_url_with_options_is_refused_in_one_line(
    bare_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, query: str
) -> None:
    monkeypatch.setenv("DEVTRUST_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}{query}")
    refused = bare_cli("devices", "ls")
    assert refused.code != 0
    assert "a SQLite URL takes no options" in refused.error_line
    assert "SAWarning" not in refused.err
    assert list(tmp_path.iterdir()) == []
