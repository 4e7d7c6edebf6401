"""``devtrust serve`` over a real socket: /healthz says what answers and what does not."""

from __future__ import annotations

import contextlib
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


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) / 1024


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (a request line and headers, as they are) and read the answer whole:
    its status and its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def request_with(headers: list[bytes]) -> bytes:
    lines = [b"GET /healthz HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    return b"\r\n".join([*lines, b"", b""])


def test_huge_or_too_many_headers_are_refused_with_431_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    base, env = _serve(tmp_path)
    port = int(env["PORT"])
    with started([DEVTRUST, "serve", "--port", env["PORT"]], env, "serve") as server:
        server.wait_for("Uvicorn running", timeout=30)
        assert get(f"{base}/healthz")[0] == 200
        before = rss_mib(server.proc.pid)

        # One 200 MiB header, streamed: refused once the headers pass 16 KiB, so the
        # service stops reading (the send fails) long before the end, and buffers none of it.
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            chunk = b"a" * (1 << 20)
            with contextlib.suppress(OSError):
                while sent < 200 << 20:
                    sock.sendall(chunk)
                    sent += len(chunk)
        assert sent < 200 << 20, "the service read a 200 MiB header to its end"
        after = rss_mib(server.proc.pid)
        assert after - before < 16, (before, after)

        # Each refusal is 431 in the error shape, whether h11 stops it while buffering
        # (a header still arriving) or the service after parsing (it came in one read).
        huge = request_with([b"X-Huge: " + b"a" * (64 << 10)])[:-4]  # never ends
        assert raw_request(port, huge) == (
            431, b'{"error": "the request\'s headers are larger than 16384 bytes"}'
        )  # fmt: skip
        whole = request_with([b"X-Big: " + b"a" * (20 << 10)])
        assert raw_request(port, whole) == (
            431, b'{"error": "the request\'s headers are larger than 16384 bytes"}'
        )  # fmt: skip
        many = request_with([b"X-%d: a" % i for i in range(5000)])
        assert raw_request(port, many)[0] == 431
        over = request_with([b"X-%d: a" % i for i in range(101)])
        assert raw_request(port, over) == (
            431, b'{"error": "the request has more than 100 headers"}'
        )  # fmt: skip
        # Up to the limits, a request is served as before.
        fine = request_with([b"X-%d: a" % i for i in range(90)])
        assert raw_request(port, fine)[0] == 200
        assert rss_mib(server.proc.pid) - before < 16
        print(f"serve RSS: {before:.0f} MiB before, {after:.0f} MiB after a 200 MiB header")
