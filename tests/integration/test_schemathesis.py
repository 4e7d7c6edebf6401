"""schemathesis, every check, against ``devtrust serve`` and its own ``/openapi.json``.

The service runs as users run it (its console script, uvicorn on loopback) on a real
inventory, SQLite and PostgreSQL; ``st run --checks all`` goes through all its phases
(examples, coverage, fuzzing, stateful) twice: with no credential, and with the
credential of a user holding every human role, so requests get past authentication to
the routes' own checks. Auto-enrollment is on, its queue the embedded broker with no
worker behind it, and the service does not wait for verdicts: checks answer 202 at once
and their polls stay pending (``test_auto_enroll_service`` covers the worker's side).

The number of examples is bounded so that the four runs take about a minute in all.
Any failure is a disagreement between the document and the service; its output (with
the seed and a curl command to reproduce each one) is the test's failure message.
``schemathesis.toml`` beside this file says why four routes may answer 400 to requests
their schema accepts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from inventory.db import Database
from inventory.domain import Role
from inventory.preference import DeviceTrust
from inventory.services import preference, users
from tests.processes import DEVTRUST, free_port, started

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 25  # per operation and phase; a run takes about 15 s


def schemathesis(url: str, cwd: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    argv = [SCHEMATHESIS, "--config-file", str(CONFIG), "run", url, "--checks", "all",
            "--max-examples", str(EXAMPLES), "--workers", "1", "--no-color"]  # fmt: skip
    for header in headers:
        argv += ["--header", header]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def findings(result: subprocess.CompletedProcess[str]) -> str:
    """The part of schemathesis's report that says what failed, and its seed."""
    out = result.stdout + result.stderr
    start = out.find("=== FAILURES ===")
    return out[start:] if start >= 0 else out[-6000:]


def test_schemathesis_finds_nothing_with_or_without_a_credential(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    roles = (Role.ACCESS, Role.EDITOR, Role.DEVICE_ADMIN)
    _, credential = users.add_user(db.uow(), "schemathesis", roles, actor="admin")
    preference.update_preference(db.uow(), DeviceTrust(auto_enroll=True), actor="admin")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {**clean, "DEVTRUST_DATA_DIR": str(tmp_path / "data"), "DEVTRUST_DATABASE_URL": db_url,
           "DEVTRUST_AUTO_ENROLL_WAIT": "0"}  # fmt: skip
    with started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        url = f"http://127.0.0.1:{port}/openapi.json"
        runs = {
            "without a credential": schemathesis(url, tmp_path),
            "with a credential": schemathesis(url, tmp_path, f"Authorization: Bearer {credential}"),
        }
    failed = {name: findings(run) for name, run in runs.items() if run.returncode != 0}
    assert not failed, "\n\n".join(f"schemathesis {name}:\n{out}" for name, out in failed.items())
    for run in runs.values():  # it did test: every operation, with cases that passed
        assert re.search(r"Tested: 9\b", run.stdout), run.stdout[-3000:]
        assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-3000:]
