"""Targets for the Jamf sync engine, measured against the simulator on loopback.

Figures, per backend (SQLite, PostgreSQL), all measured in the same run:

* ``fetch-only``: read and map every page the full sync reads, writing nothing;
* ``write-only``: the same devices written page by page with ``apply_page``, no HTTP
  (records are generated and mapped outside the timed part);
* ``full``: a full sync of the fleet into an empty inventory (time, devices/s, peak RSS);
* ``no-change``: the same full sync again, with nothing changed in Jamf;
* ``partial``: a partial sync after 1% of the fleet sent a new inventory report;
* ``offset``: the ``full`` sync again, into an empty inventory, reading with the offset
  pages (``page=N``) the sync used before its keyset reads (``bench.sync_baselines``).

Targets on a 2-core machine, each printed as a ratio (at or below 1.0 is met). A time
target is judged in each round against the limit measured in that round, and its ratio is
the median of the rounds' ratios (``--runs``, default 3); the figures printed beside it
are medians:

* full sync within 1.5x of the slower of fetch-only and write-only;
* no-change full sync within 1.2x of fetch-only;
* partial sync with 1% changed under 5% of the full sync's time;
* the full sync (keyset reads) within 1.1x of the same sync on offset pages;
* peak RSS of a full sync at ``--devices`` within 30 MB of that at ``--small`` devices.

The simulator runs in its own process (``devtrust jamf simulator``), and every
measurement in a fresh child process, so the sync never shares a GIL with the server and
each peak RSS is that measurement's own.

The simulator answers after ``--latency-ms`` (default 50), far quicker than Jamf Cloud
serves a page of 500 computers but enough to model a server that is somewhere else. With
``--latency-ms 0`` the simulator competes with the sync for the same two cores, and the
full sync, which must parse and write in one process, lands at 1.0-1.3x the 1.5x limit:
that figure is in the README too.

    python -m bench.sync [--devices 100000] [--small 10000] [--backend sqlite|postgresql|both]
                         [--page-size 500] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_devices_ls import DATABASES, devtrust_script

CLIENT_ID, CLIENT_SECRET = "devtrust", "devtrust-secret"  # the simulator's defaults
MB = 1024 * 1024
# --reader: a whole listing read in a reader process at any size, or never.
READERS = {"process": 1, "threads": None}


# -- the children: one measurement each ---------------------------------------------


def _filter(limit_id: int) -> str:
    return f"general.remoteManagement.managed==true;id<={limit_id}"


def _cpu() -> float:
    """CPU seconds of this process and of the reader processes it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _peak_rss() -> int:
    """This process's peak RSS plus its largest reader process's (Linux: KiB): what the
    sync held at most, counted high (the two peaks need not coincide)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    readers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + readers) * 1024


def child_fetch(args: argparse.Namespace) -> dict[str, Any]:
    from jamf.client import JamfClient
    from jamf.sync import fetch_pages

    with JamfClient(args.jamf, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as client:
        client.api_version  # noqa: B018 - the version probe is not part of the figure
        began, cpu = time.perf_counter(), _cpu()
        pages = fetch_pages(
            client, _filter(args.limit_id), page_size=args.page_size, concurrency=args.concurrency
        )
        devices = sum(len(page.devices) for page in pages)
        return {"seconds": time.perf_counter() - began, "devices": devices, "cpu": _cpu() - cpu}


def child_write(args: argparse.Namespace) -> dict[str, Any]:
    from inventory.db import Database
    from inventory.services import source_sync as store
    from jamf.mapping import MappedDevice, map_computer, split_duplicates
    from jamf.simulator.computers import ComputerGenerator

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    generator = ComputerGenerator(args.seed, today)
    db = Database.connect(args.url)
    try:
        run = store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
        seconds, devices, cpu = 0.0, 0, 0.0
        for start in range(1, args.limit_id + 1, args.page_size):
            stop = min(start + args.page_size, args.limit_id + 1)
            raw = [generator.record(i) for i in range(start, stop)]
            managed = [
                m
                for m in (
                    map_computer(r) for r in raw if r["general"]["remoteManagement"]["managed"]
                )
                if isinstance(m, MappedDevice)
            ]
            kept, _ = split_duplicates(managed)
            records = kept
            began, cpu_before = time.perf_counter(), _cpu()
            store.apply_page(
                db.uow(), run, records, source="jamf", inventory="default", track_seen=False
            )
            seconds += time.perf_counter() - began
            devices += len(records)
            cpu += _cpu() - cpu_before
        return {"seconds": seconds, "devices": devices, "cpu": cpu}
    finally:
        db.close()


def child_sync(args: argparse.Namespace) -> dict[str, Any]:
    from inventory.db import Database
    from jamf.client import JamfClient
    from jamf.config import InventorySpec, SourceSpec
    from jamf.sync import PROCESS_READ_MIN, Kind, run_sync

    spec = InventorySpec(filter_rsql=_filter(args.limit_id), page_size=args.page_size)
    source = SourceSpec(inventories=(spec,))
    db = Database.connect(args.url)
    out: dict[str, Any] = {}
    reads: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.offset:
        from bench.sync_baselines import offset_reads

        reads = offset_reads()
    try:
        with JamfClient(args.jamf, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as client:
            client.api_version  # noqa: B018

            def timed(name: str, kind: Kind) -> None:
                began, cpu = time.perf_counter(), _cpu()
                run = run_sync(
                    db, client, source, spec, kind=kind, concurrency=args.concurrency,
                    process_min=READERS.get(args.reader, PROCESS_READ_MIN),
                )  # fmt: skip
                if run.status != "succeeded":
                    raise SystemExit(f"{name} sync failed: {run.error}")
                out[name] = {
                    "seconds": time.perf_counter() - began,
                    "cpu": _cpu() - cpu,
                    "details": run.details,
                    "fetched": run.fetched,
                    "created": run.created,
                    "updated": run.updated,
                    "unchanged": run.unchanged,
                }

            with reads:
                timed("full", Kind.FULL)
            out["full"]["peak_rss"] = _peak_rss()
            if args.only_full:
                return out
            timed("no-change", Kind.FULL)
            changed = change_fleet(args.jamf, args.limit_id, share=0.01)
            timed("partial", Kind.PARTIAL)
            out["partial"]["changed"] = changed
        return out
    finally:
        db.close()


def change_fleet(jamf_url: str, devices: int, *, share: float) -> int:
    """Send a new inventory report for ``share`` of the fleet, spread over it."""
    step = max(1, round(1 / share))
    with httpx.Client(base_url=jamf_url, timeout=30) as http:
        ids = range(1, devices + 1, step)
        for ident in ids:
            http.patch(f"/_sim/computers/{ident}", json={}).raise_for_status()
    return len(ids)


CHILDREN = {"fetch": child_fetch, "write": child_write, "sync": child_sync}


# -- the parent: simulator, databases, children, figures ------------------------------


@contextmanager
def simulator(devices: int, seed: int, latency_ms: float = 0.0) -> Iterator[str]:
    """``devtrust jamf simulator`` on a free loopback port, in its own process."""
    proc = subprocess.Popen(
        [str(devtrust_script()), "jamf", "simulator", "--devices", str(devices),
         "--port", "0", "--seed", str(seed), "--token-ttl", "300",
         "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at (http://\S+)", line)
        if not match:
            proc.kill()
            raise SystemExit(f"the simulator did not start: {line}{proc.stderr.read()}")  # type: ignore[union-attr]
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def child(mode: str, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.sync", "--child", mode]
    settings = {
        "page_size": args.page_size,
        "concurrency": args.concurrency,
        "seed": args.seed,
        **options,
    }
    for key, value in settings.items():
        if value is True:
            argv.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            argv += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if result.returncode != 0:
        raise SystemExit(f"bench child {mode} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@dataclass
class Round:
    """One round's measurements: fetch-only, write-only and the syncs, taken one after
    another on the same machine in the same minute or two."""

    fetch: dict[str, Any]
    write: dict[str, Any]
    sync: dict[str, Any]
    offset: dict[str, Any]

    def times(self) -> dict[str, tuple[float, float]]:
        """(figure, limit) in seconds of each time target, this round's own."""
        fetch, write = self.fetch["seconds"], self.write["seconds"]
        full = self.sync["full"]["seconds"]
        return {
            "full sync": (full, 1.5 * max(fetch, write)),
            "no-change full sync": (self.sync["no-change"]["seconds"], 1.2 * fetch),
            "partial sync, 1% changed": (self.sync["partial"]["seconds"], 0.05 * full),
            "full sync, keyset vs offset read": (full, 1.1 * self.offset["full"]["seconds"]),
        }


@dataclass
class Figures:
    backend: str
    devices: int
    rounds: list[Round]
    small: dict[str, Any]
    small_devices: int

    @property
    def fetch(self) -> dict[str, Any]:
        return median_of([r.fetch for r in self.rounds])

    @property
    def write(self) -> dict[str, Any]:
        return median_of([r.write for r in self.rounds])

    @property
    def sync(self) -> dict[str, Any]:
        return median_of([r.sync for r in self.rounds])

    @property
    def offset(self) -> dict[str, Any]:
        return median_of([r.offset for r in self.rounds])

    def checks(self) -> list[tuple[str, float, float, str, float]]:
        """(name, figure, limit, unit, ratio) for each target.

        A time target is judged in each round, against the limit measured in that round,
        and its ratio is the median of the rounds' ratios: the machine's noise moves a
        round's figure and its limit together, where medians of figures taken apart can
        pair one round's slow sync with another's quick fetch. Figure and limit are the
        medians, for reading."""
        per_round = [r.times() for r in self.rounds]
        checks = []
        for name in per_round[0]:
            pairs = [times[name] for times in per_round]
            ratio = statistics.median(f / lim if lim else float("inf") for f, lim in pairs)
            figure = statistics.median(f for f, _ in pairs)
            limit = statistics.median(lim for _, lim in pairs)
            checks.append((name, figure, limit, "s", ratio))
        growth = (self.sync["full"]["peak_rss"] - self.small["full"]["peak_rss"]) / MB
        name = f"peak RSS growth {self.small_devices} -> {self.devices}"
        checks.append((name, growth, 30.0, "MB", growth / 30.0))
        return checks

    def report(self) -> list[str]:
        full = self.sync["full"]
        sync, offset = self.sync, self.offset
        lines = [
            f"{self.backend:<11} devices={self.devices}  fetch-only {self.fetch['seconds']:.2f} s"
            f"  write-only {self.write['seconds']:.2f} s  full {full['seconds']:.2f} s "
            f"({full['created'] / full['seconds']:,.0f} devices/s, peak RSS "
            f"{full['peak_rss'] / MB:.0f} MB; {self.small['full']['peak_rss'] / MB:.0f} MB at "
            f"{self.small_devices})",
            f"{self.backend:<11} no-change: {sync['no-change']['unchanged']} unchanged, "
            f"{sync['no-change']['updated']} updated;  partial: "
            f"{sync['partial']['changed']} changed in Jamf, "
            f"{sync['partial']['fetched']} fetched, {sync['partial']['updated']} updated",
            f"{self.backend:<11} full sync: keyset read {full['seconds']:.2f} s "
            f"({full['created']} created), offset read (the old one) "
            f"{offset['full']['seconds']:.2f} s ({offset['full']['created']} created)",
        ]
        if len(self.rounds) > 1:
            for n, r in enumerate(self.rounds, 1):
                ratios = "  ".join(
                    f"{name} {f / lim:.2f}" for name, (f, lim) in r.times().items() if lim
                )
                lines.append(f"{self.backend:<11} round {n} ratios: {ratios}")
        for name, figure, limit, unit, ratio in self.checks():
            lines.append(
                f"{self.backend:<11} {name}: {figure:.2f} {unit}  limit {limit:.2f} {unit}  "
                f"ratio {ratio:.2f}"
            )
        return lines

    def passed(self) -> bool:
        return all(ratio <= 1.0 for *_, ratio in self.checks())


def warm_up(jamf: str, *limits: int) -> None:
    """Ask the simulator each query once, so no measurement pays its first-use costs
    (column arrays, the filter's result cache) and fetch-only, measured first, is not
    made slower than the syncs it is the limit for."""
    from jamf.client import JamfClient

    with JamfClient(jamf, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as client:
        for limit in limits:
            client.computers_page(page=0, page_size=1, filter=_filter(limit))


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number the median over the runs; anything else as the first run had it."""
    out: dict[str, Any] = {}
    for key, value in results[0].items():
        if isinstance(value, dict):
            out[key] = median_of([r[key] for r in results])
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = statistics.median_low(r[key] for r in results)  # counts stay whole
        elif isinstance(value, float):
            out[key] = statistics.median(r[key] for r in results)
        else:
            out[key] = value
    return out


def bench_backend(backend: str, jamf: str, args: argparse.Namespace) -> Figures:
    """``--runs`` rounds of fetch-only, write-only and the syncs, interleaved so that
    the machine's noise falls on all of them alike; each target is judged per round."""
    warm_up(jamf, args.devices, args.small)
    rounds = []
    for n in range(args.runs):
        fetch = child("fetch", args, jamf=jamf, limit_id=args.devices)
        with DATABASES[backend]() as url:
            write = child("write", args, url=url, limit_id=args.devices)
        sync: dict[str, Any] = {}
        offset: dict[str, Any] = {}
        # The two reads take turns going first, so neither always has the warmer machine.
        for old in (False, True) if n % 2 == 0 else (True, False):
            with DATABASES[backend]() as url:
                if old:
                    offset = child("sync", args, url=url, jamf=jamf, limit_id=args.devices,
                                   only_full=True, offset=True)  # fmt: skip
                else:
                    sync = child("sync", args, url=url, jamf=jamf, limit_id=args.devices)
        rounds.append(Round(fetch, write, sync, offset))
    # The RSS baseline reads as the large sync did (in a reader process or in threads),
    # though a fleet this small would not get a reader process of its own: the target
    # is how memory grows with the fleet, not what a second interpreter costs.
    reader = rounds[-1].sync["full"]["details"]["listings"]["computers"]["reader"]
    with DATABASES[backend]() as url:
        small = child("sync", args, url=url, jamf=jamf, limit_id=args.small, only_full=True,
                      reader=reader)  # fmt: skip
    return Figures(backend, args.devices, rounds, small, args.small)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync",
        description="Time Jamf syncs against the simulator and print ratios to the targets.",
    )
    parser.add_argument("--devices", type=int, default=100_000, help="computers in the fleet")
    parser.add_argument("--small", type=int, default=10_000, help="fleet for the RSS baseline")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--page-size", type=int, default=500, help="Jamf page size (max 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="pages fetched ahead")
    parser.add_argument("--seed", type=int, default=1, help="the simulator's fleet seed")
    parser.add_argument("--runs", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=50.0,
        help="delay the simulator adds to each request (default 50; 0 for none)",
    )
    # For the child processes the parent starts:
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--jamf", help=argparse.SUPPRESS)
    parser.add_argument("--limit-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--only-full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--offset", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader", choices=sorted(READERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.small < args.devices:
        parser.error("--small must be at least 1 and below --devices")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 1 <= args.page_size <= 2000 or args.concurrency < 1:
        parser.error("--page-size must be 1 to 2000 and --concurrency at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with simulator(args.devices, args.seed, args.latency_ms) as jamf:
        print(
            f"simulator: {args.devices} computers at {jamf}, latency {args.latency_ms:g} ms",
            flush=True,
        )
        results = []
        for backend in backends:
            figures = bench_backend(backend, jamf, args)
            for line in figures.report():
                print(line, flush=True)
            results.append(figures)
    passed = all(r.passed() for r in results)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
