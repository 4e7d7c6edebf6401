"""The admin CLI from a laptop: ``devtrust`` with DEVTRUST_API_URL and DEVTRUST_USER_TOKEN,
against a real ``devtrust serve`` over TLS, a real worker and the Jamf simulator.

The laptop has no database (its URL points at nothing) and no Jamf settings: a full sync
is queued and followed to its end through the API, the inventory and the status are what
the server's own CLI prints, the audit log names the authenticated user, and each way it
can go wrong is one line: a role that may not, a server certificate it cannot verify, a
credential it would send in clear, a service that is gone. The first admin is made the way
the README says, with the local CLI on the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.cli import CREDENTIAL, NOWHERE_DATABASE
from tests.processes import DEVTRUST, free_port, simulator, started, worker

FLEET = 120


def _run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    return subprocess.run(
        [DEVTRUST, *argv], env={**clean, **env}, capture_output=True, text=True, timeout=180
    )


def _together(
    *commands: tuple[dict[str, str], list[str]],
) -> list[subprocess.CompletedProcess[str]]:
    """Commands that do not depend on each other, run at once (each start costs most of a
    second), their results in order."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    running = [
        (argv, subprocess.Popen([DEVTRUST, *argv], env={**clean, **env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for env, argv in commands
    ]  # fmt: skip
    results = []
    for argv, process in running:
        out, err = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess([DEVTRUST, *argv], process.returncode, out, err))
    return results


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.stderr)
    return result


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: "), line
    return line


def _credential(result: subprocess.CompletedProcess[str]) -> str:
    found = CREDENTIAL.findall(_ok(result).stdout)
    assert len(found) == 1, result.stdout
    return str(found[0])


def test_the_cli_administers_a_remote_server_with_no_database_of_its_own(tmp_path: Path) -> None:
    port = free_port()
    with simulator(FLEET) as jamf:
        server = {
            "DEVTRUST_DATA_DIR": str(tmp_path / "server"),
            "DEVTRUST_DATABASE_URL": f"sqlite:///{tmp_path / 'devtrust.db'}",
            "DEVTRUST_JAMF_URL": jamf,
            "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
            "DEVTRUST_JAMF_CLIENT_SECRET": "devtrust-secret",
            "DEVTRUST_JAMF_INVENTORY": json.dumps([{"name": "default", "page_size": 50}]),
        }
        # Bootstrapping, on the server: the first admin, and a user with no admin role.
        token = _credential(_run(server, "users", "add", "ops", "--roles", "device-admin"))
        access = _credential(_run(server, "users", "add", "acc", "--roles", "access"))
        serve = [DEVTRUST, "serve", "--port", str(port), "--tls-self-signed"]
        with started(serve, server, "serve") as api, worker(server, "w1"):
            api.wait_for("Uvicorn running", timeout=60)
            ca_file = tmp_path / "server" / "tls" / "server.pem"
            laptop = {
                "DEVTRUST_API_URL": f"https://127.0.0.1:{port}",
                "DEVTRUST_USER_TOKEN": token,
                "DEVTRUST_API_CA_FILE": str(ca_file),
                "DEVTRUST_DATABASE_URL": NOWHERE_DATABASE,
                "DEVTRUST_DATA_DIR": str(tmp_path / "laptop"),
                "LOGNAME": "someone-else",
            }

            synced = _ok(_run(laptop, "jamf", "sync", "--full", "--wait", "--timeout", "120"))
            task_id = synced.stdout.splitlines()[0]
            assert re.fullmatch(r"[0-9a-f-]{36}", task_id), synced.stdout
            assert "queued a full sync of default" in synced.stderr
            assert re.search(r"full sync of default succeeded in [\d.]+ s: fetched \d+",
                             synced.stdout), synced.stdout  # fmt: skip

            system_trust = {k: v for k, v in laptop.items() if k != "DEVTRUST_API_CA_FILE"}
            in_clear_url = {**laptop, "DEVTRUST_API_URL": "http://192.0.2.10:8800"}
            (remote_ls, local_ls, remote_status, local_status, audited, as_access, unverified,
             in_clear) = _together(
                (laptop, ["devices", "ls", "--format", "json"]),
                (server, ["devices", "ls", "--format", "json"]),
                (laptop, ["jamf", "status", "--format", "json"]),
                (server, ["jamf", "status", "--format", "json"]),
                (laptop, ["audit", "ls", "--type", "jamf.sync", "--format", "json"]),
                ({**laptop, "DEVTRUST_USER_TOKEN": access}, ["devices", "rm", "X1"]),
                (system_trust, ["devices", "ls"]),
                (in_clear_url, ["users", "ls"]),
            )  # fmt: skip
            devices = json.loads(_ok(remote_ls).stdout)
            assert devices == json.loads(_ok(local_ls).stdout) and len(devices) > FLEET // 2
            status = json.loads(_ok(remote_status).stdout)
            assert status == json.loads(_ok(local_status).stdout)
            assert status[0]["last_full"]["status"] == "succeeded"
            [event] = json.loads(_ok(audited).stdout)
            assert (event["actor"], event["success"]) == ("ops", True)

            # What goes wrong is one line, and changes nothing.
            assert _error_line(as_access) == (
                "error: this needs the device-admin role; user acc has access"
            )
            assert _error_line(unverified).startswith(
                f"error: cannot verify the devtrust service at https://127.0.0.1:{port}: "
                "certificate verify failed: self-signed certificate"
            )
            assert _error_line(in_clear) == (
                "error: refusing to send your credential in clear to http://192.0.2.10:8800: "
                "use https:// in DEVTRUST_API_URL (plain http is for a service on this machine "
                "only)"
            )
        gone = _run(laptop, "config", "show")
        assert _error_line(gone).startswith(
            f"error: cannot reach the devtrust service at https://127.0.0.1:{port}: "
        )
        assert "(is DEVTRUST_API_URL right?)" in gone.stderr
    assert not (tmp_path / "laptop").exists()


def test_bench_remote_ls_smoke_prints_both_formats_peaks_and_ratios() -> None:
    """``bench/remote_ls.py`` at a small size, so that it cannot rot (the figures the
    README gives come from its full run)."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.remote_ls", "--smoke"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for fmt in ("text", "json"):
        assert re.search(
            rf"devices ls --format {fmt}\s+through the API: 3,000 devices peak [\d.]+ MiB, "
            rf"one page \(500\) peak [\d.]+ MiB, limit 1.25x = [\d.]+ MiB  ratio 0\.\d\d",
            done.stdout,
        ), done.stdout
    assert done.stdout.splitlines()[-1] == "ok: memory stays flat"
