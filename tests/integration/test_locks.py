"""The per-inventory sync lock, on the real Redis and on ``flock`` files.

Redis tests use database 15 (``DEVTRUST_TEST_REDIS_URL``) and a key prefix of their
own, deleted afterwards. A Redis that is down fails them with a message saying how to
start it; nothing is skipped. Races between processes run real subprocesses that wait
at a common start line, so they contend for the lock at the same moment.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from inventory.errors import DevtrustError
from worker.locks import (
    Lease,
    LocalLocks,
    LockLost,
    Locks,
    LockUnavailable,
    RedisLocks,
    locks_for,
)

ROOT = Path(__file__).resolve().parents[2]
NAME = "jamf-sync:jamf:prod"

# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"devtrust:test:{uuid.uuid4().hex[:12]}:lock:"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_locks(redis_url: str, prefix: str) -> Iterator[Callable[[], RedisLocks]]:
    """``redis_locks()`` is another worker's view of the same lock server."""
    made: list[RedisLocks] = []

    def make() -> RedisLocks:
        made.append(RedisLocks(redis_url, prefix=prefix))
        return made[-1]

    yield make
    for locks in made:
        locks.close()


def wait_for_lease(locks: Locks, owner: str, ttl: float = 30.0, within: float = 3.0) -> Lease:
    """Poll until ``locks`` hands out the lock, failing the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        lease = locks.acquire(NAME, ttl, owner)
        if lease is not None:
            return lease
        assert time.monotonic() < deadline, f"lock still held by {locks.holder(NAME)!r}"
        time.sleep(0.02)


def renewal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("devtrust-lock-renewal:")]


@pytest.mark.redis
def test_a_held_lock_is_refused_to_another_worker_who_sees_its_holder(
    redis_locks: Callable[[], RedisLocks],
) -> None:
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 30, "worker-1 task 7c1e")
    assert lease is not None
    assert lease.name == NAME
    assert two.acquire(NAME, 30, "worker-2 task 9f00") is None
    assert two.holder(NAME) == "worker-1 task 7c1e"
    assert two.holder("jamf-sync:jamf:other") is None
    assert two.acquire("jamf-sync:jamf:other", 30, "worker-2 task 9f00") is not None


@pytest.mark.redis
def test_release_lets_another_worker_acquire_and_a_second_release_changes_nothing(
    redis_locks: Callable[[], RedisLocks],
) -> None:
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 30, "worker-1")
    assert lease is not None
    lease.release()
    assert two.holder(NAME) is None
    other = two.acquire(NAME, 30, "worker-2")
    assert other is not None
    lease.release()
    assert one.holder(NAME) == "worker-2"
    assert lease.renew() is False
    assert other.renew() is True


@pytest.mark.redis
def test_an_unrenewed_lock_frees_itself_after_its_ttl(
    redis_locks: Callable[[], RedisLocks],
) -> None:
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 0.3, "worker-1")
    start = time.monotonic()
    assert lease is not None
    assert two.acquire(NAME, 30, "worker-2") is None
    wait_for_lease(two, "worker-2")
    assert time.monotonic() - start >= 0.25, "the lock freed itself before its ttl"
    assert one.holder(NAME) == "worker-2"


@pytest.mark.redis
def test_a_renewed_lock_outlives_its_ttl_until_the_block_ends(
    redis_locks: Callable[[], RedisLocks],
) -> None:
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 0.3, "worker-1")
    assert lease is not None
    with lease:
        lease.start_renewal()
        assert [t.name for t in renewal_threads()] == [f"devtrust-lock-renewal:{NAME}"]
        time.sleep(1.0)
        assert two.acquire(NAME, 30, "worker-2") is None
        assert two.holder(NAME) == "worker-1"
    assert renewal_threads() == []
    assert two.holder(NAME) is None
    assert two.acquire(NAME, 30, "worker-2") is not None


@pytest.mark.redis
def test_renew_reports_a_lost_lock_and_release_leaves_the_new_holder_alone(
    redis_locks: Callable[[], RedisLocks],
) -> None:
    one, two, three = redis_locks(), redis_locks(), redis_locks()
    lease = one.acquire(NAME, 0.2, "worker-1")
    assert lease is not None
    assert lease.renew() is True
    taken = wait_for_lease(two, "worker-2")
    assert lease.renew() is False
    lease.release()
    assert three.holder(NAME) == "worker-2"
    assert three.acquire(NAME, 30, "worker-3") is None
    assert taken.renew() is True


@pytest.mark.redis
def test_renewal_warns_when_the_lock_was_lost(
    redis_url: str,
    prefix: str,
    redis_locks: Callable[[], RedisLocks],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="devtrust.worker.locks")
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 0.3, "worker-1")
    assert lease is not None
    lease.start_renewal()
    # Another worker's view after a pause longer than the ttl: the key expired and was taken.
    client = Redis.from_url(redis_url)
    try:
        client.delete(prefix + NAME)
    finally:
        client.close()
    assert two.acquire(NAME, 30, "worker-2") is not None

    deadline = time.monotonic() + 3
    while not any(r.name == "devtrust.worker.locks" for r in caplog.records):
        assert time.monotonic() < deadline, "no warning about the lost lock"
        time.sleep(0.02)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert NAME in record.getMessage()
    assert "lost" in record.getMessage()
    lease.release()
    assert one.holder(NAME) == "worker-2"


@pytest.mark.redis
def test_a_lease_is_held_until_a_renewal_finds_it_lost_or_its_ttl_passes_unrenewed(
    redis_url: str, prefix: str, redis_locks: Callable[[], RedisLocks]
) -> None:
    one, two = redis_locks(), redis_locks()
    lease = one.acquire(NAME, 30, "worker-1")
    assert lease is not None
    lease.ensure_held()  # just taken: ours
    client = Redis.from_url(redis_url)
    try:
        client.delete(prefix + NAME)  # expired, as after a pause longer than its ttl
    finally:
        client.close()
    assert two.acquire(NAME, 30, "worker-2") is not None
    lease.ensure_held()  # nobody has looked yet: no round trip is made to find out
    assert lease.renew() is False
    with pytest.raises(LockLost, match=f"the lock {NAME} was lost"):
        lease.ensure_held()
    lease.release()
    assert one.holder(NAME) == "worker-2"

    # A lease nobody could renew within its ttl (the lock server did not answer, or the
    # renewals stalled) may have expired and been taken: it counts as lost, unasked.
    short = one.acquire(NAME + ":short", 0.2, "worker-1")
    assert short is not None
    time.sleep(0.3)
    unrenewed = r"not renewed for \d+\.\d s, longer than its ttl \(0.2 s\)"
    with pytest.raises(LockLost, match=unrenewed):
        short.ensure_held()
    short.release()
    with pytest.raises(LockLost, match="was released"):
        short.ensure_held()


def test_a_file_lease_does_not_expire_unrenewed(tmp_path: Path) -> None:
    locks = LocalLocks(tmp_path)
    lease = locks.acquire(NAME, 0.05, "worker-1")
    assert lease is not None
    time.sleep(0.1)  # past its ttl: an flock lasts until released all the same
    lease.ensure_held()
    lease.release()
    with pytest.raises(LockLost):
        lease.ensure_held()


@pytest.mark.redis
def test_an_unreachable_lock_server_is_one_line_naming_it_without_its_password() -> None:
    locks = RedisLocks("redis://:hunter2@127.0.0.1:1/3")
    try:
        for attempt in (lambda: locks.acquire(NAME, 30, "worker-1"), lambda: locks.holder(NAME)):
            with pytest.raises(LockUnavailable) as raised:
                attempt()
            message = str(raised.value)
            assert isinstance(raised.value, DevtrustError)
            assert "127.0.0.1:1/3" in message
            assert "hunter2" not in message
            assert len(message.splitlines()) == 1
            assert raised.value.__suppress_context__
    finally:
        locks.close()


# -- processes -----------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from worker.locks import LocalLocks, RedisLocks

backend, where, prefix, name, owner = sys.argv[1:6]
locks = RedisLocks(where, prefix=prefix) if backend == "redis" else LocalLocks(Path(where))
print("ready", flush=True)
sys.stdin.readline()  # the start line
lease = locks.acquire(name, 30.0, owner)
print("won" if lease else "lost", flush=True)
sys.stdin.readline()  # told to release, or the parent closed stdin
if lease:
    lease.release()
locks.close()
print("released", flush=True)
"""


class Child:
    """A process that takes the lock when told to, and holds it until told to release."""

    def __init__(self, backend: str, where: str, prefix: str, owner: str) -> None:
        self.owner = owner
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, backend, where, prefix, NAME, owner],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put("<exited>")

    def said(self, timeout: float = 30.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.owner} said nothing for {timeout} s")

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def children() -> Iterator[Callable[[str, str, str, str], Child]]:
    started: list[Child] = []

    def start(backend: str, where: str, prefix: str, owner: str) -> Child:
        started.append(Child(backend, where, prefix, owner))
        return started[-1]

    yield start
    for child in started:
        child.stop()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(backend, where, prefix) for a child process."""
    if request.param == "redis":
        return "redis", str(request.getfixturevalue("redis_url")), request.getfixturevalue("prefix")
    return "local", str(tmp_path / "locks"), ""


def test_exactly_one_of_several_racing_processes_wins(
    backend: tuple[str, str, str], children: Callable[[str, str, str, str], Child]
) -> None:
    racers = [children(*backend, f"racer-{i}") for i in range(4)]
    for racer in racers:
        assert racer.said() == "ready"
    for racer in racers:
        racer.tell("go")
    said = {racer.owner: racer.said() for racer in racers}
    winners = [owner for owner, word in said.items() if word == "won"]
    assert len(winners) == 1, said
    assert sorted(said.values()) == ["lost", "lost", "lost", "won"], said
    kind, where, prefix = backend
    locks = RedisLocks(where, prefix=prefix) if kind == "redis" else LocalLocks(Path(where))
    try:
        assert locks.holder(NAME) == winners[0]
    finally:
        locks.close()


# -- one machine ---------------------------------------------------------------------------


def test_a_local_lock_excludes_another_process_until_it_releases(
    tmp_path: Path, children: Callable[[str, str, str, str], Child]
) -> None:
    directory = tmp_path / "locks"
    child = children("local", str(directory), "", "worker-1 task 7c1e")
    assert child.said() == "ready"
    child.tell("go")
    assert child.said() == "won"

    locks = LocalLocks(directory)
    assert locks.acquire(NAME, 30, "worker-2") is None
    assert locks.holder(NAME) == "worker-1 task 7c1e"

    child.tell("release")
    assert child.said() == "released"
    assert locks.holder(NAME) is None
    lease = locks.acquire(NAME, 30, "worker-2")
    assert lease is not None
    assert locks.holder(NAME) == "worker-2"


def test_a_local_lock_held_by_a_killed_process_is_free(
    tmp_path: Path, children: Callable[[str, str, str, str], Child]
) -> None:
    directory = tmp_path / "locks"
    child = children("local", str(directory), "", "worker-1")
    assert child.said() == "ready"
    child.tell("go")
    assert child.said() == "won"
    locks = LocalLocks(directory)
    assert locks.acquire(NAME, 30, "worker-2") is None

    os.kill(child.process.pid, signal.SIGKILL)
    assert child.process.wait(timeout=30) == -signal.SIGKILL
    assert locks.holder(NAME) is None
    assert locks.acquire(NAME, 30, "worker-2") is not None
    assert locks.holder(NAME) == "worker-2"


def test_local_locks_exclude_within_one_process_and_release_is_idempotent(
    tmp_path: Path,
) -> None:
    one, two = LocalLocks(tmp_path / "locks"), LocalLocks(tmp_path / "locks")
    lease = one.acquire(NAME, 0.01, "worker-1")
    assert lease is not None
    time.sleep(0.05)  # ttl is ignored: an flock lasts until released
    assert two.acquire(NAME, 30, "worker-2") is None
    assert lease.renew() is True

    lease.release()
    assert lease.renew() is False
    other = two.acquire(NAME, 30, "worker-2")
    assert other is not None
    lease.release()
    assert one.holder(NAME) == "worker-2"
    assert one.acquire(NAME, 30, "worker-1") is None

    with other:
        other.start_renewal()
    assert renewal_threads() == []
    assert one.holder(NAME) is None


def test_local_lock_names_become_distinct_files_inside_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "locks"
    locks = LocalLocks(directory)
    names = ["../../escape", "a/b", "a:b", "a_b", "/etc/passwd", ".hidden", ""]
    leases = [locks.acquire(name, 30, f"owner of {name!r}") for name in names]
    assert all(lease is not None for lease in leases)
    assert {locks.holder(name) for name in names} == {f"owner of {name!r}" for name in names}
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == len(names)
    assert all(p.parent == directory and not p.name.startswith(".") for p in files)


# -- choosing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker_url", "redis_url", "expected"),
    [
        ("redis://broker.internal:6379/0", None, "redis://broker.internal:6379/0"),
        ("rediss://:s3cret@broker.internal:6380/0", None, "rediss://:***@broker.internal:6380/0"),
        ("amqp://guest@rabbit.internal//", "redis://locks.internal/4", "redis://locks.internal/4"),
        ("redis://broker.internal/0", "redis://locks.internal/4", "redis://locks.internal/4"),
        (None, "redis://locks.internal/4", "redis://locks.internal/4"),
    ],
)
def test_locks_for_uses_redis_when_it_has_one(
    broker_url: str | None, redis_url: str | None, expected: str, tmp_path: Path
) -> None:
    locks = locks_for(broker_url, tmp_path, redis_url=redis_url)
    try:
        assert isinstance(locks, RedisLocks)
        assert locks.where == expected
        assert locks.prefix == "devtrust:lock:"
    finally:
        locks.close()
    assert not (tmp_path / "locks").exists()


@pytest.mark.parametrize("broker_url", [None, "amqp://guest@rabbit.internal//", "filesystem://"])
def test_locks_for_falls_back_to_lock_files_in_the_data_directory(
    broker_url: str | None, tmp_path: Path
) -> None:
    locks = locks_for(broker_url, tmp_path)
    assert isinstance(locks, LocalLocks)
    assert locks.directory == tmp_path / "locks"
    lease = locks.acquire(NAME, 30, "worker-1")
    assert lease is not None
    assert [p.parent for p in (tmp_path / "locks").iterdir()] == [tmp_path / "locks"]


@pytest.mark.redis
def test_locks_for_a_redis_broker_locks_on_that_server(redis_url: str, tmp_path: Path) -> None:
    name = f"devtrust-test:{uuid.uuid4().hex}"
    locks = locks_for(redis_url, tmp_path)
    direct = RedisLocks(redis_url)
    try:
        lease = locks.acquire(name, 30, "worker-1")
        assert lease is not None
        assert direct.holder(name) == "worker-1"
        assert direct.acquire(name, 30, "worker-2") is None
        lease.release()
        assert direct.holder(name) is None
    finally:
        locks.close()
        direct.close()


# -- what another worker is told about a held lock -----------------------------------------

HOLDER = """
import os, sys, time
from pathlib import Path
from worker.locks import LocalLocks, RedisLocks

backend, where, prefix, name, owner, ttl, fork = sys.argv[1:8]
locks = RedisLocks(where, prefix=prefix) if backend == "redis" else LocalLocks(Path(where))
lease = locks.acquire(name, float(ttl), owner)
assert lease is not None
lease.start_renewal()
# With fork: a child that inherits the lock's descriptor, as a process a sync started would.
child = os.fork() if fork == "fork" else 1
if child == 0:
    time.sleep(120)
    os._exit(0)
print("held", child, flush=True)
time.sleep(120)
"""


def hold(
    backend: str, where: str, prefix: str, owner: str, ttl: float, fork: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """A process that takes the lock, renews it, and holds it until killed; and the pid of
    its forked child, when asked for one."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, backend, where, prefix, NAME, owner, str(ttl),
         "fork" if fork else "-"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    word, child = process.stdout.readline().split()
    assert word == "held"
    return process, int(child)


@pytest.mark.redis
def test_a_redis_lock_whose_renewals_stopped_is_told_dead_with_the_time_it_frees(
    redis_url: str, prefix: str, redis_locks: Callable[[], RedisLocks]
) -> None:
    from datetime import UTC, datetime

    locks = redis_locks()
    process, _ = hold("redis", redis_url, prefix, "w1@host task 7c1e", ttl=3.0)
    try:
        time.sleep(1.5)  # a renewal or two (every ttl/3)
        alive = locks.state(NAME)
        assert alive is not None and alive.owner == "w1@host task 7c1e"
        assert not alive.holder_dead
        assert alive.renewed_ago is not None and alive.renewed_ago < 1.5
        assert alive.frees_in is not None and 1.5 < alive.frees_in <= 3
        assert "w1@host task 7c1e, lock renewed " in alive.describe()
        assert "unless renewed again, the lock frees at " in alive.describe()
    finally:
        process.kill()
        process.wait(timeout=30)
    killed = time.monotonic()
    deadline = killed + 3
    while not (state := locks.state(NAME)) or not state.holder_dead:
        assert state is not None, "the lock freed before its holder was told dead"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert time.monotonic() - killed < 2.5  # told within half a ttl of the last renewal
    now = datetime.now(UTC)
    assert state.frees_in is not None and 0 < state.frees_in <= 1.5
    frees_at = state.frees_at(now)
    assert frees_at is not None
    described = state.describe(now)
    assert described == (
        f"w1@host task 7c1e, whose worker stopped renewing the lock {state.renewed_ago:.0f} s "
        f"ago (it is gone or stuck); the lock frees at {frees_at:%H:%M:%S} UTC (in "
        f"{math.ceil(state.frees_in)} s)"
    )
    time.sleep(state.frees_in + 0.1)
    assert locks.state(NAME) is None
    assert locks.acquire(NAME, 30, "w2") is not None


def test_a_file_lock_names_its_holders_process_and_a_dead_one_that_still_holds_it(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "locks"
    locks = LocalLocks(directory)
    process, child = hold("local", str(directory), "", "w1@host task 7c1e", ttl=3.0, fork=True)
    try:
        alive = locks.state(NAME)
        assert alive is not None and (alive.owner, alive.pid) == ("w1@host task 7c1e", process.pid)
        assert not alive.holder_dead and alive.frees_in is None
        assert alive.describe() == (
            f"w1@host task 7c1e, process {process.pid} on this host; the lock frees when it ends"
        )
        process.kill()
        process.wait(timeout=30)
        # Its forked child still has the descriptor, so the lock is still held.
        dead = locks.state(NAME)
        assert dead is not None and dead.holder_dead and dead.pid == process.pid
        assert dead.describe() == (
            f"w1@host task 7c1e, whose process {process.pid} is gone; the lock frees when the "
            "processes that inherited its lock file end"
        )
        assert locks.acquire(NAME, 30, "w2") is None
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while locks.state(NAME) is not None:
        assert time.monotonic() < deadline, "the lock outlived every process that held it"
        time.sleep(0.05)
    assert locks.acquire(NAME, 30, "w2") is not None
