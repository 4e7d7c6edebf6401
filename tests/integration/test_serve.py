"""``devtrust serve`` over a real socket: /healthz says what answers and what does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.processes import DEVTRUST, free_port, started, wait_until


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve(tmp_path: Path, **env: str) -> tuple[str, dict[str, str]]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    full = {**clean, "DEVTRUST_DATA_DIR": str(tmp_path), **env}
    return f"http://127.0.0.1:{port}", {**full, "PORT": str(port)}


def test_healthz_reports_database_and_broker(tmp_path: Path) -> None:
    base, env = _serve(tmp_path, DEVTRUST_BROKER_URL="redis://127.0.0.1:6379/12")
    with started([DEVTRUST, "serve", "--port", env["PORT"]], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        status, body = get(f"{base}/healthz")
        assert (status, body) == (200, {"status": "ok", "database": "ok", "broker": "ok"})
        status, spec = get(f"{base}/openapi.json")
        assert status == 200 and "/healthz" in spec["paths"]


def test_healthz_is_503_naming_an_unreachable_broker(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    base, env = _serve(tmp_path, DEVTRUST_BROKER_URL=dead)
    with started([DEVTRUST, "serve", "--port", env["PORT"]], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        wait_until(lambda: get(f"{base}/healthz")[0] == 503, 20, "healthz never said 503")
        _, body = get(f"{base}/healthz")
        assert body["database"] == "ok" and body["status"] == "unhealthy"
        assert body["broker"].startswith("unreachable: ")


def _serve_once(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``devtrust serve`` run to its end: for the refusals that end it at once."""
    return subprocess.run(
        [DEVTRUST, "serve", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_port_already_taken_is_one_error_line(tmp_path: Path) -> None:
    _, env = _serve(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve_once(env, "--port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_a_host_that_does_not_resolve_is_one_error_line(tmp_path: Path) -> None:
    _, env = _serve(tmp_path)
    result = _serve_once(env, "--host", "no-such-host.invalid", "--port", env["PORT"])
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on no-such-host.invalid:{env['PORT']}: ")
    assert result.stderr.count("\n") == 1
