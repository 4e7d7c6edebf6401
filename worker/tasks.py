"""The worker's tasks: thin, named, time-limited; each one call into ``worker.jobs``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any

from celery import Task

from inventory.errors import DatabaseUnavailable
from inventory.services import auto_enroll as auto_enroll_service
from jamf.sync import Progress
from worker import jobs
from worker.celery import (
    AUTO_ENROLL_TASK,
    DEVICE_SYNC_TASK,
    NOOP_TASK,
    PURGE_TASK,
    SYNC_TASK,
    app,
)
from worker.locks import LockUnavailable

log = logging.getLogger("devtrust.worker")

# Progress is written to the result backend at most this often.
PROGRESS_EVERY = 1.0
# An auto-enrollment verdict outlives its token by nothing.
VERDICT_TTL_SECONDS = int(auto_enroll_service.CHECK_TTL.total_seconds())


@app.task(
    name=SYNC_TASK,
    bind=True,
    # Retried: what a moment's wait can fix. A failed Jamf run is recorded, not retried:
    # the next scheduled sync is the retry.
    autoretry_for=(DatabaseUnavailable, LockUnavailable),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def sync(
    self: Task,
    inventory: str | None = None,
    kind: str = "partial",
    force: bool = False,
    requested_by: str | None = None,
    scheduled: bool = False,
) -> dict[str, Any]:
    """Sync one Jamf inventory entry (``kind``: partial or full)."""
    last = 0.0

    def progress(p: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY or p.phase == "delete":
            last = now
            self.update_state(state="PROGRESS", meta=asdict(p))

    outcome = jobs.sync_inventory(
        self.app.conf.devtrust_settings,
        inventory=inventory,
        kind=kind,
        force=force,
        actor=requested_by or ("schedule" if scheduled else "jamf-sync"),
        owner=f"{self.request.hostname or 'worker'} task {self.request.id}",
        progress=progress,
    )
    retry_in = outcome.pop("retry_in", None)
    if retry_in is not None and self.request.retries < (self.max_retries or 0):
        # A dead worker's lock: nobody is syncing, so run once it frees rather than skip.
        countdown = math.ceil(retry_in) + 1
        log.info("sync trying again in %d s, when the dead sync's lock frees", countdown)
        raise self.retry(countdown=countdown)
    return outcome


@app.task(
    name=DEVICE_SYNC_TASK,
    autoretry_for=(DatabaseUnavailable,),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def sync_device(kind: str, jamf_id: str, event: str | None = None) -> dict[str, Any]:
    """Sync the one Jamf record a webhook named (``kind``: computer or mobile-device)."""
    return jobs.sync_device(app.conf.devtrust_settings, kind=kind, jamf_id=jamf_id, event=event)


@app.task(name=PURGE_TASK, autoretry_for=(DatabaseUnavailable,), max_retries=3)
def purge_challenges() -> int:
    """Forget ceremony challenges that expired over an hour ago; returns how many."""
    return jobs.purge_challenges(app.conf.devtrust_settings)


class _ShortLivedVerdict(Task):  # type: ignore[misc]
    """A check's verdict is worth nothing once its token has expired: it is stored by a
    backend of its own, like the app's but whose results expire then (on Redis, in the
    same SETEX; no extra round trip), not after the app's ``result_expires``. The service
    deletes it as it delivers it, and forgets those nobody polled."""

    _verdicts: Any = None

    @property
    def backend(self) -> Any:
        if self._verdicts is None:
            shared = self.app.backend
            self._verdicts = type(shared)(app=self.app, url=shared.url, expires=VERDICT_TTL_SECONDS)
        return self._verdicts

    @backend.setter
    def backend(self, value: Any) -> None:
        self._verdicts = value


@app.task(name=AUTO_ENROLL_TASK, base=_ShortLivedVerdict, acks_late=False, track_started=False)
def auto_enroll(
    user: str, collected: dict[str, Any], check: str, logins: list[str] | None = None
) -> dict[str, Any]:
    """Auto-enrollment's check ``check`` for ``user`` (who logs in to devices as their name
    or one of ``logins``) on the device ``collected`` describes: the verdict, with the
    token sealed on success. A refusal is a verdict, not a failed task; a login is
    waiting, so nothing is retried (acknowledged on receipt: never run twice). No STARTED
    state: the waiting login reads only the verdict, and the state would cost a
    result-backend write and a message to every waiter on each check."""
    return jobs.auto_enroll_check(
        app.conf.devtrust_settings,
        user=user,
        collected=collected,
        check=check,
        logins=logins or (),
    )


@app.task(name=NOOP_TASK, acks_late=False)
def noop(echo: Any = None) -> Any:
    """Does nothing: what the queue itself costs (benchmarks, smoke checks)."""
    return echo
