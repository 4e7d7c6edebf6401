"""Target: auto-enrollment checks through the real queue, against a no-op on the same queue.

Everything runs for real: a private redis-server as broker (database 0) and result backend
(database 1), one ``devtrust worker --concurrency 2`` (two prefork worker processes), and a
scratch database per backend. This process sends tasks by name, as ``devtrust serve``
does (``worker.dispatch``), and hears each result the moment the worker publishes it, from
its own subscription to the result backend's channels; Celery's ``AsyncResult.get``
then reads every verdict after the timing, so each check is known to have passed.

Figures, per backend, all measured in the same run:

* ``throughput``: tasks per second from the first send to the last result of a burst of
  ``--checks`` tasks sent as fast as one client can; no-op tasks (``devtrust.noop``, what
  the queue itself costs) and checks (``devtrust.ceremony.auto_enroll``, each one on its
  own registered device with an MDM profile, so each mints a token) in interleaved
  rounds, so that the machine's noise falls on both alike; each figure is the median;
* ``latency``: an open-loop offered load for ``--seconds``, each task sent on a fixed
  schedule whatever the earlier ones are doing, at ``--load-share`` (default 50%) of the
  checks' own throughput measured just before: first no-op tasks, then checks, at the
  same rate. A task's latency runs from its scheduled send time to its result's
  arrival, so a sender that falls behind shows in the figure (p50, p99, max).

Targets, each printed as a ratio (at or below 1.0 is met), each against a baseline of
the same run, so that they hold on a slow machine as on a quick one:

* check throughput at least 60% of the no-op throughput (ratio: 0.60 / the share);
* the checks' p99 latency within 3x the no-op tasks' p99 at the same offered rate.

The latency target was an absolute 100 ms at 100 checks/s. On a machine of the same
kind that was slower, the checks peaked at 108/s: 100/s was then saturation, and the p99
read 655-825 ms while the throughput share still passed. Offered at a share of the
checks' own peak, the load is the same distance from saturation on any machine.

The run fails (exit status 1) when a target is missed, and stops with a message when any
check is refused: every device is fresh, so a refusal is a bug, not a figure.

    python -m bench.auto_enroll [--checks 1000] [--rounds 3] [--load-share 0.5]
                                [--seconds 10] [--backend sqlite|postgresql|both] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from bench.bench_devices_ls import DATABASES, devtrust_script
from ceremony.protocol import Collected
from inventory.db import Database
from inventory.domain import CollectedData, OSType, Profile
from inventory.services import auto_enroll, devices
from inventory.settings import load_settings
from tests.processes import RedisServer
from worker.celery import AUTO_ENROLL_TASK, NOOP_TASK, QUEUE, create_app
from worker.dispatch import CHECK_EXPIRES

USER = "alice"
CONCURRENCY = 2
PROFILE = Profile(
    model_identifier="MacBookPro18,3",
    os_version="14.2.1",
    os_build="23C71",
    os_usernames=(USER,),
    jamf_binary_version="11.1.0",
)
WARM_UP = 20  # of each task, so both worker processes open their database pools
READY = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
RESULT_CHANNELS = "celery-task-meta-*"  # the Redis backend publishes each state here


def ms(seconds: float) -> float:
    return seconds * 1000


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# -- the stack: Redis, the worker, the devices ------------------------------------------


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    server = RedisServer(directory)
    try:
        server.start()
    except pytest.fail.Exception as exc:
        raise SystemExit(f"redis-server: {exc}") from None
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[None]:
    """``devtrust worker --concurrency 2`` until it is ready; its log goes to a file, so
    reading it costs this process nothing while the clock runs."""
    argv = [str(devtrust_script()), "worker", "--concurrency", str(CONCURRENCY)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*argv, "--name", "bench@%h"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise SystemExit(f"bench: the worker did not start:\n{tail}")
            time.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def register(url: str, count: int, first: int = 0) -> list[dict[str, Any]]:
    """``count`` macOS devices with the MDM profile, numbered from ``first``; returns one
    check's kwargs for each,
    collected data that matches its profile, and the check's row opened as the service
    opens it before it sends the check (not timed: the service's INSERT is not the
    worker's cost)."""
    db = Database.connect(url)
    try:
        payloads = []
        for i in range(first, first + count):
            tag = f"C02BENCH{i:05d}"
            devices.register_device(
                db.uow(), os_type="macos", asset_tag=tag, actor="jamf", profile=PROFILE
            )
            collected = CollectedData(
                serial_number=tag,
                os_type=OSType.MACOS,
                model_identifier=PROFILE.model_identifier,
                os_version=PROFILE.os_version,
                os_build=PROFILE.os_build,
                os_login_user=USER,
                jamf_binary_version=PROFILE.jamf_binary_version,
            )
            wire = Collected.from_domain(collected).model_dump(mode="json", exclude_none=True)
            check = auto_enroll.open_check(db.uow(autocommit=True), USER)
            payloads.append({"user": USER, "collected": wire, "check": check})
        return payloads
    finally:
        db.close()


# -- sending, and hearing the results -----------------------------------------------------


class Arrivals:
    """When each task's result reached a subscriber of the result backend: what a login
    waiting in ``AsyncResult.get`` hears at the same moment. One thread reads the
    channels, so waiting for results never holds up the sending."""

    def __init__(self, backend_url: str) -> None:
        self._client = redis.Redis.from_url(backend_url)
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
        self._pubsub.psubscribe(RESULT_CHANNELS)
        # Subscribed before anything is sent, so no result goes unheard.
        deadline = time.monotonic() + 10
        while (m := self._pubsub.get_message(timeout=1)) is None or m["type"] != "psubscribe":
            if time.monotonic() > deadline:
                raise SystemExit("bench: no answer to the result channels' subscription")
        self.times: dict[str, float] = {}
        self._waiting: set[str] = set()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stopping:
            message = self._pubsub.get_message(timeout=0.5)
            if message is None or message["type"] != "pmessage":
                continue
            now = time.perf_counter()
            meta = json.loads(message["data"])
            if meta.get("status") not in READY:  # a STARTED state is not a result
                continue
            with self._changed:
                self.times[meta["task_id"]] = now
                self._waiting.discard(meta["task_id"])
                if not self._waiting:
                    self._changed.notify_all()

    def wait(self, ids: Sequence[str], timeout: float) -> list[float]:
        """The arrival time of each of ``ids``, once all have arrived."""
        with self._changed:
            self._waiting = set(ids) - self.times.keys()
            if not self._changed.wait_for(lambda: not self._waiting, timeout):
                raise SystemExit(
                    f"bench: {len(self._waiting)} of {len(ids)} tasks had no result "
                    f"after {timeout:.0f} s"
                )
            return [self.times[i] for i in ids]

    def close(self) -> None:
        self._stopping = True
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._client.close()


def send(app: Celery, task: str, kwargs: dict[str, Any]) -> AsyncResult:
    """As ``CeleryCheckQueue.submit`` sends a check: its id is its check's."""
    return app.send_task(
        task,
        task_id=kwargs.get("check"),
        kwargs=kwargs,
        queue=QUEUE,
        expires=CHECK_EXPIRES,
        retry=False,
    )


def verdicts(task: str, results: Sequence[AsyncResult]) -> None:
    """Read every result as the service does; any failed task or refused check stops the
    bench."""
    refused = []
    for result in results:
        value = result.get(timeout=60, propagate=False)
        if result.failed():
            raise SystemExit(f"bench: a {task} task failed on the worker: {value!r}")
        if task == AUTO_ENROLL_TASK and not (isinstance(value, dict) and value.get("ok")):
            refused.append(value)
    if refused:
        raise SystemExit(
            f"bench: {len(refused)} of {len(results)} checks were refused, "
            f"the first: {refused[0]!r}"
        )


@contextmanager
def no_gc() -> Iterator[None]:
    """No garbage collection while the clock runs (as ``timeit`` does): a full collection
    of this process's thousands of results would stall the sender by up to 100 ms, a pause
    of the bench's own, not of the queue's."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def burst(app: Celery, arrivals: Arrivals, task: str, payloads: Sequence[dict[str, Any]]) -> float:
    """Tasks per second: ``payloads`` sent as fast as possible, timed to the last result."""
    with no_gc():
        began = time.perf_counter()
        results = [send(app, task, kwargs) for kwargs in payloads]
        done = max(arrivals.wait([r.id for r in results], timeout=120 + len(payloads) / 10))
    verdicts(task, results)
    return len(payloads) / (done - began)


@dataclass
class Load:
    rate: float  # offered, checks per second
    latencies: list[float]  # seconds, scheduled send to verdict
    sent_rate: float  # what the sender achieved
    lag: float  # the sender's worst delay behind its schedule, seconds


def offered_load(
    app: Celery,
    arrivals: Arrivals,
    rate: float,
    payloads: Sequence[dict[str, Any]],
    task: str = AUTO_ENROLL_TASK,
) -> Load:
    """One ``task`` every 1/rate seconds on a fixed schedule (open loop)."""
    with no_gc():
        start = time.perf_counter() + 0.1
        scheduled, results, lag = [], [], 0.0
        for i, kwargs in enumerate(payloads):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            lag = max(lag, time.perf_counter() - due)
            results.append(send(app, task, kwargs))
            scheduled.append(due)
        last_sent = time.perf_counter()
        arrived = arrivals.wait([r.id for r in results], timeout=120)
    verdicts(task, results)
    return Load(
        rate,
        [got - due for got, due in zip(arrived, scheduled, strict=True)],
        (len(payloads) - 1) / (last_sent - start) if len(payloads) > 1 else rate,
        lag,
    )


# -- figures --------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    size: int  # tasks per burst
    noop: list[float]  # tasks per second, per round
    checks: list[float]
    load: Load  # checks
    noop_load: Load  # no-op tasks at the same rate
    share_limit: float
    p99_limit: float  # the checks' p99 over the no-op tasks'

    @property
    def share(self) -> float:
        return statistics.median(self.checks) / statistics.median(self.noop)

    def targets(self) -> list[tuple[str, float, float, str, float]]:
        """(name, figure, limit, unit, ratio) for each target; a ratio at or below 1 is met."""
        over = p99(self.load.latencies) / p99(self.noop_load.latencies)
        return [
            ("checks / no-op throughput", self.share, self.share_limit, "x",
             self.share_limit / self.share),
            ("p99 latency, checks / no-op at the same rate", over, self.p99_limit, "x",
             over / self.p99_limit),
        ]  # fmt: skip

    def report(self) -> list[str]:
        load, lat = self.load, self.load.latencies

        def rounds(values: list[float]) -> str:
            return ", ".join(f"{v:.0f}" for v in values)

        noop = self.noop_load
        lines = [
            f"{self.backend:<11} throughput, {len(self.noop)} rounds of {self.size} tasks: "
            f"no-op median {statistics.median(self.noop):.0f} tasks/s ({rounds(self.noop)}), "
            f"checks median {statistics.median(self.checks):.0f} checks/s "
            f"({rounds(self.checks)}); every check passed",
            f"{self.backend:<11} latency, {len(noop.latencies)} no-op tasks offered at "
            f"{noop.rate:.0f}/s (sent at {noop.sent_rate:.1f}/s, at most "
            f"{ms(noop.lag):.1f} ms late): p50 {ms(statistics.median(noop.latencies)):.1f} ms, "
            f"p99 {ms(p99(noop.latencies)):.1f} ms, max {ms(max(noop.latencies)):.1f} ms",
            f"{self.backend:<11} latency, {len(lat)} checks offered at {load.rate:.0f}/s "
            f"(sent at {load.sent_rate:.1f}/s, at most {ms(load.lag):.1f} ms late): "
            f"p50 {ms(statistics.median(lat)):.1f} ms, p99 {ms(p99(lat)):.1f} ms, "
            f"max {ms(max(lat)):.1f} ms; every check passed",
        ]
        for name, figure, limit, _unit, ratio in self.targets():
            at_least = "at least " if name.startswith("checks / no-op") else ""
            shown = f"{figure:.2f}x  limit {at_least}{limit:.2f}x"
            lines.append(
                f"{self.backend:<11} {name}: {shown}  ratio {ratio:.2f}  "
                f"{'PASS' if ratio <= 1 else 'FAIL'}"
            )
        return lines

    def passed(self) -> bool:
        return all(ratio <= 1 for *_, ratio in self.targets())


def bench_backend(backend: str, args: argparse.Namespace) -> Figures:
    with (
        DATABASES[backend]() as url,
        tempfile.TemporaryDirectory(prefix="devtrust_bench_") as tmp,
        redis_server(Path(tmp)) as redis_url,
    ):
        payloads = register(url, WARM_UP + args.rounds * args.checks)
        settings = {
            "DEVTRUST_DATA_DIR": str(Path(tmp) / "data"),
            "DEVTRUST_DATABASE_URL": url,
            "DEVTRUST_BROKER_URL": f"{redis_url}/0",
            "DEVTRUST_RESULT_BACKEND": f"{redis_url}/1",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
        with worker_process({**env, **settings}, Path(tmp) / "worker.log"):
            app = create_app(
                load_settings(
                    data_dir=settings["DEVTRUST_DATA_DIR"],
                    database_url=url,
                    broker_url=settings["DEVTRUST_BROKER_URL"],
                    result_backend=settings["DEVTRUST_RESULT_BACKEND"],
                )
            )
            arrivals = Arrivals(settings["DEVTRUST_RESULT_BACKEND"])
            try:
                checks = iter(payloads)
                # Warm-up: connections, both worker processes' pools, first-use imports.
                burst(app, arrivals, NOOP_TASK, [{"echo": i} for i in range(WARM_UP)])
                burst(app, arrivals, AUTO_ENROLL_TASK, [next(checks) for _ in range(WARM_UP)])
                noops: list[float] = []
                passed: list[float] = []
                for _ in range(args.rounds):
                    noop_args = [{"echo": i} for i in range(args.checks)]
                    noops.append(burst(app, arrivals, NOOP_TASK, noop_args))
                    round_args = [next(checks) for _ in range(args.checks)]
                    passed.append(burst(app, arrivals, AUTO_ENROLL_TASK, round_args))
                # The load: a share of the checks' own peak, measured just now, so it is
                # as far from saturation on a slow machine as on a quick one.
                rate = args.load_share * statistics.median(passed)
                size = max(2, round(rate * args.seconds))
                load_checks = register(url, size, first=WARM_UP + args.rounds * args.checks)
                noop_args = [{"echo": i} for i in range(size)]
                noop_load = offered_load(app, arrivals, rate, noop_args, NOOP_TASK)
                load = offered_load(app, arrivals, rate, load_checks)
            finally:
                arrivals.close()
                app.close()
    return Figures(backend, args.checks, noops, passed, load, noop_load, args.share, args.limit_p99)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auto_enroll",
        description="Time auto-enrollment checks through Celery and Redis against a no-op "
        "task, and their latency at a steady load; print ratios to the targets.",
    )
    # Their defaults are set after parsing: --quick's, or the full run's.
    parser.add_argument("--checks", type=int, help="tasks per throughput round (default 1000)")
    parser.add_argument("--rounds", type=int, help="rounds; figures are medians (default 3)")
    parser.add_argument(
        "--load-share",
        type=float,
        default=0.5,
        help="the latency load's rate, as a share of the checks' measured throughput",
    )
    parser.add_argument("--seconds", type=float, help="how long each load lasts (default 10)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="postgresql")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100 tasks per round, one round, loads of 1 s (smoke runs); --checks, --rounds "
        "and --seconds given as well still count",
    )
    parser.add_argument("--share", type=float, default=0.60, help="checks / no-op throughput")
    parser.add_argument(
        "--limit-p99",
        type=float,
        default=3.0,
        help="the checks' p99 latency over the no-op tasks' p99 at the same rate",
    )
    args = parser.parse_args(argv)
    defaults = (100, 1, 1.0) if args.quick else (1000, 3, 10.0)
    for name, default in zip(("checks", "rounds", "seconds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.checks < 2 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--checks must be at least 2, --rounds 1 and --seconds above 0")
    if not 0 < args.load_share < 1:
        parser.error("--load-share must be above 0 and below 1")
    if args.share <= 0 or args.limit_p99 <= 0:
        parser.error("the limits must be above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = []
    for backend in backends:
        figures = bench_backend(backend, args)
        for line in figures.report():
            print(line, flush=True)
        results.append(figures)
    passed = all(r.passed() for r in results)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
