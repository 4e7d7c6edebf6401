"""The ``devtrust`` command line as an admin uses it: the ``cli`` fixture and what the
CLI tests share.

Every CLI test runs the real CLI in-process (``worker.cli.run``) against the database the
``db`` fixture migrates and empties afterwards, and asserts only what a person at the
terminal sees: stdout, stderr and the exit status. ``tests/conftest.py`` loads this module
as a pytest plugin, so the fixture needs no import.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from inventory.db import Database
from worker.cli import run

TAG = "C00AA0AAAA0A"
ACTOR = "ops-admin"
CREDENTIAL = re.compile(r"[A-Za-z0-9_-]{43,}")
ENROLL_LINE = re.compile(r"devtrust device enroll --token=([A-Za-z0-9_-]{20,})")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# Where the remote CLI's database "is": nothing listens there, so a command that opened
# the database instead of calling the API would fail.
NOWHERE_DATABASE = "postgresql+psycopg://devtrust@127.0.0.1:9/nowhere?connect_timeout=2"


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
    request: pytest.FixtureRequest,
    db: Database,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bare_cli: Cli,
) -> Iterator[Cli]:
    """``cli("devices", "ls")`` runs ``devtrust devices ls`` on the test's database.

    A test marked ``@both_ways`` runs twice: so, and through a real ``devtrust serve``'s
    admin API as the device admin ``ops-admin`` (DEVTRUST_API_URL and DEVTRUST_USER_TOKEN
    set), with the CLI's database URL pointing at nothing and its Unix login another
    name, so that what it prints and what the audit log names can only come from the API.
    """
    if getattr(request, "param", "local") == "local":
        monkeypatch.setenv("DEVTRUST_DATABASE_URL", db_url)
        yield bare_cli
        return
    with remote_admin(db, db_url, tmp_path / "served") as (url, token):
        monkeypatch.setenv("DEVTRUST_API_URL", url)
        monkeypatch.setenv("DEVTRUST_USER_TOKEN", token)
        monkeypatch.setenv("DEVTRUST_DATABASE_URL", NOWHERE_DATABASE)
        monkeypatch.setenv("DEVTRUST_DATA_DIR", str(tmp_path / "cli-data"))
        monkeypatch.setenv("LOGNAME", "unix-login")
        yield bare_cli
    assert not (tmp_path / "cli-data").exists(), "the remote CLI wrote to its data directory"


#: Runs a CLI test locally and remotely (see ``cli``); ``remotely`` only through the API.
both_ways = pytest.mark.parametrize("cli", ["local", "remote"], indirect=True)
remotely = pytest.mark.parametrize("cli", ["remote"], indirect=True)


@contextmanager
def remote_admin(db: Database, db_url: str, data_dir: Path) -> Iterator[tuple[str, str]]:
    """The admin API on ``db``, served on loopback: its URL and the credential of the
    admin ``ops-admin`` (every role), made with the audit log left empty as found."""
    from sqlalchemy import delete

    from ceremony.admin import AdminApi
    from ceremony.service import create_app
    from inventory.domain import Role
    from inventory.models import AuditEventRow
    from inventory.services import users
    from inventory.settings import Settings
    from tests.ceremony import serving

    served = Settings(data_dir=data_dir, database_url=db_url)
    # The first admin, as `devtrust users add` makes one locally: it grants every role.
    roles = (Role.DEVICE_ADMIN, Role.EDITOR, Role.ACCESS, Role.BOT)
    _, token = users.add_user(db.uow(), ACTOR, roles, actor="setup")
    with db.engine.begin() as conn:
        conn.execute(delete(AuditEventRow))
    with serving(create_app(served, {}, admin=AdminApi(db, served))) as url:
        yield url, token


@pytest.fixture
def bare_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI with no ``DEVTRUST_*`` setting at all, not even a database: for tests of
    what it does with the settings they set themselves."""
    for name in list(os.environ):
        if name.startswith("DEVTRUST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOGNAME", ACTOR)  # what the audit log names as the acting admin
    monkeypatch.delenv("VISUAL", raising=False)

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = run(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


def without_admin(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``users ls`` rows (table or JSON) other than the remote CLI's own admin: a test's
    users are the same both ways."""
    return [r for r in rows if r.get("User", r.get("name")) != ACTOR]


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
