"""schemathesis, every check, against ``devtrust serve`` and its own ``/openapi.json``.

The service runs as users run it (its console script, uvicorn on loopback) on a real
inventory, SQLite and PostgreSQL; ``st run --checks all`` goes through all its phases
(examples, coverage, fuzzing, stateful) twice: with no credential, and with the
credential of a user holding every human role, so requests get past authentication to
the routes' own checks. Auto-enrollment is on, its queue the embedded broker with no
worker behind it, and the service does not wait for verdicts: checks answer 202 at once
and their polls stay pending (``test_auto_enroll_service`` covers the worker's side).
Jamf webhooks are on with header auth, and the run with a credential sends that header
too, so webhook bodies get past authentication; their syncs pile up unread in the same
queue (``test_webhooks`` covers the rest).

The number of examples is bounded so that the four runs take under a minute in all:
the coverage phase, which does not depend on it, tests every operation.
Any failure is a disagreement between the document and the service; its output (with
the seed and a curl command to reproduce each one) is the test's failure message.
``schemathesis.toml`` beside this file says why five routes may answer 400 to requests
their schema accepts, and ``ADMIN_OPERATIONS`` why three of the admin API's may. The run
with a credential may delete or re-key its own user through the admin API; what follows
is then 401, which every check accepts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from inventory.db import Database
from inventory.domain import Role
from inventory.preference import DeviceTrust
from inventory.services import preference, users
from tests.processes import DEVTRUST, free_port, started

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
WEBHOOK_HEADER, WEBHOOK_TOKEN = "X-Webhook-Token", "schemathesis-webhook-token"
EXAMPLES = 3  # per operation in the fuzzing and stateful phases. The coverage phase's
# cases (about two thousand a run, its own count, whatever this one) reach every operation
# and take most of the time: a run takes 10 to 20 s. At 3 the stateful phase still covers
# the same API links as at 10, and each fuzzing case costs as much as a coverage one.


# The admin API's operations (ceremony.admin) that may answer 400 to a request their schema
# accepts, for what JSON Schema cannot say: a page cursor (`after`) must be one the service
# issued, and each CA in `ekcert_allowed_cas` must parse as a PEM CA certificate.
ADMIN_OPERATIONS = """
[[operations]]
include-name = ["GET /v1/admin/devices", "GET /v1/me/devices", "PATCH /v1/admin/config"]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "5xx",
]
"""


def config_file(cwd: Path) -> Path:
    """``schemathesis.toml`` and the admin API's operations, in the run's directory."""
    path = cwd / "schemathesis.toml"
    path.write_text(CONFIG.read_text(encoding="utf-8") + ADMIN_OPERATIONS, encoding="utf-8")
    return path


def schemathesis(url: str, cwd: Path, *headers: str) -> subprocess.Popen[str]:
    argv = [SCHEMATHESIS, "--config-file", str(config_file(cwd)), "run", url, "--checks", "all",
            "--max-examples", str(EXAMPLES), "--workers", "1", "--no-color"]  # fmt: skip
    for header in headers:
        argv += ["--header", header]
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(run: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, _ = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        out, _ = run.communicate()
    return subprocess.CompletedProcess(run.args, run.returncode, out, "")


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
           "DEVTRUST_AUTO_ENROLL_WAIT": "0", "DEVTRUST_JAMF_WEBHOOK_HEADER": WEBHOOK_HEADER,
           "DEVTRUST_JAMF_WEBHOOK_TOKEN": WEBHOOK_TOKEN}  # fmt: skip
    with started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        url = f"http://127.0.0.1:{port}/openapi.json"
        # Both at once: schemathesis's own generation is most of the time, and there are
        # two cores.
        started_runs = {
            "without a credential": schemathesis(url, tmp_path),
            "with a credential": schemathesis(
                url,
                tmp_path,
                f"Authorization: Bearer {credential}",
                f"{WEBHOOK_HEADER}: {WEBHOOK_TOKEN}",
            ),
        }
        runs = {name: finished(run) for name, run in started_runs.items()}
    failed = {name: findings(run) for name, run in runs.items() if run.returncode != 0}
    assert not failed, "\n\n".join(f"schemathesis {name}:\n{out}" for name, out in failed.items())
    for run in runs.values():  # it did test every operation the document has
        selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", run.stdout)
        assert selected, run.stdout[-3000:]
        assert len(set(selected.groups())) == 1 and int(selected[1]) >= 10, selected.group()
        assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-3000:]


def test_jamf_webhooks_are_404_naming_the_settings_when_no_credential_is_set(
    tmp_path: Path,
) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {**clean, "DEVTRUST_DATA_DIR": str(tmp_path / "data")}
    with started([DEVTRUST, "serve", "--port", str(port)], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        body = {"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": 1}}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/webhooks/jamf", json=body, timeout=10)
    assert response.status_code == 404
    assert response.json() == {
        "error": "Jamf webhooks are off: set DEVTRUST_JAMF_WEBHOOK_PASSWORD (Basic auth) or "
        "DEVTRUST_JAMF_WEBHOOK_TOKEN (header auth) to take them"
    }
