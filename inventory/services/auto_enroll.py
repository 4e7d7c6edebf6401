"""Auto-enrollment's check: the worker's side of a login on a registered, not enrolled device.

One transaction finds the device the collected data names, applies the drift rules
(``inventory.drift``) and, when they pass, mints an auto-enrollment token bound to that
device and that user (single use, five minutes), which only the enrollment ceremony
accepts. The device's row is locked for the check, and a device with a live
auto-enrollment token is refused, so checks racing for one device yield one token at
most. Every attempt is audited as ``device.token.create``, with the reason when refused;
a refused attempt's collected data goes on the device's history for ``devtrust devices
diff`` (a passing one's does when the ceremony enrolls the device). The statements are
Core, built once: the check is short and frequent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select

from inventory.db import UnitOfWork
from inventory.domain import CollectedData, Device, IssuedToken, TokenKind, device_label
from inventory.drift import AutoEnrollRefused, check_auto_enroll
from inventory.errors import DevtrustError
from inventory.models import DeviceRow
from inventory.services import audit, tokens
from inventory.services.devices import record_collected_data_within, to_device

AUTO_TOKEN_TTL = timedelta(minutes=5)


def check_and_mint(
    uow: UnitOfWork,
    *,
    user: str,
    collected: CollectedData,
    ttl: timedelta = AUTO_TOKEN_TTL,
    history_limit: int = 10,
) -> IssuedToken:
    """The auto-enrollment token for ``user`` on the device ``collected`` names, or
    AutoEnrollRefused with the specific reason (audited either way)."""
    candidates: list[Device] = []
    try:
        with uow:
            rows = uow.session.execute(
                _CANDIDATES, {"tag": collected.serial_number, "os": collected.os_type.value}
            ).all()
            candidates = [to_device(row) for row in rows]
            device = check_auto_enroll(candidates, collected)
            issued = tokens.create_sole_token_within(
                uow, device, actor=user, kind=TokenKind.AUTO, ttl=ttl, user=user
            )
            if issued is None:
                raise AutoEnrollRefused(
                    "an auto-enrollment of this device is already under way: "
                    "finish it, or try again once its token expires"
                )
            # The collected data goes on the history when the ceremony spends the token.
            uow.commit()
            return issued
    except DevtrustError as exc:
        found = candidates[0] if len(candidates) == 1 else None
        with uow:
            if found is not None:  # kept so an admin can compare (`devices diff`)
                record_collected_data_within(uow, found.id, collected, keep=history_limit)
            audit.record_within(
                uow,
                audit.DEVICE_TOKEN_CREATE,
                actor=user,
                message=f"auto-enrollment of "
                f"{device_label(collected.serial_number, collected.os_type)} "
                f"for {user} refused: {exc}",
                success=False,
                device=found,
                details={"kind": TokenKind.AUTO.value, "user": user},
            )
            uow.commit()
        raise


# Built once: the check runs often, and building a statement costs more than running it.
_DEVICES = cast(Table, DeviceRow.__table__)
_CANDIDATES = (
    select(_DEVICES)
    .where(_DEVICES.c.asset_tag == bindparam("tag"), _DEVICES.c.os_type == bindparam("os"))
    .with_for_update()
)
