"""Real processes for the worker's tests: the Jamf simulator, Celery workers, beat, and a
private redis-server that a test may stop and start again.

Each one is started with the project's own console script and stopped (its whole process
group) when the test is done.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

DEVTRUST = str(Path(sys.executable).parent / "devtrust")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child in its own process group; its output is collected line by line."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], name: str, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self.closed = False  # the output ended: the process exited
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=cwd,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first output line matching ``pattern``; fails the test after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    tail = "\n".join(self.lines[-30:])
                    pytest.fail(f"{self.name}: no line matching {pattern!r}; output:\n{tail}")
                self._changed.wait(min(left, 0.2))

    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextmanager
def started(
    argv: list[str], env: Mapping[str, str], name: str, cwd: Path | None = None
) -> Iterator[Process]:
    process = Process(argv, env, name, cwd)
    try:
        yield process
    finally:
        process.stop()


@contextmanager
def simulator(devices: int, *options: str) -> Iterator[str]:
    """``devtrust jamf simulator`` on a free port; yields its URL."""
    argv = [DEVTRUST, "jamf", "simulator", "--devices", str(devices), "--port", "0", *options]
    with started(argv, {}, "simulator") as process:
        yield process.wait_for(r"at (http://\S+)").group(1)


@contextmanager
def worker(
    env: Mapping[str, str], name: str = "w1", *options: str, cwd: Path | None = None
) -> Iterator[Process]:
    argv = [DEVTRUST, "worker", "--concurrency", "1", "--name", f"{name}@%h", *options]
    with started(argv, env, f"worker {name}", cwd) as process:
        process.wait_for(r"ready", timeout=60)
        yield process


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make system`", pytrace=False)
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(self._answers, 10, f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def wait_until(check: Callable[[], object], timeout: float, message: str) -> None:
    """Poll ``check`` until it holds, every 10 ms at first and backing off to 100 ms:
    most waits (a server in a thread starting) end within milliseconds."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(message, pytrace=False)
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)
