"""The Celery app: broker and results from the settings, the beat schedule, logging.

``celery -A worker ...`` finds ``app`` here, as Celery users expect; ``devtrust worker``
and ``devtrust beat`` are thin wrappers over the same app.

Production runs on Redis (``DEVTRUST_BROKER_URL=redis://...``): results go to the
result backend (``DEVTRUST_RESULT_BACKEND``, by default the broker's server, database
1), and the per-inventory sync locks to keys under ``devtrust:lock:`` on the broker's
server. With no broker configured, everything runs on one machine with no server at
all: kombu's filesystem transport carries the messages through directories under the
data directory, results are files beside them, and the locks are ``flock`` files.
RabbitMQ (``amqp://``) works unchanged.

Beat keeps its schedule, and when each entry last ran, where it survives a restart: on
Redis in keys under ``devtrust:beat:`` (celery-redbeat, whose lock lets a second beat
stand by and take over when the first dies), elsewhere in a file under the data
directory (``beat/schedule``, Celery's shelve).

Building the app reads the settings and connects to nothing.
"""

from __future__ import annotations

import errno
import logging
import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery, beat, signals
from celery.schedules import schedule

from inventory.durations import parse_duration
from inventory.errors import ConfigurationError
from inventory.settings import Settings, load_settings
from worker.logs import bind_celery_task, clear_context, configure_logging

SYNC_TASK = "devtrust.jamf.sync"
PURGE_TASK = "devtrust.ceremony.purge"
AUTO_ENROLL_TASK = "devtrust.ceremony.auto_enroll"
NOOP_TASK = "devtrust.noop"
DEVICE_SYNC_TASK = "devtrust.jamf.device_sync"
PURGE_EVERY = timedelta(hours=1)
QUEUE = "devtrust"
EMBEDDED_POLLING_INTERVAL = 0.1
#: Beat's keys on Redis: ``devtrust:beat:<entry>`` (definition and last run),
#: ``devtrust:beat:lock`` and redbeat's own ``devtrust:beat::schedule`` and ``::statics``.
BEAT_KEY_PREFIX = "devtrust:beat:"
#: Beat ticks at least this many times per lock timeout: the active beat renews the lock at
#: every tick, and a standby tries for it as often.
BEAT_TICKS_PER_LOCK_TIMEOUT = 5


def embedded_paths(data_dir: Path) -> dict[str, Path]:
    base = data_dir.resolve() / "queue"
    return {
        "in": base / "messages",
        "out": base / "messages",  # one directory: producers and consumers share it
        "processed": base / "processed",
        # kombu's exchange tables (which queues a fanout, the workers' pidbox among them,
        # reaches): by default a ``control`` folder in whatever directory the worker runs.
        "control": base / "control",
        "results": data_dir.resolve() / "results",
    }


def broker_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration for the broker, the results and the transport."""
    if settings.result_backend:
        _check_result_backend(settings.result_backend)
    if settings.broker_url:
        broker = settings.broker_url
        _check_broker(broker)
        backend = settings.result_backend or _default_backend(broker)
        conf: dict[str, Any] = {"broker_url": broker, "result_backend": backend}
        if broker.startswith(("redis://", "rediss://")):
            conf["broker_transport_options"] = redis_transport_options(settings)
        return conf
    paths = embedded_paths(settings.data_dir)
    for path in paths.values():
        _check_writable(path, settings.data_dir)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(paths["in"]),
            "data_folder_out": str(paths["out"]),
            "processed_folder": str(paths["processed"]),
            "control_folder": str(paths["control"]),
            "store_processed": False,
            # How long the worker sleeps when it finds no message (kombu: 1 s). Each message
            # costs one such sleep, so at 1 s a burst of webhooks drained at one a second;
            # a tenth of that is a directory listing ten times a second when idle.
            "polling_interval": EMBEDDED_POLLING_INTERVAL,
        },
        "result_backend": settings.result_backend or f"file://{paths['results']}",
    }


def redis_transport_options(settings: Settings) -> dict[str, Any]:
    """acks_late on Redis: a message comes back ``visibility_timeout`` after its worker
    stopped refreshing it (``worker.redelivery``: a live worker refreshes what it holds,
    however long it runs). Longer than twice the lock's ttl, so that the dead worker's
    sync lock has freed when its sync comes back."""
    timeout = parse_duration(
        settings.broker_visibility_timeout, what="broker_visibility_timeout"
    ).total_seconds()
    lock_ttl = parse_duration(settings.jamf_sync_lock_ttl, what="jamf_sync_lock_ttl")
    if timeout < 2 * lock_ttl.total_seconds() or timeout < 2:
        raise ConfigurationError(
            f"DEVTRUST_BROKER_VISIBILITY_TIMEOUT {settings.broker_visibility_timeout} must be at "
            f"least 2s and twice DEVTRUST_JAMF_SYNC_LOCK_TTL ({settings.jamf_sync_lock_ttl}), so "
            "that a dead worker's sync comes back after its lock freed"
        )
    seconds = math.ceil(timeout)
    return {
        "visibility_timeout": seconds,
        # kombu sweeps for messages to restore every interval * throttle seconds (100 s by
        # default): a tenth of the timeout here, every 10 s at most.
        "unacked_restore_interval": max(1, min(10, seconds // 10)),
        "unacked_restore_throttle": 1,
        # A worker killed while it sweeps holds the sweep's mutex this long.
        "unacked_mutex_expire": min(300, seconds),
    }


def _check_writable(path: Path, data_dir: Path) -> None:
    """Make one of the embedded queue's directories, and prove it takes files: else one
    line naming the data directory and what is wrong, before anything is queued."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        # mkdir names the ancestor it could not make; the probe file's name is noise.
        failed = Path(exc.filename) if exc.filename else path
        where = failed if failed == path or failed in path.parents else path
        if exc.errno == errno.ENOTDIR:  # name the file that stands where a directory should
            where = next((p for p in reversed(path.parents) if p.is_file()), where)
        raise ConfigurationError(
            f"the data directory {data_dir} cannot hold the embedded queue: {where}: "
            f"{(exc.strerror or type(exc).__name__).lower()}; make it writable, set "
            "DEVTRUST_DATA_DIR to a directory that is, or DEVTRUST_BROKER_URL to a broker"
        ) from None


def _check_broker(url: str) -> None:
    """A broker URL Celery has a transport for; else one line naming the setting."""
    from kombu.transport import resolve_transport

    from worker.locks import redacted_url

    scheme, separator, _ = url.partition("://")
    shown = redacted_url(url)
    if not separator:
        raise ConfigurationError(
            f"DEVTRUST_BROKER_URL {shown!r} is not a URL: use redis://host:6379/0, "
            "amqp://user:password@host//, or leave it unset for the embedded queue"
        )
    try:
        resolve_transport(scheme)
    except KeyError:
        raise ConfigurationError(
            f"DEVTRUST_BROKER_URL {shown!r}: no broker speaks {scheme}://: use redis://, "
            "rediss:// or amqp://, or leave it unset for the embedded queue"
        ) from None
    except ImportError as exc:
        raise ConfigurationError(
            f"DEVTRUST_BROKER_URL {shown!r}: the {scheme}:// transport needs the Python "
            f"package {exc.name}, which is not installed"
        ) from None


def _check_result_backend(url: str) -> None:
    from celery.app.backends import BACKEND_ALIASES

    from worker.locks import redacted_url

    scheme = url.partition("://")[0].partition("+")[0]
    if "://" not in url or scheme not in BACKEND_ALIASES:
        raise ConfigurationError(
            f"DEVTRUST_RESULT_BACKEND {redacted_url(url)!r}: no result backend {scheme}://: "
            "use redis://, rpc:// or file://, or leave it unset (the broker's server)"
        )


def _default_backend(broker: str) -> str:
    if broker.startswith(("redis://", "rediss://")):
        # Results on the same server, database 1, apart from the broker's keys.
        head, _, tail = broker.partition("://")
        netloc = tail.split("/", 1)[0]
        return f"{head}://{netloc}/1"
    return "rpc://"


def beat_lock_timeout(settings: Settings) -> int:
    """Seconds a dead beat's lock on Redis outlives it: the standby takes over then."""
    timeout = parse_duration(
        settings.beat_lock_timeout, what="beat_lock_timeout", at_least=timedelta(seconds=2)
    )
    return math.ceil(timeout.total_seconds())


def beat_settings(settings: Settings, broker_url: str) -> dict[str, Any]:
    """Celery configuration for beat: where it keeps its schedule, how often it ticks.

    On Redis, celery-redbeat: the entries and their last runs in keys under
    ``devtrust:beat:``, and a lock that one beat holds, renewed at every tick; a second
    beat waits for it, trying every max loop interval, and takes over when the first
    stopped renewing it for the lock timeout (at once when it stopped cleanly, as it
    releases the lock). Elsewhere, Celery's shelve in ``<data dir>/beat/schedule``, written
    after every task beat sends, so that even a killed beat forgets no run.
    """
    timeout = beat_lock_timeout(settings)
    conf: dict[str, Any] = {"beat_max_loop_interval": timeout / BEAT_TICKS_PER_LOCK_TIMEOUT}
    if broker_url.startswith(("redis://", "rediss://")):
        conf.update(
            beat_scheduler="worker.celery:RedisScheduler",
            redbeat_redis_url=broker_url,
            redbeat_redis_options={},  # not the broker's transport options
            redbeat_key_prefix=BEAT_KEY_PREFIX,
            redbeat_lock_key=BEAT_KEY_PREFIX + "lock",
            redbeat_lock_timeout=timeout,
        )
    else:
        conf.update(
            beat_scheduler="worker.celery:FileScheduler",
            beat_schedule_filename=str(schedule_file(settings.data_dir)),
            beat_sync_every=1,
        )
    return conf


def schedule_file(data_dir: Path) -> Path:
    """Where beat keeps its schedule with no Redis (shelve may add ``.dat``, ``.dir``)."""
    return data_dir.resolve() / "beat" / "schedule"


def beat_schedule(settings: Settings, app: Celery) -> dict[str, Any]:
    """A partial and a full sync of every configured inventory, on their periods, and an
    hourly purge of expired ceremony challenges.

    The periods are the settings' each time beat starts. Each entry's ``last_run_at`` is
    only for its first run ever: put a period before it, so that it comes after a random
    delay up to ``jamf_sync_start_delay`` (partials a period later still). The schedulers
    keep the last run they have for an entry, and its period counts from it.
    """
    from jamf.config import source_from_settings

    source = source_from_settings(settings)
    spread = parse_duration(
        settings.jamf_sync_start_delay, what="jamf_sync_start_delay", allow_zero=True
    )
    now = app.now()
    entries: dict[str, Any] = {}
    for spec in source.inventories:
        for kind, period in (
            ("full", spec.sync_period_full),
            ("partial", spec.sync_period_partial),
        ):
            delay = timedelta(seconds=random.uniform(0, spread.total_seconds()))  # noqa: S311
            if kind == "partial":
                # The first full sync reads everything anyway: start partials a period later.
                delay += period
            entries[f"jamf-{kind}-{spec.name}"] = {
                "task": SYNC_TASK,
                "schedule": schedule(run_every=period, app=app),
                "kwargs": {"inventory": spec.name, "kind": kind, "scheduled": True},
                "last_run_at": now + delay - period,
                # A run still queued when the next is due is dropped, not piled up.
                "options": {"expires": period.total_seconds(), "queue": QUEUE},
            }
    entries["ceremony-purge"] = {
        "task": PURGE_TASK,
        "schedule": schedule(run_every=PURGE_EVERY, app=app),
        "last_run_at": now,
        "options": {"expires": PURGE_EVERY.total_seconds(), "queue": QUEUE},
    }
    return entries


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    time_limit = parse_duration(settings.jamf_sync_time_limit, what="jamf_sync_time_limit")
    celery = Celery("devtrust", include=["worker.tasks"], set_as_current=True)
    celery.conf.update(
        broker_settings(settings),
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=timedelta(days=7),
        # Results hold only the outcome: a task's arguments (a device's collected data
        # for an auto-enrollment check) are not copied into the result backend.
        result_extended=False,
        task_track_started=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=int(time_limit.total_seconds()),
        task_soft_time_limit=int(time_limit.total_seconds()) - 60,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    celery.conf.update(beat_settings(settings, str(celery.conf.broker_url)))
    celery.conf.devtrust_settings = settings
    if str(celery.conf.broker_url).startswith(("redis://", "rediss://")):
        from worker.redelivery import RenewUnacked

        celery.steps["consumer"].add(RenewUnacked)
    return celery


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: object) -> None:
    configure_logging(loglevel or "INFO", quiet_tasks=frozenset({AUTO_ENROLL_TASK}))
    # One line per Jamf request is noise at INFO; failures are logged by jamf.client.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@signals.task_prerun.connect
def _bind(task_id: str, kwargs: dict[str, Any] | None = None, **_: object) -> None:
    bind_celery_task(task_id, (kwargs or {}).get("inventory"))


@signals.task_postrun.connect
def _unbind(**_: object) -> None:
    clear_context()


class _Entries:
    """Our entries, built when beat starts (a worker without beat needs no schedule), from
    the settings of the day: the stored schedule keeps each entry's last run, takes the
    periods from here, gains the new inventories' entries and loses the removed ones'."""

    app: Celery

    def setup_schedule(self) -> None:
        self.app.conf.beat_schedule = beat_schedule(self.app.conf.devtrust_settings, self.app)
        super().setup_schedule()  # type: ignore[misc]


class FileScheduler(_Entries, beat.PersistentScheduler):  # type: ignore[misc]
    """Celery's shelve under the data directory, which one beat at a time holds: a second
    beat on the same data directory waits for the first to end."""

    _holding: Any = None

    def setup_schedule(self) -> None:
        import fcntl

        path = Path(self.schedule_filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._holding is None:
            holding = (path.parent / (path.name + ".lock")).open("a")
            try:
                fcntl.flock(holding, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logging.getLogger("celery.beat").info(
                    "beat: another beat holds %s: standing by until it ends", path
                )
                fcntl.flock(holding, fcntl.LOCK_EX)
            self._holding = holding  # held until the scheduler closes
        super().setup_schedule()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._holding is not None:
                self._holding.close()  # and with it the lock
                self._holding = None


def _redis_scheduler() -> type:
    """``RedisScheduler``, made when beat asks for it: redbeat (and with it the Redis
    client) is imported by beat alone, not by every command that imports this module."""
    from redbeat import RedBeatScheduler  # type: ignore[import-untyped]
    from redbeat.schedulers import (  # type: ignore[import-untyped]
        RedBeatSchedulerEntry,
        acquire_distributed_beat_lock,
    )

    # Ours takes the lock as redbeat's does, and says so when a standby waits for it.
    signals.beat_init.disconnect(acquire_distributed_beat_lock)
    signals.beat_init.connect(_acquire_beat_lock)

    class RedisEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
        @property
        def due_at(self) -> datetime | None:
            """When the entry is next due. redbeat's own adds the time left to the last
            run, not to now: a first run's ``last_run_at`` ahead of now came late."""
            if self.last_run_at is None:
                return self._default_now()  # type: ignore[no-any-return]
            left = self.schedule.remaining_estimate(self.last_run_at)
            if left is None:
                return None
            return self._default_now() + max(left, timedelta(0))  # type: ignore[no-any-return]

    class RedisScheduler(_Entries, RedBeatScheduler):  # type: ignore[misc]
        """celery-redbeat: the schedule in Redis, and its lock (see ``beat_settings``)."""

        Entry = RedisEntry

    RedisScheduler.__module__ = __name__
    RedisScheduler.__qualname__ = "RedisScheduler"
    return RedisScheduler


def _acquire_beat_lock(sender: Any = None, **_: object) -> None:
    """Take beat's lock on Redis when beat starts (redbeat's ``acquire_distributed_beat_lock``
    with a line when another beat holds it, as then this one waits in silence)."""
    from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis

    scheduler: Any = sender.scheduler
    if not getattr(scheduler, "lock_key", None):
        return
    client = get_redis(scheduler.app)
    lock = client.lock(
        scheduler.lock_key, timeout=scheduler.lock_timeout, sleep=scheduler.max_interval
    )
    # redbeat's extension sets the lock's time left to the timeout, not adds it.
    lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
    log = logging.getLogger("celery.beat")
    if not lock.acquire(blocking=False):
        log.info(
            "beat: another beat holds the lock %s: standing by, to take over at most %s s "
            "after it stops renewing it",
            scheduler.lock_key,
            round(scheduler.lock_timeout + scheduler.max_interval),
        )
        lock.acquire()
    log.info("beat: Acquired lock")
    scheduler.lock = lock


def __getattr__(name: str) -> Any:
    if name == "RedisScheduler":
        scheduler = _redis_scheduler()
        globals()[name] = scheduler
        return scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DeviceSyncQueue:
    """How ``devtrust serve`` queues one device's sync for a Jamf webhook: coalesced, one
    queued sync per device at a time (``jamf.device_sync.Coalescer``)."""

    def __init__(self, celery: Celery, settings: Settings) -> None:
        from jamf.device_sync import coalescer_for

        self.app = celery
        self.source = settings.jamf_source_name.strip() or "jamf"
        self.coalescer = coalescer_for(
            settings.broker_url, settings.data_dir, redis_url=settings.lock_url
        )

    def submit(self, kind: str, jamf_id: str, event: str) -> bool:
        """Queue the device's sync; False when one is queued already (coalesced)."""
        from jamf.device_sync import DeviceKind, DeviceRef, pending_key

        key = pending_key(self.source, DeviceRef(DeviceKind(kind), jamf_id))
        if not self.coalescer.claim(key):
            return False
        try:
            self.app.send_task(
                DEVICE_SYNC_TASK,
                kwargs={"kind": kind, "jamf_id": jamf_id, "event": event},
                queue=QUEUE,
                retry=False,
            )
        except BaseException:
            self.coalescer.release(key)  # nothing is queued: the next webhook queues it
            raise
        return True


app = create_app()
