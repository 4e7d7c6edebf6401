"""The CLI answers at once: ``--help``, ``--version`` and shell completion import neither
the database layer nor the settings, ``devices ls`` on SQLite never imports psycopg, and
completion is installed and answers as bash asks it. (How fast, against the machine's
own bare start, is ``bench/cli_start.py``'s to say; its smoke run is here.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import DEVTRUST

# Runs the CLI in a fresh interpreter, then prints which of these modules it imported.
PROBE = """
import sys
from worker.cli import run
code = run(sys.argv[1:])
heavy = ("sqlalchemy", "psycopg", "inventory.db", "inventory.settings", "pydantic_settings")
print("IMPORTED", sorted(m for m in heavy if m in sys.modules), code, file=sys.stderr)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    return {**clean, "DEVTRUST_DATA_DIR": str(tmp_path / "data"), **extra}


def _imported(tmp_path: Path, *argv: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    found = re.search(r"IMPORTED (\[.*\]) (\d+)", done.stderr)
    assert found, done.stderr
    assert found.group(2) == "0", done.stderr
    return eval(found.group(1)), done.stdout  # noqa: S307 (our own probe's list literal)


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["devices", "--help"], ["jamf", "sync", "--help"]]
)
def test_help_and_version_open_no_database_layer(tmp_path: Path, argv: list[str]) -> None:
    imported, out = _imported(tmp_path, *argv)
    assert imported == []
    assert out.strip()


def test_version_names_the_installed_release(tmp_path: Path) -> None:
    from importlib.metadata import version

    _, out = _imported(tmp_path, "--version")
    assert out == f"devtrust {version('devtrust')}\n"


def test_devices_ls_on_sqlite_never_imports_psycopg(tmp_path: Path) -> None:
    imported, out = _imported(tmp_path, "devices", "ls")
    assert "sqlalchemy" in imported and "psycopg" not in imported
    assert out.startswith("Asset Tag")


def test_completion_answers_as_bash_asks_and_installs_for_the_shell(tmp_path: Path) -> None:
    def complete(words: str) -> list[str]:
        env = _env(tmp_path, _DEVTRUST_COMPLETE="complete_bash", COMP_WORDS=words,
                   COMP_CWORD=str(len(words.split()) - 1))  # fmt: skip
        done = subprocess.run([DEVTRUST], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("devtrust devices l") == ["ls"]
    assert complete("devtrust jamf s") == ["sync", "status", "simulator"]
    assert "--format" in complete("devtrust devices ls --f")
    home = tmp_path / "home"
    home.mkdir()
    env = _env(tmp_path, HOME=str(home), SHELL="/bin/bash")
    done = subprocess.run([DEVTRUST, "--install-completion"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = home / ".bash_completions" / "devtrust.sh"
    assert "_DEVTRUST_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (home / ".bashrc").read_text()


def test_bench_cli_start_smoke_prints_each_figure_and_its_ratio() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.cli_start", "--smoke"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: over the limit, still a report
    assert re.search(r"bare start \(python -c pass\): median [\d.]+ ms; limit 10x", done.stdout)
    for name in ("devtrust --help", "devtrust --version", "completion of `devtrust devices l`"):
        assert re.search(rf"{re.escape(name)}\s+median\s+[\d.]+ ms, .* ratio \d+\.\d\d",
                         done.stdout), done.stdout  # fmt: skip
    assert "devtrust devices ls (empty SQLite)" in done.stdout
