"""Auto-enrollment at login, the service's side: queue the check, wait for its verdict.

The check itself runs on the worker (``devtrust.ceremony.auto_enroll``, reached through
an injected queue, never by importing the worker). The service refuses at once when
device trust or auto-enrollment is off or the user is not a person with the access role
(or higher), rate-limits attempts per user, records the check (``auto_enroll.open_check``:
its owner, and the key that seals its token) and waits for the verdict up to a configured
time; a check still running by then is answered 202 with the place to poll. A verdict is
shown only to the user who asked for it, once: delivering it deletes the check and
forgets the verdict. An id that is not a canonical UUID, not this user's, delivered
already or expired is answered 404 at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ceremony.errors import RateLimited
from ceremony.protocol import AutoEnrollPending, AutoEnrollToken, Collected
from inventory.db import Database
from inventory.domain import Role, TokenKind, User, device_label
from inventory.drift import AutoEnrollRefused
from inventory.errors import AccessDenied, InvalidArgument, NotFound, quoted
from inventory.preference import DeviceTrustMode
from inventory.services import audit, auto_enroll, users
from inventory.services.preference import get_preference_within

DEFAULT_WAIT = 5.0  # seconds
POLL_WAIT = 1.0
# Auto-enrollment is for people: a bot-only identity has no device of its own to enroll.
AUTO_ENROLL_ROLES = (Role.ACCESS, Role.EDITOR, Role.DEVICE_ADMIN)
PURGE_EVERY = 60.0  # seconds between deletions of expired checks
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CheckQueue(Protocol):
    """Where checks go: ``submit`` queues check ``check_id``, ``verdict`` waits up to
    ``wait`` seconds for it (None while it runs), ``forget`` deletes it."""

    def submit(
        self, check_id: str, user: str, logins: Sequence[str], collected: dict[str, Any]
    ) -> None: ...

    def verdict(self, check_id: str, wait: float) -> dict[str, Any] | None: ...

    def forget(self, check_id: str) -> None: ...


class Limiter(Protocol):
    def hit(self, key: str) -> None: ...


@dataclass
class AutoEnrollment:
    db: Database
    queue: CheckQueue
    limiter: Limiter
    wait: float = DEFAULT_WAIT
    _next_purge: float = field(default=0.0, init=False, repr=False)
    _purging: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def request(self, credential: str, collected: Collected) -> AutoEnrollToken | AutoEnrollPending:
        """Queue the check for the calling user's device and wait for its verdict."""
        uow = self.db.uow()
        with uow.read():
            user = users.authenticate_within(uow, credential)
            trust = get_preference_within(uow).device_trust
        try:
            _check_may_auto_enroll(user)
            if trust.mode is DeviceTrustMode.OFF:
                raise AutoEnrollRefused("device trust is off (device_trust.mode is off)")
            if not trust.auto_enroll:
                raise AutoEnrollRefused(
                    "auto-enrollment is disabled (device_trust.auto_enroll is false): "
                    "ask an admin for an enrollment token"
                )
            self.limiter.hit(user.name)
        except (AutoEnrollRefused, AccessDenied, RateLimited) as exc:  # every attempt audited
            audit.record_failure(
                self.db.uow(),
                audit.DEVICE_TOKEN_CREATE,
                actor=user.name,
                message=f"auto-enrollment of "
                f"{device_label(collected.serial_number, collected.os_type)} "
                f"for {user.name} refused: {exc}",
                details={"kind": TokenKind.AUTO.value, "user": user.name},
            )
            raise
        self._purge_expired()
        check_id = auto_enroll.open_check(self.db.uow(autocommit=True), user.name)
        self.queue.submit(
            check_id,
            user.name,
            user.logins,
            collected.model_dump(mode="json", exclude_none=True),
        )
        return self._answer(user.name, check_id, self.wait)

    def poll(self, credential: str, check_id: str) -> AutoEnrollToken | AutoEnrollPending:
        """The verdict of an earlier check of this user's, if it is in."""
        user = users.authenticate(self.db.uow(), credential)
        if not _CANONICAL_UUID.fullmatch(check_id) or not auto_enroll.check_is_open(
            self.db.uow(autocommit=True), check_id, user.name
        ):
            raise _unknown(check_id)
        return self._answer(user.name, check_id, min(self.wait, POLL_WAIT))

    def _answer(self, user: str, check_id: str, wait: float) -> AutoEnrollToken | AutoEnrollPending:
        verdict = self.queue.verdict(check_id, wait)
        if verdict is None:
            return AutoEnrollPending(check_id=check_id, location=f"/v1/auto-enroll/{check_id}")
        # Delivered once: the check's row (and with it the key to its token) goes now.
        key = auto_enroll.close_check(self.db.uow(autocommit=True), check_id, user)
        self.queue.forget(check_id)
        if key is None or verdict.get("user") != user:
            raise _unknown(check_id)
        if not verdict.get("ok"):
            reason = str(verdict.get("reason", "refused"))
            if verdict.get("status") == 400:
                raise InvalidArgument(reason)
            raise AutoEnrollRefused(reason)
        return AutoEnrollToken(
            token=auto_enroll.unseal(key, verdict["sealed_token"]),
            expire_time=verdict["expire_time"],
            device=verdict["device"],
        )

    def _purge_expired(self) -> None:
        """Now and then, delete the checks that expired undelivered and forget their
        verdicts: the result backend would keep them for days."""
        now = time.monotonic()
        if now < self._next_purge or not self._purging.acquire(blocking=False):
            return
        try:
            self._next_purge = now + PURGE_EVERY
            for check_id in auto_enroll.purge_checks(self.db.uow(autocommit=True)):
                self.queue.forget(check_id)
        finally:
            self._purging.release()


def _check_may_auto_enroll(user: User) -> None:
    if not any(user.has(role) for role in AUTO_ENROLL_ROLES):
        roles = ", ".join(r.value for r in user.roles)
        raise AccessDenied(
            "auto-enrollment requires the access, editor or device-admin role; "
            f"user {user.name} has {roles}"
        )


def _unknown(check_id: str) -> NotFound:
    return NotFound(f"unknown auto-enrollment check {quoted(check_id)}")
