"""Auto-enrollment at login, the service's side: queue the check, wait for its verdict.

The check itself runs on the worker (``devtrust.ceremony.auto_enroll``, reached through
an injected queue, never by importing the worker). The service refuses at once when
device trust or auto-enrollment is off, rate-limits attempts per user, and waits for the
verdict up to a configured time; a check still running by then is answered 202 with the
place to poll. A verdict is only ever shown to the user who asked for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from ceremony.errors import RateLimited
from ceremony.protocol import AutoEnrollPending, AutoEnrollToken, Collected
from inventory.db import Database
from inventory.domain import TokenKind, device_label
from inventory.drift import AutoEnrollRefused
from inventory.errors import InvalidArgument, NotFound
from inventory.preference import DeviceTrustMode
from inventory.services import audit, users
from inventory.services.preference import get_preference_within

DEFAULT_WAIT = 5.0  # seconds
POLL_WAIT = 1.0


class CheckQueue(Protocol):
    """Where checks go: ``submit`` returns the check's id, ``verdict`` waits up to
    ``wait`` seconds for it (None while it runs)."""

    def submit(self, user: str, collected: dict[str, Any]) -> str: ...

    def verdict(self, check_id: str, wait: float) -> dict[str, Any] | None: ...


class Limiter(Protocol):
    def hit(self, key: str) -> None: ...


@dataclass
class AutoEnrollment:
    db: Database
    queue: CheckQueue
    limiter: Limiter
    wait: float = DEFAULT_WAIT

    def request(self, credential: str, collected: Collected) -> AutoEnrollToken | AutoEnrollPending:
        """Queue the check for the calling user's device and wait for its verdict."""
        uow = self.db.uow()
        with uow.read():
            user = users.authenticate_within(uow, credential)
            trust = get_preference_within(uow).device_trust
        refusal = None
        if trust.mode is DeviceTrustMode.OFF:
            refusal = "device trust is off (device_trust.mode is off)"
        elif not trust.auto_enroll:
            refusal = (
                "auto-enrollment is disabled (device_trust.auto_enroll is false): "
                "ask an admin for an enrollment token"
            )
        try:
            if refusal is not None:
                raise AutoEnrollRefused(refusal)
            self.limiter.hit(user.name)
        except (AutoEnrollRefused, RateLimited) as exc:  # every attempt is audited
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
        check_id = self.queue.submit(
            user.name, collected.model_dump(mode="json", exclude_none=True)
        )
        return self._answer(user.name, check_id, self.wait)

    def poll(self, credential: str, check_id: str) -> AutoEnrollToken | AutoEnrollPending:
        """The verdict of an earlier check, if it is in."""
        user = users.authenticate(self.db.uow(), credential)
        try:
            uuid.UUID(check_id)
        except ValueError:
            raise NotFound(f"unknown auto-enrollment check {check_id[:64]!r}") from None
        return self._answer(user.name, check_id, min(self.wait, POLL_WAIT))

    def _answer(self, user: str, check_id: str, wait: float) -> AutoEnrollToken | AutoEnrollPending:
        verdict = self.queue.verdict(check_id, wait)
        if verdict is None:
            return AutoEnrollPending(check_id=check_id, location=f"/v1/auto-enroll/{check_id}")
        if verdict.get("user") != user:  # someone else's check: as if it did not exist
            raise NotFound(f"unknown auto-enrollment check {check_id!r}")
        if not verdict.get("ok"):
            reason = str(verdict.get("reason", "refused"))
            if verdict.get("status") == 400:
                raise InvalidArgument(reason)
            raise AutoEnrollRefused(reason)
        return AutoEnrollToken(
            token=verdict["token"], expire_time=verdict["expire_time"], device=verdict["device"]
        )
