"""Making a device trusted: the last step of the ceremony, once its proof has verified.

One transaction spends the enrollment token (single use, for this very device), records
the credential and the owner, stores the collected data, and audits ``device.enroll``.
A refusal changes nothing and is audited as a failed ``device.enroll`` with its reason.

The ceremony's own path is built for few round trips (``start_within`` and
``enroll_answered_within``). On PostgreSQL each is one statement: the first round trip's
checks with its challenge's INSERT, and the second one's writes (data-modifying CTEs, each
step conditioned on the one before). On SQLite, which has no round trips to save, a
SELECT and an INSERT, and one short transaction. The statements are in
``enrollment_statements``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy.exc import IntegrityError

from inventory.db import UnitOfWork, unlabelled
from inventory.domain import (
    CollectedData,
    Credential,
    Device,
    EnrollStatus,
    OSType,
    TokenKind,
    TrustLevel,
    User,
    device_label,
)
from inventory.errors import AlreadyExists, DevtrustError, TokenInvalid
from inventory.preference import NAME as PREFERENCE_NAME
from inventory.preference import parse_min_attestation
from inventory.services import audit, challenges, devices, tokens, users
from inventory.services import enrollment_statements as sql
from inventory.services.devices import collected_params, record_collected_data_within, to_device


def check_collected_matches(device: Device, collected: CollectedData) -> None:
    """The token names one device: the data the enrolling device sent must be that one."""
    if (collected.serial_number, collected.os_type) != (device.asset_tag, device.os_type):
        raise TokenInvalid(
            f"the enrollment token is for device {device.label}, but this device reports "
            f"{device_label(collected.serial_number, collected.os_type)}"
        )


def enroll_device(
    uow: UnitOfWork,
    *,
    token: str,
    credential: Credential,
    collected: CollectedData,
    user: str,
    history_limit: int = 10,
) -> Device:
    """Spend the token and enroll its device with ``credential``, owned by ``user``."""
    try:
        with uow:
            enrolled = enroll_device_within(
                uow,
                token=token,
                credential=credential,
                collected=collected,
                user=user,
                history_limit=history_limit,
            )
            uow.commit()
            return enrolled
    except DevtrustError as exc:
        audit.record_failure(uow, audit.DEVICE_ENROLL, actor=user, message=refusal(collected, exc))
        raise


def refusal(collected: CollectedData, reason: object) -> str:
    """The audit message of a refused enrollment."""
    label = device_label(collected.serial_number, collected.os_type)
    return f"enrollment of {label} refused: {reason}"


def enroll_device_within(
    uow: UnitOfWork,
    *,
    token: str,
    credential: Credential,
    collected: CollectedData,
    user: str,
    history_limit: int = 10,
) -> Device:
    """``enroll_device`` inside the caller's transaction (which rolls back on a refusal)."""
    device = tokens.spend_token_within(uow, token, actor=user, user=user)
    check_collected_matches(device, collected)
    if device.enroll_status is EnrollStatus.ENROLLED:
        raise TokenInvalid(f"device {device.label} is already enrolled: unenroll it first")
    row = uow.session.execute(
        sql.ENROLL,
        {
            "device": device.id,
            "enrolled_status": EnrollStatus.ENROLLED.value,
            "user": user,
            "new_credential_id": credential.id,
            "new_public_key": credential.public_key,
            "new_ek_cert_serial": credential.ek_cert_serial,
            "new_attestation_type": credential.attestation_type.value,
            "new_binding": None,
            "now": uow.now(),
        },
    ).one()
    record_collected_data_within(uow, device.id, collected, keep=history_limit)
    enrolled = to_device(row)
    audit.record_within(
        uow,
        audit.DEVICE_ENROLL,
        actor=user,
        message=f"device {enrolled.label} enrolled by {user} ({credential.attestation_type.value})",
        device=enrolled,
        details={
            "credential_id": credential.id,
            "attestation_type": credential.attestation_type.value,
        },
    )
    return enrolled


# -- the ceremony's path --------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """What the ceremony's first round trip checks before it makes a challenge."""

    device: Device  # the one the token was minted for
    token_hash: str
    token_kind: TokenKind
    ekcert_allowed_cas: tuple[str, ...]
    min_attestation: TrustLevel | None = None
    # The asset tag of another device enrolled with the same EK (or enclave key).
    bound_to: str | None = None


def bound_elsewhere(asset_tag: str, *, tpm: bool) -> AlreadyExists:
    """The refusal of a second device for one TPM (or one enclave key)."""
    what = "the TPM's EK" if tpm else "the device's Secure Enclave key"
    return AlreadyExists(
        f"{what} is already enrolled as device {asset_tag}: remove or unenroll that device first"
    )


def find_start_within(uow: UnitOfWork, credential: str, token: str) -> tuple[User, Any]:
    """The user of ``credential`` (or Unauthenticated) and, in the same SELECT, what
    ``checked_start`` checks: the token, its device and the EK CAs allowed."""
    user, found, _ = start_within(uow, credential, token, None)
    return user, found


@dataclass(frozen=True)
class Draft:
    """A challenge for the first round trip to store together with its checks: all of its
    state but what only the database knows, the token's kind and, for an EK certificate,
    whether EK CAs are configured (which makes its attestation tpm_ekcert_trusted)."""

    id: str
    kind: str
    state: dict[str, Any]
    collected: CollectedData
    attestation_type: str | None  # tpm_ekcert or tpm_ekpub, as without CAs; None: no TPM
    create_time: datetime
    expire_time: datetime

    def stored_state(self, start: Start) -> dict[str, Any]:
        """The state with what the database knows: what the PostgreSQL statement builds."""
        known: dict[str, Any] = {"token_kind": start.token_kind.value}
        if self.attestation_type is not None:
            trusted = bool(start.ekcert_allowed_cas)
            known["attestation_type"] = "tpm_ekcert_trusted" if trusted else self.attestation_type
        return self.state | known


def start_within(
    uow: UnitOfWork, credential: str, token: str, draft: Draft | None
) -> tuple[User, Any, challenges.Challenge | None]:
    """``find_start_within``; on PostgreSQL, in the same statement, ``draft`` stored as a
    challenge if everything ``checked_start`` and ``check_collected_matches`` check holds
    and the device is not enrolled (returned; else None, and nothing is written).

    A challenge is stored before the device's keys are verified, so that the user is
    authenticated before any cryptography: its answer leaves the server only once they
    have verified, and a refusal spends it (``refusals_audited``).
    """
    params = {
        "user_hash": users.credential_hash(credential),
        "token_hash": tokens.hash_token(token),
        "preference": PREFERENCE_NAME,
        "binding": draft.state.get("binding") if draft is not None else None,
    }
    if draft is None or uow.dialect != "postgresql":
        row = uow.first(sql.START, params)
        return users.user_with_credential(credential, unlabelled(row, "u_")), row, None
    row = uow.first(
        sql.START_AND_ISSUE,
        params
        | {
            "id": draft.id,
            "kind": draft.kind,
            "state": draft.state,
            "attestation_type": draft.attestation_type,
            "create_time": draft.create_time,
            "expire_time": draft.expire_time,
            "serial": draft.collected.serial_number,
            "os": draft.collected.os_type.value,
            "enrolled_status": EnrollStatus.ENROLLED.value,
        },
    )
    user = users.user_with_credential(credential, unlabelled(row, "u_"))
    if row.issued is None:
        return user, row, None
    issued = challenges.Challenge(
        id=draft.id,
        kind=draft.kind,
        device_id=row.d_id,
        user_name=user.name,
        state=draft.state,  # what is stored, but for the database's part: not read back
        expire_time=draft.expire_time,
    )
    return user, row, issued


def issue_drafted_within(
    uow: UnitOfWork, draft: Draft, start: Start, user: User, ttl: timedelta
) -> challenges.Challenge:
    """Store ``draft`` once ``start`` has been checked (SQLite, where ``start_within``
    stores nothing)."""
    return challenges.issue_challenge_within(
        uow,
        kind=draft.kind,
        device_id=start.device.id,
        user_name=user.name,
        state=draft.stored_state(start),
        ttl=ttl,
    )


def checked_start(found: Any, token: str, *, user: User, now: datetime) -> Start:
    """The device ``token`` enrolls, checked as spending would (left unspent), from what
    ``find_start_within`` found; else TokenInvalid saying why."""
    token_hash = tokens.hash_token(token)
    token_row = unlabelled(found, "t_")
    tokens.check_usable(token_row, token_hash, now=now, user=user.name)
    device = unlabelled(found, "d_")
    if device is None:  # cascade deletes tokens with their device: only a race lands here
        raise TokenInvalid("the device this token was minted for has been removed")
    return Start(
        device=to_device(device),
        token_hash=token_hash,
        token_kind=TokenKind(token_row.kind),  # type: ignore[union-attr]
        ekcert_allowed_cas=tuple(found.p_ekcert_allowed_cas or ()),
        min_attestation=parse_min_attestation(found.p_min_attestation),
        bound_to=found.bound_to,
    )


def enroll_answered_within(
    uow: UnitOfWork,
    *,
    challenge: challenges.Challenge,
    token_hash: str,
    token_kind: TokenKind,
    credential: Credential,
    collected: CollectedData,
    user: str,
    history_limit: int = 10,
    binding: str | None = None,
) -> Device:
    """Take the answered ``challenge``, then enroll its device and spend the token, or
    refuse with the reason. The challenge must be unused and unexpired; the device must
    not be enrolled and must be the one the collected data names, and its token unspent,
    unexpired and this user's to spend. The device's row lock is what serializes two
    enrollments of one device, so the token is spent with the enrollment, never without.
    ``binding`` (the EK's or enclave key's digest) must be no other enrolled device's:
    the unique index decides between racing enrollments of two devices with one TPM.

    On PostgreSQL the steps are one statement, in autocommit: a refusal leaves only the
    challenge taken, which is what a refusal does anyway. Elsewhere, the same steps in
    the caller's transaction (which rolls back on a refusal).
    """
    device_id = challenge.device_id
    label = device_label(collected.serial_number, collected.os_type)
    now = uow.now()
    event = {"time": now, "success": True, "actor": user, "device_id": device_id}
    event |= {"asset_tag": collected.serial_number, "os_type": collected.os_type.value}
    spent_event = event | {
        "type": audit.DEVICE_TOKEN_SPENT,
        "message": f"{token_kind.value} enrollment token spent for device {label}",
        "details": {"kind": token_kind.value, "user": user},
    }
    enroll_event = event | {
        "type": audit.DEVICE_ENROLL,
        "message": f"device {label} enrolled by {user} ({credential.attestation_type.value})",
        "details": {
            "credential_id": credential.id,
            "attestation_type": credential.attestation_type.value,
        },
    }
    params = {
        "now": now,
        "challenge": challenge.id,
        "wanted_kind": challenge.kind,
        "user": user,
        "hash": token_hash,
        "device": device_id,
        "serial": collected.serial_number,
        "os": collected.os_type.value,
        "enrolled_status": EnrollStatus.ENROLLED.value,
        "new_credential_id": credential.id,
        "new_public_key": credential.public_key,
        "new_ek_cert_serial": credential.ek_cert_serial,
        "new_attestation_type": credential.attestation_type.value,
        "new_binding": binding,
    }
    with _bound_once(uow, binding, collected):
        if uow.dialect == "postgresql":
            chained = {f"c_{k}": v for k, v in collected_params(device_id, collected, now).items()}
            chained |= {f"spent_{k}": v for k, v in spent_event.items()}
            chained |= {f"enroll_{k}": v for k, v in enroll_event.items()}
            chained["keep_older"] = history_limit - 1  # the new report is not visible to it
            row = uow.first(sql.CHAINED, params | chained)
            if row is None or row.id is None:
                _refuse(uow, challenge, token_hash, collected, user, taken=row is not None)
            return to_device(row)
        with uow.transaction():
            if not uow.run(sql.TAKE, params):
                _refuse(uow, challenge, token_hash, collected, user, taken=False)
            enrolled = uow.run(sql.ENROLL_IF_ENROLLABLE, params)
            if not enrolled:
                _refuse(uow, challenge, token_hash, collected, user, taken=True)
            uow.run(sql.SPEND, params)
            record_collected_data_within(uow, device_id, collected, keep=history_limit)
            uow.run(audit.INSERT, spent_event)
            uow.run(audit.INSERT, enroll_event)
        return to_device(enrolled[0])


@contextlib.contextmanager
def _bound_once(uow: UnitOfWork, binding: str | None, collected: CollectedData) -> Iterator[None]:
    """A unique violation of ``credential_binding`` as the refusal naming the device that
    holds the EK (or enclave key): the one read a refused enrollment adds."""
    try:
        yield
    except IntegrityError:
        holder = uow.first(sql.BOUND_TO, {"binding": binding}) if binding is not None else None
        if holder is None:  # another constraint, or the holder gone meanwhile
            raise
        tpm = collected.os_type is not OSType.MACOS
        raise bound_elsewhere(holder.asset_tag, tpm=tpm) from None


def _refuse(
    uow: UnitOfWork,
    challenge: challenges.Challenge,
    token_hash: str,
    collected: CollectedData,
    user: str,
    *,
    taken: bool,
) -> NoReturn:
    """Raise the reason the challenge was not taken, or, once it was, the device not
    enrolled: the state the refused statement found."""
    now = uow.now()
    if not taken:  # another answer got there first
        row = challenges.find_challenge(uow, challenge.id)
        raise challenges.ChallengeInvalid(challenges.why_not(row, challenge.kind, user, now))
    token = uow.first(tokens.BY_HASH, {"hash": token_hash})
    tokens.check_usable(token, token_hash, now=now, user=user)
    device = uow.first(devices.BY_ID, {"id": challenge.device_id})
    if device is None:
        raise TokenInvalid("the device this token was minted for has been removed")
    check_collected_matches(to_device(device), collected)
    raise TokenInvalid(f"device {to_device(device).label} is already enrolled: unenroll it first")
