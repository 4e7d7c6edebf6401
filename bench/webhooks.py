"""Target: a change made in Jamf is in the inventory soon after, through the webhook path.

Everything runs for real, as a deployment runs it: ``devtrust jamf simulator`` posting
its webhooks (``--webhook-url``) to ``devtrust serve``, which queues each device's sync
for one ``devtrust worker``; the inventory is a scratch database (SQLite by default)
that a full sync filled first. Two queues, each in the same run:

* ``embedded``: no broker at all, kombu's filesystem transport under the data directory
  (what ``make demo`` runs on);
* ``redis``: a private redis-server (broker, results, coalescing marks).

``--changes`` computers (distinct ones) each get a new inventory report (a newer macOS)
through ``PATCH /_sim/devices/{id}``, sent open-loop at ``--rate`` per second. A change's
latency runs from just before its PATCH to the ``update_time`` the worker stamped on the
device's row when it wrote the new OS (both clocks are this machine's), so how often this
process looks at the database is not in the figure.

Targets on a 2-core machine, each printed as a ratio (at or below 1.0 is met):

* p99 under 2 s with the embedded queue;
* p99 under 500 ms on Redis.

Every change must reach the inventory (else the run stops saying how many did not), by
the webhook alone: no partial or full sync runs meanwhile (checked and printed).

    python -m bench.webhooks [--changes 200] [--rate 10] [--devices 1000]
                             [--queue embedded|redis|both] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.bench_devices_ls import DATABASES, devtrust_script
from inventory.db import Database
from inventory.models import DeviceRow, SyncRunRow
from inventory.settings import load_settings
from tests.processes import Process, RedisServer, free_port
from worker import jobs

LIMITS = {"embedded": 2.0, "redis": 0.5}  # p99, seconds
USER, PASSWORD = "jamf", "bench-webhook-secret"
JAMF_SECRET = "devtrust-secret"  # noqa: S105 - the simulator's default
INVENTORY = [{"name": "default", "on_missing": "DELETE"}]
LANDED_WITHIN = 60.0  # seconds after the last change, before the run gives up


@dataclass
class Figures:
    queue: str
    backend: str
    latencies: list[float]
    runs: dict[str, int]

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    @property
    def ratio(self) -> float:
        return self.percentile(0.99) / LIMITS[self.queue]

    def lines(self) -> list[str]:
        where = f"{self.queue:<9} {self.backend:<11}"
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        limit = LIMITS[self.queue]
        return [
            f"{where} {len(self.latencies)} changes: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms, "
            f"mean {statistics.fmean(self.latencies) * 1000:.0f} ms; runs {self.runs}",
            f"{where} webhook latency p99: {p99 * 1000:.0f} ms (limit {limit * 1000:.0f} ms)  "
            f"ratio {self.ratio:.2f}  {'PASS' if self.ratio <= 1 else 'FAIL'}",
        ]


@contextmanager
def process(argv: list[str], env: dict[str, str], name: str, ready: str) -> Iterator[Process]:
    proc = Process(argv, env, name)
    try:
        proc.wait_for(ready, timeout=90)
        yield proc
    finally:
        proc.stop()


def _latest(db: Database, ids: list[str]) -> dict[str, tuple[str | None, Any]]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(DeviceRow.profile_external_id, DeviceRow.profile_os_build, DeviceRow.update_time)
            .where(DeviceRow.os_type == "macos", DeviceRow.profile_external_id.in_(ids))
        )  # fmt: skip
        return {str(ext): (build, stamp) for ext, build, stamp in rows}


def _runs(db: Database) -> dict[str, int]:
    with db.uow().read() as uow:
        rows = uow.session.execute(
            select(SyncRunRow.kind, func.count()).group_by(SyncRunRow.kind)
        ).all()
        return {str(kind): int(count) for kind, count in rows}


def bench_queue(queue: str, args: argparse.Namespace) -> Figures:
    script = str(devtrust_script())
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-webhooks-")))
        # The processes run in it: the embedded queue's worker keeps its control files in
        # its working directory, which must not be the repository.
        stack.enter_context(contextlib.chdir(tmp))
        url = stack.enter_context(DATABASES[args.backend]())
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
        port = free_port()
        hook = f"http://127.0.0.1:{port}/v1/webhooks/jamf"
        jamf_port = free_port()
        jamf = f"http://127.0.0.1:{jamf_port}"
        stack.enter_context(
            process(
                [
                    script,
                    "jamf",
                    "simulator",
                    "--devices",
                    str(args.devices),
                    "--port",
                    str(jamf_port),
                    "--webhook-url",
                    hook,
                    "--webhook-username",
                    USER,
                    "--webhook-password",
                    PASSWORD,
                ],
                env,
                "simulator",
                r"at http://",
            )
        )
        env |= {
            "DEVTRUST_DATA_DIR": str(tmp / "data"),
            "DEVTRUST_DATABASE_URL": url,
            "DEVTRUST_JAMF_URL": jamf,
            "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
            "DEVTRUST_JAMF_CLIENT_SECRET": JAMF_SECRET,
            "DEVTRUST_JAMF_INVENTORY": json.dumps(INVENTORY),
            "DEVTRUST_JAMF_WEBHOOK_USERNAME": USER,
            "DEVTRUST_JAMF_WEBHOOK_PASSWORD": PASSWORD,
        }
        if queue == "redis":
            server = RedisServer(tmp)
            server.start()
            stack.callback(server.stop)
            env |= {"DEVTRUST_BROKER_URL": f"{server.url}/0",
                    "DEVTRUST_RESULT_BACKEND": f"{server.url}/1"}  # fmt: skip
        settings = load_settings(
            data_dir=tmp / "data", database_url=url, broker_url=env.get("DEVTRUST_BROKER_URL"),
            result_backend=env.get("DEVTRUST_RESULT_BACKEND"), jamf_url=jamf,
            jamf_client_id="devtrust", jamf_client_secret=JAMF_SECRET,
            jamf_inventory=INVENTORY,
        )  # fmt: skip
        began = time.perf_counter()
        outcome = jobs.sync_inventory(settings, kind="full")
        if outcome["status"] != "succeeded":
            raise SystemExit(f"the first full sync failed: {outcome}")
        print(f"{queue:<9} {args.backend:<11} full sync of {outcome['run']['created']} "
              f"devices in {time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
        stack.enter_context(
            process([script, "serve", "--port", str(port)], env, "serve", "Uvicorn running")
        )
        stack.enter_context(
            process(
                [script, "worker", "--concurrency", "1", "--name", f"bench-{queue}@%h"],
                env,
                "worker",
                "ready",
            )
        )
        db = Database.connect(url)
        stack.callback(db.close)
        http = stack.enter_context(httpx.Client(base_url=jamf, timeout=30))
        fleet = [d["id"] for d in http.get("/_sim/fleet").json() if d["managed"]]
        if len(fleet) < args.changes + 5:
            raise SystemExit(f"--devices {args.devices} has {len(fleet)} managed computers: "
                             f"fewer than --changes {args.changes} + 5")  # fmt: skip
        for ident in fleet[-5:]:  # warm-up: the worker's pools, the Jamf token, serve's paths
            http.patch(f"/_sim/devices/{ident}").raise_for_status()
        _wait_for(db, {i: _build(http, i) for i in fleet[-5:]}, LANDED_WITHIN)
        runs_before = _runs(db)
        sent: dict[str, tuple[float, str]] = {}
        interval = 1.0 / args.rate
        start = time.time()
        for n, ident in enumerate(fleet[: args.changes]):
            pause = start + n * interval - time.time()
            if pause > 0:
                time.sleep(pause)
            at = time.time()
            record = http.patch(f"/_sim/devices/{ident}").raise_for_status().json()
            sent[ident] = (at, record["operatingSystem"]["build"])
        landed = _wait_for(db, {i: build for i, (_, build) in sent.items()}, LANDED_WITHIN)
        latencies = [landed[i] - sent[i][0] for i in sent]
        runs_after = _runs(db)
        runs = {k: runs_after.get(k, 0) - runs_before.get(k, 0) for k in runs_after}
        if runs.get("partial") or runs.get("full"):
            raise SystemExit(f"{queue}: a scheduled sync ran during the bench: {runs}")
        return Figures(queue, args.backend, latencies, runs)


def _build(http: httpx.Client, ident: str) -> str:
    return str(http.get(f"/_sim/devices/{ident}").json()["operatingSystem"]["build"])


def _wait_for(db: Database, builds: dict[str, str], within: float) -> dict[str, float]:
    """Each device's write time once the inventory shows its new OS build."""
    landed: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(landed) < len(builds):
        waiting = [i for i in builds if i not in landed]
        for ident, (build, stamp) in _latest(db, waiting).items():
            if build == builds[ident] and stamp is not None:
                landed[ident] = stamp.replace(tzinfo=stamp.tzinfo or UTC).timestamp()
        if time.monotonic() > deadline:
            missing = len(builds) - len(landed)
            raise SystemExit(f"{missing} of {len(builds)} changes never reached the inventory")
        time.sleep(0.02)
    return landed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks",
        description="Time Jamf webhooks from the simulator's change to the inventory's row.",
    )
    parser.add_argument("--changes", type=int, default=200, help="computers changed")
    parser.add_argument("--rate", type=float, default=10.0, help="changes sent per second")
    parser.add_argument("--devices", type=int, default=1000, help="computers in the fleet")
    parser.add_argument("--queue", choices=("embedded", "redis", "both"), default="both")
    parser.add_argument("--backend", choices=sorted(DATABASES), default="sqlite")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.rate <= 0:
        parser.error("--changes must be at least 1 and --rate above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    queues = ("embedded", "redis") if args.queue == "both" else (args.queue,)
    passed = True
    for queue in queues:
        figures = bench_queue(queue, args)
        for line in figures.lines():
            print(line, flush=True)
        passed = passed and figures.ratio <= 1
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
