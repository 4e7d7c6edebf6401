"""Target: the web console's devices page, with 100,000 devices in the inventory, renders
its first page server-side in under 300 ms.

What is measured: ``GET /ui/devices`` for a signed-in device admin, through the whole
ASGI application in this process (Starlette's test client: no socket, no browser), from
the request to the last byte of the HTML: the session check, the counts at the top of
the page (registered, enrolled, by trust level, by source, and drifted, the comparison
of ``devtrust devices diff`` over every device's last collected data), the first
keyset page of 50 devices and the template. A filtered page (``os=macos&status=enrolled``)
and the counts alone are printed beside it.

The inventory is seeded with bulk inserts: every device with an MDM profile, 30%
enrolled across the four trust levels, and 2% with collected data (half of them
drifted), so the counts have real work to do.

The limit is a ratio to a baseline of the same run, as these machines are shared and one
can be several times slower than another of its kind: 15 bare interpreter starts
(``python -c pass``, spawned before each timed page so the noise falls on both), which is
the issue's 300 ms on the machine it was set on (a bare start of 20 ms). The absolute
300 ms is printed too. The figure is a ratio, median time / (15 x median bare start): at
or below 1.0 the target is met; the run fails (exit status 1) when any backend's ratio is
above 1.

    python -m bench.console [--devices N] [--backend sqlite|postgresql|both]
                            [--runs R] [--limit-starts 15] [--smoke]

``--smoke`` is a small fleet on SQLite, a few runs: it checks the benchmark runs and
prints its figures, not the target.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert, text

with warnings.catch_warnings():  # Starlette's note on its httpx-based client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from bench.bench_devices_ls import DATABASES, TAG_ALPHABET, time_bare_start
from ceremony.admin import AdminApi
from ceremony.service import create_app
from inventory.db import Database
from inventory.domain import Role
from inventory.models import CollectedDataRow, DeviceRow
from inventory.services import devices, users
from inventory.settings import Settings

BATCH_SIZE = 10_000
OS_TYPES = ("macos", "windows", "linux")
ATTESTATIONS = ("none", "tpm_ekpub", "tpm_ekcert", "tpm_ekcert_trusted")
ENROLLED_SHARE = 0.30
COLLECTED_SHARE = 0.02
FILTERED = "/ui/devices?os=macos&status=enrolled"
ABSOLUTE_MS = 300.0  # the figure, printed beside the ratio


@dataclass
class Result:
    backend: str
    devices: int
    collected: int
    seed_seconds: float
    first_page: list[float]
    filtered: list[float]
    counts: list[float]
    bare_start: list[float]  # ``python -c pass``, one before each timed first page

    def limit(self, starts: float) -> float:
        return starts * statistics.median(self.bare_start)

    def ratio(self, starts: float) -> float:
        return statistics.median(self.first_page) / self.limit(starts)

    def line(self, starts: float) -> str:
        ms = [t * 1000 for t in self.first_page]
        median = statistics.median(ms)
        return (
            f"{self.backend:<11} devices={self.devices}  first page: median "
            f"{median:.1f} ms, max {max(ms):.1f} ms  limit {self.limit(starts) * 1000:.0f} ms "
            f"({starts:g}x the bare start, {statistics.median(self.bare_start) * 1000:.1f} ms)  "
            f"ratio {self.ratio(starts):.2f}  (to {ABSOLUTE_MS:g} ms: {median / ABSOLUTE_MS:.2f}; "
            f"filtered page median "
            f"{statistics.median(self.filtered) * 1000:.1f} ms; counts alone median "
            f"{statistics.median(self.counts) * 1000:.1f} ms over {self.collected} devices "
            "with collected data)"
        )


def device_rows(count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seen: set[str] = set()
    i = 0
    while i < count:
        tag = "C02" + "".join(rng.choices(TAG_ALPHABET, k=9))
        if tag in seen:
            continue
        seen.add(tag)
        created = start + timedelta(seconds=i)
        enrolled = rng.random() < ENROLLED_SHARE
        yield {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "os_type": OS_TYPES[i % len(OS_TYPES)],
            "asset_tag": tag,
            "enroll_status": "enrolled" if enrolled else "not_enrolled",
            "owner": f"user{i % 500}" if enrolled else None,
            "credential_id": f"cred-{i}" if enrolled else None,
            "credential_attestation_type": ATTESTATIONS[i % 4] if enrolled else None,
            "source_name": "jamf" if i % 10 else None,
            "source_origin": "jamf" if i % 10 else None,
            "profile_model_identifier": "MacBookPro18,3",
            "profile_os_version": "14.4.1",
            "profile_os_build": "23E224",
            "profile_os_usernames": [f"user{i % 500}"],
            "profile_update_time": created,
            "create_time": created,
            "update_time": created,
        }
        i += 1


def collected_row(device: dict[str, Any], drifted: bool, now: datetime) -> dict[str, Any]:
    return {
        "device_id": device["id"],
        "serial_number": device["asset_tag"],
        "os_type": device["os_type"],
        "model_identifier": "MacBookPro18,3",
        "os_version": "14.2" if drifted else "14.4.1",
        "os_build": "23E224",
        "os_login_user": device["profile_os_usernames"][0],
        "record_time": now,
    }


def seed(url: str, count: int) -> tuple[float, int]:
    """Migrate and insert ``count`` devices (and some collected data); seconds taken."""
    began = time.perf_counter()
    db = Database.connect(url)
    rng = random.Random(20261208)
    collected = 0
    now = datetime(2026, 6, 1, tzinfo=UTC)
    try:
        rows = device_rows(count, rng)
        table = cast(Table, DeviceRow.__table__)
        reports = cast(Table, CollectedDataRow.__table__)
        with db.engine.begin() as conn:
            while batch := [row for _, row in zip(range(BATCH_SIZE), rows, strict=False)]:
                conn.execute(insert(table), batch)
                chosen = [d for d in batch if rng.random() < COLLECTED_SHARE]
                if chosen:
                    conn.execute(
                        insert(reports),
                        [collected_row(d, k % 2 == 0, now) for k, d in enumerate(chosen)],
                    )
                    collected += len(chosen)
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE devices"))
                conn.execute(text("ANALYZE collected_data"))
    finally:
        db.close()
    return time.perf_counter() - began, collected


def signed_in(client: TestClient, credential: str) -> None:
    form = client.get("/ui/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if match is None:
        raise RuntimeError(f"no sign-in form at /ui/login ({form.status_code})")
    answer = client.post(
        "/ui/login", data={"csrf": match.group(1), "credential": credential},
        follow_redirects=False,
    )  # fmt: skip
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in refused: {answer.status_code}")


def timed_get(client: TestClient, path: str) -> float:
    began = time.perf_counter()
    answer = client.get(path)
    elapsed = time.perf_counter() - began
    if answer.status_code != 200 or "<table>" not in answer.text:
        raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
    return elapsed


def bench_backend(backend: str, count: int, runs: int) -> Result:
    with DATABASES[backend]() as url, tempfile.TemporaryDirectory() as tmp:
        seconds, collected = seed(url, count)
        print(f"{backend:<11} seeded {count} devices in {seconds:.1f} s", flush=True)
        db = Database.connect(url)
        try:
            _, credential = users.add_user(db.uow(), "bench", (Role.DEVICE_ADMIN,), actor="bench")
            settings = Settings(data_dir=Path(tmp), database_url=url)
            app = create_app(settings, {}, admin=AdminApi(db, settings))
            with TestClient(app) as client:
                signed_in(client, credential)
                timed_get(client, "/ui/devices")  # warm-up: templates, compiled SQL
                timed_get(client, FILTERED)
                first, bare = [], []
                for _ in range(runs):
                    bare.append(time_bare_start())
                    first.append(timed_get(client, "/ui/devices"))
                filtered = [timed_get(client, FILTERED) for _ in range(runs)]
            counts = []
            for _ in range(runs):
                began = time.perf_counter()
                devices.device_counts(db.uow())
                counts.append(time.perf_counter() - began)
        finally:
            db.close()
        return Result(backend, count, collected, seconds, first, filtered, counts, bare)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console",
        description="Time the web console's devices page, server-side, on a large inventory.",
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices to seed")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=15, help="timed requests after a warm-up")
    parser.add_argument(
        "--limit-starts", type=float, default=15.0,
        help="the target: the first page within this many bare interpreter starts",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="2,000 devices, SQLite, 3 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.devices, args.backend, args.runs = 2000, "sqlite", 3
    if args.devices < 1 or args.runs < 1 or args.limit_starts <= 0:
        parser.error("--devices and --runs must be at least 1, --limit-starts above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = [bench_backend(b, args.devices, args.runs) for b in backends]
    for result in results:
        print(result.line(args.limit_starts))
    passed = all(r.ratio(args.limit_starts) <= 1.0 for r in results)
    print("PASS" if passed else "FAIL")
    return 0 if passed or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
