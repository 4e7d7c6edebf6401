"""Enrollment tokens: minted for one device, stored as a hash, spent at most once."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Table,
    bindparam,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.sql.dml import ReturningUpdate

from inventory.credentials import hash_secret, new_secret
from inventory.db import UnitOfWork
from inventory.domain import Device, EnrollStatus, IssuedToken, OSType, TokenKind
from inventory.durations import format_duration
from inventory.errors import DevtrustError, InvalidArgument, TokenInvalid, quoted
from inventory.models import EnrollmentTokenRow
from inventory.services import audit, devices
from inventory.services.devices import row_by_ref_within, to_device

DEFAULT_TTL = timedelta(hours=1)
# A token must live long enough to be copied to the device and used: a millisecond TTL
# minted a token already dead when printed.
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=7)


def create_token(
    uow: UnitOfWork,
    ref: str,
    *,
    actor: str,
    kind: TokenKind = TokenKind.ADMIN,
    ttl: timedelta = DEFAULT_TTL,
    user: str | None = None,
    os_type: OSType | None = None,
) -> IssuedToken:
    """Mint a token that enrolls the device named by ``ref`` (asset tag or id; ``os_type``
    picks between two devices sharing one tag).

    A refusal is audited as a failed ``device.token.create`` with its reason.
    """
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidArgument(
            f"token TTL must be at least {format_duration(MIN_TTL)} "
            f"and at most {format_duration(MAX_TTL)}"
        )
    if kind is TokenKind.AUTO and not user:
        raise InvalidArgument("an auto-enrollment token must be bound to a user")
    device: Device | None = None
    try:
        with uow:
            row = row_by_ref_within(uow, ref, os_type=os_type)
            device = to_device(row)
            if device.enroll_status is EnrollStatus.ENROLLED:
                raise InvalidArgument(
                    f"device {device.label} is already enrolled: "
                    f"run `devtrust devices unenroll {device.asset_tag}` first"
                )
            issued = create_token_within(uow, device, actor=actor, kind=kind, ttl=ttl, user=user)
            uow.commit()
            return issued
    except DevtrustError as exc:
        audit.record_failure(
            uow,
            audit.DEVICE_TOKEN_CREATE,
            actor=actor,
            message=f"enrollment token for {quoted(ref)} refused: {exc}",
            device=device,
            details={"kind": kind.value},
        )
        raise


def create_token_within(
    uow: UnitOfWork,
    device: Device,
    *,
    actor: str,
    kind: TokenKind,
    ttl: timedelta,
    user: str | None = None,
) -> IssuedToken:
    token, params = _new_token(uow, device, actor=actor, kind=kind, ttl=ttl, user=user)
    uow.session.execute(_INSERT, params)
    return _issued(uow, token, params, device, actor=actor, kind=kind, user=user)


def create_sole_token_within(
    uow: UnitOfWork,
    device: Device,
    *,
    actor: str,
    kind: TokenKind,
    ttl: timedelta,
    user: str | None = None,
) -> IssuedToken | None:
    """``create_token_within``, unless the device already has a live token of this kind
    (None then): one statement, which sees tokens committed since the caller's lock."""
    token, params = _new_token(uow, device, actor=actor, kind=kind, ttl=ttl, user=user)
    if uow.session.execute(_INSERT_SOLE, params).first() is None:
        return None
    return _issued(uow, token, params, device, actor=actor, kind=kind, user=user)


def _new_token(
    uow: UnitOfWork,
    device: Device,
    *,
    actor: str,
    kind: TokenKind,
    ttl: timedelta,
    user: str | None,
) -> tuple[str, dict[str, Any]]:
    token = new_secret()
    now = uow.now()
    return token, {
        "token_hash": hash_secret(token),
        "device_id": device.id,
        "kind": kind.value,
        "user_name": user,
        "created_by": actor,
        "create_time": now,
        "expire_time": now + ttl,
    }


def _issued(
    uow: UnitOfWork,
    token: str,
    params: dict[str, Any],
    device: Device,
    *,
    actor: str,
    kind: TokenKind,
    user: str | None,
) -> IssuedToken:
    expire_time: datetime = params["expire_time"]
    audit.record_within(
        uow,
        audit.DEVICE_TOKEN_CREATE,
        actor=actor,
        message=f"{kind.value} enrollment token created for device {device.label}",
        device=device,
        details={"kind": kind.value, "expire_time": expire_time.isoformat(), "user": user},
    )
    return IssuedToken(token=token, kind=kind, device=device, expire_time=expire_time, user=user)


# Built once: plain INSERTs with their values passed as parameters.
_TABLE = cast(Table, EnrollmentTokenRow.__table__)
_COLUMNS = ("token_hash", "device_id", "kind", "user_name", "created_by", "create_time",
            "expire_time")  # fmt: skip
_INSERT = insert(_TABLE)


def _param(name: str) -> BindParameter[Any]:
    return bindparam(name, type_=_TABLE.c[name].type)


# INSERT ... SELECT <the values> WHERE NOT EXISTS (a live token of this kind).
_INSERT_SOLE = (
    insert(_TABLE)
    .from_select(
        list(_COLUMNS),
        select(*(_param(c) for c in _COLUMNS)).where(
            ~exists().where(
                _TABLE.c.device_id == _param("device_id"),
                _TABLE.c.kind == _param("kind"),
                _TABLE.c.spent_time.is_(None),
                _TABLE.c.expire_time > _param("create_time"),
            )
        ),
    )
    .returning(_TABLE.c.id)
)


def spend_token(
    uow: UnitOfWork,
    token: str,
    *,
    actor: str,
    kinds: frozenset[TokenKind] = frozenset(TokenKind),
    user: str | None = None,
) -> Device:
    """Spend a token and return the device it was minted for; refusals are audited."""
    try:
        with uow:
            device = spend_token_within(uow, token, actor=actor, kinds=kinds, user=user)
            uow.commit()
            return device
    except TokenInvalid as exc:
        audit.record_failure(
            uow, audit.DEVICE_TOKEN_SPENT, actor=actor, message=f"enrollment token refused: {exc}"
        )
        raise


def hash_token(token: str) -> str:
    """What a token is stored and looked up as."""
    return hash_secret(token.strip())


def spend_token_within(
    uow: UnitOfWork,
    token: str,
    *,
    actor: str,
    kinds: frozenset[TokenKind] = frozenset(TokenKind),
    user: str | None = None,
) -> Device:
    """Mark the token spent inside the caller's transaction.

    The conditional UPDATE is what makes a token single use: of any number of concurrent
    spenders, exactly one sees its row change.
    """
    token_hash = hash_token(token)
    statement = _SPEND_BOUND if user is not None else _SPEND_UNBOUND
    params = {"hash": token_hash, "now": uow.now(), "kinds": [k.value for k in kinds]}
    spent = uow.session.execute(statement, {**params, "user": user}).one_or_none()
    if spent is None:
        _usable_row(uow, token_hash, kinds=kinds, user=user)  # raises with the reason
        raise TokenInvalid("enrollment token was already used")  # lost a race to spend it
    device_row = uow.session.execute(devices.BY_ID, {"id": spent.device_id}).one_or_none()
    if device_row is None:  # cascade deletes tokens with their device, so only a race lands here
        raise TokenInvalid("the device this token was minted for has been removed")
    device = to_device(device_row)
    audit.record_within(
        uow,
        audit.DEVICE_TOKEN_SPENT,
        actor=actor,
        message=f"{spent.kind} enrollment token spent for device {device.label}",
        device=device,
        details={"kind": spent.kind, "user": user},
    )
    return device


def _usable_row(
    uow: UnitOfWork, token_hash: str, *, kinds: frozenset[TokenKind], user: str | None
) -> Row[Any]:
    row = uow.session.execute(BY_HASH, {"hash": token_hash}).one_or_none()
    check_usable(row, token_hash, now=uow.now(), kinds=kinds, user=user)
    assert row is not None
    return row


def check_usable(
    row: Any,
    token_hash: str,
    *,
    now: datetime,
    kinds: frozenset[TokenKind] = frozenset(TokenKind),
    user: str | None,
) -> None:
    """Refuse, saying why, a token (``row``, found by ``token_hash``; None: no such token)
    that ``user`` cannot spend ``now`` for one of ``kinds``."""
    if row is None or row.token_hash is None or not hmac.compare_digest(token_hash, row.token_hash):
        raise TokenInvalid("invalid enrollment token")
    if row.spent_time is not None:
        raise TokenInvalid("enrollment token was already used")
    if row.expire_time <= now:
        raise TokenInvalid(f"enrollment token expired at {row.expire_time:%Y-%m-%d %H:%M:%S} UTC")
    if TokenKind(row.kind) not in kinds:
        raise TokenInvalid(f"a {row.kind} enrollment token cannot be used here")
    if row.user_name is not None and row.user_name != user:
        raise TokenInvalid("enrollment token was minted for another user")


BY_HASH = select(_TABLE).where(_TABLE.c.token_hash == bindparam("hash"))


def spendable(*, bound_to_user: bool = True) -> list[ColumnElement[bool]]:
    """SQL conditions on the token ``:hash``: spendable at ``:now``, unspent and unexpired,
    and minted for nobody or (``bound_to_user``) for the user ``:user``."""
    owner = _TABLE.c.user_name
    return [
        _TABLE.c.token_hash == bindparam("hash"),
        _TABLE.c.spent_time.is_(None),
        _TABLE.c.expire_time > _param_as("now", "spent_time"),
        (owner.is_(None) | (owner == bindparam("user"))) if bound_to_user else owner.is_(None),
    ]


def _spend(*, bound_to_user: bool) -> ReturningUpdate[Any]:
    """UPDATE the token spent if it is usable now: spendable, and of an accepted kind."""
    return (
        update(_TABLE)
        .where(
            *spendable(bound_to_user=bound_to_user),
            _TABLE.c.kind.in_(bindparam("kinds", expanding=True)),
        )
        .values(spent_time=_param_as("now", "spent_time"))
        .returning(_TABLE.c.device_id, _TABLE.c.kind)
    )


def _param_as(name: str, column: str) -> BindParameter[Any]:
    return bindparam(name, type_=_TABLE.c[column].type)


_SPEND_BOUND = _spend(bound_to_user=True)
_SPEND_UNBOUND = _spend(bound_to_user=False)
