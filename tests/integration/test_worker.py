"""The worker for real: Celery workers and beat as processes, on the machine's Redis (or a
private redis-server a test stops and starts), the Jamf simulator as a process, the
inventory in a SQLite file they share; and the embedded default with no Redis at all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from inventory.db import Database
from inventory.errors import ConfigurationError
from inventory.models import DeviceRow, SyncRunRow
from inventory.services import challenges, devices
from inventory.services import source_sync as store
from inventory.settings import Settings, load_settings
from jamf.simulator import SimulatorConfig, running_simulator
from tests.processes import (
    DEVTRUST,
    Process,
    RedisServer,
    free_port,
    simulator,
    started,
    wait_until,
    worker,
)
from worker import jobs
from worker.celery import SYNC_TASK, broker_settings, create_app
from worker.locks import locks_for
from worker.redelivery import RenewUnacked

REDIS = "redis://127.0.0.1:6379"
BROKER_DB, RESULT_DB = 12, 13
INVENTORY = [{"name": "default", "on_missing": "DELETE", "page_size": 100}]


@pytest.fixture
def machine_redis() -> Iterator[str]:
    """The machine's Redis, databases 12 (broker, locks) and 13 (results), emptied."""
    clients = [redis.Redis.from_url(f"{REDIS}/{n}") for n in (BROKER_DB, RESULT_DB)]
    try:
        for client in clients:
            client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS} ({exc}): run `make services`")
    yield f"{REDIS}/{BROKER_DB}"
    for client in clients:
        client.flushdb()
        client.close()


def env_for(tmp: Path, jamf: str, broker: str | None = None, **extra: str) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)  # the database's directory must exist
    env = {
        "DEVTRUST_DATA_DIR": str(tmp / "data"),
        "DEVTRUST_DATABASE_URL": f"sqlite:///{tmp / 'devtrust.db'}",
        "DEVTRUST_JAMF_URL": jamf,
        "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
        "DEVTRUST_JAMF_CLIENT_SECRET": "devtrust-secret",
        "DEVTRUST_JAMF_SYNC_LOCK_TTL": "3s",
        "DEVTRUST_JAMF_SYNC_START_DELAY": "0",
        "DEVTRUST_JAMF_INVENTORY": json.dumps(INVENTORY),
        **extra,
    }
    if broker is not None:
        env["DEVTRUST_BROKER_URL"] = broker
        env["DEVTRUST_RESULT_BACKEND"] = broker.rsplit("/", 1)[0] + f"/{RESULT_DB}"
    return env


def settings_for(env: dict[str, str]) -> Settings:
    return load_settings(
        data_dir=Path(env["DEVTRUST_DATA_DIR"]),
        database_url=env["DEVTRUST_DATABASE_URL"],
        broker_url=env.get("DEVTRUST_BROKER_URL"),
        result_backend=env.get("DEVTRUST_RESULT_BACKEND"),
        jamf_url=env["DEVTRUST_JAMF_URL"],
        jamf_client_id="devtrust",
        jamf_client_secret="devtrust-secret",
        jamf_sync_lock_ttl=env.get("DEVTRUST_JAMF_SYNC_LOCK_TTL", "3s"),
        jamf_sync_start_delay="0",
        jamf_inventory=INVENTORY,
    )


def inventory_size(env: dict[str, str]) -> int:
    db = Database.connect(env["DEVTRUST_DATABASE_URL"])
    try:
        with db.uow().read() as uow:
            return int(uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0)
    finally:
        db.close()


def runs(env: dict[str, str]) -> list[tuple[str, str, int]]:
    db = Database.connect(env["DEVTRUST_DATABASE_URL"])
    try:
        with db.uow().read() as uow:
            rows = uow.session.execute(
                select(SyncRunRow.kind, SyncRunRow.status, SyncRunRow.fetched).order_by(
                    SyncRunRow.id
                )
            )
            return [(k, s, f) for k, s, f in rows]
    finally:
        db.close()


def managed_count(jamf: str) -> int:
    import httpx

    listing = httpx.get(f"{jamf}/_sim/fleet", timeout=30).json()
    return sum(1 for device in listing if device["managed"])


def devtrust(
    env: dict[str, str], *argv: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEVTRUST, *argv], env={**_clean_env(), **env}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}


def devtrust_together(
    *commands: tuple[dict[str, str], list[str]], timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """``devtrust`` commands run at once, their results in order: each one's start costs
    most of a second, which they then spend side by side."""
    running = [
        subprocess.Popen(
            [DEVTRUST, *argv],
            env={**_clean_env(), **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for env, argv in commands
    ]
    done = []
    for process in running:
        out, err = process.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def starting_worker(env: dict[str, str], name: str, cwd: Path | None = None) -> Any:
    """A worker started, not yet ready (``Process.wait_for("ready")``): its start overlaps
    what the test does meanwhile (a sync queued meanwhile waits for it)."""
    argv = [DEVTRUST, "worker", "--concurrency", "1", "--name", f"{name}@%h"]
    return started(argv, env, f"worker {name}", cwd)


@contextmanager
def workers(env: dict[str, str], *names: str) -> Iterator[list[Process]]:
    """Workers started at once (``tests.processes.worker`` one after the other)."""
    with ExitStack() as stack:
        starting = [stack.enter_context(starting_worker(env, name)) for name in names]
        for process in starting:
            process.wait_for(r"ready", timeout=60)
        yield starting


# -- the task's function, with no broker -------------------------------------------------


def test_sync_job_runs_once_and_a_second_one_is_skipped_while_the_lock_is_held(
    tmp_path: Path,
) -> None:
    with running_simulator(SimulatorConfig(devices=300)) as jamf:
        env = env_for(tmp_path, jamf)
        settings = settings_for(env)
        outcome = jobs.sync_inventory(settings, kind="full", actor="test")
        assert outcome["status"] == store.SUCCEEDED and outcome["run"]["created"] > 250
        locks = locks_for(None, settings.data_dir)
        lease = locks.acquire(jobs.lock_name("jamf", "default"), 30, "the other worker")
        assert lease is not None
        with lease:
            skipped = jobs.sync_inventory(settings, kind="full")
            assert skipped["status"] == jobs.SKIPPED
            assert skipped["reason"] == (
                f"a sync of jamf/default is already running: the other worker, process "
                f"{os.getpid()} on this host; the lock frees when it ends"
            )
            assert jobs.sync_running(settings, "default") == "the other worker"
        assert jobs.sync_running(settings, "default") is None
        assert [s for _, s, _ in runs(env)] == [store.SUCCEEDED]  # the skip wrote no run


def test_a_run_left_running_by_a_dead_worker_is_closed_by_the_next(tmp_path: Path) -> None:
    with running_simulator(SimulatorConfig(devices=50)) as jamf:
        env = env_for(tmp_path, jamf)
        db = Database.connect(env["DEVTRUST_DATABASE_URL"])
        store.start_run(db.uow(), source="jamf", inventory="default", kind="full")
        db.close()
        jobs.sync_inventory(settings_for(env), kind="partial")
        assert runs(env)[0][1] == store.FAILED and runs(env)[1][1] == store.SUCCEEDED


# -- the broker's settings --------------------------------------------------------------


def test_redis_messages_come_back_after_the_visibility_timeout_not_the_time_limit(
    tmp_path: Path,
) -> None:
    redis_broker = {"data_dir": tmp_path, "broker_url": "redis://127.0.0.1:6379/12"}
    options = broker_settings(load_settings(**redis_broker))["broker_transport_options"]
    assert options == {
        "visibility_timeout": 300,  # 5 minutes, not the 4 h time limit plus an hour
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 300,
    }
    app = create_app(load_settings(**redis_broker))
    assert RenewUnacked in app.steps["consumer"]
    assert RenewUnacked not in create_app(load_settings(data_dir=tmp_path)).steps["consumer"]
    with pytest.raises(ConfigurationError) as refused:
        broker_settings(load_settings(**redis_broker, broker_visibility_timeout="90s"))
    assert str(refused.value) == (
        "DEVTRUST_BROKER_VISIBILITY_TIMEOUT 90s must be at least 2s and twice "
        "DEVTRUST_JAMF_SYNC_LOCK_TTL (60s), so that a dead worker's sync comes back after its "
        "lock freed"
    )


# -- workers on Redis --------------------------------------------------------------------


def send(env: dict[str, str], **kwargs: Any) -> Any:
    app = create_app(settings_for(env))
    return app.send_task(SYNC_TASK, kwargs=kwargs, queue="devtrust")


def test_two_workers_racing_for_one_inventory_sync_it_once(
    tmp_path: Path, machine_redis: str
) -> None:
    with simulator(3000, "--latency-ms", "150") as jamf:
        env = env_for(tmp_path, jamf, machine_redis)
        with workers(env, "w1", "w2"):
            first = send(env, kind="full")
            second = send(env, kind="full")
            results = sorted([first.get(timeout=120)["status"], second.get(timeout=120)["status"]])
        assert results == [jobs.SKIPPED, store.SUCCEEDED]
        assert [(k, s) for k, s, _ in runs(env)] == [("full", store.SUCCEEDED)]
        assert inventory_size(env) == managed_count(jamf)


def test_a_worker_killed_mid_sync_leaves_what_the_next_sync_completes(
    tmp_path: Path, machine_redis: str
) -> None:
    with simulator(3000, "--latency-ms", "150") as jamf:
        env = env_for(tmp_path, jamf, machine_redis)
        with starting_worker(env, "victim") as victim:
            jobs.sync_inventory(settings_for(env), kind="full")  # the inventory, complete
            before = inventory_size(env)
            assert before == managed_count(jamf)
            victim.wait_for(r"ready", timeout=60)
            send(env, kind="full")
            wait_until(
                lambda: any(s == store.RUNNING and f > 0 for _, s, f in runs(env)),
                60,
                "the sync never got going",
            )
            victim.kill(signal.SIGKILL)
        assert runs(env)[-1][1] == store.RUNNING
        assert inventory_size(env) == before  # nothing deleted by the killed run
        # The dead worker's lock expires (DEVTRUST_JAMF_SYNC_LOCK_TTL=3s after its renewal).
        settings = settings_for(env)
        with starting_worker(env, "next") as next_worker:
            wait_until(lambda: not jobs.sync_lock(settings, "default"), 5, "the lock never freed")
            next_worker.wait_for(r"ready", timeout=60)
            result = devtrust(env, "jamf", "sync", "--full", "--wait", "--timeout", "120")
        assert result.returncode == 0, result.stderr
        assert "full sync of default succeeded" in result.stdout
        assert inventory_size(env) == managed_count(jamf)
        statuses = [s for _, s, _ in runs(env)]
        assert statuses[-2:] == [store.FAILED, store.SUCCEEDED]  # the killed run, closed


def slow_jamf(jamf: str, latency_ms: int) -> None:
    import httpx

    httpx.put(f"{jamf}/_sim/faults", json={"latency_ms": latency_ms}, timeout=30).raise_for_status()


def test_a_live_workers_long_sync_is_never_redelivered_and_a_killed_ones_comes_back_soon(
    tmp_path: Path, machine_redis: str
) -> None:
    # A 4 s visibility timeout (the lock's ttl 2 s), a sync slowed to outlast it twice,
    # and a second worker ready to take any message that comes back.
    with simulator(4000, "--latency-ms", "500") as jamf:
        env = env_for(
            tmp_path, jamf, machine_redis,
            DEVTRUST_BROKER_VISIBILITY_TIMEOUT="4s", DEVTRUST_JAMF_SYNC_LOCK_TTL="2s",
            DEVTRUST_JAMF_MAX_CONNECTIONS="2",  # one page at a time: a slow sync
        )  # fmt: skip
        with workers(env, "one", "other") as pair:  # started together: either takes it
            sent = send(env, kind="full")
            wait_until(
                lambda: any(s == store.RUNNING and f > 0 for _, s, f in runs(env)),
                60,
                "the sync never got going",
            )
            received = f"Task {SYNC_TASK}[{sent.id}] received"
            wait_until(lambda: any(received in w.output() for w in pair), 10, "nobody logged it")
            victim, bystander = pair if received in pair[0].output() else pair[::-1]
            time.sleep(9)  # over twice the visibility timeout
            assert runs(env)[-1][1] == store.RUNNING, "the sync ended too soon to tell"
            assert received in victim.output()
            assert received not in bystander.output()  # not redelivered while its worker lives
            victim.kill(signal.SIGKILL)
            killed = time.monotonic()
            slow_jamf(jamf, 0)
            outcome = sent.get(timeout=60)
            came_back = time.monotonic() - killed
        assert received in bystander.output()
        assert outcome["status"] == store.SUCCEEDED, outcome
        assert came_back < 4 + 10, came_back  # the timeout and a sweep, not hours
        assert [s for _, s, _ in runs(env)] == [store.FAILED, store.SUCCEEDED]
        assert inventory_size(env) == managed_count(jamf)


def test_status_and_a_skipped_sync_say_a_killed_workers_lock_is_dead_and_when_it_frees(
    tmp_path: Path, machine_redis: str
) -> None:
    # A 12 s lock: renewed every 4 s, told dead 6 s after its last renewal, free after 12.
    with simulator(3000, "--latency-ms", "500") as jamf:
        env = env_for(
            tmp_path, jamf, machine_redis,
            DEVTRUST_JAMF_SYNC_LOCK_TTL="12s", DEVTRUST_JAMF_MAX_CONNECTIONS="2",
        )  # fmt: skip
        settings = settings_for(env)
        with worker(env, "victim") as victim:
            send(env, kind="full")
            wait_until(lambda: jobs.sync_lock(settings, "default"), 60, "no sync took the lock")
            with worker(env, "next") as next_worker:  # idle: the victim has the sync
                alive = devtrust(env, "jamf", "status")
                as_json = devtrust(env, "jamf", "status", "--format", "json")
                victim.kill(signal.SIGKILL)
                slow_jamf(jamf, 0)
                wait_until(
                    lambda: getattr(jobs.sync_lock(settings, "default"), "holder_dead", False),
                    16,
                    "the dead worker's lock was never told dead",
                )
                skipped = jobs.sync_inventory(settings, kind="partial")
                retried = send(env, kind="full")  # taken at once by the idle worker
                status = devtrust(env, "jamf", "status")
                outcome = retried.get(timeout=60)
    assert re.search(
        r"\njamf/default: syncing now, by victim@\S+ task \S+, lock renewed \d+ s ago; unless "
        r"renewed again, the lock frees at \d\d:\d\d:\d\d UTC \(in \d+ s\)\n",
        alive.stdout,
    ), alive.stdout
    [entry] = json.loads(as_json.stdout)
    assert entry["syncing"].startswith("victim@") and entry["lock"]["holder_dead"] is False
    assert datetime.fromisoformat(entry["lock"]["frees_at"]) > datetime.now(UTC) - timedelta(
        seconds=30
    )
    dead = (
        r"victim@\S+ task \S+, whose worker stopped renewing the lock (\d+) s ago \(it is gone "
        r"or stuck\); the lock frees at \d\d:\d\d:\d\d UTC \(in (\d+) s\)"
    )
    found = re.search(
        r"\njamf/default: no sync is running, but a dead sync's lock is still held by " + dead,
        status.stdout,
    )
    assert found, status.stdout
    assert 6 <= int(found.group(1)) <= 12 and int(found.group(1)) + int(found.group(2)) in (12, 13)
    assert skipped["status"] == jobs.SKIPPED
    assert re.fullmatch(
        "the lock of jamf/default is still held by a sync that is gone: " + dead,
        skipped["reason"],
    ), skipped["reason"]
    # A sync sent now waits for the dead lock to free, then runs: not skipped.
    assert outcome["status"] == store.SUCCEEDED, outcome
    assert "sync trying again in" in next_worker.output()
    assert [s for _, s, _ in runs(env)] == [store.FAILED, store.SUCCEEDED]


def test_an_admin_resync_sent_while_redis_is_down_is_retried_not_lost(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        with simulator(200) as jamf:
            env = env_for(tmp_path, jamf, f"{server.url}/0")
            with worker(env, "w1") as w:
                server.stop()
                cli = Process(
                    [DEVTRUST, "jamf", "sync", "--full", "--wait", "--timeout", "90"],
                    {**_clean_env(), **env},
                    "devtrust jamf sync",
                )
                time.sleep(2)  # the CLI is retrying its publish now
                assert cli.proc.poll() is None, cli.output()
                server.start()
                code = cli.proc.wait(timeout=120)
                assert code == 0, cli.output() + "\n--- worker:\n" + w.output()[-3000:]
                assert "full sync of default succeeded" in cli.output()
            assert inventory_size(env) == managed_count(jamf)
    finally:
        server.stop()


# -- the embedded default ----------------------------------------------------------------


def test_embedded_default_syncs_end_to_end_with_no_redis(tmp_path: Path) -> None:
    with simulator(500) as jamf:
        # No broker: files under the data directory. The full listing is read in a reader
        # process, as a fleet of 10,000 would be, started from the worker's pool process.
        env = env_for(tmp_path, jamf, DEVTRUST_JAMF_READ_PROCESS_MIN="100")
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        with starting_worker(env, "solo", cwd=elsewhere) as solo:
            result = devtrust(env, "jamf", "sync", "--full", "--wait", "--timeout", "120")
            assert result.returncode == 0, result.stderr
            status = devtrust(env, "jamf", "status", "--format", "json")
            task_id = result.stdout.splitlines()[0]
        # Logs are JSON lines off a terminal; the sync's lines carry task id and inventory.
        sync_lines = [
            json.loads(line) for line in solo.lines if '"logger": "devtrust.jamf.sync"' in line
        ]
        assert sync_lines and all(
            (entry["task_id"], entry["inventory"]) == (task_id, "default") for entry in sync_lines
        )
        assert "devtrust-secret" not in solo.output()  # the Jamf client secret is never logged
        assert "full sync of default succeeded" in result.stdout
        assert inventory_size(env) == managed_count(jamf)
        [entry] = json.loads(status.stdout)
        assert entry["last_full"]["status"] == store.SUCCEEDED and entry["alert"] is False
        assert entry["last_full"]["details"]["listings"]["computers"]["reader"] == "process"
        # kombu's exchange tables (the worker's pidbox among them) are kept under the data
        # directory, never in the directory the worker was started from.
        control = tmp_path / "data" / "queue" / "control"
        assert any(control.glob("*.pidbox.exchange")), sorted(control.parent.iterdir())
        assert list(elsewhere.iterdir()) == []


def test_a_sync_the_worker_cannot_start_is_a_failed_run_with_its_reason_everywhere(
    tmp_path: Path,
) -> None:
    # Neither the shell nor the worker has DEVTRUST_JAMF_URL; the shell knows an inventory
    # "lab" the worker does not.
    env = env_for(tmp_path, "unused")
    del env["DEVTRUST_JAMF_URL"]
    shell = {**env, "DEVTRUST_JAMF_INVENTORY": json.dumps([*INVENTORY, {"name": "lab"}])}
    no_url = "the worker cannot start the sync: DEVTRUST_JAMF_URL is not set: where is Jamf Pro?"
    no_lab = (
        "the worker cannot start the sync: unknown Jamf inventory 'lab': configured are default"
    )
    with starting_worker(env, "solo") as solo:
        queued = devtrust(shell, "jamf", "sync", "--full")
        waited = devtrust(shell, "jamf", "sync", "--full", "--wait", "--timeout", "60")
        lab = devtrust(shell, "jamf", "sync", "--inventory", "lab", "--wait", "--timeout", "60")
        status, as_json, audited = devtrust_together(
            (env, ["jamf", "status"]),
            (env, ["jamf", "status", "--format", "json"]),
            (env, ["audit", "ls", "--type", "jamf.sync", "--format", "json"]),
        )
    assert queued.returncode == 0 and "queued a full sync of default" in queued.stderr
    assert waited.returncode == 1
    assert waited.stderr.splitlines()[-1] == f"error: {no_url}", waited.stderr
    assert "full sync of default failed" in waited.stdout
    assert lab.returncode == 1 and lab.stderr.splitlines()[-1] == f"error: {no_lab}", lab.stderr
    # Recorded runs: `jamf status` shows the reason, no longer "no sync has finished yet".
    assert "no sync has finished yet" not in status.stderr
    assert re.search(
        r"\ndefault +full +failed .* the worker cannot start the sync: DEVTRUST_JAMF_URL",
        status.stdout,
    ), status.stdout
    [entry] = json.loads(as_json.stdout)
    assert entry["last_full"]["status"] == store.FAILED and entry["last_full"]["error"] == no_url
    assert entry["alert"] is True  # two failed in a row
    assert status.returncode == as_json.returncode == 3  # the alert, in the exit status
    assert [(k, s) for k, s, _ in runs(env)] == [("full", store.FAILED)] * 2 + [
        ("partial", store.FAILED)
    ]
    events = json.loads(audited.stdout)
    assert len(events) == 3 and not any(e["success"] for e in events)
    assert {e["message"].split("; ", 1)[1] for e in events} == {no_url, no_lab}
    # The worker said it in one line each, with no traceback.
    logged = [
        json.loads(line)
        for line in solo.lines
        if '"logger": "devtrust.worker"' in line and "cannot start the sync" in line
    ]
    assert len(logged) == 3 and {e["level"] for e in logged} == {"ERROR"}, logged
    assert "Traceback" not in solo.output()


def test_a_bad_credential_setting_on_the_worker_is_a_failed_run_too(tmp_path: Path) -> None:
    env = env_for(tmp_path, "http://127.0.0.1:9")
    settings = settings_for(env).model_copy(update={"jamf_client_secret": None})
    outcome = jobs.sync_inventory(settings, kind="partial", actor="ops")
    assert outcome["status"] == store.FAILED
    assert outcome["run"]["error"] == (
        "the worker cannot start the sync: the Jamf client id is set but the client secret is "
        "missing"
    )
    assert runs(env) == [("partial", store.FAILED, 0)]


def test_jamf_sync_refuses_bad_requests_in_one_line(tmp_path: Path) -> None:
    env = env_for(tmp_path, "http://127.0.0.1:9")
    timeouts = (
        ("-1", "--timeout must be a number of seconds above 0 and at most 604800, not -1"),
        ("0", "--timeout must be a number of seconds above 0 and at most 604800, not 0"),
        ("nan", "--timeout must be a number of seconds above 0 and at most 604800, not nan"),
        ("1e9", "--timeout must be a number of seconds above 0 and at most 604800, not 1e+09"),
    )
    forced, unknown, alone, *refusals = devtrust_together(
        (env, ["jamf", "sync", "--force"]),
        (env, ["jamf", "sync", "--inventory", "nope"]),
        (env, ["jamf", "sync", "--timeout", "30"]),
        *((env, ["jamf", "sync", "--wait", "--timeout", timeout]) for timeout, _ in timeouts),
    )
    assert forced.returncode == 2 and "--force only applies to a full sync" in forced.stderr
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: unknown Jamf inventory 'nope': configured are default"
    )
    for (_, why), refused in zip(timeouts, refusals, strict=True):
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"error: Invalid value: {why} (see"), refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and refused.stdout == ""
    assert alone.returncode == 2 and "--timeout only applies with --wait" in alone.stderr
    # Nothing was queued: the embedded queue holds no message.
    messages = tmp_path / "data" / "queue" / "messages"
    assert not messages.exists() or list(messages.iterdir()) == []


def test_jamf_sync_names_a_data_directory_that_cannot_hold_the_queue(tmp_path: Path) -> None:
    import os as _os

    (tmp_path / "a-file").write_text("")
    read_only = tmp_path / "read-only"
    (read_only / "queue").mkdir(parents=True)
    read_only.chmod(0o555)
    (read_only / "queue").chmod(0o555)
    # root writes anywhere: drop the capabilities that let it, as another user is
    unprivileged = (
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if _os.geteuid() == 0 else []
    )
    cases = [
        (tmp_path / "a-file" / "data", f"{tmp_path / 'a-file'}: not a directory"),
        (read_only, f"{read_only / 'queue' / 'messages'}: permission denied"),
    ]
    for data_dir, what in cases:
        env = {**env_for(tmp_path, "http://127.0.0.1:9"), "DEVTRUST_DATA_DIR": str(data_dir)}
        done = subprocess.run(
            [*unprivileged, DEVTRUST, "jamf", "sync", "--full"],
            env={**_clean_env(), **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert done.stderr.splitlines() == [
            f"error: the data directory {data_dir} cannot hold the embedded queue: {what}; "
            "make it writable, set DEVTRUST_DATA_DIR to a directory that is, or "
            "DEVTRUST_BROKER_URL to a broker"
        ]
    assert list((read_only / "queue").iterdir()) == []  # nothing queued


def test_jamf_sync_says_when_the_queue_is_down_or_no_worker_takes_it(tmp_path: Path) -> None:
    # Both at once, each in its own data directory: the broker's retries and the hint's
    # delay are real waits (about 20 s and 10 s).
    port = free_port()  # nothing listens there
    down = env_for(tmp_path / "down", "http://127.0.0.1:9", f"redis://127.0.0.1:{port}/12")
    idle = env_for(tmp_path / "idle", "http://127.0.0.1:9")  # the embedded queue, no worker
    argvs = {"down": ["jamf", "sync"], "idle": ["jamf", "sync", "--wait", "--timeout", "11"]}
    started = {
        name: subprocess.Popen(
            [DEVTRUST, *argvs[name]],
            env={**_clean_env(), **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, env in (("down", down), ("idle", idle))
    }
    (out, err), code = started["down"].communicate(timeout=120), started["down"].returncode
    assert code == 1 and out == "", err
    [line] = err.splitlines()
    assert line.startswith(
        f"error: cannot queue the sync: the result backend redis://127.0.0.1:{port}/13 did not "
        "answer ("
    ), line
    assert runs(down) == []

    (out, err), code = started["idle"].communicate(timeout=120), started["idle"].returncode
    assert code == 1
    task_id = out.splitlines()[0]
    assert err.splitlines()[1:] == [
        f"no worker has taken task {task_id} yet: is `devtrust worker` running on the "
        f"embedded queue in {idle['DEVTRUST_DATA_DIR']}?",
        f"error: task {task_id} still running after 11 s",
    ], err


BAD_QUEUE_SETTINGS = [
    pytest.param(
        "DEVTRUST_BROKER_URL",
        "foo://x",
        "DEVTRUST_BROKER_URL 'foo://x': no broker speaks foo://: use redis://, rediss:// or "
        "amqp://, or leave it unset for the embedded queue",
        id="unknown-transport",
    ),
    pytest.param(
        "DEVTRUST_BROKER_URL",
        "localhost:6379",
        "DEVTRUST_BROKER_URL 'localhost:6379' is not a URL: use redis://host:6379/0,",
        id="not-a-url",
    ),
    pytest.param(
        "DEVTRUST_BROKER_URL",
        "sqs://key:secret@queue",
        "DEVTRUST_BROKER_URL 'sqs://key:***@queue': the sqs:// transport needs the Python "
        "package botocore, which is not installed",
        id="transport-not-installed",
    ),
    pytest.param(
        "DEVTRUST_RESULT_BACKEND",
        "foo://x",
        "DEVTRUST_RESULT_BACKEND 'foo://x': no result backend foo://: use redis://, rpc://",
        id="unknown-result-backend",
    ),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_QUEUE_SETTINGS)
def test_a_queue_setting_no_transport_serves_is_refused_at_start(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    env = {**env_for(tmp_path, "http://127.0.0.1:9"), name: value}
    argvs = (["jamf", "sync"], ["worker"], ["beat"], ["serve", "--port", str(free_port())])
    for argv, refused in zip(
        argvs, devtrust_together(*((env, argv) for argv in argvs), timeout=60), strict=True
    ):
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert refused.returncode == 1, (argv, refused.stderr)
        assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), (argv, errors)
        assert "Traceback" not in refused.stderr and "secret" not in refused.stderr
    assert runs(env) == []


def test_rabbitmq_broker_works_unchanged(tmp_path: Path) -> None:
    # The machine's RabbitMQ; results over RPC to the client that asked. Locks are local
    # files (one host), as worker.locks documents for amqp:// brokers.
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({exc}): run `make services`")
    with simulator(300) as jamf:
        env = env_for(tmp_path, jamf)
        env["DEVTRUST_BROKER_URL"] = amqp
        env["DEVTRUST_RESULT_BACKEND"] = "rpc://"
        with starting_worker(env, "rabbit"):
            result = devtrust(env, "jamf", "sync", "--full", "--wait", "--timeout", "120")
        assert result.returncode == 0, result.stderr
        assert "full sync of default succeeded" in result.stdout
        assert inventory_size(env) == managed_count(jamf)


def test_make_demo_syncs_and_enrolls_on_embedded_defaults(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"
    result = subprocess.run(
        ["bash", str(demo)],
        env={**_clean_env(), "DEVTRUST_DATA_DIR": str(tmp_path / "demo")},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "full sync of jamf/default succeeded" in result.stdout
    assert re.search(r"\.\.\. (\d+) devices in all", result.stdout)
    # Then a device enrolled with the swtpm, its EK certificate chained to the CA allowed.
    assert "\nDevice LNX-DEMO-0001/Linux enrolled\n" in result.stdout
    assert "enrolled by alice (tpm_ekcert_trusted)" in result.stdout
    # It stopped what it started: nothing listens on the simulator's or the service's port.
    for announced in ("simulator (1,000 computers) on port", "devtrust serve is on port"):
        found = re.search(re.escape(announced) + r" (\d+)", result.stdout)
        assert found, announced
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=1).close()


def test_the_purge_job_forgets_challenges_that_expired_over_an_hour_ago(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    url = settings.database_url_value
    for age in (timedelta(hours=2), timedelta(0)):

        def clock(age: timedelta = age) -> datetime:
            return datetime.now(UTC) - age

        db = Database.connect(url, clock=clock)
        device = devices.register_device(
            db.uow(), os_type="linux", asset_tag=f"LNX-{age.seconds}", actor="admin"
        )
        challenges.issue_challenge(
            db.uow(), kind="enroll-tpm", device_id=device.id, user_name=None, state={}
        )
        db.close()
    assert jobs.purge_challenges(settings) == 1
    assert jobs.purge_challenges(settings) == 0
