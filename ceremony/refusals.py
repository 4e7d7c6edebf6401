"""Refused ceremony steps: each one is audited, once its user is known, and changes nothing.

A step (the first or second round trip of enrollment or device authentication) runs in
``refusals_audited``, filling in its ``Attempt`` as it learns who is asking, about which
device, with which challenge. If the step is refused, its transaction has rolled back;
the refusal is then recorded in a transaction of its own: a failed audit event with the
reason, and the challenge the step took spent, so that it is answered once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from ceremony.errors import AttestationError, KeyProofError, ProofRefused
from inventory.db import Database
from inventory.domain import CollectedData, Device, User, device_label
from inventory.drift import audit_reason
from inventory.errors import DevtrustError
from inventory.models import DeviceRow
from inventory.services import audit, challenges
from inventory.services.devices import to_device


@dataclass
class Attempt:
    """What a ceremony step knows so far: what its refusal's audit event says."""

    user: User | None = None
    collected: CollectedData | None = None
    device: Device | None = None
    challenge: challenges.Challenge | None = None
    # The challenge a second round trip answers, before it is known to be valid: a
    # replayed answer to a spent one is still audited with its device.
    challenge_id: str | None = None


@contextlib.contextmanager
def refusals_audited(db: Database, event: str, what: str) -> Iterator[Attempt]:
    """Run a step; a refusal once its user is known is audited as a failed ``event``,
    "<what> of <serial>/<os> refused: <reason>". A proof that fails to verify (an
    AttestationError or KeyProofError) is refused as ProofRefused."""
    attempt = Attempt()
    try:
        yield attempt
    except (AttestationError, KeyProofError) as exc:
        _audit(db, event, what, attempt, str(exc))
        raise ProofRefused(str(exc)) from None
    except DevtrustError as exc:
        _audit(db, event, what, attempt, audit_reason(exc))
        raise


def _audit(db: Database, event: str, what: str, attempt: Attempt, reason: str) -> None:
    if attempt.user is None:  # refused before anyone was authenticated: nobody to name
        return
    if attempt.collected is not None:
        data = attempt.collected
        what = f"{what} of {device_label(data.serial_number, data.os_type)}"
    record_refusal(
        db,
        attempt.user,
        event,
        f"{what} refused: {reason}",
        device=attempt.device,
        challenge=attempt.challenge,
        challenge_id=attempt.challenge_id,
    )


def record_refusal(
    db: Database,
    user: User,
    event: str,
    message: str,
    *,
    device: Device | None = None,
    challenge: challenges.Challenge | None = None,
    challenge_id: str | None = None,
) -> None:
    """Audit a refused ceremony step; a challenge that was taken stays spent, though the
    refused transaction that took it rolled back. With only ``challenge_id`` (the step
    was refused before the challenge was taken: spent, expired, another user's), the
    event names the challenge's device if the challenge is known."""
    uow = db.uow()
    with uow:
        if device is None and challenge is None and challenge_id is not None:
            stored = challenges.find_challenge(uow, challenge_id)
            if stored is not None:
                row = uow.session.get(DeviceRow, stored.device_id)
                device = to_device(row) if row is not None else None
        if challenge is not None:
            with contextlib.suppress(challenges.ChallengeInvalid):  # expired meanwhile
                challenges.take_challenge_within(
                    uow, challenge.id, kind=challenge.kind, user_name=user.name
                )
            if device is None:
                row = uow.session.get(DeviceRow, challenge.device_id)
                device = to_device(row) if row is not None else None
        audit.record_within(
            uow, event, actor=user.name, message=message, success=False, device=device
        )
        uow.commit()
