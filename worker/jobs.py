"""What the worker's tasks do, as plain functions: callable with no broker, and tested so.

A task is one call into here. Each function opens what it needs (database, Jamf client,
lock) from the settings, and closes it again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from inventory.db import Database, once_more_if_dropped
from inventory.domain import CollectedData, IssuedToken, SyncRun
from inventory.durations import parse_duration
from inventory.errors import ConfigurationError, DevtrustError, InvalidArgument, one_line
from inventory.serialize import run_to_dict
from inventory.services import auto_enroll, challenges
from inventory.services import source_sync as store
from inventory.settings import Settings
from jamf import device_sync
from jamf.client import JamfClient
from jamf.config import SourceSpec, client_from_settings, source_from_settings
from jamf.device_sync import Coalescer, DeviceKind, DeviceRef, coalescer_for, pending_key
from jamf.errors import JamfError
from jamf.sync import Kind, ProgressCallback, run_sync
from worker.locks import Locks, LockState, locks_for

log = logging.getLogger("devtrust.worker")

SKIPPED = "skipped"


def lock_name(source: str, inventory: str) -> str:
    return f"jamf-sync:{source}:{inventory}"


def sync_inventory(
    settings: Settings,
    *,
    inventory: str | None = None,
    kind: Kind | str = Kind.PARTIAL,
    force: bool = False,
    actor: str = "jamf-sync",
    owner: str = "devtrust worker",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """One sync of one inventory, unless one is running already anywhere.

    Returns ``{"status": "succeeded" | "failed", "run": {...}}`` or, when another worker
    holds the inventory's lock, ``{"status": "skipped", "reason": ...}``: a second sync
    is skipped, not queued behind the first. When the holder is dead (its renewals
    stopped), the skip carries ``retry_in``, the seconds until its lock frees. A sync
    the worker's settings cannot start (Jamf not configured, an unknown inventory) is a
    failed run with that reason.
    """
    kind = Kind(kind)
    with ExitStack() as stack:
        try:
            source = source_from_settings(settings)
            spec = source.inventory(inventory)
            ttl = parse_duration(settings.jamf_sync_lock_ttl, what="jamf_sync_lock_ttl")
            locks = locks_for(settings.broker_url, settings.data_dir, redis_url=settings.lock_url)
            stack.callback(locks.close)
            client = stack.enter_context(client_from_settings(settings))
        except (ConfigurationError, InvalidArgument) as exc:
            return _not_started(settings, inventory, kind, actor, exc)
        name = lock_name(source.name, spec.name)
        lease = locks.acquire(name, ttl.total_seconds(), owner)
        if lease is None:
            return _skipped(locks, name, f"{source.name}/{spec.name}", spec.name, kind)
        with lease:
            lease.start_renewal()
            db = Database.connect(settings.database_url_value, migrate=settings.auto_migrate)
            try:
                for run_id in store.abandon_running(db.uow(), spec.name, actor=actor):
                    log.warning(
                        "run %d of %s was interrupted; closed it as failed", run_id, spec.name
                    )
                run = run_sync(
                    db,
                    client,
                    source,
                    spec,
                    kind=kind,
                    force=force,
                    actor=actor,
                    progress=progress,
                    concurrency=max(1, settings.jamf_max_connections - 1),
                    still_held=lease.ensure_held,
                    process_min=settings.jamf_read_process_min or None,
                )
            finally:
                db.close()
    return {
        "status": run.status,
        "inventory": spec.name,
        "kind": kind.value,
        "run": run_to_dict(run),
    }


def _skipped(locks: Locks, name: str, where: str, inventory: str, kind: Kind) -> dict[str, Any]:
    state = locks.state(name)
    if state is None:  # released between our try and our look
        reason = f"a sync of {where} was running and has just ended"
    elif state.holder_dead:
        reason = f"the lock of {where} is still held by a sync that is gone: {state.describe()}"
    else:
        reason = f"a sync of {where} is already running: {state.describe()}"
    log.info("%s sync skipped: %s", kind, reason)
    outcome: dict[str, Any] = {
        "status": SKIPPED,
        "inventory": inventory,
        "kind": kind.value,
        "reason": reason,
    }
    if state is not None and state.holder_dead and state.frees_in is not None:
        # Nobody is syncing: the task may try again once the dead holder's lock frees.
        outcome["retry_in"] = state.frees_in
    return outcome


def _not_started(
    settings: Settings, inventory: str | None, kind: Kind, actor: str, exc: DevtrustError
) -> dict[str, Any]:
    """Record a sync the settings cannot start as a failed run, audited like any other:
    `jamf status`, `jamf sync --wait` and the audit log then say why, not only this log."""
    source = settings.jamf_source_name.strip() or "jamf"
    name = inventory or _first_inventory(settings)
    reason = f"the worker cannot start the sync: {one_line(exc, limit=300)}"
    db = Database.connect(settings.database_url_value, migrate=settings.auto_migrate)
    try:
        run = store.record_not_started(
            db.uow(), source=source, inventory=name, kind=kind.value, actor=actor, error=reason
        )
    finally:
        db.close()
    log.error("%s sync of %s/%s failed: %s", kind, source, name, reason)
    return {"status": run.status, "inventory": name, "kind": kind.value, "run": run_to_dict(run)}


def _first_inventory(settings: Settings) -> str:
    """The entry a sync with no --inventory means, even when the entries do not parse."""
    entries = settings.jamf_inventory or [{}]
    first = entries[0] if isinstance(entries[0], dict) else {}
    name = first.get("name", "default")
    return name.strip() if isinstance(name, str) and name.strip() else "default"


def sync_running(settings: Settings, inventory: str) -> str | None:
    """Who is syncing the inventory now (the lock's holder), or None."""
    state = sync_lock(settings, inventory)
    return state.owner if state else None


def sync_lock(settings: Settings, inventory: str) -> LockState | None:
    """The inventory's sync lock, when held: who, whether they look alive, when it frees."""
    source = source_from_settings(settings)
    locks = locks_for(settings.broker_url, settings.data_dir, redis_url=settings.lock_url)
    try:
        return locks.state(lock_name(source.name, inventory))
    finally:
        locks.close()


def sync_status(
    db: Database, settings: Settings, source: SourceSpec
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each inventory's status as ``devtrust jamf status`` and ``GET
    /v1/admin/jamf/status`` report it (its runs as ``SyncRun``), and the notes for
    whoever asked (the lock that could not be read)."""
    from worker.locks import LockUnavailable

    report, notes = [], []
    for spec in source.inventories:
        runs = store.recent_runs(db.uow(), spec.name, limit=50)
        finished = [r for r in runs if r.status != store.RUNNING]
        lock: LockState | None = None
        try:
            lock = sync_lock(settings, spec.name)
        except LockUnavailable as exc:
            notes.append(f"cannot tell whether a sync is running: {exc}")
        report.append(
            {
                "source": source.name,
                "inventory": spec.name,
                "alert": store.alert(runs),
                # Who holds the sync lock while they look alive; a dead holder's lock is
                # under "lock" only, with when it frees.
                "syncing": lock.owner if lock and not lock.holder_dead else None,
                "lock": lock.to_dict() if lock else None,
                "running": next((r for r in runs if r.status == store.RUNNING), None),
                "last_partial": next((r for r in finished if r.kind == "partial"), None),
                "last_full": next((r for r in finished if r.kind == "full"), None),
            }
        )
    return report, notes


def sync_status_json(
    db: Database, settings: Settings, source: SourceSpec
) -> tuple[list[dict[str, Any]], list[str]]:
    """``sync_status`` with each run as ``run_to_dict``: what ``jamf status --format json``
    prints and ``GET /v1/admin/jamf/status`` answers under ``inventories``."""
    report, notes = sync_status(db, settings, source)
    entries = [
        {k: run_to_dict(v) if isinstance(v, SyncRun) else v for k, v in entry.items()}
        for entry in report
    ]
    return entries, notes


def purge_challenges(settings: Settings) -> int:
    """Delete ceremony challenges that expired more than an hour ago."""
    db = Database.connect(settings.database_url_value, migrate=settings.auto_migrate)
    try:
        purged = challenges.purge_expired(db.uow())
    finally:
        db.close()
    if purged:
        log.info("purged %d expired ceremony challenges", purged)
    return purged


_databases: dict[tuple[int, str], Database] = {}
_device_sync: dict[tuple[Any, ...], tuple[Database, JamfClient, Coalescer, Locks]] = {}
#: One device's syncs run one at a time: a second waits this long for the first (one or
#: two Jamf requests and one write), then goes on regardless (the lock outlives a dead
#: holder by its ttl).
DEVICE_LOCK_TTL = 30.0
DEVICE_LOCK_WAIT = 30.0


def _device_sync_tools(settings: Settings) -> tuple[Database, JamfClient, Coalescer, Locks]:
    """The database, Jamf client (and its token), coalescing marks and locks a worker
    process's device syncs share: a webhook's sync is one record, and must not pay for a
    pool and a Jamf token each time. Per process id: a forked child opens its own."""
    key = (os.getpid(), settings.database_url_value, settings.jamf_url,
           settings.jamf_client_id, settings.jamf_username)  # fmt: skip
    tools = _device_sync.get(key)
    if tools is None:
        db = Database.connect(settings.database_url_value, migrate=settings.auto_migrate)
        coalescer = coalescer_for(
            settings.broker_url, settings.data_dir, redis_url=settings.lock_url
        )
        locks = locks_for(settings.broker_url, settings.data_dir, redis_url=settings.lock_url)
        tools = (db, client_from_settings(settings), coalescer, locks)
        _device_sync[key] = tools
    return tools


@contextmanager
def one_sync_of(locks: Locks, key: str, *, wait: float = DEVICE_LOCK_WAIT) -> Iterator[None]:
    """Hold the device's sync lock while its record is read and applied. Two webhooks
    close together queue two syncs, which two worker processes may run at once: without
    it, the one that read Jamf first could write last, and the inventory keep the older
    record with no webhook left to mend it. Waits for a holder up to ``wait`` seconds."""
    name, owner = f"jamf-device:{key}", f"device sync pid {os.getpid()}"
    deadline = time.monotonic() + wait
    lease = locks.acquire(name, DEVICE_LOCK_TTL, owner=owner)
    while lease is None and time.monotonic() < deadline:
        time.sleep(0.05)
        lease = locks.acquire(name, DEVICE_LOCK_TTL, owner=owner)
    if lease is None:
        log.warning("the sync of %s waited %.0f s for another one; going on", key, wait)
    try:
        yield
    finally:
        if lease is not None:
            lease.release()


def sync_device(
    settings: Settings, *, kind: str, jamf_id: str, event: str | None = None
) -> dict[str, Any]:
    """The sync of one Jamf record a webhook asked for (``jamf.device_sync``).

    Its pending mark is cleared first, so a webhook arriving from now on queues one more
    sync. A sync the settings cannot start, or that Jamf fails, is recorded as a failed
    run of kind ``device`` with its reason (audited), and not retried: the next webhook
    or scheduled sync reads the device again."""
    try:
        ref = DeviceRef(DeviceKind(kind), str(jamf_id).strip())
    except ValueError:
        return {"status": store.FAILED, "reason": f"unknown device kind {kind!r}"}
    source_name = settings.jamf_source_name.strip() or "jamf"
    try:
        source = source_from_settings(settings)
        db, client, coalescer, locks = _device_sync_tools(settings)
        key = pending_key(source.name, ref)
        coalescer.release(key)  # before the read: a later change queues another sync
        if ref.kind is DeviceKind.MOBILE_DEVICE and not source.mobile_devices:
            raise ConfigurationError(
                "mobile devices are not synced: set DEVTRUST_JAMF_MOBILE_DEVICES=true"
            )
        with one_sync_of(locks, key):
            outcome = device_sync.sync_device(db, client, source, ref, event=event)
    except (ConfigurationError, InvalidArgument, JamfError) as exc:
        reason = f"the sync of Jamf {ref} failed: {one_line(exc, limit=300)}"
        log.error("%s", reason)
        failed = Database.connect(settings.database_url_value, migrate=settings.auto_migrate)
        try:
            run = store.record_not_started(
                failed.uow(), source=source_name, inventory=_first_inventory(settings),
                kind=device_sync.DEVICE_RUN, actor="jamf-webhook", error=reason,
            )  # fmt: skip
        finally:
            failed.close()
        return {"status": run.status, "reason": reason, "run": run_to_dict(run)}
    return outcome.to_dict()


def database_for(settings: Settings) -> Database:
    """One database (and connection pool) per worker process, opened on first use: the
    auto-enrollment check is short and frequent, so it must not pay for a pool each time.
    Keyed by process id as well, so a forked child never shares its parent's connections.
    No ping before each use: ``auto_enroll_check`` retries once on a stale connection."""
    key = (os.getpid(), settings.database_url_value)
    db = _databases.get(key)
    if db is None:
        url = settings.database_url_value
        db = Database.connect(url, migrate=settings.auto_migrate, pool_pre_ping=False)
        _databases[key] = db
    return db


def auto_enroll_check(
    settings: Settings,
    *,
    user: str,
    collected: dict[str, Any],
    check: str,
    logins: Sequence[str] = (),
) -> dict[str, Any]:
    """The verdict of the auto-enrollment check ``check``, as JSON for the result backend:
    a refusal's reason, or the token sealed with the check's key (which only the
    database holds): the backend keeps verdicts longer than a token lives."""
    from pydantic import ValidationError

    from ceremony.protocol import Collected

    try:
        data = Collected.model_validate(collected).to_domain()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "collected data"
        reason = f"collected data: {where}: {error['msg']}"
        return {"ok": False, "user": user, "status": 400, "reason": reason}
    except InvalidArgument as exc:
        return {"ok": False, "user": user, "status": 400, "reason": f"collected data: {exc}"}
    try:
        issued, sealed = _check_and_seal(settings, check, user, tuple(logins), data)
    except DevtrustError as exc:
        return {"ok": False, "user": user, "status": exc.http_status, "reason": str(exc)}
    return {
        "ok": True,
        "user": user,
        "sealed_token": sealed,
        "expire_time": issued.expire_time.isoformat(),
        # The device the token enrolls, briefly: the verdict travels through the result
        # backend on every check.
        "device": {
            "id": issued.device.id,
            "asset_tag": issued.device.asset_tag,
            "os_type": issued.device.os_type.value,
        },
    }


def _check_and_seal(
    settings: Settings, check: str, user: str, logins: tuple[str, ...], data: CollectedData
) -> tuple[IssuedToken, str]:
    return once_more_if_dropped(
        lambda: auto_enroll.check_and_seal(
            database_for(settings).uow(),
            check=check,
            user=user,
            logins=logins,
            collected=data,
            history_limit=settings.collected_history_limit,
        )
    )
