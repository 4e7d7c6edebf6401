"""Beat's schedule outlives beat: on Redis (celery-redbeat, with a standby beat that takes
over), and in a file under the data directory on the embedded default. Real beat
processes on the machine's Redis, database 14 (no other test flushes it), or on files.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from inventory.settings import load_settings
from tests.processes import DEVTRUST, Process, started, wait_until
from worker.celery import (
    BEAT_KEY_PREFIX,
    PURGE_TASK,
    SYNC_TASK,
    FileScheduler,
    beat_schedule,
    create_app,
    schedule_file,
)

BEAT_REDIS = "redis://127.0.0.1:6379/14"
LOCK_TIMEOUT = 3  # seconds: beat ticks every 0.6 s at most, and a standby tries as often


@pytest.fixture
def beat_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BEAT_REDIS)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {BEAT_REDIS} ({exc}): run `make services`")
    yield client
    client.flushdb()
    client.close()


def beat_env(tmp: Path, broker: str | None, inventories: list[dict[str, Any]]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    env.update(
        DEVTRUST_DATA_DIR=str(tmp / "data"),
        DEVTRUST_JAMF_URL="http://127.0.0.1:9",  # beat only queues: nothing is synced
        DEVTRUST_JAMF_CLIENT_ID="devtrust",
        DEVTRUST_JAMF_CLIENT_SECRET="devtrust-secret",
        DEVTRUST_JAMF_SYNC_START_DELAY="0",
        DEVTRUST_BEAT_LOCK_TIMEOUT=f"{LOCK_TIMEOUT}s",
        DEVTRUST_JAMF_INVENTORY=json.dumps(inventories),
    )
    if broker:
        env.update(DEVTRUST_BROKER_URL=broker, DEVTRUST_RESULT_BACKEND=broker)
    return env


Messages = list[bytes | str]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: A full sync every hour, a partial every second: a beat that forgot the full sync's last
#: run queues another at once; the partials show the beat is scheduling.
EVERY_SECOND = [{"name": "default", "sync_period_partial": "1s", "sync_period_full": "1h"}]


def sent(messages: Messages) -> list[tuple[str, datetime]]:
    """(kind, when beat sent it) of each queued sync, read back from the message."""
    found = []
    for raw in messages:
        message = json.loads(raw)
        headers = message["headers"]
        assert headers["task"] == SYNC_TASK, headers
        kwargs = json.loads(base64.b64decode(message["body"]))[1]
        assert kwargs["scheduled"] is True and kwargs["inventory"] == "default"
        # A scheduled sync expires one period after beat sent it: a backlog is dropped.
        period = 1 if kwargs["kind"] == "partial" else 3600
        expires = datetime.fromisoformat(headers["expires"])
        found.append((kwargs["kind"], expires - timedelta(seconds=period)))
    return found


def kinds(messages: Messages) -> list[str]:
    return [kind for kind, _ in sent(messages)]


def assert_once_per_period(messages: Messages) -> None:
    partials = sorted(when for kind, when in sent(messages) if kind == "partial")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(partials)]
    assert gaps and min(gaps) >= 0.9, gaps  # never two sends of one period


def beat(env: dict[str, str], name: str) -> Process:
    return Process([DEVTRUST, "beat"], env, f"beat {name}")


def test_two_beats_on_redis_schedule_each_sync_once_and_the_standby_takes_over(
    tmp_path: Path, beat_redis: redis.Redis
) -> None:
    env = beat_env(tmp_path, BEAT_REDIS, EVERY_SECOND)

    def queued() -> Messages:
        return list(beat_redis.lrange("devtrust", 0, -1))

    first, second = beat(env, "first"), beat(env, "second")
    pair = [first, second]
    try:
        wait_until(
            lambda: any("beat: Acquired lock" in p.output() for p in pair), 30, "no beat locked"
        )
        active, standby = pair if "beat: Acquired lock" in first.output() else pair[::-1]
        # Both scheduling would queue every sync twice: the standby sends nothing.
        wait_until(lambda: kinds(queued()).count("partial") >= 2, 30, "too few partials")
        assert "beat: Acquired lock" not in standby.output()
        standby.wait_for("another beat holds the lock devtrust:beat:lock: standing by", 5)
        assert "Sending due task" not in standby.output(), standby.output()
        assert kinds(queued()).count("full") == 1  # the first full sync, at once
        assert_once_per_period(queued())

        # The active beat dies: its lock outlives it by the lock timeout, then the standby
        # schedules, from the last runs the dead one left in Redis (no second full sync).
        before = len(queued())
        active.kill(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: len(queued()) > before, LOCK_TIMEOUT + 5, "the standby never took over")
        took_over = time.monotonic() - killed
        assert "beat: Acquired lock" in standby.output()
        # Within the lock timeout and one try of the standby (a fifth of it), and a tick.
        assert took_over <= LOCK_TIMEOUT * 1.2 + 1.5, took_over
        assert kinds(queued()).count("full") == 1
        assert_once_per_period(queued())

        keys = {_text(k) for k in beat_redis.keys(f"{BEAT_KEY_PREFIX}*")}
        assert {"jamf-full-default", "jamf-partial-default", "lock"} <= {
            k.removeprefix(BEAT_KEY_PREFIX) for k in keys
        }
        assert 0 < beat_redis.pttl(f"{BEAT_KEY_PREFIX}lock") <= LOCK_TIMEOUT * 1000

        # Restarted (cleanly: the lock is released), as `devtrust worker --beat` this time,
        # the same scheduler and lock: partials on, the full sync an hour after the first.
        # (Its worker takes the queued syncs: what it sends is read from its log.)
        standby.stop()
        assert "beat: Releasing lock" in standby.output()
        argv = [DEVTRUST, "worker", "--beat", "--concurrency", "1", "--name", "beat@%h"]
        with started(argv, env, "worker --beat") as restarted:
            restarted.wait_for("beat: Acquired lock", timeout=30)
            # A full sync due would go in the same tick as the partial.
            restarted.wait_for("Sending due task jamf-partial-default", timeout=15)
        assert "Sending due task jamf-full-default" not in restarted.output()
    finally:
        for process in pair:
            process.kill()


def test_embedded_beat_keeps_its_schedule_in_a_file_under_the_data_directory(
    tmp_path: Path,
) -> None:
    env = beat_env(tmp_path, None, EVERY_SECOND)
    messages_dir = tmp_path / "data" / "queue" / "messages"

    def queued() -> Messages:
        return [p.read_bytes() for p in sorted(messages_dir.glob("*.msg"))]

    with started([DEVTRUST, "beat"], env, "beat first") as first:
        wait_until(lambda: "partial" in kinds(queued()), 30, "the first beat queued no partial")
        # A second beat on the same data directory waits for the first to end.
        with started([DEVTRUST, "beat"], env, "beat second") as second:
            second.wait_for("another beat holds .*: standing by", timeout=30)
            before = len(queued())
            first.kill(signal.SIGKILL)  # killed: what it had sent is in the file already
            wait_until(lambda: len(queued()) >= before + 2, 15, "the second beat is idle")
            assert "Sending due task" in second.output()
    assert kinds(queued()).count("full") == 1, kinds(queued())
    assert_once_per_period(queued())
    stored = schedule_file(tmp_path / "data")
    assert stored.parent == (tmp_path / "data" / "beat").resolve()
    assert list(stored.parent.glob("schedule.d*")), sorted(stored.parent.iterdir())


# -- the entries, from the settings of each start ----------------------------------------


def test_beat_schedule_has_a_partial_and_a_full_sync_per_inventory(tmp_path: Path) -> None:
    two = [
        {"name": "macs", "sync_period_partial": "1h", "sync_period_full": "12h"},
        {"name": "lab", "filter_rsql": "id<100", "sync_period_partial": "2h"},
    ]
    settings = load_settings(data_dir=tmp_path, jamf_inventory=two, jamf_sync_start_delay="10m")
    app = create_app(settings)
    entries = beat_schedule(settings, app)
    assert sorted(entries) == [
        "ceremony-purge",
        "jamf-full-lab", "jamf-full-macs", "jamf-partial-lab", "jamf-partial-macs",
    ]  # fmt: skip
    purge = entries["ceremony-purge"]
    assert purge["task"] == PURGE_TASK and purge["schedule"].run_every.total_seconds() == 3600
    assert purge["schedule"].is_due(purge["last_run_at"])[1] == pytest.approx(3600, abs=2)
    full = entries["jamf-full-macs"]
    assert full["task"] == SYNC_TASK
    assert full["kwargs"] == {"inventory": "macs", "kind": "full", "scheduled": True}
    assert full["options"]["expires"] == 12 * 3600
    assert full["schedule"].run_every.total_seconds() == 12 * 3600
    assert entries["jamf-partial-lab"]["schedule"].run_every.total_seconds() == 2 * 3600
    # The first full sync comes within the start delay; partials a period later.
    due, wait = full["schedule"].is_due(full["last_run_at"])
    assert not due and 0 < wait <= 600
    partial = entries["jamf-partial-macs"]
    assert 3500 <= partial["schedule"].is_due(partial["last_run_at"])[1] <= 3600 + 600
    # With no start delay, the first full sync is due at once, then every period.
    settings = load_settings(data_dir=tmp_path, jamf_inventory=two, jamf_sync_start_delay="0")
    now = beat_schedule(settings, app)["jamf-full-macs"]
    assert now["schedule"].is_due(now["last_run_at"]) == (True, 12 * 3600)
    due, next_in = now["schedule"].is_due(app.now())
    assert not due and next_in == pytest.approx(12 * 3600, abs=2)


def _scheduler(store: str, tmp_path: Path, inventories: list[dict[str, Any]]) -> Any:
    broker = {"broker_url": BEAT_REDIS} if store == "redis" else {}
    settings = load_settings(
        data_dir=tmp_path, jamf_inventory=inventories, jamf_sync_start_delay="10m",
        jamf_url="http://127.0.0.1:9", **broker,
    )  # fmt: skip
    app = create_app(settings)
    if store == "redis":
        from worker.celery import RedisScheduler

        return RedisScheduler(app=app)
    return FileScheduler(app=app, schedule_filename=app.conf.beat_schedule_filename)


def _last_runs(store: str, scheduler: Any) -> dict[str, tuple[datetime, float]]:
    """Each sync entry's stored last run and period, as the scheduler reads them back."""
    if store == "redis":
        client = redis.Redis.from_url(BEAT_REDIS, decode_responses=True)
        # The entries beat installed, by name.
        names = [_text(n) for n in client.smembers(f"{BEAT_KEY_PREFIX}:statics")]
        entries = {
            n: scheduler.Entry.from_key(BEAT_KEY_PREFIX + n, app=scheduler.app) for n in names
        }
    else:
        entries = dict(scheduler.schedule)
    return {
        name: (entry.last_run_at, entry.schedule.run_every.total_seconds())
        for name, entry in entries.items()
        if name.startswith("jamf-")
    }


@pytest.mark.parametrize("store", ["redis", "file"])
def test_a_restart_keeps_last_runs_takes_new_periods_and_drops_removed_inventories(
    store: str, tmp_path: Path, beat_redis: redis.Redis
) -> None:
    before = [
        {"name": "macs", "sync_period_partial": "1h", "sync_period_full": "12h"},
        {"name": "lab", "sync_period_partial": "2h"},
    ]
    start = datetime.now(UTC)
    first = _scheduler(store, tmp_path, before)
    drawn = _last_runs(store, first)

    def first_run_in(last_run_at: datetime, period: float) -> timedelta:
        return last_run_at + timedelta(seconds=period) - start

    # The first runs ever: within the start delay (10 minutes), partials a period later.
    spread = timedelta(minutes=10, seconds=1)
    assert timedelta(0) <= first_run_in(*drawn["jamf-full-macs"]) <= spread
    assert (
        timedelta(hours=1)
        <= first_run_in(*drawn["jamf-partial-macs"])
        <= timedelta(hours=1) + spread
    )
    # The full sync of macs runs, as beat would send it.
    if store == "redis":
        ran = next(first.Entry.from_key(BEAT_KEY_PREFIX + "jamf-full-macs", app=first.app))
    else:
        ran = first.schedule["jamf-full-macs"] = next(first.schedule["jamf-full-macs"])
    first.close()

    after = [
        {"name": "macs", "sync_period_partial": "30m", "sync_period_full": "6h"},
        {"name": "lab2", "sync_period_partial": "2h"},
    ]
    start = datetime.now(UTC)
    second = _scheduler(store, tmp_path, after)
    kept = _last_runs(store, second)
    second.close()
    assert sorted(kept) == [
        "jamf-full-lab2", "jamf-full-macs", "jamf-partial-lab2", "jamf-partial-macs",
    ]  # fmt: skip
    # What ran keeps its last run, what has not yet run its first run's time: not redrawn.
    assert kept["jamf-full-macs"] == (ran.last_run_at, 6 * 3600)
    assert kept["jamf-partial-macs"] == (drawn["jamf-partial-macs"][0], 30 * 60)
    # The new inventory's first full sync: within the start delay of this start.
    assert timedelta(0) <= first_run_in(*kept["jamf-full-lab2"]) <= spread
