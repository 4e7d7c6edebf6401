"""Auto-enrollment's check: the worker's side of a login on a registered, not enrolled device.

One transaction finds the device the collected data names, checks that the user is one
of its users (``inventory.drift``), applies the drift rules and, when they pass, mints an
auto-enrollment token bound to that device and that user (single use, five minutes),
which only the enrollment ceremony accepts. The device's row is locked for the check, and
a device with a live auto-enrollment token is refused, so checks racing for one device
yield one token at most. Every attempt is audited as ``device.token.create``, with the
reason when refused (the MDM's values included: admins read the log, the device does
not); a refused attempt's collected data goes on the device's history for ``devtrust
devices diff`` (a passing one's does when the ceremony enrolls the device). The
statements are Core, built once: the check is short and frequent.

A check the service submits has a row of its own (``open_check``): whose it is, so that
only they can poll it and an unknown id is refused at once, and the key that seals its
token. The verdict travels through the result backend, which keeps it longer than the
token lives and is readable by whoever reaches it; it carries the token sealed with
that key (Fernet), and the service deletes the row as it delivers the verdict
(``close_check``): a verdict is delivered once, and once the row is gone or expired its
token cannot be unsealed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Table, bindparam, delete, select

from inventory.db import UnitOfWork, inserting
from inventory.domain import CollectedData, Device, IssuedToken, TokenKind, User, device_label
from inventory.drift import AutoEnrollRefused, audit_reason, check_auto_enroll
from inventory.errors import DevtrustError
from inventory.models import AutoEnrollCheckRow, DeviceRow
from inventory.services import audit, tokens
from inventory.services.devices import record_collected_data_within, to_device

AUTO_TOKEN_TTL = timedelta(minutes=5)
# A check's row lives no longer than the token its verdict may carry.
CHECK_TTL = AUTO_TOKEN_TTL
EXPIRED_CHECK = "the auto-enrollment check expired before it ran: log in again"


def check_and_mint(
    uow: UnitOfWork,
    *,
    user: str,
    collected: CollectedData,
    logins: Sequence[str] = (),
    ttl: timedelta = AUTO_TOKEN_TTL,
    history_limit: int = 10,
) -> IssuedToken:
    """The auto-enrollment token for ``user`` (who logs in to devices as their name or
    one of ``logins``) on the device ``collected`` names, or AutoEnrollRefused with the
    specific reason (audited either way)."""
    issued, _ = _check(uow, None, user, logins, collected, ttl, history_limit)
    return issued


def check_and_seal(
    uow: UnitOfWork,
    *,
    check: str,
    user: str,
    collected: CollectedData,
    logins: Sequence[str] = (),
    ttl: timedelta = AUTO_TOKEN_TTL,
    history_limit: int = 10,
) -> tuple[IssuedToken, str]:
    """``check_and_mint`` for the submitted check ``check``: the token and the token
    sealed with the check's key, read in the check's own statement. A check whose row is
    gone (expired) mints nothing."""
    issued, key = _check(uow, check, user, logins, collected, ttl, history_limit)
    assert key is not None
    return issued, seal(key, issued.token)


def _check(
    uow: UnitOfWork,
    check: str | None,
    user: str,
    logins: Sequence[str],
    collected: CollectedData,
    ttl: timedelta,
    history_limit: int,
) -> tuple[IssuedToken, str | None]:
    candidates: list[Device] = []
    key: str | None = None
    identity = User(user, (), uow.now(), uow.now(), logins=tuple(logins))
    try:
        with uow:
            rows = uow.session.execute(
                _CANDIDATES,
                {"tag": collected.serial_number, "os": collected.os_type.value, "check": check},
            ).all()
            candidates = [to_device(row) for row in rows]
            device = check_auto_enroll(candidates, collected, identity)
            if check is not None:
                key = rows[0].check_key
                if key is None:
                    raise AutoEnrollRefused(EXPIRED_CHECK)
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
            return issued, key
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
                f"for {user} refused: {audit_reason(exc)}",
                success=False,
                device=found,
                details={"kind": TokenKind.AUTO.value, "user": user},
            )
            uow.commit()
        raise


# -- the checks under way ------------------------------------------------------------


def open_check(uow: UnitOfWork, user: str) -> str:
    """A new check for ``user``: its id (a UUID, also its task's id), stored with the
    key that will seal its token. One INSERT; ``uow`` is an autocommit unit of work."""
    check_id = str(uuid.uuid4())
    now = uow.now()
    with uow:
        uow.run(
            _INSERT_CHECK,
            {
                "id": check_id,
                "user_name": user,
                "key": Fernet.generate_key().decode("ascii"),
                "create_time": now,
                "expire_time": now + CHECK_TTL,
            },
        )
        uow.commit()
    return check_id


def check_is_open(uow: UnitOfWork, check_id: str, user: str) -> bool:
    """Whether ``check_id`` is ``user``'s check, not yet delivered nor expired."""
    with uow:
        row = uow.first(_FIND_CHECK, {"id": check_id, "user": user, "now": uow.now()})
    return row is not None


def close_check(uow: UnitOfWork, check_id: str, user: str) -> str | None:
    """Take ``user``'s open check ``check_id`` away for its delivery: its key, or None when
    it is not theirs, was delivered already or expired. One DELETE ... RETURNING, so of
    two polls racing for one verdict, one gets it."""
    with uow:
        row = uow.first(_CLOSE_CHECK, {"id": check_id, "user": user, "now": uow.now()})
        uow.commit()
    return None if row is None else str(row.key)


def purge_checks(uow: UnitOfWork) -> list[str]:
    """Delete the checks that expired; their ids, so their verdicts can be forgotten."""
    with uow:
        ids = [str(row.id) for row in uow.run(_PURGE_CHECKS, {"now": uow.now()})]
        uow.commit()
    return ids


def seal(key: str, token: str) -> str:
    return Fernet(key.encode("ascii")).encrypt(token.encode()).decode("ascii")


def unseal(key: str, sealed: Any) -> str:
    """The token ``seal`` sealed with ``key``; a DevtrustError if it does not open."""
    try:
        return Fernet(key.encode("ascii")).decrypt(str(sealed).encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise DevtrustError("the auto-enrollment verdict does not open: log in again") from None


# Built once: the check runs often, and building a statement costs more than running it.
_DEVICES = cast(Table, DeviceRow.__table__)
_CHECKS = cast(Table, AutoEnrollCheckRow.__table__)
# The candidates, with the submitted check's key beside each (NULL: no such check).
_CANDIDATES = (
    select(_DEVICES, _CHECKS.c.key.label("check_key"))
    .select_from(_DEVICES.outerjoin(_CHECKS, _CHECKS.c.id == bindparam("check")))
    .where(_DEVICES.c.asset_tag == bindparam("tag"), _DEVICES.c.os_type == bindparam("os"))
    .with_for_update(of=_DEVICES)
)
_INSERT_CHECK = inserting(_CHECKS)
_NOW = bindparam("now", type_=_CHECKS.c.expire_time.type)
_OPEN = (
    _CHECKS.c.id == bindparam("id"),
    _CHECKS.c.user_name == bindparam("user"),
    _CHECKS.c.expire_time > _NOW,
)
_FIND_CHECK = select(_CHECKS.c.id).where(*_OPEN)
_CLOSE_CHECK = delete(_CHECKS).where(*_OPEN).returning(_CHECKS.c.key)
_PURGE_CHECKS = delete(_CHECKS).where(_CHECKS.c.expire_time <= _NOW).returning(_CHECKS.c.id)
