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
from dataclasses import dataclass
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
def cli(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch, bare_cli: Cli) -> Cli:
    """``cli("devices", "ls")`` runs ``devtrust devices ls`` on the test's database."""
    monkeypatch.setenv("DEVTRUST_DATABASE_URL", db_url)
    return bare_cli


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
