"""Making a device trusted: the last step of the ceremony, once its proof has verified.

One transaction spends the enrollment token (single use, for this very device), records
the credential and the owner, stores the collected data, and audits ``device.enroll``.
A refusal changes nothing and is audited as a failed ``device.enroll`` with its reason.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, update

from inventory.db import UnitOfWork
from inventory.domain import CollectedData, Credential, Device, EnrollStatus
from inventory.errors import DevtrustError, TokenInvalid
from inventory.models import DeviceRow
from inventory.services import audit, tokens
from inventory.services.devices import record_collected_data_within, to_device


def check_collected_matches(device: Device, collected: CollectedData) -> None:
    """The token names one device: the data the enrolling device sent must be that one."""
    if (collected.serial_number, collected.os_type) != (device.asset_tag, device.os_type):
        raise TokenInvalid(
            f"the enrollment token is for device {device.label}, but this device reports "
            f"{collected.serial_number}/{collected.os_type.value}"
        )


def enroll_device(
    uow: UnitOfWork,
    *,
    token: str | None = None,
    token_hash: str | None = None,
    credential: Credential,
    collected: CollectedData,
    user: str,
    history_limit: int = 10,
) -> Device:
    """Spend the token (given as itself or as its hash) and enroll its device with
    ``credential``, owned by ``user``."""
    try:
        with uow:
            enrolled = enroll_device_within(
                uow,
                token=token,
                token_hash=token_hash,
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
    return f"enrollment of {collected.serial_number}/{collected.os_type.value} refused: {reason}"


def enroll_device_within(
    uow: UnitOfWork,
    *,
    token: str | None = None,
    token_hash: str | None = None,
    credential: Credential,
    collected: CollectedData,
    user: str,
    history_limit: int = 10,
) -> Device:
    """``enroll_device`` inside the caller's transaction (which rolls back on a refusal)."""
    device = tokens.spend_token_within(uow, token, actor=user, user=user, token_hash=token_hash)
    check_collected_matches(device, collected)
    if device.enroll_status is EnrollStatus.ENROLLED:
        raise TokenInvalid(f"device {device.label} is already enrolled: unenroll it first")
    row = uow.session.execute(
        _ENROLL,
        {
            "device": device.id,
            "new_status": EnrollStatus.ENROLLED.value,
            "new_owner": user,
            "new_credential_id": credential.id,
            "new_public_key": credential.public_key,
            "new_ek_cert_serial": credential.ek_cert_serial,
            "new_attestation_type": credential.attestation_type.value,
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


# Built once: the enrollment's own UPDATE, returning the enrolled device.
_DEVICES = cast(Table, DeviceRow.__table__)
_ENROLL = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("device"))
    .values(
        enroll_status=bindparam("new_status"),
        owner=bindparam("new_owner"),
        credential_id=bindparam("new_credential_id"),
        credential_public_key=bindparam("new_public_key"),
        credential_ek_cert_serial=bindparam("new_ek_cert_serial"),
        credential_attestation_type=bindparam("new_attestation_type"),
        update_time=bindparam("now", type_=_DEVICES.c.update_time.type),
    )
    .returning(*_DEVICES.c)
)
