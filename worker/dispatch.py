"""The ceremony service's way onto the worker's queue: auto-enrollment checks by task name.

``devtrust serve`` builds one of these and hands it to the service, which never imports
the worker. The verdict comes back through Celery's result backend (Redis pub/sub in
production, so a waiting login hears it at once); the check's id is its task's id, and
the service forgets the verdict once delivered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from inventory.errors import DevtrustError, one_line
from worker.celery import AUTO_ENROLL_TASK, QUEUE

# A check nobody picked up within this long is dropped: its login gave up long ago.
CHECK_EXPIRES = 60.0


class QueueUnavailable(DevtrustError):
    http_status = 503


class CeleryCheckQueue:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(
        self, check_id: str, user: str, logins: Sequence[str], collected: dict[str, Any]
    ) -> None:
        kwargs: dict[str, Any] = {"user": user, "collected": collected, "check": check_id}
        if logins:
            kwargs["logins"] = list(logins)
        try:
            self.app.send_task(
                AUTO_ENROLL_TASK,
                task_id=check_id,
                kwargs=kwargs,
                queue=QUEUE,
                expires=CHECK_EXPIRES,
                retry=False,
            )
        except Exception as exc:  # kombu raises many kinds; the login needs one line
            raise QueueUnavailable(
                f"cannot queue the auto-enrollment check: {one_line(exc)}"
            ) from None

    def verdict(self, check_id: str, wait: float) -> dict[str, Any] | None:
        result = AsyncResult(check_id, app=self.app)
        if wait > 0:
            try:
                result.get(timeout=wait, propagate=False, interval=0.05)
            except CeleryTimeout:
                return None
        if not result.ready():
            return None
        value = result.result
        if result.failed() or not isinstance(value, dict):
            raise QueueUnavailable(
                f"the auto-enrollment check failed on the worker: {str(value)[:200]}"
            )
        return value

    def forget(self, check_id: str) -> None:
        """Delete the verdict from the result backend: it is delivered, or worthless."""
        # A backend that fails here fails the next request too; this one is answered.
        with contextlib.suppress(Exception):
            AsyncResult(check_id, app=self.app).forget()
