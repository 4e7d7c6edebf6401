"""Target: ``devtrust devices ls`` through the admin API keeps flat memory: listing 100,000
devices takes at most 1.25x the peak memory of listing one page of them, same run.

What is measured: the peak resident set (``ru_maxrss``) of the CLI process in its remote
mode (DEVTRUST_API_URL and DEVTRUST_USER_TOKEN set, its database URL pointing at nothing)
while it prints every device of an inventory served by a real ``devtrust serve``, output
thrown away; beside it, the same command against a second server whose inventory is one
page (500 devices, the CLI's default page). The CLI reads a keyset page, prints it and
drops it, so the two should hold the same: a CLI that gathered the listing first would
hold all 100,000 devices, several times the baseline. Each is run ``--runs`` times,
alternating, and the medians compared, so the machine's noise falls on both alike. Both
formats are measured (text, and JSON streamed as one array). The wall time and the
devices per second are printed beside, for the reader.

The figure is a ratio, median peak / (1.25 x median baseline peak): at or below 1.0 the
target is met; the run fails (exit status 1) when a ratio is above 1.

    python -m bench.remote_ls [--devices N] [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.bench_devices_ls import devtrust_script, seed
from inventory.db import Database
from inventory.domain import Role
from inventory.services import users

LIMIT = 1.25  # the peak may grow this much over one page's, and no more
PAGE = 500  # the CLI's default --page-size: the baseline inventory is one page
NOWHERE = "postgresql+psycopg://devtrust@127.0.0.1:9/nowhere?connect_timeout=2"

# Runs the command given, its output thrown away, and prints the child's peak RSS (KiB).
_PEAK = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


@dataclass
class Served:
    url: str
    token: str
    devices: int


@contextmanager
def served(workdir: Path, name: str, devices: int) -> Iterator[Served]:
    """An inventory of ``devices`` on SQLite, served by ``devtrust serve`` on loopback."""
    directory = workdir / name
    directory.mkdir()
    db_url = f"sqlite:///{directory / 'devtrust.db'}"
    seed(db_url, devices)
    db = Database.connect(db_url)
    try:
        _, token = users.add_user(db.uow(), "bench", (Role.DEVICE_ADMIN,), actor="bench")
    finally:
        db.close()
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {**clean, "DEVTRUST_DATABASE_URL": db_url, "DEVTRUST_DATA_DIR": str(directory)}
    argv = [str(devtrust_script()), "serve", "--port", str(port)]
    log = directory / "serve.log"  # a pipe nobody reads would stop the server once full
    with log.open("wb") as out, subprocess.Popen(argv, env=env, stdout=out, stderr=out) as p:
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url, p, log)
            yield Served(url, token, devices)
        finally:
            p.terminate()
            p.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"devtrust serve exited: {log.read_text()[-500:]}")
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("devtrust serve did not start within 60 s")


def peak_of_ls(server: Served, fmt: str, workdir: Path) -> tuple[float, float]:
    """The remote ``devices ls``' peak RSS in MiB, and its wall time in seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env = {
        **clean,
        "DEVTRUST_API_URL": server.url,
        "DEVTRUST_USER_TOKEN": server.token,
        "DEVTRUST_DATABASE_URL": NOWHERE,
        "DEVTRUST_DATA_DIR": str(workdir / "nowhere"),
    }
    argv = [sys.executable, "-c", _PEAK, str(devtrust_script()), "devices", "ls", "--format", fmt]
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"devtrust devices ls failed: {done.stderr.strip()[-500:]}")
    return int(done.stdout.strip()) / 1024, took


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices listed")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--smoke", action="store_true", help="3,000 devices, one run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.devices, args.runs = 3_000, 1
    if args.devices <= PAGE or args.runs < 1:
        parser.error(f"--devices must be above {PAGE} and --runs at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="devtrust_bench_") as tmp, ExitStack() as stack:
        work = Path(tmp)
        print(f"seeding {args.devices:,} and {PAGE} devices...", flush=True)
        large = stack.enter_context(served(work, "large", args.devices))
        small = stack.enter_context(served(work, "page", PAGE))
        for fmt in ("text", "json"):
            peaks: dict[int, list[float]] = {large.devices: [], small.devices: []}
            took: list[float] = []
            for _ in range(args.runs):
                peak, seconds = peak_of_ls(large, fmt, work)
                peaks[large.devices].append(peak)
                took.append(seconds)
                peaks[small.devices].append(peak_of_ls(small, fmt, work)[0])
            big, base = (statistics.median(peaks[n]) for n in (large.devices, small.devices))
            ratio = big / (LIMIT * base)
            failed |= ratio > 1
            wall = statistics.median(took)
            print(
                f"devices ls --format {fmt:<4} through the API: {args.devices:,} devices "
                f"peak {big:.1f} MiB, one page ({PAGE}) peak {base:.1f} MiB, "
                f"limit {LIMIT:g}x = {LIMIT * base:.1f} MiB  ratio {ratio:.2f}  "
                f"({wall:.1f} s, {args.devices / wall:,.0f} devices/s)",
                flush=True,
            )
    print("FAIL" if failed else "ok: memory stays flat")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
